"""Checkpoints: ``<run>/checkpoints/step_NNNNNNN/`` holds the model as a store folder (so ``gen run`` and
``gen eval`` load it directly) plus ``optimizer.pt`` (tensors only; loaded with ``weights_only=True``) and
``trainer.json`` (step, RNG states, data position). Each is written to a temporary folder, fsynced and
renamed; ``last`` is a symlink swapped atomically to the newest complete one; older ones beyond
``keep_last`` are removed."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from generalist_cli.errors import GenError


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save(
    run_dir: Path,
    *,
    step: int,
    model,
    tokenizer: Path,
    optimizer,
    trainer: dict,
    keep_last: int,
    tasks: list[str] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically; ``tasks`` (what the model has been trained on, this run and the
    checkpoints it started from) go into ``meta.json`` for ``gen run`` to check conversions against."""
    from generalist_cli.store.store import save_model

    ckpts = run_dir / "checkpoints"
    final = ckpts / f"step_{step:07d}"
    tmp = ckpts / f".step_{step:07d}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(
            model,
            tokenizer,
            tmp,
            name=final.name,
            source=f"train:{run_dir.name}",
            kind="checkpoint",
            force=True,
            extra_meta={"step": step, "run": str(run_dir), "tasks": sorted(tasks or [])},
        )
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **trainer, "rng": rng_state()}))
        for f in ("optimizer.pt", "trainer.json"):
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        link = ckpts / ".last.tmp"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(final.name)
        os.replace(link, ckpts / "last")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise GenError(
            f"{final}: cannot write the checkpoint ({exc.strerror})",
            hint="free disk space or choose another run folder; earlier checkpoints are intact",
        ) from exc
    steps = sorted(p for p in ckpts.glob("step_*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep_last)]:
        if old.resolve() != final.resolve():
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    last = run_dir / "checkpoints" / "last"
    if last.exists() and (last / "trainer.json").exists():
        return last.resolve()
    steps = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if (p / "trainer.json").exists())
    return steps[-1] if steps else None


def load_trainer(ckpt: Path) -> dict:
    return json.loads((ckpt / "trainer.json").read_text())


def load_optimizer(ckpt: Path, optimizer) -> None:
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
