"""Whisper's log-mel spectrogram in numpy (openai/whisper ``audio.py``; transformers ``WhisperFeatureExtractor``).

Named constants derive from each other: 16 kHz audio, 25 ms windows (400 samples) every 10 ms (160),
so 100 frames per second; a 30-second window holds 480,000 samples, 3,000 frames, and the encoder's
stride-2 stem turns it into 1,500 positions (20 ms each).
"""

from __future__ import annotations

import functools

import numpy as np

from generalist_cli.media.audio import SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30  # seconds in one window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480,000
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
INPUT_STRIDE = 2  # mel frames per encoder position (conv2 has stride 2)
TIME_PRECISION = INPUT_STRIDE / FRAMES_PER_SECOND  # 0.02 s per timestamp token
BLOCK_FRAMES = N_FRAMES  # frames whose spectrum is computed at once (the clamp to the peak is global, after)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    freq = np.asarray(freq, dtype=np.float64)
    mel = freq / f_sp
    log_region = freq >= min_log_hz
    mel[log_region] = min_log_mel + np.log(freq[log_region] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    freq = f_sp * mel
    log_region = mel >= min_log_mel
    freq[log_region] = min_log_hz * np.exp(logstep * (mel[log_region] - min_log_mel))
    return freq


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, 0-8 kHz, shape ``(n_mels, N_FFT // 2 + 1)`` (librosa's defaults)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], n_mels + 2)
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]  # Slaney area normalisation
    return weights.astype(np.float32)


def log_mel_spectrogram(audio, *, n_mels: int = 80, padding: int = 0):
    """Log-mel spectrogram of 16 kHz mono ``audio`` (numpy or torch, shape ``(N,)`` or ``(B, N)``), in numpy: no
    torch is needed to run an ONNX export. A torch input gives a torch output on its device.

    ``padding`` zeros are appended first (openai/whisper pads 30 s so the last window is complete).
    Returns float32 ``(n_mels, frames)`` or ``(B, n_mels, frames)`` with ``frames = (N + padding) // HOP_LENGTH``,
    clamped to 8 (log10 units) below each row's maximum and scaled as ``(x + 4) / 4``.
    """
    device = None
    if not isinstance(audio, np.ndarray) and hasattr(audio, "detach"):  # a torch tensor
        device, audio = audio.device, audio.detach().float().cpu().numpy()
    x = np.asarray(audio, dtype=np.float32)
    pad = [(0, 0)] * (x.ndim - 1)
    if padding:
        x = np.pad(x, pad + [(0, padding)])
    x = np.pad(x, pad + [(N_FFT // 2, N_FFT // 2)], mode="reflect")  # torch.stft(center=True, pad_mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=-1)[..., ::HOP_LENGTH, :]
    frames = frames[..., :-1, :]  # drop the last frame, as Whisper does (a view: nothing copied yet)
    n, filters = frames.shape[-2], mel_filters(n_mels).T
    log_spec = np.empty(frames.shape[:-2] + (n, n_mels), dtype=np.float32)
    for a in range(0, n, BLOCK_FRAMES):  # a block at a time: the spectrum of an hour would take 2.5 GB at once
        spectrum = np.fft.rfft(frames[..., a : a + BLOCK_FRAMES, :] * _hann(), axis=-1)  # (B?, frames, F)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        log_spec[..., a : a + BLOCK_FRAMES, :] = np.log10(np.maximum(np.matmul(power, filters), 1e-10))
    peak = log_spec.max(axis=(-2, -1), keepdims=True)
    np.maximum(log_spec, peak - 8.0, out=log_spec)  # in place: no hour-sized temporaries
    log_spec += 4.0
    log_spec /= 4.0
    out = np.ascontiguousarray(np.swapaxes(log_spec, -1, -2), dtype=np.float32)
    if device is not None:
        import torch

        return torch.from_numpy(out).to(device)
    return out


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """The periodic Hann window of N_FFT samples (``torch.hann_window``'s default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def pad_or_trim(mel, length: int = N_FRAMES):
    """Pad with zeros or cut the last axis of ``mel`` (numpy or torch) to ``length`` frames."""
    if mel.shape[-1] > length:
        return mel[..., :length]
    if mel.shape[-1] < length:
        if isinstance(mel, np.ndarray):
            return np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, length - mel.shape[-1])])
        import torch

        return torch.nn.functional.pad(mel, (0, length - mel.shape[-1]))
    return mel


def spec_augment(mel: np.ndarray, rng: np.random.Generator, *, freq_masks: int = 2, freq_width: int = 15,
                 time_masks: int = 2, time_share: float = 0.05) -> np.ndarray:  # fmt: skip
    """SpecAugment (Park et al. 2019) of a log-mel ``(n_mels, frames)``: ``freq_masks`` bands of up to
    ``freq_width`` mel bins and ``time_masks`` spans of up to ``time_share`` of the frames each set to the
    example's mean (Whisper's log-mel has no zero level). A new array; the input is not changed."""
    out = np.array(mel, dtype=np.float32, copy=True)
    fill = float(out.mean())
    n_mels, frames = out.shape
    for _ in range(freq_masks):
        w = int(rng.integers(0, freq_width + 1))
        f0 = int(rng.integers(0, max(1, n_mels - w)))
        out[f0 : f0 + w] = fill
    for _ in range(time_masks):
        w = int(rng.integers(0, int(frames * time_share) + 1))
        t0 = int(rng.integers(0, max(1, frames - w)))
        out[:, t0 : t0 + w] = fill
    return out
