"""What a model is and costs: experts, layers, parameters (total and active per token), FLOPs.

``params_active`` counts what one token goes through: everything except the ``E - k`` experts a token does
not visit in each MoE layer (front-ends and heads of other modalities are counted too, as they are small).
FLOPs come from torch's flop counter: the encoder over one second of audio (50 positions, packed, no
padding) plus the decoder for four tokens (about a second of speech); ``flops_per_audio_second_padded``
charges the encoder a whole 30-second window per 30 seconds, as Whisper's padding does.
"""

from __future__ import annotations

import torch

from generalist_cli.model.generalist import Generalist
from generalist_cli.model.moe import MoEFFN
from generalist_cli.model.peer import PEER


def parameter_counts(model: Generalist) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for m in model.modules():
        if isinstance(m, MoEFFN):
            per_expert = sum(p[0].numel() for p in (m.fc1_weight, m.fc1_bias, m.fc2_weight, m.fc2_bias))
            inactive += (m.n_routed - m.k_routed) * per_expert
        if isinstance(m, PEER):
            inactive += sum(p.numel() for p in m.parameters()) - m.active_parameters()
    return total, total - inactive


_registered = False


def _register_grouped_mm() -> None:
    """torch's flop counter has no formula for grouped matmuls (the MoE dispatch): add one."""
    global _registered
    if _registered or not hasattr(torch.ops.aten, "_grouped_mm"):
        return
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.aten._grouped_mm)
    def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
        if len(a_shape) == 2 and len(b_shape) == 3:  # rows of a, each group's (K, N) matrix
            return 2 * a_shape[0] * a_shape[1] * b_shape[2]
        if len(a_shape) == 3:  # batched: (G, M, K) x (G, K, N)
            return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[-1]
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]  # 2D x 2D, groups along K

    _registered = True


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    _register_grouped_mm()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def flops_per_audio_second(model: Generalist, *, padded: bool = False, tokens: int = 4) -> float:
    """Encoder FLOPs for one second of audio (packed: 100 frames; padded: a 30 s window / 30) plus the decoder's
    for ``tokens`` tokens against that encoder output."""
    c = model.config
    dtype = next(model.parameters()).dtype
    frames = 3000 if padded else 100
    mel = torch.zeros(1, c.n_mels, frames, dtype=dtype)
    enc = model.encode_audio(mel)
    toks = torch.full((1, tokens), 50257, dtype=torch.long)
    encoder = _count(lambda: model.encode_audio(mel))
    decoder = _count(lambda: model.logits(model.decoder(toks, model.cross_kv(enc))))
    return encoder / (30.0 if padded else 1.0) + decoder


def describe(model: Generalist) -> dict:
    c = model.config
    total, active = parameter_counts(model)
    return {
        "architecture": "generalist" if c.generalist else "whisper",
        "moe": "fine-grained"
        if c.moe_segments > 1
        else "mixtral"
        if c.n_experts > 1
        else "peer"
        if c.peer_experts
        else "dense",
        "experts": c.n_experts,
        "top_k": c.top_k,
        "moe_segments": c.moe_segments,
        "moe_shared": c.moe_shared,
        "encoder": "conformer" if c.conformer else "whisper",
        "peer_experts": c.peer_experts,
        "ttt": c.ttt,
        "encoder_layers": c.n_audio_layer,
        "decoder_layers": c.n_text_layer,
        "d_model": c.n_audio_state,
        "heads": c.n_audio_head,
        "n_mels": c.n_mels,
        "vocabulary": c.n_total_vocab,
        "extra_tokens": list(c.extra_tokens),
        "params_total": total,
        "params_active": active,
        "flops_per_audio_second": flops_per_audio_second(model),
        "flops_per_audio_second_padded": flops_per_audio_second(model, padded=True),
    }
