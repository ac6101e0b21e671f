"""Wikipedia-derived parallel text for text -> text translation.

Hub: ``soketlabs/bhasha-wiki-translated`` by default (``--hub-id``), one column per language named by its
FLORES-200 code (``eng_Latn``, ``hin_Deva`` ...); ``--src-column``/``--tgt-column`` override. Local copy:
parquet, TSV, CSV or JSONL files with the same columns (all files below ``--local`` are read, sorted; TSV as
TSV, quotes are characters: :mod:`generalist_cli.data.tables`). Every row becomes an example or a
``rejected.jsonl`` entry with its line and reason (empty source or target, a wrong number of fields, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from generalist_cli.data.schema import RawItem
from generalist_cli.data.tables import Row, read_table
from generalist_cli.errors import GenError

HUB_ID = "soketlabs/bhasha-wiki-translated"
HUB_CONFIG = "wiki_translated"  # its config: one row per article, each language column a list of sentences
FLORES = {
    "en": "eng_Latn",
    "hi": "hin_Deva",
    "bn": "ben_Beng",
    "gu": "guj_Gujr",
    "kn": "kan_Knda",
    "ml": "mal_Mlym",
    "mr": "mar_Deva",
    "or": "ory_Orya",
    "pa": "pan_Guru",
    "sa": "san_Deva",
    "ta": "tam_Taml",
    "te": "tel_Telu",
    "ur": "urd_Arab",
    "as": "asm_Beng",
    "ne": "npi_Deva",
    "sd": "snd_Arab",
}


def column_for(lang: str) -> str:
    from generalist_cli.errors import UsageError
    from generalist_cli.languages import resolve_language

    code = "or" if lang.lower() in ("or", "odia", "oriya", "ory") else resolve_language(lang)
    if code not in FLORES:
        raise UsageError(f"no FLORES column known for {lang!r}", hint="name it with --src-column/--tgt-column")
    return FLORES[code]


def items(
    *,
    src_lang: str,
    tgt_lang: str,
    local: Path | None = None,
    hub_id: str = HUB_ID,
    src_column: str | None = None,
    tgt_column: str | None = None,
    split: str = "train",
    valid_fraction: float = 0.01,
    limit: int | None = None,
    into: str | None = None,
    config: str | None = HUB_CONFIG,
) -> Iterator[RawItem]:
    """Rows as ``text_translate`` items; every ``1/valid_fraction``-th row goes to the ``valid`` split, or
    every row to ``into`` (a held-out file prepared as one split). ``limit`` stops reading after that many
    rows (a streamed hub dataset is not read further)."""
    from itertools import islice

    src_col, tgt_col = src_column or column_for(src_lang), tgt_column or column_for(tgt_lang)
    src_code = "or" if src_lang.lower() in ("or", "odia") else src_lang
    rows = islice(_local_rows(local) if local is not None else _hub_rows(hub_id, split, config), limit)
    every = max(1, round(1 / valid_fraction)) if valid_fraction > 0 else 0
    checked = False
    for i, (where, got) in enumerate(rows):
        row = got.fields
        which = into or ("valid" if every and i % every == every - 1 else "train")
        base = dict(
            id=f"wiki-{src_col}-{tgt_col}-{i:09d}",
            split=which,
            task="text_translate",
            modality="text",
            lang=_code(tgt_lang),
            src_lang=_code(src_code),
            line=got.line,
        )
        if got.problem:
            yield RawItem(**base, source=where, text="", problem=got.problem)
            continue
        if not checked and (src_col not in row or tgt_col not in row):  # a wrong column name: stop at once
            raise GenError(
                f"{where}: no column {src_col if src_col not in row else tgt_col}",
                hint="columns are: " + ", ".join(row) + "; name them with --src-column/--tgt-column",
            )
        checked = True
        missing = [c for c in (src_col, tgt_col) if c not in row]
        src, tgt = row.get(src_col), row.get(tgt_col)
        if isinstance(src, (list, tuple)) or isinstance(tgt, (list, tuple)):  # the Hub's one row per article
            yield from _article(base, where, src, tgt, src_col, tgt_col)
            continue
        yield RawItem(
            **base,
            source=str(src or ""),
            text=str(tgt or ""),
            problem=f"no column {missing[0]}" if missing else "",
        )


def _article(base: dict, where: str, src, tgt, src_col: str, tgt_col: str) -> Iterator[RawItem]:
    """An article's aligned sentence lists as one item per sentence pair (``<id>-<j>``); lists of unequal
    length cannot be paired by position and are rejected as one item saying so, as is an empty article."""
    src = list(src) if isinstance(src, (list, tuple)) else [] if src is None else [src]
    tgt = list(tgt) if isinstance(tgt, (list, tuple)) else [] if tgt is None else [tgt]
    if len(src) != len(tgt):
        yield RawItem(**base, source=where, text="",
                      problem=f"{len(src)} {src_col} sentences, {len(tgt)} {tgt_col}: not aligned")  # fmt: skip
        return
    if not src:
        yield RawItem(**base, source=where, text="", problem="an article with no sentences")
        return
    for j, (a, b) in enumerate(zip(src, tgt)):
        yield RawItem(**{**base, "id": f"{base['id']}-{j:04d}"}, source=str(a or ""), text=str(b or ""))


def _code(lang: str) -> str:
    from generalist_cli.languages import resolve_language

    return "or" if lang.lower() in ("or", "odia", "oriya") else resolve_language(lang)


def _hub_rows(hub_id: str, split: str, config: str | None) -> Iterator[tuple[str, Row]]:
    from generalist_cli.data.hub import load_hub

    for i, row in enumerate(load_hub(hub_id, config=config, split=split)):
        yield hub_id, Row(i + 1, row)


def _local_rows(root: Path) -> Iterator[tuple[str, Row]]:
    """(file, row) of every table below ``root``; a parquet row's ``line`` is its row number (1-based)."""
    files = (
        [root]
        if root.is_file()
        else sorted(p for p in root.rglob("*") if p.suffix.lower() in (".parquet", ".tsv", ".csv", ".jsonl", ".json"))
    )
    if not files:
        raise GenError(f"{root}: no parquet/TSV/CSV/JSONL files")
    for f in files:
        if f.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            n = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    n += 1
                    yield f.name, Row(n, row)
        else:
            for row in read_table(f, tsv_suffixes=(".tsv",)):
                yield f.name, row
