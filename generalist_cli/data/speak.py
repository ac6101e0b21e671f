"""Synthetic speech from a text file (one sentence per line) with eSpeak NG: speech -> text pairs for ASR
and text -> speech pairs for TTS (with eSpeak's word start times for the speech head's durations).

Voices, speaking rate and pitch vary per line (seeded): ``voices`` is a list of eSpeak voice names
(``hi``, ``en-us``, ``ta`` ...), ``rate`` and ``pitch`` are (low, high) ranges.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from generalist_cli.data.schema import RawItem, Speak
from generalist_cli.errors import GenError


def items(
    *,
    text_file: Path,
    lang: str,
    voices: tuple[str, ...] = (),
    rate: tuple[int, int] = (130, 170),
    pitch: tuple[int, int] = (40, 60),
    tasks: tuple[str, ...] = ("transcribe", "tts"),
    seed: int = 0,
    valid_every: int = 20,
    split: str | None = None,
) -> Iterator[RawItem]:
    """Every ``valid_every``-th line goes to ``valid``, the rest to ``train``; ``split`` puts all in one split."""
    from generalist_cli.languages import resolve_language

    code = resolve_language(lang)
    if not text_file.is_file():
        raise GenError(f"{text_file}: not found", hint="give a text file with one sentence per line")
    bad = set(tasks) - {"transcribe", "tts"}
    if bad:
        raise GenError(f"unknown speak task {sorted(bad)[0]!r}", hint="use transcribe and/or tts")
    voices = voices or (code,)
    rng = random.Random(seed)
    text = text_file.read_text(encoding="utf-8-sig")
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")  # LF ends a line (str.splitlines
    for i, line in enumerate(lines):  # would also split at U+2028, form feeds and other separators inside a line)
        request = Speak(voice=rng.choice(voices), rate=rng.randint(*rate), pitch=rng.randint(*pitch))
        which = split or ("valid" if valid_every and i % valid_every == valid_every - 1 else "train")
        yield RawItem(
            id=f"speak-{code}-{i:07d}",
            split=which,
            task="transcribe",
            modality="audio",
            source=request,
            text=line.strip(),
            lang=code,
            tasks=tuple(tasks),
            line=i + 1,
        )
