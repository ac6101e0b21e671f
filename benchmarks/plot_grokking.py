"""Plot the grokking run and its weight-decay-0 control from their eval.jsonl: answer accuracy on the
training equations and on the held-out half, and the held-out loss, against the step.

    python benchmarks/plot_grokking.py runs/grokking runs/grokking-wd0 --out docs/grokking.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curves(run: Path) -> dict[str, list[float]]:
    rows = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines() if x.strip()]
    out = {"step": [], "train": [], "valid": [], "valid_loss": []}
    for r in rows:
        held = next(v for k, v in r.items() if isinstance(v, dict) and not k.endswith("/train"))
        seen = next(v for k, v in r.items() if isinstance(v, dict) and k.endswith("/train"))
        out["step"].append(r["step"])
        out["train"].append(seen["accuracy"])
        out["valid"].append(held["accuracy"])
        out["valid_loss"].append(held["loss"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/grokking.png"))
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
    for run, color in zip(a.runs, ("tab:blue", "tab:red", "tab:green")):
        c = curves(run)
        wd = next(
            (
                line.split("=")[1].strip()
                for line in (run / "recipe.resolved.toml").read_text().splitlines()
                if line.startswith("weight_decay")
            ),
            "?",
        )
        acc.plot(c["step"], c["train"], "--", color=color, label=f"{run.name} train (wd {wd})")
        acc.plot(c["step"], c["valid"], "-", color=color, label=f"{run.name} held-out (wd {wd})")
        loss.plot(c["step"], c["valid_loss"], "-", color=color, label=f"{run.name} held-out loss")
        print(
            f"{run.name}: last step {c['step'][-1]}, train acc {c['train'][-1]:.3f}, held-out acc "
            f"{c['valid'][-1]:.3f}, best held-out acc {max(c['valid']):.3f}"
        )
    acc.set_xlabel("step (full batch: one epoch)")
    acc.set_ylabel("answer accuracy")
    acc.set_ylim(-0.02, 1.02)
    acc.legend(fontsize=8)
    loss.set_xlabel("step")
    loss.set_ylabel("held-out cross-entropy per target token")
    loss.legend(fontsize=8)
    fig.suptitle("a + b mod 97 on the generalist's text path (50 % of the table trains)")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(a.out)


if __name__ == "__main__":
    main()
