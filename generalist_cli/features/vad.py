"""Voice activity: which parts of a 16 kHz waveform hold speech, so that silence and steady noise are never
decoded (Whisper invents sentences on them) and long silent stretches cost nothing.

Per 20 ms frame (10 ms hop): log energy and spectral flatness (geometric / arithmetic mean of the power
spectrum), both over 100 Hz - 4 kHz. A frame is speech-like when its energy is at least ``margin_db`` above the
file's noise floor (its 10th-percentile frame energy, never below ``floor_db`` dBFS) *and* its spectrum is
not flat (flatness below ``max_flatness``: voiced speech is harmonic, hiss and hum are flat or a single line).
Decisions are smoothed: speech runs shorter than ``min_speech`` are dropped, gaps shorter than
``min_silence`` are bridged, and each region is padded by ``pad`` on both sides. Pure numpy, about 1,000x
real time on one core.

:func:`compact` cuts the speech regions out and joins them (with short silences), returning the shorter
waveform and a :class:`TimeMap` that maps times in it back to the original file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000
FRAME = 320  # 20 ms
HOP = 160  # 10 ms


@dataclass(frozen=True)
class VadOptions:
    margin_db: float = 12.0
    floor_db: float = -55.0
    max_flatness: float = 0.35
    min_speech: float = 0.20  # seconds
    min_silence: float = 0.40
    pad: float = 0.20


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


def speech_regions(audio: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` that hold speech, in order, non-overlapping."""
    if len(audio) == 0:
        return []
    energy, flatness = frame_features(audio)
    floor = max(float(np.percentile(energy, 10)), options.floor_db)
    speech = (energy > floor + options.margin_db) & (flatness < options.max_flatness)
    runs = _runs(speech)
    hop_s = HOP / RATE
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
        start, end = max(0, a * HOP - pad), min(len(audio), b * HOP + FRAME + pad)
        if out and start <= out[-1][1]:
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


def compact(audio: np.ndarray, regions: list[tuple[int, int]], *, gap: float = 0.3) -> tuple[np.ndarray, TimeMap]:
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
