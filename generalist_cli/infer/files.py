"""Speech files -> transcripts, streamed in input order: decode a chunk of files, transcribe it as a batch,
yield each result (or the file's error) before reading the next chunk, so memory stays flat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from generalist_cli.errors import MediaError
from generalist_cli.infer.transcribe import TranscribeOptions, Transcript, transcribe
from generalist_cli.media.audio import SAMPLE_RATE, decode_audio, is_silent


@dataclass(frozen=True)
class FileResult:
    path: Path
    transcript: Transcript | None = None  # of the down-mix, or of channel 0 with channels="split"
    error: MediaError | None = None
    channels: tuple[Transcript, ...] = ()  # channels="split": one transcript per channel, in order


def transcribe_files(
    model,
    tokenizer,
    paths: list[Path],
    options: TranscribeOptions,
    *,
    on_progress: Callable[[float], None] | None = None,
    on_duration: Callable[[float], None] | None = None,
    channels: str = "mix",
) -> Iterator[FileResult]:
    """Yield one :class:`FileResult` per path, in order. A bad file yields its error; the others go on.

    ``channels``: ``mix`` down-mixes each file to mono; ``split`` transcribes each channel on its own (a call
    recorded with one speaker per channel). ``on_duration(seconds)`` is told each decoded file's length;
    ``on_progress(seconds)`` the audio done.
    """
    chunk = max(1, options.batch_size)
    for start in range(0, len(paths), chunk):
        group = paths[start : start + chunk]
        audios: dict[tuple[int, int], object] = {}  # (file, channel) -> waveform
        errors: dict[int, MediaError] = {}
        for i, path in enumerate(group):
            try:
                decoded = decode_audio(path, mono=channels == "mix")
                if is_silent(decoded) and options.vad == "off":  # with VAD, silence is simply no speech: empty text
                    raise MediaError(
                        path, f"contains only silence ({decoded.shape[-1] / SAMPLE_RATE:.1f} s), nothing to transcribe"
                    )
                for c, audio in enumerate([decoded] if decoded.ndim == 1 else list(decoded)):
                    audios[(i, c)] = audio
                if on_duration is not None:
                    on_duration(decoded.shape[-1] / SAMPLE_RATE * (1 if decoded.ndim == 1 else len(decoded)))
            except MediaError as exc:
                errors[i] = exc
        order = sorted(audios)
        done = 0.0

        def progress(seconds: float) -> None:
            nonlocal done
            if on_progress is not None:
                on_progress(seconds - done)
            done = seconds

        results = (
            transcribe(model, tokenizer, [audios[i] for i in order], options, on_progress=progress) if order else []
        )
        by_index: dict[int, list[Transcript]] = {}
        for (i, c), t in zip(order, results):
            if channels == "split":
                t.channel = c
            by_index.setdefault(i, []).append(t)
        for i, path in enumerate(group):
            found = by_index.get(i, [None])
            yield FileResult(path, found[0], errors.get(i), tuple(found) if channels == "split" and found[0] else ())
