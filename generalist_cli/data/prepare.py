"""Prepare a dataset: adapter items -> featurised rows in shards -> one ``datasets.DatasetDict`` on disk.

Stages (re-runnable, in the spirit of icefall's ``prepare.sh``):
1. items are cut into shards of ``shard_size`` per split, in the adapter's (stable) order;
2. each shard is featurised (in ``num_proc`` processes) and saved under ``OUT/.work/<split>/shard-NNNNN``
   with its rejected rows and a ``done`` marker, so an interrupted run continues where it stopped;
3. the shards of each split are concatenated and saved with ``save_to_disk`` as ``OUT/<split>``
   (``datasets.load_from_disk(OUT)`` gives the DatasetDict), ``rejected.jsonl`` lists every bad row with
   its reason, and ``prepare.json`` stamps the source, options, counts and version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from generalist_cli import __version__
from generalist_cli.data.schema import RawItem, Reject
from generalist_cli.errors import GenError, is_write_failure, write_failure

STAMP = "prepare.json"


@dataclass
class Report:
    out: Path
    counts: dict[str, int] = field(default_factory=dict)  # examples per split
    rejected: dict[str, int] = field(default_factory=dict)  # rejected items per reason
    read: int = 0  # items (rows, files, lines) the adapter gave: read == taken + rejected
    taken: int = 0  # items that became one or more examples
    reused_shards: int = 0
    seconds: float = 0.0
    already: bool = False

    @property
    def examples(self) -> int:
        return sum(self.counts.values())

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def accounting(self) -> str:
        """The summary's account of every item: ``997 read = 997 taken + 0 rejected``."""
        return f"{self.read} read = {self.taken} taken + {self.n_rejected} rejected"


_featurizer = None


def _init_worker(tokenizer: str, n_mels: int, threads: int, video_features: str = "patches") -> None:
    global _featurizer
    import torch

    from generalist_cli.data.featurize import Featurizer

    torch.set_num_threads(threads)
    _featurizer = Featurizer(tokenizer, n_mels=n_mels, video_features=video_features)


def _run_shard(shard_dir: str, items: list[RawItem], n_mels: int) -> tuple[int, int, dict[str, int]]:
    """Featurise ``items`` and save the shard atomically; returns (examples, items taken, rejected by reason).
    Every item is taken or rejected (an unexpected error rejects it with that error)."""
    import datasets

    from generalist_cli.data.schema import features

    datasets.disable_progress_bars()
    rows, rejected, taken = [], [], 0
    for item in items:
        try:
            made = _featurizer(item)
        except Reject as exc:
            rejected.append(_rejected(item, str(exc)))
            continue
        except Exception as exc:  # a bug or an unexpected library error must not lose the other rows
            rejected.append(_rejected(item, f"unexpected {type(exc).__name__}: {str(exc)[:160]}"))
            continue
        if not made:
            rejected.append(_rejected(item, "made no example"))
            continue
        rows.extend(made)
        taken += 1
    final = Path(shard_dir)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if rows:  # a shard whose items were all rejected keeps only its report
        datasets.Dataset.from_list(rows, features=features(n_mels)).save_to_disk(str(tmp / "data"))
    with open(tmp / "rejected.jsonl", "w", encoding="utf-8") as fh:
        for r in rejected:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    (tmp / "done").write_text(json.dumps({"examples": len(rows), "taken": taken, "rejected": len(rejected)}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return len(rows), taken, reasons


def _rejected(item: RawItem, reason: str) -> dict:
    """A rejected.jsonl entry: which item, where it came from (file and line), why."""
    source = item.source[:80] if isinstance(item.source, str) else str(getattr(item.source, "name", item.source))
    entry = {"id": item.id, "split": item.split, "source": source[:200], "reason": reason}
    return entry | ({"line": item.line} if item.line else {})


SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")


def _shards(items: Iterable[RawItem], shard_size: int, limit: int | None) -> Iterator[tuple[str, int, list[RawItem]]]:
    """(split, index, items) in order; at most ``limit`` items per split. A split is a folder name below
    ``--out``: one that is not a plain name (a manifest's ``../../x``) stops the run before it is used."""
    pending: dict[str, list[RawItem]] = {}
    index: dict[str, int] = {}
    seen: dict[str, int] = {}
    for item in items:
        if item.split not in seen and not SPLIT_NAME.fullmatch(item.split):
            raise GenError(
                f"{item.id}: split {item.split!r} is not a plain name",
                hint="use letters, digits and _ (train, valid, test_known)",
            )
        n = seen.get(item.split, 0)
        if limit is not None and n >= limit:
            continue
        seen[item.split] = n + 1
        pending.setdefault(item.split, []).append(item)
        if len(pending[item.split]) >= shard_size:
            i = index.get(item.split, 0)
            index[item.split] = i + 1
            yield item.split, i, pending.pop(item.split)
    for split, rest in pending.items():
        yield split, index.get(split, 0), rest


def prepare(
    items: Iterable[RawItem],
    *,
    out: Path,
    source: str,
    options: dict,
    tokenizer: Path,
    n_mels: int = 80,
    num_proc: int = 1,
    shard_size: int = 256,
    limit: int | None = None,
    force: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Report:
    """Run the stages above; ``on_progress(n)`` is told of every ``n`` items done."""
    import datasets

    datasets.disable_progress_bars()
    started = time.perf_counter()
    wanted = {"source": source, "options": options, "limit": limit, "n_mels": n_mels}
    previous = _previous(out, wanted, force)
    if previous is not None:
        return previous
    work = _work_dir(out)
    report = Report(out)
    done_shards: list[tuple[str, int]] = []

    def finished(split: str, idx: int, n_items: int, examples: int, taken: int, reasons: dict[str, int]) -> None:
        done_shards.append((split, idx))
        report.read += n_items
        report.taken += taken
        for k, v in reasons.items():
            report.rejected[k] = report.rejected.get(k, 0) + v
        if on_progress is not None:
            on_progress(n_items)

    try:
        shards = _shards(items, shard_size, limit)
        report.reused_shards = _featurize(shards, work, tokenizer=tokenizer, n_mels=n_mels, num_proc=num_proc,
                                          finished=finished,
                                          video_features=options.get("features", "patches"))  # fmt: skip
        report.counts = _assemble(out, work, sorted(done_shards))
    except OSError as exc:  # a full disk or a folder that became unwritable; finished shards stay for a rerun
        if not is_write_failure(exc):
            raise
        raise write_failure(
            out, exc, hint="free disk space and run the same command again: finished shards are kept"
        ) from exc
    report.seconds = time.perf_counter() - started
    if report.examples == 0:
        raise GenError(
            f"{out}: no example could be prepared ({sum(report.rejected.values())} rejected)",
            hint=f"see {out / 'rejected.jsonl'}",
        )
    if report.read != report.taken + report.n_rejected:  # every item is taken or rejected (_run_shard)
        raise GenError(f"{out}: {report.accounting()} does not add up; this is a bug in gen prepare")
    _write_json(out / STAMP, _stamp(report, wanted, tokenizer))
    shutil.rmtree(work, ignore_errors=True)
    return report


def _previous(out: Path, wanted: dict, force: bool) -> Report | None:
    """The report of a complete dataset already prepared with the same options (nothing to do); refuses one
    made with other options unless ``force``."""
    stamp_path = out / STAMP
    if not stamp_path.exists():
        return None
    stamp = json.loads(stamp_path.read_text())
    same = {k: stamp.get(k) for k in wanted} == wanted
    if stamp.get("status") == "complete" and same and not force:
        return Report(out, stamp.get("counts", {}), stamp.get("rejected_reasons", {}), already=True,
                      read=stamp.get("read", 0), taken=stamp.get("taken", 0))  # fmt: skip
    if not same and not force:
        raise GenError(
            f"{out}: already holds a prepared dataset made with other options",
            hint="choose another --out, or pass --force to replace it",
        )
    return None


def _work_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        work = out / ".work"
        work.mkdir(exist_ok=True)
    except OSError as exc:
        raise GenError(f"{out}: cannot write ({exc.strerror})", hint="check the folder is writable") from exc
    return work


def _reuse(shard_dir: Path) -> tuple[int, int, dict[str, int]] | None:
    """(examples, taken, rejected by reason) of a shard a previous run finished, else None."""
    if not (shard_dir / "done").exists():
        return None
    reasons: dict[str, int] = {}
    for line in (shard_dir / "rejected.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)["reason"]
        reasons[r] = reasons.get(r, 0) + 1
    done = json.loads((shard_dir / "done").read_text())
    return done["examples"], done.get("taken", done["examples"]), reasons


def _featurize(shards, work: Path, *, tokenizer: Path, n_mels: int, num_proc: int, finished,
               video_features: str = "patches") -> int:  # fmt: skip
    """Featurise every shard not finished before (in this process, or ``num_proc`` workers with at most
    2 x num_proc shards in flight); ``finished(split, idx, n_items, examples, taken, reasons)`` is told of each.
    Returns the number of shards reused."""
    threads = 1 if num_proc > 1 else max(1, min(4, os.cpu_count() or 1))
    reused = 0
    if num_proc <= 1:
        _init_worker(str(tokenizer), n_mels, threads, video_features)
        for split, idx, chunk in shards:
            shard_dir = work / split / f"shard-{idx:05d}"
            got = _reuse(shard_dir)
            reused += got is not None
            finished(split, idx, len(chunk), *(got or _run_shard(str(shard_dir), chunk, n_mels)))
        return reused
    init = (str(tokenizer), n_mels, threads, video_features)
    with ProcessPoolExecutor(num_proc, initializer=_init_worker, initargs=init) as pool:
        running = {}
        for split, idx, chunk in shards:
            shard_dir = work / split / f"shard-{idx:05d}"
            got = _reuse(shard_dir)
            if got is not None:
                reused += 1
                finished(split, idx, len(chunk), *got)
                continue
            running[pool.submit(_run_shard, str(shard_dir), chunk, n_mels)] = (split, idx, len(chunk))
            while len(running) >= 2 * num_proc:  # bounded: items are not all held in memory
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(*running.pop(fut), *fut.result())
        for fut in list(running):
            finished(*running.pop(fut), *fut.result())
    return reused


def _stamp(report: Report, wanted: dict, tokenizer: Path) -> dict:
    return {
        **wanted,
        "status": "complete",
        "counts": report.counts,
        "read": report.read,
        "taken": report.taken,
        "rejected": report.n_rejected,
        "rejected_reasons": report.rejected,
        "tokenizer": str(tokenizer),
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
        "gen_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(report.seconds, 2),
    }


def tokenizer_fingerprint(path: Path) -> str:
    """Which vocabulary made the token ids: the first 16 hex digits of the tokenizer.json's SHA-256."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _assemble(out: Path, work: Path, shards: list[tuple[str, int]]) -> dict[str, int]:
    """Concatenate each split's shards into ``OUT/<split>`` and gather ``rejected.jsonl``."""
    import datasets

    by_split: dict[str, list[Path]] = {}
    for split, idx in shards:
        by_split.setdefault(split, []).append(work / split / f"shard-{idx:05d}")
    tmp = out / ".assemble"
    shutil.rmtree(tmp, ignore_errors=True)
    parts = {}
    for split, dirs in by_split.items():
        sets = [datasets.load_from_disk(str(d / "data")) for d in dirs if (d / "data").exists()]
        if sets:
            parts[split] = datasets.concatenate_datasets(sets)
    counts = {k: len(v) for k, v in parts.items()}
    if parts:
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        for old in [out / "dataset_dict.json", *(out / s for s in counts)]:
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        for entry in tmp.iterdir():
            os.replace(entry, out / entry.name)
        shutil.rmtree(tmp, ignore_errors=True)
    with open(out / "rejected.jsonl.tmp", "w", encoding="utf-8") as fh:
        for split, dirs in by_split.items():
            for d in dirs:
                fh.write((d / "rejected.jsonl").read_text(encoding="utf-8"))
    os.replace(out / "rejected.jsonl.tmp", out / "rejected.jsonl")
    return counts


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
