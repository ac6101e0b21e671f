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
    transcript: Transcript | None = None
    error: MediaError | None = None


def transcribe_files(model, tokenizer, paths: list[Path], options: TranscribeOptions, *,
                     on_progress: Callable[[float], None] | None = None,
                     on_duration: Callable[[float], None] | None = None) -> Iterator[FileResult]:
    """Yield one :class:`FileResult` per path, in order. A bad file yields its error; the others go on.

    ``on_duration(seconds)`` is told each decoded file's length; ``on_progress(seconds)`` the audio done.
    """
    chunk = max(1, options.batch_size)
    for start in range(0, len(paths), chunk):
        group = paths[start : start + chunk]
        audios: dict[int, object] = {}
        errors: dict[int, MediaError] = {}
        for i, path in enumerate(group):
            try:
                audio = decode_audio(path)
                if is_silent(audio) and not options.vad:  # with VAD, silence is simply no speech: empty text
                    raise MediaError(path, f"contains only silence ({len(audio) / SAMPLE_RATE:.1f} s), nothing to transcribe")
                audios[i] = audio
                if on_duration is not None:
                    on_duration(len(audio) / SAMPLE_RATE)
            except MediaError as exc:
                errors[i] = exc
        order = sorted(audios)
        done = 0.0

        def progress(seconds: float) -> None:
            nonlocal done
            if on_progress is not None:
                on_progress(seconds - done)
            done = seconds

        results = transcribe(model, tokenizer, [audios[i] for i in order], options, on_progress=progress) if order else []
        by_index = dict(zip(order, results))
        for i, path in enumerate(group):
            yield FileResult(path, by_index.get(i), errors.get(i))
