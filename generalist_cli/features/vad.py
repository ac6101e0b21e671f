"""Voice activity: which parts of a 16 kHz waveform hold speech, so that silence and steady noise are never
decoded (Whisper invents sentences on them) and long silent stretches cost nothing.

Two detectors, one smoothing. ``silero`` (the default) is Silero VAD (the ``silero-vad`` package's ONNX model, MIT),
the detector faster-whisper and WhisperX use: a small LSTM giving a speech probability per 32 ms frame, run here
through ONNX Runtime on numpy (its "sequence" graph: one call per 16 s block, no torch), about 300x real time on
one core. A frame is speech above ``threshold``; once in speech, it stays until the probability falls below
``threshold - 0.15`` (Silero's own hysteresis).

``energy`` is the hand-written detector it replaced, kept for comparison (``--vad energy``). Per 20 ms frame (10
ms hop): log energy and spectral flatness (geometric / arithmetic mean of the power spectrum), both over 100 Hz
- 4 kHz. A frame is speech-like when its energy is at least ``margin_db`` above the file's noise floor (its
10th-percentile frame energy, never below ``floor_db`` dBFS) *and* its spectrum is not flat (flatness below
``max_flatness``: voiced speech is harmonic, hiss and hum are flat or a single line). Decisions are smoothed:
speech runs shorter than ``min_speech`` are dropped, gaps shorter than ``min_silence`` are bridged, and each
region is padded by ``pad`` on both sides. Pure numpy, about 1,000x real time on one core.

:func:`compact` cuts the speech regions out and joins them (with short silences), returning the shorter
waveform and a :class:`TimeMap` that maps times in it back to the original file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from generalist_cli.errors import ModelError

RATE = 16000
FRAME = 320  # 20 ms
HOP = 160  # 10 ms
JOIN = 0.3  # seconds of silence compact() puts between regions
TOUCH = 0.1  # padded regions closer than this are one (compact() would otherwise widen the gap to JOIN)
SILERO_FRAME, SILERO_CONTEXT, SILERO_BLOCK = 512, 64, 512  # 32 ms frames, each read with the 4 ms before it


@dataclass(frozen=True)
class VadOptions:
    margin_db: float = 12.0
    floor_db: float = -55.0
    max_flatness: float = 0.35
    min_speech: float = 0.20  # seconds
    min_silence: float = 0.40
    pad: float = 0.20
    threshold: float = 0.5  # silero: speech probability that starts speech (it ends below threshold - 0.15)


def frame_features(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(energy dBFS, spectral flatness) per 10 ms hop."""
    x = np.asarray(audio, dtype=np.float32)
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    n = 1 + (len(x) - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    band = power[:, 2:81]  # 100 Hz - 4 kHz at 50 Hz per bin: rumble and DC drift do not count
    energy = 10 * np.log10(band.sum(axis=1) * 2 / (FRAME * np.sum(np.hanning(FRAME) ** 2)) + 1e-12)
    flatness = np.exp(np.mean(np.log(band), axis=1)) / np.mean(band, axis=1)
    return energy, flatness


def speech_regions(
    audio: np.ndarray, options: VadOptions = VadOptions(), *, method: str = "silero"
) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` that hold speech, in order, non-overlapping (``method``: silero|energy)."""
    if len(audio) == 0:
        return []
    if method == "silero":
        return _smooth(
            _hysteresis(silero_probs(audio), options.threshold), SILERO_FRAME, SILERO_FRAME, len(audio), options
        )
    energy, flatness = frame_features(audio)
    floor = max(float(np.percentile(energy, 10)), options.floor_db)
    speech = (energy > floor + options.margin_db) & (flatness < options.max_flatness)
    return _smooth(speech, HOP, FRAME, len(audio), options)


def silero_probs(audio: np.ndarray) -> np.ndarray:
    """Silero VAD's speech probability for each 32 ms frame of 16 kHz ``audio`` (the last frame zero-padded)."""
    session = _silero_session()
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = -(-len(x) // SILERO_FRAME)
    frames = np.zeros((n, SILERO_FRAME), np.float32)
    frames.reshape(-1)[: len(x)] = x
    context = np.zeros((n, SILERO_CONTEXT), np.float32)  # each frame is read with the tail of the one before
    context[1:] = frames[:-1, -SILERO_CONTEXT:]
    rows = np.concatenate([context, frames], axis=1)
    h = c = np.zeros((1, 1, 128), np.float32)
    out = []
    for i in range(0, n, SILERO_BLOCK):  # the LSTM state runs on from block to block
        p, h, c = session.run(None, {"input": rows[i : i + SILERO_BLOCK], "h": h, "c": c})
        out.append(p)
    return np.concatenate(out).astype(np.float32)


@lru_cache(maxsize=1)
def _silero_session():
    """ONNX Runtime session of the silero-vad package's sequence model, found without importing the package
    (its ``__init__`` imports torch; an ONNX export of gen runs without it)."""
    import importlib.util
    from pathlib import Path

    import onnxruntime as ort

    spec = importlib.util.find_spec("silero_vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_16k_sequence.onnx" if spec else None
    if path is None or not path.is_file():
        raise ModelError(
            "Silero VAD is not installed (its model ships in the silero-vad package)",
            hint="pip install silero-vad, or use --vad energy",
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _hysteresis(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Speech frames: from a probability at or above ``threshold`` until one below ``threshold - 0.15``."""
    low = max(threshold - 0.15, 0.01)
    speech = np.zeros(len(probs), bool)
    on = False
    for i, p in enumerate(probs.tolist()):
        on = p >= threshold or (on and p >= low)
        speech[i] = on
    return speech


def _smooth(speech: np.ndarray, hop: int, frame: int, n: int, options: VadOptions) -> list[tuple[int, int]]:
    """Sample ranges from per-frame decisions (frame ``i`` covers ``[i*hop, i*hop+frame)``): short gaps bridged,
    short runs dropped, each range padded, overlaps joined."""
    runs = _runs(speech)
    hop_s = hop / RATE
    # bridge short gaps, then drop short runs
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and (a - merged[-1][1]) * hop_s < options.min_silence:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    pad = int(options.pad * RATE)
    out = []
    for a, b in merged:
        if (b - a) * hop_s < options.min_speech:
            continue
        start, end = max(0, a * hop - pad), min(n, (b - 1) * hop + frame + pad)
        if out and start - out[-1][1] < TOUCH * RATE:  # (nearly) touching: one region
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where ``mask`` is true."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


@dataclass(frozen=True)
class TimeMap:
    """Pieces ``(compact_start, original_start, length)`` in seconds, in order."""

    pieces: tuple[tuple[float, float, float], ...]

    def __call__(self, t: float) -> float:
        """The original time of compact time ``t`` (a time in a joining silence maps to its piece's end)."""
        if not self.pieces:
            return t
        for c, o, n in reversed(self.pieces):
            if t >= c:
                return o + min(t - c, n)
        return self.pieces[0][1]


def compact(audio: np.ndarray, regions: list[tuple[int, int]], *, gap: float = JOIN) -> tuple[np.ndarray, TimeMap]:
    """The speech ``regions`` of ``audio`` joined with ``gap`` seconds of silence between them, and the map
    from times in the result back to ``audio``."""
    gap_n = int(gap * RATE)
    parts, pieces, at = [], [], 0
    for i, (a, b) in enumerate(regions):
        if i:
            parts.append(np.zeros(gap_n, dtype=np.float32))
            at += gap_n
        parts.append(np.asarray(audio[a:b], dtype=np.float32))
        pieces.append((at / RATE, a / RATE, (b - a) / RATE))
        at += b - a
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return joined, TimeMap(tuple(pieces))
