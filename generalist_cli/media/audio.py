"""Audio in and out with PyAV (FFmpeg): any container -> mono float32 at 16 kHz, and back to a file.

Every way a file can be unusable becomes one :class:`MediaError` naming the file and the problem:
missing, a directory, empty, not media, truncated/corrupt, no audio track, no samples.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from generalist_cli.errors import MediaError

SAMPLE_RATE = 16_000  # Hz, what Whisper's features expect
SILENCE_PEAK = 1e-4  # a waveform whose peak stays below this (-80 dBFS) is silent


def decode_audio(
    path: str | os.PathLike | io.BytesIO, *, sample_rate: int = SAMPLE_RATE, mono: bool = True
) -> np.ndarray:
    """Decode the first audio track of ``path`` (or of an in-memory file), down-mixed to mono and resampled.

    Works for m4a/aac, wav, mp3, flac, ogg/opus and the audio track of mov/mp4 (anything FFmpeg reads).
    Returns float32 samples in [-1, 1], shape ``(N,)``; with ``mono=False`` each channel on its own,
    shape ``(channels, N)``.
    """
    import av

    in_memory = isinstance(path, io.BytesIO)
    if in_memory:
        if not path.getbuffer().nbytes:
            raise MediaError("<bytes>", "is empty (0 bytes)")
    else:
        path = check_file(path)
    try:
        container = av.open(path if in_memory else str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:  # InvalidDataError, FileNotFoundError, ...
        raise MediaError(
            "<bytes>" if in_memory else path, f"is not a media file FFmpeg can read ({_ffmpeg_reason(exc)})"
        ) from exc
    label = "<bytes>" if in_memory else path
    chunks: list[np.ndarray] = []
    try:
        streams = container.streams.audio
        if not streams:
            raise MediaError(label, "has no audio track")
        stream = streams[0]
        layout = "mono" if mono else stream.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            done = sum(len(c) for c in chunks) / sample_rate
            raise MediaError(
                label, f"is truncated or corrupt: decoding failed after {done:.2f} s ({_ffmpeg_reason(exc)})"
            ) from exc
        declared = _declared_duration(container, stream)
    finally:
        container.close()
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False) if chunks else np.zeros((1, 0), np.float32)
    audio = audio[0] if mono else audio
    if audio.size == 0:
        raise MediaError(label, "has an audio track with no samples (truncated?)")
    missing = 0 if in_memory else _wav_missing_bytes(path)
    if missing:
        raise MediaError(
            label, f"is truncated: its WAV header declares {missing} more bytes of samples than the file holds"
        )
    got = audio.shape[-1] / sample_rate
    if declared is not None and declared > 1.0 and got < 0.9 * declared:
        raise MediaError(label, f"is truncated: the header declares {declared:.2f} s but only {got:.2f} s decode")
    return audio


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or the MediaError that says why it cannot be a media file."""
    path = Path(path)
    if not path.exists():
        raise MediaError(path, "file not found")
    if path.is_dir():
        raise MediaError(path, "is a directory, not a media file")
    if path.stat().st_size == 0:
        raise MediaError(path, "is empty (0 bytes)")
    return path


def is_silent(audio: np.ndarray, *, peak: float = SILENCE_PEAK) -> bool:
    """True when no sample rises above ``peak`` (digital silence or near it)."""
    return audio.size == 0 or float(np.abs(audio).max()) < peak


def encode_audio(
    path: str | os.PathLike, audio: np.ndarray, *, sample_rate: int = SAMPLE_RATE, bitrate: int = 96_000
) -> Path:
    """Write mono float32 ``audio`` to ``path``; the container comes from the suffix (.wav .m4a .flac .mp3 .ogg).

    The file is written under a temporary name and renamed, so an existing file is never half-written.
    """
    import av

    path = Path(path)
    codecs = {
        ".wav": "pcm_s16le",
        ".m4a": "aac",
        ".mp4": "aac",
        ".flac": "flac",
        ".mp3": "libmp3lame",
        ".ogg": "libopus",
        ".opus": "libopus",
    }
    codec = codecs.get(path.suffix.lower())
    if codec is None:
        raise MediaError(
            path,
            f"cannot write audio as {path.suffix or 'a file without suffix'}",
            hint="use one of " + ", ".join(codecs),
        )
    rate = 48_000 if codec == "libopus" else sample_rate
    samples = np.asarray(audio, dtype=np.float32).reshape(1, -1)
    fmt = {".m4a": "mp4", ".opus": "ogg"}.get(path.suffix.lower(), path.suffix.lower().lstrip("."))
    with atomic_output(path) as tmp:
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=rate, layout="mono")
            if codec not in ("pcm_s16le", "flac"):
                stream.bit_rate = bitrate
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = None
            resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
            frames = resampler.resample(frame) + resampler.resample(None)
            for f in frames:
                f.pts = None
                for packet in stream.encode(f):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary name beside ``path`` (same suffix); on success it is renamed to ``path``, so an
    existing file is never half-written; on failure it is removed."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _declared_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _wav_missing_bytes(path: Path) -> int:
    """For a RIFF/WAVE file, how many bytes of the declared ``data`` chunk are missing (0 if none or not WAV).

    FFmpeg takes a WAV file's duration from its size, so a cut-off WAV decodes without complaint."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streamed WAV: size unknown
                    return 0
                return max(0, pos + 8 + chunk_size - size)
            pos += 8 + chunk_size + (chunk_size & 1)
    return 0


def _ffmpeg_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip() or type(exc).__name__
