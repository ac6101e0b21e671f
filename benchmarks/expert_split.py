"""How the routers split the tasks: per MoE layer, the share of each task's (token, slot) pairs that goes to
each expert, over held-out examples of every source of a recipe, as a heatmap grid (one panel per layer,
rows = task/language, columns = experts) and JSON. Also, per layer, the mean total-variation distance
between the tasks' expert distributions (0: every task routed alike; 1: disjoint experts).

    python benchmarks/expert_split.py runs/multitask-cpu/checkpoints/last [--recipe recipes/multitask-cpu.toml]
        [--per-task 16] [--png docs/multitask_experts.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--recipe", default="recipes/multitask-cpu.toml")
    ap.add_argument("--per-task", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from generalist_cli.model.upcycle import moe_layers
    from generalist_cli.recipe import load
    from generalist_cli.store.store import open_model
    from generalist_cli.train.batches import TrainData, collate
    from generalist_cli.train.step import StepModule

    loaded = open_model(args.checkpoint)
    m, tok, c = loaded.model, loaded.tokenizer, loaded.config
    recipe = load(Path(args.recipe))
    data = TrainData(recipe.data.sources, split_attr="eval_split")
    layers = moe_layers(m)
    names = [n for n, mod in m.named_modules() if mod in layers]
    label = ["enc " + n.split(".")[2] if n.startswith("encoder") else "dec " + n.split(".")[2] for n in names]
    counts: dict[str, np.ndarray] = {}
    key = {"task": ""}

    def hook(i):
        def f(mod, inputs, out):
            arr = counts.setdefault(key["task"], np.zeros((len(layers), c.n_experts)))
            arr[i] += out[1].counts.detach().cpu().double().numpy()

        return f

    hooks = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    step = StepModule(m, capacity=recipe.data.capacity)
    m.eval()
    by_task: dict[str, list] = {}
    for s, ds in enumerate(data.sets):
        rows = data.rows([(s, i) for i in range(len(ds))])
        for r in rows:
            by_task.setdefault(f"{r['task']}/{r['lang']}", []).append(r)
    with torch.inference_mode():
        for task, rows in sorted(by_task.items()):
            key["task"] = task
            batch = collate(
                rows[: args.per_task],
                tok,
                max_target_tokens=recipe.data.max_target_tokens,
                phonemes=c.tts_input == "phonemes",
            )
            for e in batch.examples:  # one example at a time: no packing across tasks
                step.forward(type(batch)([e]))
    for h in hooks:
        h.remove()
    tasks = sorted(counts)
    share = {t: counts[t] / counts[t].sum(1, keepdims=True).clip(min=1) for t in tasks}
    tv = [
        float(np.mean([0.5 * np.abs(share[a][i] - share[b][i]).sum() for a, b in itertools.combinations(tasks, 2)]))
        for i in range(len(layers))
    ]
    result = {
        "checkpoint": args.checkpoint,
        "tasks": tasks,
        "examples_per_task": args.per_task,
        "layers": label,
        "share": {t: np.round(share[t], 4).tolist() for t in tasks},
        "task_distance": dict(zip(label, np.round(tv, 3).tolist())),
    }
    print(json.dumps({"tasks": tasks, "task_distance": result["task_distance"]}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = 6
        rows_n = (len(layers) + cols - 1) // cols
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.2 * cols, 0.45 * len(tasks) * rows_n + 1.5), squeeze=False)
        for i, ax in enumerate(axes.flat):
            if i >= len(layers):
                ax.axis("off")
                continue
            grid = np.stack([share[t][i] for t in tasks])
            ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(0.5, float(grid.max())), aspect="auto")
            ax.set_title(f"{label[i]} (TV {tv[i]:.2f})", fontsize=9)
            ax.set_xticks(range(c.n_experts))
            ax.set_yticks(range(len(tasks)), tasks if i % cols == 0 else [""] * len(tasks), fontsize=8)
        fig.suptitle("share of each task's routed (token, slot) pairs per expert")
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
