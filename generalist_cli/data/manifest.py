"""The user's own data: a TSV, CSV or JSONL manifest with ``path`` and ``text`` columns, optionally ``lang``,
``task`` (transcribe | translate | sign), ``target`` (text to produce instead of ``text``) and ``split``.
Relative paths are relative to the manifest's folder; the modality follows the file's suffix."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from generalist_cli.data.schema import RawItem
from generalist_cli.data.tables import SUFFIXES, Row, read_table
from generalist_cli.errors import GenError

VIDEO = {".mov", ".mp4", ".m4v", ".avi", ".mkv", ".webm", ".gif"}


def rows(path: Path) -> Iterator[Row]:
    """Rows of a TSV (``.tsv``, ``.txt``), CSV or JSONL manifest (:mod:`generalist_cli.data.tables`)."""
    if not path.is_file():
        raise GenError(f"{path}: not found", hint="give a .tsv, .csv or .jsonl manifest")
    if path.suffix.lower() not in SUFFIXES:
        raise GenError(f"{path}: unknown manifest type {path.suffix.lower()!r}", hint="use .tsv, .csv or .jsonl")
    return read_table(path, required=("path",))


def items(*, manifest: Path, lang: str | None = None, valid_every: int = 0) -> Iterator[RawItem]:
    from generalist_cli.languages import resolve_language

    base = manifest.parent
    for got in rows(manifest):
        n, row = got.line, got.fields
        problem = got.problem or ("" if row.get("path") not in (None, "") else "no path")
        if problem:
            yield RawItem(
                id=f"{manifest.stem}-{n:07d}",
                split="train",
                task="transcribe",
                modality="audio",
                source=manifest.name,
                text="",
                line=n,
                problem=problem,
            )
            continue
        media = Path(str(row["path"]))
        media = media if media.is_absolute() else base / media
        task = str(row.get("task") or ("sign" if media.suffix.lower() in VIDEO else "transcribe"))
        code = row.get("lang") or lang or ""
        try:
            code = resolve_language(code) if code else ""
        except GenError:
            pass  # kept as given; the user's own language tags
        split = str(row.get("split") or ("valid" if valid_every and n % valid_every == 0 else "train"))
        yield RawItem(
            id=f"{manifest.stem}-{n:07d}",
            split=split,
            task=task,
            modality="video" if media.suffix.lower() in VIDEO else "audio",
            source=media,
            text=str(row.get("target") or row.get("text") or ""),
            lang=code,
            line=n,
        )
