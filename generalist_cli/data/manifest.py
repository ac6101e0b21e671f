"""The user's own data: a TSV, CSV or JSONL manifest with ``path`` and ``text`` columns, optionally ``lang``,
``task`` (transcribe | translate | sign), ``target`` (text to produce instead of ``text``) and ``split``.
Relative paths are relative to the manifest's folder; the modality follows the file's suffix."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from generalist_cli.data.schema import RawItem
from generalist_cli.errors import GenError

VIDEO = {".mov", ".mp4", ".avi", ".mkv", ".webm"}


def rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a TSV/CSV/JSONL manifest; a malformed line is a GenError naming it."""
    if not path.is_file():
        raise GenError(f"{path}: not found", hint="give a .tsv, .csv or .jsonl manifest")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line)
                        if not isinstance(obj, dict):
                            raise GenError(f"{path}:{n}: not a JSON object")
                        yield n, obj
        elif suffix in (".tsv", ".csv", ".txt"):
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh, delimiter="," if suffix == ".csv" else "\t")
                if not reader.fieldnames or "path" not in reader.fieldnames:
                    raise GenError(f"{path}: the header has no 'path' column (it has {reader.fieldnames})")
                for n, row in enumerate(reader, 2):
                    yield n, row
        else:
            raise GenError(f"{path}: unknown manifest type {suffix!r}", hint="use .tsv, .csv or .jsonl")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise GenError(f"{path}: not a readable manifest ({type(exc).__name__}: {str(exc)[:120]})") from exc


def items(*, manifest: Path, lang: str | None = None, valid_every: int = 0) -> Iterator[RawItem]:
    from generalist_cli.languages import resolve_language

    base = manifest.parent
    for n, row in rows(manifest):
        if "path" not in row or row.get("path") in (None, ""):
            yield RawItem(id=f"{manifest.name}:{n}", split="train", task="transcribe", modality="audio",
                          source=base / f"<line {n}: no path>", text="")
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
        yield RawItem(id=f"{manifest.stem}-{n:07d}", split=split, task=task,
                      modality="video" if media.suffix.lower() in VIDEO else "audio", source=media,
                      text=str(row.get("target") or row.get("text") or ""), lang=code)
