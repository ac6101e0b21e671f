"""Training on real Hindi utterances: speed, peak memory and where the time goes, per model variant.

The recipe is ``recipes/asr-hi-real.toml`` (whisper-base upcycled to 8 experts top-2 with TTT-MLP in every block,
batch 8, bf16 autocast) on the real Hindi of ``../shared/data/air-hindi-1h`` prepared by ``gen prepare kathbath``.
Each variant runs in its own process (its peak RSS is its own), draws the same batches as ``gen train`` (seed 42,
steps 0..N-1) and times forward, backward and the optimizer step; step 0 is a warm-up and is not counted.
Variants (``--set`` overrides of the recipe):
  - dense: plain whisper-base fine-tuned (no experts, no TTT), the peer;
  - moe: the upcycled experts without TTT;
  - moe+ttt: the recipe as written;
  - moe+ttt, frozen encoder: ``model.train_encoder=false``;
  - moe+ttt with 64-token TTT mini-batches (``model.ttt_mini_batch=64``; TTT-Video's size), 4x fewer inner steps.
Then one step of the recipe under ``torch.profiler``: self CPU time by operator family.

    gen prepare kathbath --lang hi --local ../shared/data/air-hindi-1h --out data/kathbath-hi
    python benchmarks/train_profile.py [--steps 5] [--threads 2] [--only "mini-batch,(peer)"] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "dense whisper-base (peer)": ["model.upcycle=false", "model.ttt=none"],
    "MoE 8x top-2": ["model.ttt=none"],
    "MoE 8x top-2 + TTT-MLP (the recipe)": [],
    "MoE + TTT-MLP, encoder frozen": ["model.train_encoder=false"],
    "MoE + TTT-MLP, TTT mini-batch 64": ["model.ttt_mini_batch=64"],
}
FAMILIES = {  # operator -> part of the model it comes from (self CPU time)
    "aten::bmm": "batched matmuls (TTT inner loop; per-example attention)",
    "aten::baddbmm": "TTT state update",
    "aten::gelu_backward": "TTT inner loop (GELU derivative)",
    "aten::mm": "linear layers and experts (matmuls)",
    "aten::addmm": "linear layers and experts (matmuls)",
    "aten::_grouped_mm": "linear layers and experts (matmuls)",
}


def _setup(overrides: list[str], threads: int):
    import torch

    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.recipe import load
    from generalist_cli.train.batches import TrainData, collate
    from generalist_cli.train.loop import build_model, freeze_unused
    from generalist_cli.train.step import StepModule

    torch.set_num_threads(threads)
    r = load(ROOT / "recipes" / "asr-hi-real.toml", overrides)
    torch.manual_seed(r.run.seed)
    model, tok_path, _ = build_model(r, None)
    c = model.config
    tok = Tokenizer(tok_path, multilingual=c.multilingual, extra_tokens=c.extra_tokens, n_vocab=c.n_vocab)
    freeze_unused(model, r)
    data = TrainData(r.data.sources, tokenizer=tok_path)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r.train.lr, betas=r.train.betas, eps=r.train.eps)

    def batch(step: int):
        pairs = data.draw(
            seed=r.run.seed, step=step, n=r.train.batch_size, sampling=r.train.sampling, capacity=r.data.capacity
        )
        return collate(data.rows(pairs), tok, max_target_tokens=r.data.max_target_tokens)

    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=r.train.mixed_precision == "bf16")  # noqa: E731
    return StepModule(model, capacity=r.data.capacity), opt, batch, autocast, sum(p.numel() for p in params)


def run_variant(overrides: list[str], steps: int, threads: int) -> dict:
    step_module, opt, batch, autocast, trainable = _setup(overrides, threads)
    rows = []
    for step in range(steps):
        b = batch(step)
        t0 = time.perf_counter()
        with autocast():
            out = step_module(b)
        t1 = time.perf_counter()
        (out["ce_sum"] / max(1, b.n_target_tokens) + 1e-3 * out.get("aux", 0.0)).backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        audio = sum(e.source.shape[-1] for e in b.examples) / 100
        rows.append(
            {
                "forward": t1 - t0,
                "backward": t2 - t1,
                "optimizer": t3 - t2,
                "examples": len(b.examples),
                "audio_s": audio,
            }
        )
    timed = rows[1:]
    total = sum(r["forward"] + r["backward"] + r["optimizer"] for r in timed)
    return {
        "examples_per_s": sum(r["examples"] for r in timed) / total,
        "audio_s_per_s": sum(r["audio_s"] for r in timed) / total,
        **{k: sum(r[k] for r in timed) / len(timed) for k in ("forward", "backward", "optimizer")},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "trainable_params_m": trainable / 1e6,
    }


def profile(threads: int) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step_module, _, batch, autocast, _ = _setup([], threads)
    b = batch(1)
    with autocast():  # warm-up
        step_module(b)["ce_sum"].backward()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        with autocast():
            out = step_module(b)
        out["ce_sum"].backward()
    parts: dict[str, float] = {}
    for e in prof.key_averages():
        if e.key.startswith("autograd::") or e.key.endswith("Backward0"):
            family = "autograd engine"
        else:
            family = FAMILIES.get(e.key, "elementwise, copies, indexing")
        parts[family] = parts.get(family, 0.0) + e.self_cpu_time_total / 1e6
    parts = dict(sorted(parts.items(), key=lambda kv: -kv[1]))
    sdpa = sum(e.cpu_time_total for e in prof.key_averages() if e.key == "aten::scaled_dot_product_attention")
    return {**parts, "(of all: attention forward, inclusive)": sdpa / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", help="comma-separated parts of variant names to run (no profile step)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        kind, *overrides = json.loads(args.child)
        result = profile(args.threads) if kind == "profile" else run_variant(overrides, args.steps, args.threads)
        print(json.dumps(result))
        return
    if not (ROOT / "data" / "kathbath-hi").exists():
        sys.exit(
            "data/kathbath-hi is missing: gen prepare kathbath --lang hi --local "
            "../shared/data/air-hindi-1h --out data/kathbath-hi"
        )
    results = {}
    wanted = [w.strip() for w in args.only.split(",")] if args.only else None
    variants = {k: v for k, v in VARIANTS.items() if wanted is None or any(w in k for w in wanted)}
    for name, sets in [*variants.items(), *([("profile", None)] if wanted is None else [])]:
        child = json.dumps(["profile"] if sets is None else ["run", *sets])
        done = subprocess.run(
            [sys.executable, __file__, "--child", child, "--steps", str(args.steps), "--threads", str(args.threads)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    print(
        f"\n| variant (batch 8 real utterances, {args.threads} threads) | examples/s | audio s/s | forward s | "
        "backward s | optimizer s | peak RSS GB | trainable M |\n|---|---|---|---|---|---|---|---|"
    )
    for name in variants:
        r = results[name]
        print(
            f"| {name} | {r['examples_per_s']:.2f} | {r['audio_s_per_s']:.1f} | {r['forward']:.2f} | "
            f"{r['backward']:.2f} | {r['optimizer']:.2f} | {r['peak_rss_gb']:.1f} | {r['trainable_params_m']:.0f} |"
        )
    if "profile" not in results:
        return _save(args.json, results)
    total = sum(v for k, v in results["profile"].items() if not k.startswith("("))
    print("\n| part (one step of the recipe, self CPU time) | seconds | share |\n|---|---|---|")
    for part, secs in results["profile"].items():
        print(f"| {part} | {secs:.2f} | {secs / total:.0%} |")
    _save(args.json, results)


def _save(path: Path | None, results: dict) -> None:
    if path:
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
