"""Isolated-sign video folders: INCLUDE (Indian Sign Language; Sridhar et al. 2020, Zenodo record 4010759,
263 signs in 15 categories) and WLASL-style releases (American Sign Language; Li et al. 2020).

Layouts read:
- INCLUDE: ``<Category>/<N>. <Sign>/MVI_dddd.MOV``; the label is the sign's folder name without its number.
- WLASL-style folders: ``<gloss>/<id>.mp4``, also below split folders (``train/<gloss>/<id>.mp4``, ``val``,
  ``valid``, ``test``: the folder is the split).
- The WLASL release itself: ``WLASL_v0.3.json`` (glosses, each with its instances' ``video_id`` and ``split``)
  beside the ``videos/<video_id>.mp4`` it describes; the JSON gives label and split.

Split lists shipped with a release (files whose names contain train / val / test, one relative path or file
name per line, CSV or text) choose the splits; without them (and without split folders or the WLASL JSON) a
stable hash of the path gives 80/10/10. ``subset="include50"`` uses the INCLUDE-50 lists (names containing 50)
and keeps only the signs they name.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterator

from generalist_cli.data.schema import RawItem
from generalist_cli.errors import GenError

RECORD = "https://zenodo.org/record/4010759"
SPLITS = ("train", "val", "test")
# .npy: landmark arrays (gen prepare synthetic-signs --pose), read by gen prepare include --features pose
VIDEO_SUFFIXES = {".mov", ".mp4", ".m4v", ".avi", ".mkv", ".webm", ".gif", ".npy"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
LAYOUTS = "no <Category>/<N>. <Sign>/*.MOV (INCLUDE), <gloss>/<id>.mp4 or WLASL_v0.3.json + videos/ (WLASL) below it"


def sign_name(folder: str) -> str:
    """``"12. Good Morning"`` -> ``"good morning"``."""
    return re.sub(r"^\s*\d+\s*[.)]\s*", "", folder).strip().lower()


def videos(root: Path) -> list[tuple[Path, str, str]]:
    """(path, category, sign) of every video below ``root``, sorted; a video in no layout the module reads
    has sign ``""``. WLASL-style ``<gloss>/<id>.mp4`` folders (and ``<split>/<gloss>/<id>.mp4``) have category
    ``""``; videos the WLASL JSON names take its gloss."""
    glosses = {vid: gloss for vid, (gloss, _) in _wlasl_index(root).items()}
    out = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(root).parts
        if glosses:
            out.append((path, "", glosses.get(path.stem, "")))
        elif len(rel) == 2 or (len(rel) == 3 and rel[0].lower() in SPLIT_FOLDERS):
            out.append((path, "", sign_name(rel[-2])))
        else:
            out.append((path, rel[-3], sign_name(rel[-2])) if len(rel) >= 3 else (path, "", ""))
    return out


def _wlasl_index(root: Path) -> dict[str, tuple[str, str]]:
    """``video_id -> (gloss, split)`` from a WLASL release's ``WLASL_v*.json`` at ``root`` (empty without one)."""
    found = sorted(root.glob("WLASL*.json"))
    if not found:
        return {}
    try:
        entries = json.loads(found[-1].read_text(encoding="utf-8"))
        return {
            str(inst["video_id"]): (str(entry["gloss"]).strip().lower(), SPLIT_FOLDERS.get(str(inst["split"]), ""))
            for entry in entries
            for inst in entry["instances"]
        }
    except (ValueError, KeyError, TypeError) as exc:
        raise GenError(f"{found[-1]}: not a WLASL index (a list of {{gloss, instances: [{{video_id, split}}]}}): {exc}")


def _split_of(path: Path, root: Path, lists: dict[str, set[str]], wlasl: dict[str, tuple[str, str]]) -> str | None:
    """The split a video belongs to: the WLASL JSON's, its split folder's, the split lists', or the hash's."""
    rel = path.relative_to(root)
    if wlasl:
        return wlasl.get(path.stem, ("", None))[1] or None
    if len(rel.parts) == 3 and rel.parts[0].lower() in SPLIT_FOLDERS:
        return SPLIT_FOLDERS[rel.parts[0].lower()]
    if lists:
        return next((s for s, entries in lists.items() if _listed(path, root, entries)), None)
    return _hash_split(rel.as_posix())


def _split_lists(root: Path, subset: str | None) -> dict[str, set[str]]:
    lists: dict[str, set[str]] = {}
    for f in sorted(root.glob("*")):
        if f.suffix.lower() not in (".csv", ".txt", ".tsv") or not f.is_file():
            continue
        name = f.stem.lower()
        if (subset == "include50") != ("50" in name):
            continue
        split = next((s for s in SPLITS if s in name or (s == "val" and "valid" in name)), None)
        if split is None:
            continue
        entries = set()
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            for cell in re.split(r"[,\t]", line):
                cell = cell.strip().strip('"')
                if Path(cell).suffix.lower() in VIDEO_SUFFIXES:
                    entries.add(cell.replace("\\", "/"))
        lists[split] = entries
    return lists


def _hash_split(rel: str) -> str:
    h = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % 10
    return "train" if h < 8 else ("val" if h == 8 else "test")


def items(*, local: Path | None, subset: str | None = None, splits: tuple[str, ...] = SPLITS) -> Iterator[RawItem]:
    if local is None:
        raise GenError("INCLUDE is not on the Hugging Face Hub", hint=f"download it from {RECORD} and pass --local DIR")
    if subset not in (None, "include50"):
        raise GenError(f"unknown INCLUDE subset {subset!r}", hint="use include50")
    found = videos(local)
    if not any(sign for _, _, sign in found):
        raise GenError(f"{local}: {LAYOUTS}")
    lists, wlasl = _split_lists(local, subset), _wlasl_index(local)
    if subset == "include50" and not lists:
        raise GenError(f"{local}: has no INCLUDE-50 split lists", hint="copy the include50 train/val/test lists there")
    signs = sorted({s for _, _, s in found if s})
    if subset == "include50":  # keep the signs the INCLUDE-50 lists name
        listed = set().union(*lists.values())
        found = [(p, c, s) for p, c, s in found if _listed(p, local, listed)]
        signs = sorted({s for _, _, s in found if s})
    label = {s: i for i, s in enumerate(signs)}
    for path, category, sign in found:
        rel = path.relative_to(local).as_posix()
        split = _split_of(path, local, lists, wlasl)
        problem = (
            ("not in the WLASL JSON" if wlasl else "not in a <Category>/<N>. <Sign>/ or <gloss>/ folder")
            if not sign
            else "in none of the split lists"
            if split is None
            else ""
        )
        if problem:  # reported in rejected.jsonl (under train), not dropped
            yield RawItem(
                id=f"include-{rel}".replace(" ", "_").replace("/", "-"),
                split="train",
                task="sign",
                modality="video",
                source=path,
                text=sign,
                lang="en",
                problem=problem,
            )
        elif split in splits:  # the splits the user asked for
            yield RawItem(
                id="-".join(["include", *filter(None, [category, sign, path.stem])]).replace(" ", "_"),
                split=split,
                task="sign",
                modality="video",
                source=path,
                text=sign,
                lang="en",
                label=label[sign],
            )


def _listed(path: Path, root: Path, entries: set[str]) -> bool:
    rel = path.relative_to(root).as_posix()
    return rel in entries or path.name in entries or any(rel.endswith(e) or e.endswith(rel) for e in entries)
