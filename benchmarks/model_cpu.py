"""Model layers on CPU, in one run: MoE vs dense FFN, TTT dual vs primal, encoder packed vs padded.

1. MoE FFN (8 experts, top-2, whisper-base sizes D=512, H=2048) vs the dense FFN on the same tokens, with
   the sorted grouped-matmul dispatch and with the loop-over-experts dispatch. Target: MoE <= 2.5x dense.
2. TTT-MLP over 256 tokens: dual form (one call) vs primal form (token by token, as in decoding).
3. The whisper-base encoder on 5-second utterances: padded to 30-second windows (Whisper) vs packed into
   2048-position rows (Patch n' Pack). Target: >= 4x more utterances per second. Padding fraction reported.

    python benchmarks/model_cpu.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch


def timeit(fn, *, repeat: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def eager_loop(moe, x):
    """transformers' eager Mixtral dispatch, the reference: a mask per expert, gather, FFN, index_add."""
    _, weights, idx = moe.route(x)
    y = torch.zeros_like(x)
    mask = torch.nn.functional.one_hot(idx, moe.n_experts).permute(2, 1, 0)  # (E, k, N)
    for e in range(moe.n_experts):
        slot, token = torch.where(mask[e])
        if token.numel():
            hdn = torch.nn.functional.gelu(x[token] @ moe.fc1_weight[e].T + moe.fc1_bias[e])
            out = (hdn @ moe.fc2_weight[e].T + moe.fc2_bias[e]) * weights[token, slot, None]
            y.index_add_(0, token, out)
    return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--utterances", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from generalist_cli.model.moe import MoEFFN
    from generalist_cli.model.packing import pack, plan_rows
    from generalist_cli.model.ttt import TTTMLP

    rows = []
    with torch.inference_mode():
        d, h, n = 512, 2048, 4096
        x = torch.randn(n, d)
        fc1, fc2 = torch.nn.Linear(d, h), torch.nn.Linear(h, d)
        dense = timeit(lambda: fc2(torch.nn.functional.gelu(fc1(x))))
        moe = MoEFFN(d, h, 8, 2, dispatch="grouped")
        grouped = timeit(lambda: moe(x))
        moe.dispatch = "sorted"
        ordered = timeit(lambda: moe(x))
        loop = timeit(lambda: eager_loop(moe, x))
        rows.append(("dense FFN, 4096 tokens", dense, "1.00x"))
        rows.append(
            ("MoE 8 experts top-2, sorted + grouped_mm (GPU default)", grouped, f"{grouped / dense:.2f}x dense")
        )
        rows.append(
            ("MoE 8 experts top-2, sorted + per-expert blocks (CPU default)", ordered, f"{ordered / dense:.2f}x dense")
        )
        rows.append(
            ("MoE 8 experts top-2, HF eager loop (one-hot mask, where, index_add)", loop, f"{loop / dense:.2f}x dense")
        )

        ttt = TTTMLP(512, 8)
        xs = torch.randn(1, 256, 512)
        dual = timeit(lambda: ttt(xs), repeat=3)

        def primal():
            state = None
            for t in range(256):
                _, state = ttt(xs[:, t : t + 1], state)

        prim = timeit(primal, repeat=1)
        rows.append(("TTT-MLP 256 tokens, dual form (one call)", dual, "1.00x"))
        rows.append(("TTT-MLP 256 tokens, primal form (token by token)", prim, f"{prim / dual:.1f}x dual"))

        from generalist_cli.store.load import load_model
        from generalist_cli.store.store import resolve

        model = load_model(resolve("whisper-base")).model
        u = args.utterances
        mels = torch.randn(u, 80, 500)  # 5 s each: 500 frames -> 250 positions

        def padded():
            for i in range(0, u, 4):
                batch = torch.nn.functional.pad(mels[i : i + 4], (0, 2500))
                model.encode_audio(batch)

        def packed():
            seqs = [model.embed_audio(m[None])[0] for m in mels]
            plan = plan_rows([s.shape[0] for s in seqs], 2048)
            xp, packing = pack(seqs, plan, width=2048)
            model.encode(xp, packing)
            return packing

        t_pad = timeit(padded, repeat=2)
        t_pack = timeit(packed, repeat=2)
        fraction = packed().padding_fraction
        rows.append((f"whisper-base encoder, {u} x 5 s padded to 30 s", t_pad, f"{u / t_pad:.1f} utt/s"))
        rows.append(
            (
                f"whisper-base encoder, {u} x 5 s packed in 2048 rows",
                t_pack,
                f"{u / t_pack:.1f} utt/s ({t_pad / t_pack:.1f}x; padding {fraction:.1%})",
            )
        )

    print(f"torch {torch.__version__}, {args.threads} threads\n")
    print("| measurement | seconds | relative |")
    print("|---|---|---|")
    for name, sec, rel in rows:
        print(f"| {name} | {sec:.4f} | {rel} |")


if __name__ == "__main__":
    main()
