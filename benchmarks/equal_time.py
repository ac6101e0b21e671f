"""The generalist against the dense fine-tune at equal wall-clock time, on real Hindi speech (``--task asr-hi``,
the default) or on real English -> Hindi translations (``--task translate``).

Both runs start together, one CPU thread each (the machine's 2 cores shared equally), from whisper-base with
`recipes/asr-hi-real.toml` and the same data, seed and learning-rate schedule, for the same training-time
budget (`train.max_minutes`: evaluations are not counted), evaluated every `--every` minutes on the whole
`valid` split (111 utterances: loss, greedy WER/CER, script share):

- generalist: upcycled to 8 experts top-2 with TTT-MLP in every block, encoder frozen
  (`model.train_encoder=false`: the recipe's fastest form on a CPU, docs/benchmarks.md);
- dense: plain whisper-base, every weight trained (`model.upcycle=false`, `model.ttt=none`).

    gen prepare kathbath --lang hi --local ../shared/data/air-hindi-1h --out data/kathbath-hi
    python benchmarks/equal_time.py --minutes 60 --every 20          # runs both (about 80 min with evaluations)
    python benchmarks/equal_time.py --collect                        # the table of runs already made

``--task translate``: `recipes/translate-real.toml` (7,507 human en-hi pairs), scored every `--every` minutes on the
first 100 FLORES-200 dev pairs (BLEU, chrF, chrF++, greedy); the generalist is the recipe as written (8 experts
top-2, TTT-MLP, the encoder trained: it must learn to read text), the dense peer the same generalist with one
expert and no TTT (`model.experts=1`, `model.top_k=1`, `model.ttt=none`: Whisper's dense FFN, the same text
front-end):

    gen prepare wiki-translate --local ../shared/data/parallel-en-hi/train.tsv --out data/parallel-en-hi
    gen prepare wiki-translate --local ../shared/data/parallel-en-hi/dev.tsv --split test --out data/flores-dev-en-hi
    python benchmarks/equal_time.py --task translate --minutes 60 --every 20 --prefix tr60

Writes benchmarks/results/equal_time_hi.json (or equal_time_translate.json): per run, its evaluations (step,
training seconds and the task's scores) and training speed; peak RSS from `/usr/bin/time -v` when it ran under it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "asr-hi": {
        "recipe": "recipes/asr-hi-real.toml",
        "source": "kathbath-hi",
        "scores": ("loss", "wer", "cer", "script"),
        "examples": 111,
        "runs": {
            "generalist": ["--set", "model.train_encoder=false"],
            "dense": ["--set", "model.upcycle=false", "--set", "model.ttt=none"],
        },
        "results": "equal_time_hi.json",
    },
    "translate": {
        "recipe": "recipes/translate-real.toml",
        "source": "flores-dev-en-hi",
        "scores": ("loss", "bleu", "chrf", "chrf++"),
        "examples": 100,
        "runs": {
            "generalist": [],
            "dense": ["--set", "model.experts=1", "--set", "model.top_k=1", "--set", "model.ttt=none"],
        },
        "results": "equal_time_translate.json",
    },
}


def launch(task: dict, name: str, minutes: float, every: float, prefix: str) -> subprocess.Popen:
    n = task["examples"]
    common = [f"train.max_minutes={minutes}", "train.max_steps=100000", "train.save_every=100000", "eval.every=0",
              f"eval.every_minutes={every}", f"eval.wer_examples={n}", f"eval.max_examples={n}"]  # fmt: skip
    args = [a for s in common for a in ("--set", s)] + ["--set", f"run.name={prefix}-{name}", *task["runs"][name]]
    log = open(ROOT / "runs" / f"{prefix}-{name}.time.txt", "w")
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "generalist_cli", "train", task["recipe"], *args]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)


def collect(task: dict, prefix: str) -> dict:
    out = {}
    for name in task["runs"]:
        run = ROOT / "runs" / f"{prefix}-{name}"
        if not (run / "eval.jsonl").exists():
            continue
        evals = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rss = None
        for log in (ROOT / "runs" / f"{prefix}-{name}.time.txt", Path(f"/tmp/{prefix}/{name}.err")):
            if log.exists():
                m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
                rss = round(int(m.group(1)) / 1e6, 2) if m else rss
        speeds = sorted(m["examples_per_s"] for m in metrics)
        out[name] = {
            "evals": [
                {
                    "step": e["step"],
                    "train_min": round(e["train_s"] / 60, 1),
                    **{k: round(e[task["source"]][k], 4) for k in task["scores"]},
                }
                for e in evals
            ],  # fmt: skip
            "steps": metrics[-1]["step"],
            "train_min": round(metrics[-1]["train_s"] / 60, 1),
            "examples_per_s_median": round(speeds[len(speeds) // 2], 3),
            "peak_rss_gb": rss,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--every", type=float, default=20)
    ap.add_argument("--prefix", default="hi60")
    ap.add_argument("--task", choices=sorted(TASKS), default="asr-hi")
    ap.add_argument("--collect", action="store_true", help="only tabulate runs already made")
    a = ap.parse_args()
    task = TASKS[a.task]
    if not a.collect:
        procs = [launch(task, n, a.minutes, a.every, a.prefix) for n in task["runs"]]
        for p in procs:
            p.wait()
    result = collect(task, a.prefix)
    dest = ROOT / "benchmarks" / "results" / task["results"]
    dest.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result.items():
        print(f"{name}: {r['steps']} steps in {r['train_min']} min, {r['examples_per_s_median']} ex/s, "
              f"peak {r['peak_rss_gb']} GB")  # fmt: skip
        for e in r["evals"]:
            scores = " ".join(f"{k} {e[k]:.3f}" for k in task["scores"])
            print(f"  step {e['step']:>4} at {e['train_min']:>5} min: {scores}")


if __name__ == "__main__":
    main()
