"""Kathbath (AI4Bharat; Javed et al. 2022, arXiv 2208.11761): read Indic speech in 12 languages.

Hub: ``ai4bharat/Kathbath`` (gated), one config per language name, splits train / valid / test_known /
test_unknown, audio in the ``audio_filepath`` column. Local copy of the original release: per split a
folder of ``<id>-<speaker>-<m|f>.m4a`` files (anywhere below it) and a headerless tab-separated
``transcription_n2w.txt`` of ``<file name>\\t<text>`` lines; the root may be the language folder or hold
one folder per language.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from generalist_cli.data.schema import AudioBytes, RawItem
from generalist_cli.data.tables import read_table
from generalist_cli.errors import GenError

HUB_ID = "ai4bharat/Kathbath"
LANGUAGES = {
    "bn": "bengali",
    "gu": "gujarati",
    "hi": "hindi",
    "kn": "kannada",
    "ml": "malayalam",
    "mr": "marathi",
    "or": "odia",
    "pa": "punjabi",
    "sa": "sanskrit",
    "ta": "tamil",
    "te": "telugu",
    "ur": "urdu",
}
SPLITS = ("train", "valid", "test_known", "test_unknown")
TRANSCRIPTS = ("transcription_n2w.txt", "transcription.txt")


def language(value: str) -> str:
    """Kathbath language code from a code (hi, hin) or name (hindi, Odia, oriya)."""
    from generalist_cli.errors import UsageError
    from generalist_cli.languages import resolve_language

    v = value.strip().lower()
    if v in ("odia", "oriya", "ory", "ori"):
        return "or"
    code = v if v in LANGUAGES else None
    if code is None:
        try:
            code = resolve_language(v)
        except UsageError:
            code = None
    if code not in LANGUAGES:
        raise UsageError(
            f"Kathbath has no language {value!r}",
            hint="use one of: " + ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items()),
        )
    return code


def items(
    *,
    lang: str,
    splits: tuple[str, ...] = SPLITS,
    local: Path | None = None,
    repo: str = HUB_ID,
    text_column: str | None = None,
    limit: int | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[RawItem]:
    """Items of every split in turn; ``limit`` per split (a streamed hub split stops reading there). A split
    the release lacks (the Hub's parquet release has train and valid only) is skipped and ``on_skip`` told
    in one line; none found is an error. ``repo``: a Hub id or a local folder in the Hub's layout, read by
    ``datasets.load_dataset`` exactly as the Hub."""
    from itertools import islice

    code = language(lang)
    found = 0
    for split in splits:
        if split not in SPLITS:
            raise GenError(f"Kathbath has no split {split!r}", hint="use " + ", ".join(SPLITS))
        rows = _local(local, code, split) if local is not None else _hub(code, split, text_column, repo)
        if rows is None:
            if on_skip is not None:
                on_skip(f"Kathbath {LANGUAGES[code]}: {local or repo} has no {split!r} split; skipped")
            continue
        found += 1
        yield from islice(rows, limit)
    if not found:
        raise GenError(f"{local or repo}: has none of the Kathbath {LANGUAGES[code]} splits {', '.join(splits)}",
                       hint="its splits are " + ", ".join(SPLITS[:2]) + " on the Hub; pass --splits")  # fmt: skip


def _local(root: Path, code: str, split: str) -> Iterator[RawItem] | None:
    """The split's items, or None when the release was copied without it."""
    name = LANGUAGES[code]
    candidates = [root / name / split, root / code / split, root / split, root / name / "data" / split]
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        if split == "train" or any((root / s).is_dir() or (root / name / s).is_dir() for s in SPLITS if s != split):
            return None
        raise GenError(
            f"{root}: no Kathbath {name} split folders", hint=f"expected {name}/{split}/ or {split}/ below it"
        )
    return _local_rows(folder, code, split)


def _local_rows(folder: Path, code: str, split: str) -> Iterator[RawItem]:
    transcript = next((folder / t for t in TRANSCRIPTS if (folder / t).exists()), None)
    if transcript is None:
        raise GenError(f"{folder}: has no {TRANSCRIPTS[0]}")
    audio = {p.stem: p for p in sorted(folder.rglob("*.m4a"))}
    named = set()
    for row in read_table(transcript, header=False):  # TSV: quotes are characters
        key = Path(row.fields.get(0, "").strip()).stem if not row.problem else f"line-{row.line}"
        named.add(key)
        path = audio.get(key, folder / f"{key}.m4a")  # a missing file is rejected with its reason later
        values = [v for i, v in sorted(row.fields.items()) if i < 2 or v.strip()]  # a trailing tab is no field
        text = values[1] if len(values) == 2 else ""
        problem = row.problem or (
            "" if len(values) == 2 else f"{len(values)} field(s), expected <file name><TAB><text>"
        )
        yield _item(code, split, key, path, text, line=row.line, problem=problem)
    for key, path in audio.items():  # speech the transcript does not name is reported, not dropped
        if key not in named:
            yield _item(code, split, key, path, "", problem=f"no line in {transcript.name}")


def _item(code: str, split: str, key: str, source, text: str, **kw) -> RawItem:
    return RawItem(id=f"kathbath-{code}-{split}-{key}", split=split, task="transcribe", modality="audio",
                   source=source, text=text, lang=code, **kw)  # fmt: skip


def _hub(code: str, split: str, text_column: str | None, repo: str = HUB_ID) -> Iterator[RawItem] | None:
    """The split's items from the Hub (or a local copy in its layout), or None when it has no such split."""
    from generalist_cli.data.hub import first_column, load_hub

    try:
        ds = load_hub(repo, config=LANGUAGES[code], split=split)
    except GenError as exc:
        if isinstance(exc.__cause__, ValueError) and "split" in str(exc.__cause__).lower():
            return None  # datasets: "Bad split: test_known. Available splits: ['train', 'valid']"
        raise
    columns = list(ds.features or {})
    audio_col = first_column(columns, ("audio_filepath", "audio"), what="audio", hub_id=repo)
    text_col = text_column or first_column(
        columns, ("text", "transcript", "transcription", "sentence"), what="text", hub_id=repo
    )
    return _hub_rows(ds, code, split, audio_col, text_col)


def _hub_rows(ds, code: str, split: str, audio_col: str, text_col: str) -> Iterator[RawItem]:
    from datasets import Audio

    ds = ds.cast_column(audio_col, Audio(decode=False))  # we decode the bytes with PyAV ourselves
    for i, row in enumerate(ds):
        audio = row[audio_col] or {}
        name = Path(audio.get("path") or f"{i:08d}").stem
        source = AudioBytes(audio.get("bytes") or b"", name) if audio.get("bytes") else Path(audio.get("path") or "")
        yield _item(code, split, name, source, str(row.get(text_col) or ""))
