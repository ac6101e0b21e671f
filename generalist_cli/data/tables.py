"""Tables the user gives (TSV, CSV, JSONL), read one way for ``gen prepare`` (manifest, wiki-translate,
INCLUDE label files) and every other reader of them, so the same rows reach training, evaluation and
conversion.

- **TSV** is read as TSV: a line is a row, tabs split its fields, quotes are characters (real text is full
  of them: the standard csv dialect would read a field that opens with ``"`` as a quoted field running on
  through tabs and lines to the next quote).
- **CSV** keeps the standard quoting (RFC 4180): a quoted field may hold commas, quotes and newlines.
- **JSONL**: a line is one JSON object.

UTF-8 with or without a BOM, LF or CRLF. Every line after the header is accounted for: a :class:`Row` holds
its fields, or the problem that keeps it from becoming an example (a blank line, a wrong number of fields,
bad JSON); the adapters send those to ``rejected.jsonl`` with the line number. A row with more fields than
the header is taken when the extra fields are empty (a trailing tab). Text is returned as given; the one
normalisation, NFC and trimmed ends, happens in featurisation (docs/data.md).
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from generalist_cli.errors import GenError

SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".txt")


def clean(text: str) -> str:
    """The one normalisation a text gets before the model sees it (docs/data.md), in ``gen prepare`` and
    ``gen run`` alike: Unicode NFC, surrounding white space trimmed. Everything else stays as given."""
    return unicodedata.normalize("NFC", text).strip()


def text_lines(text: str) -> list[str]:
    """The non-empty lines of a text, each :func:`clean`; lines end at LF (or CRLF) only, as in the tables:
    ``str.splitlines`` would also cut at U+2028, form feeds and other separators inside a line."""
    return [x for x in (clean(line) for line in text.split("\n")) if x]


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the file where the row starts
    fields: dict = field(default_factory=dict)
    problem: str = ""  # why the row cannot be read ("" when it can)


def read_table(
    path: Path, *, required: tuple[str, ...] = (), tsv_suffixes: tuple[str, ...] = (".tsv", ".txt"), header: bool = True
) -> Iterator[Row]:
    """Rows of ``path`` by its suffix (``.csv``: CSV; ``.jsonl``/``.json``: JSONL; ``tsv_suffixes``: TSV).
    ``header=False``: a TSV without a header line (Kathbath's transcripts), fields keyed 0, 1, ... A header
    without a ``required`` column, an unknown suffix or a file that is not UTF-8 is a GenError naming the
    file: no row of it could be read."""
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GenError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if suffix in (".jsonl", ".json"):
        yield from _jsonl(path, _lines(path, data))
    elif suffix == ".csv":
        yield from _csv(path, _text(path, data), required)
    elif suffix in tsv_suffixes and not header:
        for n, line in enumerate(_lines(path, data), 1):
            yield Row(n, problem="blank line") if not line.strip() else Row(n, dict(enumerate(line.split("\t"))))
    elif suffix in tsv_suffixes:
        yield from _tsv(path, _lines(path, data), required)
    else:
        raise GenError(f"{path}: unknown table type {suffix!r}", hint="use .tsv, .csv or .jsonl")


def _text(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise GenError(
            f"{path}:{line}: not UTF-8 (byte {data[exc.start]:#04x})", hint="save the file as UTF-8"
        ) from None


def _lines(path: Path, data: bytes) -> list[str]:
    """The file's lines without their LF or CRLF; split on LF only (a stray CR, U+2028 or form feed inside
    a field stays in the field)."""
    text = _text(path, data)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [x[:-1] if x.endswith("\r") else x for x in lines]


def _header(path: Path, names: list[str], required: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GenError(f"{path}: the header names {', '.join(repr(n) for n in twice)} more than once")
    missing = [c for c in required if c not in names]
    if missing:
        raise GenError(
            f"{path}: the header has no {', '.join(repr(c) for c in missing)} column "
            f"(it has {', '.join(repr(n) for n in names) or 'nothing'})"
        )
    return names


def _fit(names: list[str], values: list[str], line: int) -> Row:
    if len(values) > len(names) and not any(v.strip() for v in values[len(names) :]):
        values = values[: len(names)]  # trailing tabs or commas
    if len(values) != len(names):
        return Row(line, problem=f"{len(values)} field(s), the header has {len(names)}")
    return Row(line, dict(zip(names, values)))


def _tsv(path: Path, lines: list[str], required: tuple[str, ...]) -> Iterator[Row]:
    if not lines or not lines[0].strip():
        raise GenError(f"{path}: the first line is not a header", hint="the first line names the columns")
    names = _header(path, lines[0].split("\t"), required)
    for n, line in enumerate(lines[1:], 2):
        blank = not line.strip() and "\t" not in line  # a line of tabs is a row of empty fields
        yield Row(n, problem="blank line") if blank else _fit(names, line.split("\t"), n)


def _csv(path: Path, text: str, required: tuple[str, ...]) -> Iterator[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise GenError(f"{path}:1: not a CSV header ({exc})") from None
    if not first or not any(x.strip() for x in first):
        raise GenError(f"{path}: the first line is not a header", hint="the first line names the columns")
    names = _header(path, first, required)
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(start, problem=f"not CSV ({exc})")
            continue
        yield Row(start, problem="blank line") if not any(v.strip() for v in values) else _fit(names, values, start)


def _jsonl(path: Path, lines: list[str]) -> Iterator[Row]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            yield Row(n, problem="blank line")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(n, problem=f"not JSON ({exc.msg} at column {exc.colno})")
            continue
        yield Row(n, obj) if isinstance(obj, dict) else Row(n, problem="not a JSON object")
