"""Pruning before export.

- :func:`magnitude_prune`: global unstructured magnitude pruning: the smallest ``sparsity`` fraction of all
  prunable weights (every Linear/expert/attention matrix, not embeddings, norms or biases) set to zero,
  with one threshold for the whole model (``torch.nn.utils.prune.global_unstructured`` semantics).
- :func:`expert_usage` + :func:`drop_experts`: run calibration audio through the model, count how often each
  expert of each MoE layer is chosen, and remove the least-used experts: their weights and their router
  rows go, the layer's expert count shrinks and ``top_k`` is clipped to the experts left, so routing stays
  a valid top-k over the remaining experts (softmax over the kept rows, renormalised top-k weights); with
  one expert left the layer becomes the dense FFN it then computes.
"""

from __future__ import annotations

import torch
from torch import nn

from generalist_cli.errors import UsageError


def prunable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of every matrix pruning may touch: linear and expert weights (not routers, which are
    tiny and decide routing; not embeddings, convolutions, norms or biases)."""
    out = []
    for name, p in model.named_parameters():
        if p.dim() < 2 or "embed" in name or "conv" in name or "router" in name or "norm" in name:
            continue
        if name.endswith("weight"):
            out.append((name, p))
    return out


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float) -> dict:
    """Zero the globally smallest ``sparsity`` fraction of :func:`prunable` weights; returns what happened."""
    if not 0 <= sparsity < 1:
        raise UsageError(f"--prune must be in [0, 1), not {sparsity}")
    weights = [p for _, p in prunable(model)]
    total = sum(p.numel() for p in weights)
    k = int(round(sparsity * total))
    if k:
        # one exact threshold: the k-th smallest |w| over all prunable matrices together
        threshold = torch.cat([p.abs().flatten().float() for p in weights]).kthvalue(k).values
        for p in weights:
            p.masked_fill_(p.abs() <= threshold, 0.0)
    zeros = sum(int((p == 0).sum()) for p in weights)
    return {"sparsity_requested": sparsity, "sparsity": zeros / max(1, total), "pruned_weights": total}


@torch.no_grad()
def expert_usage(
    model, mels: list[torch.Tensor], tokenizer, *, language: str = "en", max_new_tokens: int = 64
) -> list[torch.Tensor]:
    """Per MoE layer, how many (token, slot) assignments each expert got on ``mels`` (each (n_mels, 3000)):
    the encoder on the audio and the decoder on its own greedy transcript."""
    from generalist_cli.infer.decoding import DecodeOptions, decode
    from generalist_cli.model.upcycle import moe_layers

    layers = moe_layers(model)
    counts = [torch.zeros(m.n_experts, dtype=torch.long) for m in layers]
    hooks = [
        m.register_forward_hook(lambda mod, args, out, i=i: counts[i].add_(out[1].counts.cpu()))
        for i, m in enumerate(layers)
    ]
    try:
        for mel in mels:
            feats = model.encode_audio(mel[None])
            cache = model.new_cache(feats)
            prompt = tokenizer.sot_sequence(language=language if tokenizer.multilingual else None, timestamps=False)
            decode(
                model,
                tokenizer,
                cache,
                [prompt],
                DecodeOptions(timestamps=False, max_new_tokens=max_new_tokens),
                list(model.config.suppress_tokens),
            )
    finally:
        for h in hooks:
            h.remove()
    return counts


@torch.no_grad()
def drop_experts(model, n_drop: int, usage: list[torch.Tensor]):
    """A copy of ``model`` without the ``n_drop`` least-used experts of every MoE layer (by ``usage``)."""
    from dataclasses import replace

    from generalist_cli.model.generalist import Generalist
    from generalist_cli.model.upcycle import moe_layers

    c = model.config
    if c.n_experts <= 1:
        raise UsageError("--prune-experts needs a mixture-of-experts model (this one is dense)")
    if c.moe_segments > 1:
        raise UsageError(
            "--prune-experts prunes Mixtral-style layers; this model has fine-grained experts",
            hint="use --prune (magnitude pruning) instead",
        )
    if not 0 < n_drop < c.n_experts:
        raise UsageError(f"--prune-experts must be between 1 and {c.n_experts - 1} for {c.n_experts} experts")
    keep_n = c.n_experts - n_drop
    config = replace(c, n_experts=keep_n, top_k=min(c.top_k, keep_n))
    new = Generalist(config).to(next(model.parameters()).dtype)
    state = model.state_dict()
    kept = []
    for i, (old_moe, use) in enumerate(zip(moe_layers(model), usage)):
        keep = torch.sort(torch.argsort(use, descending=True, stable=True)[:keep_n]).values
        kept.append(keep.tolist())
    names = [n for n, m in model.named_modules() if m in set(moe_layers(model))]
    for name, keep in zip(names, kept):
        idx = torch.tensor(keep)
        if keep_n == 1:  # one expert left: it gets every token with weight 1, i.e. it is the dense FFN
            block = name.removesuffix(".moe")
            for key in ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"):
                layer, kind = key.split("_")
                state[f"{block}.{layer}.{kind}"] = state.pop(f"{name}.{key}")[keep[0]]
            del state[f"{name}.logit_bias"], state[f"{name}.router.weight"]
            continue
        for key in ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias", "logit_bias"):
            state[f"{name}.{key}"] = state[f"{name}.{key}"][idx]
        state[f"{name}.router.weight"] = state[f"{name}.router.weight"][idx]
    new.load_state_dict(state)
    return new.eval(), {
        "experts_before": c.n_experts,
        "experts_after": keep_n,
        "top_k": config.top_k,
        "kept": dict(zip(names, kept)),
    }
