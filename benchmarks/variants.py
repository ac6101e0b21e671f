"""Architecture variants at the same active parameters: training loss after N steps on the tiny recipe's
data, FFN-layer speed, and a PEER layer at a million experts - in one run, on this CPU.

Variants (scratch generalists of one width; every token goes through the same number of FFN hidden units F):
- dense: Whisper's FFN of width F;
- mixtral 8x top-2: 8 experts of width F/2, 2 per token;
- fine-grained + shared (DeepSeekMoE): the FFN in 4 segments of width F/4, 1 shared, 3 routed groups of 8
  experts, top-1 per group;
- PEER: a dense FFN of width F/2 beside a PEER layer of 128^2 single-neuron experts, 4 heads x top-(F/8).
Each trains on the same batches (same seed) with AdamW; the loss is token cross-entropy (plus 0.01 x the
balance loss for the routed variants, not included in the reported CE).

    python benchmarks/variants.py [--steps 150] [--width 128] [--ffn 512] [--threads 2] [--json out.json]
        [--peer-million]   # also time and size one PEER layer with 1,048,576 experts (d_model 512)
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path


def configs(width: int, ffn: int, layers: int, vocab: int) -> dict:
    from generalist_cli.model.config import ModelConfig

    base = dict(
        n_audio_state=width,
        n_text_state=width,
        n_audio_head=4,
        n_text_head=4,
        n_audio_layer=layers,
        n_text_layer=layers,
        n_vocab=vocab,
        generalist=True,
    )
    return {
        "dense": ModelConfig(**base, n_audio_ffn=ffn, n_text_ffn=ffn),
        "mixtral 8x top-2": ModelConfig(**base, n_audio_ffn=ffn // 2, n_text_ffn=ffn // 2, n_experts=8, top_k=2),
        "fine-grained 3x8 top-1 + shared": ModelConfig(
            **base, n_audio_ffn=ffn, n_text_ffn=ffn, n_experts=8, top_k=1, moe_segments=4, moe_shared=1
        ),
        "PEER 128^2, 4 heads": ModelConfig(
            **base, n_audio_ffn=ffn // 2, n_text_ffn=ffn // 2, peer_experts=128 * 128, peer_heads=4, peer_top_k=ffn // 8
        ),
    }


def build(cfg, seed: int):
    import torch

    from generalist_cli.model.generalist import Generalist

    torch.manual_seed(seed)
    m = Generalist(cfg)
    with torch.no_grad():  # the scratch init of gen train (train/loop.py _scratch): one embedding scale
        m.decoder.embed_tokens.weight.normal_(0, 0.02)
        m.decoder.embed_positions.weight.normal_(0, 0.02)
        pos = m.encoder.embed_positions.weight
        pos.mul_(0.02 / pos.pow(2).mean().sqrt())
        for name, p in m.named_parameters():
            if name.endswith("up.weight"):  # PEER from scratch: up vectors small, not zero
                p.normal_(0, 0.02)
    return m


def train_loss(cfg, data, tokenizer, *, steps: int, batch: int, lr: float, seed: int) -> dict:
    import torch

    from generalist_cli.model.info import parameter_counts
    from generalist_cli.train.batches import collate
    from generalist_cli.train.step import StepModule

    model = build(cfg, seed).train()
    step = StepModule(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    losses, start = [], time.perf_counter()
    for s in range(steps):
        pairs = data.draw(seed=seed, step=s, n=batch)
        b = collate(data.rows(pairs), tokenizer, max_target_tokens=100)
        n = max(1, b.n_target_tokens)
        out = step(b)
        ce = out["ce_sum"] / n
        loss = ce + (0.01 * out["aux"] if "aux" in out else 0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(ce.detach()))
    total, active = parameter_counts(model)
    return {
        "params_total": total,
        "params_active": active,
        "first_ce": losses[0],
        "ce_last10": sum(losses[-10:]) / min(10, len(losses)),
        "seconds": time.perf_counter() - start,
        "curve": [round(x, 4) for x in losses],
    }


def layer_speed(cfg, tokens: int, repeats: int) -> dict:
    """Forward + backward of one encoder block's FFN part (norm, FFN/MoE/PEER) on ``tokens`` positions."""
    import torch

    block = build(cfg, 0).encoder.layers[0]
    x = torch.randn(1, tokens, cfg.n_audio_state, requires_grad=True)
    for _ in range(2):
        block.ffn(x)[0].sum().backward()
    t = time.perf_counter()
    for _ in range(repeats):
        block.ffn(x)[0].sum().backward()
    return {"ffn_fwd_bwd_ms": 1000 * (time.perf_counter() - t) / repeats}


def forward_seconds(module, x, repeats: int = 5) -> float:
    """Mean inference time of ``module(x)`` after one warm-up call."""
    import torch

    with torch.inference_mode():
        module(x)
        t = time.perf_counter()
        for _ in range(repeats):
            module(x)
    return (time.perf_counter() - t) / repeats


def peer_million(tokens: int) -> dict:
    import torch

    from generalist_cli.model.peer import PEER

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    layer = PEER(512, 1024 * 1024, heads=8, top_k=16)
    build_s = time.perf_counter() - t
    with torch.no_grad():
        layer.up.weight.normal_(0, 0.02)
    x = torch.randn(tokens, 512)
    fwd = forward_seconds(layer, x)
    dense_fwd = forward_seconds(
        torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512)), x
    )
    params = sum(p.numel() for p in layer.parameters())
    return {
        "experts": 1024 * 1024,
        "d_model": 512,
        "heads": 8,
        "top_k": 16,
        "params": params,
        "params_active_per_token": layer.active_parameters(),
        "weights_mb": params * 4 / 2**20,
        "peak_rss_growth_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
        "init_seconds": build_s,
        "tokens": tokens,
        "forward_ms": fwd * 1000,
        "dense_ffn_2048_forward_ms": dense_fwd * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/tiny-speak")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-million", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.recipe import DataSource
    from generalist_cli.store.store import tokenizer_for
    from generalist_cli.train.batches import TrainData

    tok_path = tokenizer_for("whisper-tiny.en")
    tokenizer = Tokenizer(tok_path, multilingual=False)
    data = TrainData([DataSource(path=args.data, tasks=("transcribe",))], tokenizer=tok_path)
    rows = []
    for name, cfg in configs(args.width, args.ffn, args.layers, 51864).items():
        row = {
            "variant": name,
            **train_loss(cfg, data, tokenizer, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed),
            **layer_speed(cfg, 2048, 10),
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    result = {
        "steps": args.steps,
        "batch": args.batch,
        "width": args.width,
        "ffn": args.ffn,
        "layers": args.layers,
        "threads": args.threads,
        "variants": rows,
    }
    print(
        f"\n| variant | params total | params active | CE step 0 | CE last 10 of {args.steps} "
        "| FFN fwd+bwd ms (2,048 pos.) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['params_total']:,} | {r['params_active']:,} | {r['first_ce']:.3f} | "
            f"{r['ce_last10']:.3f} | {r['ffn_fwd_bwd_ms']:.1f} |"
        )
    if args.peer_million:
        result["peer_million"] = peer_million(1024)
        print(json.dumps(result["peer_million"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
