"""Whisper log-mel -> waveform: undo the scaling, map mel power back to linear frequencies with the
filterbank's pseudo-inverse, and recover phase with Griffin-Lim (fast variant with momentum, Perraudin
et al. 2013) through ``torch.stft``/``torch.istft``. A baseline vocoder: intelligible, not natural."""

from __future__ import annotations

import numpy as np

from generalist_cli.features.mel import HOP_LENGTH, N_FFT, mel_filters


def mel_to_audio(log_mel, *, n_iter: int = 48, momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """``log_mel`` (n_mels, frames) in Whisper's scale ((log10 + 4) / 4) -> 16 kHz float32 audio."""
    import torch

    x = torch.as_tensor(np.asarray(log_mel, dtype=np.float32) if not torch.is_tensor(log_mel) else log_mel)
    x = x.detach().float().cpu()
    n_mels, frames = x.shape
    power_mel = torch.pow(10.0, x * 4.0 - 4.0)
    fb = torch.from_numpy(mel_filters(n_mels))
    power = (torch.linalg.pinv(fb) @ power_mel).clamp_min(1e-10)  # (N_FFT // 2 + 1, frames)
    mag = torch.cat([power.sqrt(), power[:, -1:].sqrt()], dim=1)  # Whisper drops the last STFT frame
    window = torch.hann_window(N_FFT)
    length = HOP_LENGTH * frames
    gen = torch.Generator().manual_seed(seed)
    angles = torch.polar(torch.ones_like(mag), 2 * np.pi * torch.rand(mag.shape, generator=gen))
    previous = torch.zeros_like(angles)
    for _ in range(n_iter):
        audio = torch.istft(mag * angles, N_FFT, HOP_LENGTH, window=window, center=True, length=length)
        rebuilt = torch.stft(
            audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True
        )
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / angles.abs().clamp_min(1e-8)
        previous = rebuilt
    audio = torch.istft(mag * angles, N_FFT, HOP_LENGTH, window=window, center=True, length=length)
    peak = float(audio.abs().max())
    return (audio / peak * 0.9 if peak > 0 else audio).numpy().astype(np.float32)
