"""Model surgery: sparse upcycling of a dense Whisper into the generalist, and adding experts later.

- :func:`upcycle` (Komatsuzaki et al. 2023): every expert is a copy of the block's dense FFN, routers are
  N(0, 0.02), TTT gates are zero, modality embeddings are zero and new task tokens are appended after
  Whisper's vocabulary. With renormalised top-k weights, copies of one FFN give that FFN for any routing,
  so the upcycled model computes the dense Whisper's function at step 0.
- :func:`add_experts` (lifelong learning, Lifelong-MoE, Chen et al. 2023): append experts (copies of an
  existing expert, or the mean of all) and router rows; the new experts' router logits get a ``-inf``
  bias so routing and outputs are bit-identical at the moment of adding. :func:`release_new_experts`
  lifts that bias when training starts to use them.
- :func:`freeze_experts`: keep the old experts (and their router rows) bit-identical while the rest trains:
  their gradients are zeroed by hooks and their values restored after each optimizer step (AdamW's weight
  decay moves a parameter even when its gradient is zero).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from generalist_cli.model.generalist import Generalist
from generalist_cli.model.moe import MoEFFN

DEFAULT_EXTRA_TOKENS = ("<|speech|>", "<|sign|>", "<|text|>")  # modality markers for new tasks


def upcycle(
    dense: Generalist,
    *,
    n_experts: int = 8,
    top_k: int = 2,
    ttt: str = "mlp",
    extra_tokens: tuple[str, ...] = DEFAULT_EXTRA_TOKENS,
    seed: int = 0,
    text_scale: float | None = None,
    segments: int = 1,
    shared: int = 0,
    conformer: bool = False,
    peer_experts: int = 0,
    peer_heads: int = 8,
    peer_top_k: int = 16,
    ttt_mini_batch: int = 16,
) -> Generalist:
    """A generalist that equals ``dense`` (a plain Whisper) at init. Text entering the encoder gets its
    token embeddings times ``text_scale`` (default sqrt(d_model), the Transformer's embedding scale: Whisper's
    token embeddings are ~25x smaller than its encoder positions, which would drown them).

    ``segments`` > 1 makes fine-grained experts (DeepSeekMoE): the dense FFN's hidden units are cut into
    ``segments`` equal parts; the first ``shared`` parts become the shared expert and every expert of routed
    group g a copy of part ``shared + g``; each part's output bias is 1/segments of the dense one, so the
    parts sum to the dense FFN (``n_experts`` and ``top_k`` count per group). ``conformer`` adds the conformer
    conv module and macaron FFN to every encoder block, behind gates that start at zero; ``peer_experts`` a
    PEER layer beside every FFN, whose up vectors start at zero."""
    if dense.config.n_experts > 1 or dense.config.generalist:
        raise ValueError("upcycle starts from a dense Whisper (one expert, no front-ends)")
    if segments < 1 or not 0 <= shared < segments or dense.config.n_audio_ffn % segments:
        raise ValueError(
            f"segments must divide the FFN width {dense.config.n_audio_ffn} and shared be in "
            f"0..segments-1 (got {segments}, {shared})"
        )
    scale = float(dense.config.n_audio_state) ** 0.5 if text_scale is None else float(text_scale)
    config = replace(
        dense.config,
        n_experts=n_experts,
        top_k=top_k,
        ttt=ttt,
        ttt_mini_batch=ttt_mini_batch,
        generalist=True,
        extra_tokens=tuple(extra_tokens),
        text_scale=scale,
        speech_progress=True,
        moe_segments=segments,
        moe_shared=shared,
        conformer=conformer,
        peer_experts=peer_experts,
        peer_heads=peer_heads,
        peer_top_k=peer_top_k,
    )
    torch.manual_seed(seed)
    model = Generalist(config).to(next(dense.parameters()).dtype)
    source = dense.state_dict()
    target = model.state_dict()
    with torch.no_grad():
        for name, value in source.items():
            if name in target and target[name].shape == value.shape:
                target[name].copy_(value)
            elif name == "decoder.embed_tokens.weight":  # Whisper's rows keep their ids; new rows stay N(0, 1)*0.02
                target[name][: value.shape[0]].copy_(value)
                target[name][value.shape[0] :].normal_(0, 0.02)
            elif (".fc1." in name or ".fc2." in name) and segments > 1:  # dense FFN -> shared + grouped parts
                _place_segments(target, name, value, segments=segments, shared=shared, n_experts=n_experts)
            elif ".fc1." in name or ".fc2." in name:  # dense FFN -> every expert
                prefix, rest = name.split(".fc", 1)
                layer, kind = rest.split(".")  # "1", "weight"
                target[f"{prefix}.moe.fc{layer}_{kind}"].copy_(
                    value.expand_as(target[f"{prefix}.moe.fc{layer}_{kind}"])
                )
            else:
                raise ValueError(f"cannot place {name} {tuple(value.shape)} in the generalist")
    model.load_state_dict(target)
    return model


def _place_segments(
    target: dict, name: str, value: torch.Tensor, *, segments: int, shared: int, n_experts: int
) -> None:
    """One dense FFN tensor (``...fc1.weight`` (H, D), ``fc1.bias`` (H,), ``fc2.weight`` (D, H), ``fc2.bias``
    (D,)) into the shared expert and the routed groups of a fine-grained MoE layer."""
    prefix, rest = name.split(".fc", 1)
    layer, kind = rest.split(".")
    moe = f"{prefix}.moe"
    groups = segments - shared
    if layer == "2" and kind == "bias":  # added once per part: each part carries 1/segments of it
        if shared:
            target[f"{moe}.shared_fc2.bias"].copy_(value * shared / segments)
        target[f"{moe}.fc2_bias"].copy_((value / segments).expand_as(target[f"{moe}.fc2_bias"]))
        return
    hidden_axis = 0 if layer == "1" else 1
    parts = value.chunk(segments, dim=hidden_axis)  # along the hidden units
    if shared:
        target[f"{moe}.shared_fc{layer}.{kind}"].copy_(torch.cat(parts[:shared], dim=hidden_axis))
    routed = torch.stack(parts[shared:])  # (groups, ...)
    dest = target[f"{moe}.fc{layer}_{kind}"]  # (groups * E, ...)
    dest.copy_(routed.repeat_interleave(n_experts, dim=0).view(groups * n_experts, *routed.shape[1:]))


def moe_layers(model: nn.Module) -> list[MoEFFN]:
    return [m for m in model.modules() if isinstance(m, MoEFFN)]


def add_experts(model: Generalist, n_new: int, *, init: str = "mean", source: int = 0) -> Generalist:
    """A copy of ``model`` with ``n_new`` more experts per MoE layer, masked out of routing (outputs unchanged).

    ``init``: "mean" (the mean of the existing experts) or "copy" (a copy of expert ``source``)."""
    c = model.config
    if c.n_experts < 2:
        raise ValueError("add_experts needs an MoE model; upcycle a dense Whisper first")
    if c.moe_segments > 1:
        raise ValueError(
            "add_experts grows Mixtral-style layers; fine-grained layers (moe_segments > 1) are not supported"
        )
    if n_new < 1:
        raise ValueError("add at least one expert")
    if init not in ("mean", "copy"):
        raise ValueError("init must be 'mean' or 'copy'")
    new = Generalist(replace(c, n_experts=c.n_experts + n_new)).to(next(model.parameters()).dtype)
    state = model.state_dict()
    target = new.state_dict()
    e = c.n_experts
    with torch.no_grad():
        for name, value in target.items():
            old = state[name]
            if old.shape == value.shape:
                value.copy_(old)
                continue
            value[:e].copy_(old)
            if name.endswith("router.weight"):
                value[e:].copy_(old.mean(0, keepdim=True) if init == "mean" else old[source : source + 1])
            elif name.endswith("logit_bias"):
                value[e:] = float("-inf")
            else:
                value[e:].copy_(old.mean(0, keepdim=True) if init == "mean" else old[source : source + 1])
    new.load_state_dict(target)
    return new


def release_new_experts(model: nn.Module) -> None:
    """Let the router choose the experts that :func:`add_experts` masked (their logit bias becomes 0)."""
    for moe in moe_layers(model):
        moe.logit_bias.zero_()


class ExpertFreeze:
    """Keeps experts ``[0, n)`` of every MoE layer (and their router rows) bit-identical during training."""

    _names = ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")

    def __init__(self, model: nn.Module, n: int, *, router: bool = True) -> None:
        self.n, self.router = n, router
        self.layers = moe_layers(model)
        self.saved = [
            {k: getattr(m, k)[:n].detach().clone() for k in self._names}
            | ({"router": m.router.weight[:n].detach().clone()} if router else {})
            for m in self.layers
        ]
        self.hooks = []
        for m in self.layers:
            params = [getattr(m, k) for k in self._names] + ([m.router.weight] if router else [])
            for p in params:
                self.hooks.append(p.register_hook(self._mask))

    def _mask(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[: self.n] = 0
        return grad

    @torch.no_grad()
    def restore(self) -> None:
        """Call after every optimizer step."""
        for m, saved in zip(self.layers, self.saved):
            for k in self._names:
                getattr(m, k)[: self.n].copy_(saved[k])
            if self.router:
                m.router.weight[: self.n].copy_(saved["router"])

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def freeze_experts(model: nn.Module, n: int, *, router: bool = True) -> ExpertFreeze:
    return ExpertFreeze(model, n, router=router)
