"""Mixture-of-Experts feed-forward layer (Mixtral: Jiang et al. 2024; dropless dispatch as in MegaBlocks).

Router: ``p = softmax(x W_r)`` in float32, keep the top-k, renormalise so the k weights sum to 1, and
``y = sum_s w_s * Expert_{idx_s}(x)``. Each expert is Whisper's FFN: ``fc2(GELU(fc1(x)))`` with biases.
Dispatch is dropless: the (token, slot) pairs are sorted by expert, so each expert's rows are one contiguous
block, and the blocks go through the expert weights as a grouped matmul, never a Python loop over tokens.
``dispatch="grouped"`` uses ``torch.nn.functional.grouped_mm`` (one kernel for all experts; the fast path on
GPUs); ``"sorted"`` multiplies each contiguous block by its expert's weights in turn (faster on CPU here:
1.8x vs 2.5x the dense FFN's time, benchmarks/model_cpu.py; also the path for float64 and torch < 2.9).
``"auto"`` picks grouped on CUDA and for training (its backward is 1.4x faster than the sorted path's on
this CPU), and sorted for inference on CPU. ``"dense"`` runs every expert and zero-weights the unchosen
ones: no data-dependent shapes. ``"index"`` is top-k for graphs: per expert, the tokens that chose it
(``nonzero``), its FFN on those rows only and an ``index_add`` back (NonZero/Gather/MatMul/ScatterND in ONNX),
k/E of the dense FLOPs; ``gen export`` uses it (``dense`` with ``--experts all``).

Fine-grained + shared experts (DeepSeekMoE, Dai et al. 2024, arXiv 2401.06066): the FFN's hidden units are
split into ``m`` segments; ``shared_hidden`` units (K_s segments) form an always-on shared expert, and each
of the other ``groups = m - K_s`` segments becomes a group of ``n_experts`` small experts (width H/m) of
which the router picks ``top_k`` per group (softmax and renormalisation within the group), so a token uses
``groups * top_k`` small experts plus the shared one. Routing within groups is what lets upcycling keep
Whisper's function exactly: every expert of group g starts as a copy of segment g, whose weights sum to 1,
so the output is the sum of all segments = the dense FFN. ``groups = 1`` and no shared expert is the plain
Mixtral layer above.

The layer returns ``(y, RouterOutput)``; the load-balancing loss (Switch/Mixtral) and router z-loss (ST-MoE)
are pure functions of those outputs, so nothing is stored on the module during ``forward``.
Shapes: N tokens (B*T flattened), D width, H expert hidden size, E experts, k slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class RouterOutput:
    logits: Tensor  # (N, E) float32 router logits
    indices: Tensor  # (N, k) chosen experts
    counts: Tensor  # (E,) tokens routed to each expert (k per token in all)


class MoEFFN(nn.Module):
    def __init__(
        self,
        n_state: int,
        n_hidden: int,
        n_experts: int,
        top_k: int,
        *,
        dispatch: str = "auto",
        groups: int = 1,
        shared_hidden: int = 0,
    ) -> None:
        """``n_hidden``: each expert's hidden size; ``n_experts``/``top_k``: per group; ``shared_hidden``: the
        always-on shared expert's hidden size (0: none)."""
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.n_experts, self.top_k, self.dispatch, self.groups = n_experts, top_k, dispatch, groups
        n = self.n_routed
        self.router = nn.Linear(n_state, n, bias=False)
        self.fc1_weight = nn.Parameter(torch.empty(n, n_hidden, n_state))  # nn.Linear layout per expert
        self.fc1_bias = nn.Parameter(torch.zeros(n, n_hidden))
        self.fc2_weight = nn.Parameter(torch.empty(n, n_state, n_hidden))
        self.fc2_bias = nn.Parameter(torch.zeros(n, n_state))
        nn.init.normal_(self.router.weight, std=0.02)
        # added to the router logits: -inf keeps newly added experts out of routing until training releases them
        self.register_buffer("logit_bias", torch.zeros(n), persistent=True)
        for w in (self.fc1_weight, self.fc2_weight):
            nn.init.kaiming_uniform_(w.view(-1, w.shape[-1]), a=math.sqrt(5))
        self.shared_fc1 = nn.Linear(n_state, shared_hidden) if shared_hidden else None
        self.shared_fc2 = nn.Linear(shared_hidden, n_state) if shared_hidden else None

    @property
    def n_routed(self) -> int:
        """Routed experts in all groups."""
        return self.groups * self.n_experts

    @property
    def k_routed(self) -> int:
        """Routed experts a token uses."""
        return self.groups * self.top_k

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` (N, D) -> router logits (N, G*E) fp32, renormalised top-k weights (N, G*k), indices (N, G*k)."""
        logits = self.router(x)
        logits = (logits if logits.dtype == torch.float64 else logits.float()) + self.logit_bias
        n = logits.shape[0]  # softmax and top-k within each group (one group: the whole layer)
        probs = torch.softmax(logits.view(n, self.groups, self.n_experts), dim=-1)
        weights, indices = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        if self.groups > 1:  # global expert ids g * E + e
            indices = indices + torch.arange(self.groups, device=x.device)[:, None] * self.n_experts
        return logits, weights.reshape(n, -1), indices.reshape(n, -1)

    def forward(self, x: Tensor) -> tuple[Tensor, RouterOutput]:
        """``x`` (..., D) -> ``(y (..., D), RouterOutput)``."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits, weights, indices = self.route(flat)
        y, counts = self.experts(flat, weights.to(flat.dtype), indices)
        if self.shared_fc1 is not None:
            y = y + self.shared_fc2(F.gelu(self.shared_fc1(flat)))
        return y.reshape(shape), RouterOutput(logits, indices, counts)

    def experts(self, x: Tensor, weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Dropless sorted dispatch: every token's k (expert, weight) pairs, grouped by expert."""
        if self.dispatch == "dense":
            return self._dense(x, weights, indices)
        if self.dispatch == "index":
            return self._indexed(x, weights, indices)
        n, k = indices.shape
        flat_expert = indices.reshape(-1)  # (N*k,)
        order = flat_expert.argsort(stable=True)
        token = order // k  # the token behind each sorted row
        counts = torch.bincount(flat_expert, minlength=self.n_routed)
        rows = x[token]  # (N*k, D), grouped by expert
        grouped = self.dispatch == "grouped" or (self.dispatch == "auto" and (x.is_cuda or torch.is_grad_enabled()))
        if grouped and hasattr(F, "grouped_mm") and x.dtype != torch.float64:
            offs = counts.cumsum(0).to(torch.int32)
            # grouped_mm is not on autocast's lists: cast as autocast casts linear layers (fp32 experts beside
            # bf16 layers held a MoE training step on real Hindi at 0.86 examples/s; 1.3 with the cast).
            # Biases by segment: repeat_interleave is a contiguous broadcast, far cheaper than gathering per row
            dt = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
            n_rows = rows.shape[0]
            h = F.grouped_mm(rows.to(dt), self.fc1_weight.to(dt).transpose(-2, -1), offs=offs)
            h = F.gelu(h + self.fc1_bias.to(dt).repeat_interleave(counts, dim=0, output_size=n_rows))
            out = F.grouped_mm(h, self.fc2_weight.to(dt).transpose(-2, -1), offs=offs)
            out = (out + self.fc2_bias.to(dt).repeat_interleave(counts, dim=0, output_size=n_rows)).to(x.dtype)
        else:
            # unbind once: indexing the stacked weights per expert would build a full-size gradient per expert
            w1, b1 = self.fc1_weight.unbind(0), self.fc1_bias.unbind(0)
            w2, b2 = self.fc2_weight.unbind(0), self.fc2_bias.unbind(0)
            parts, start = [], 0
            for e, c in enumerate(counts.tolist()):
                if c:
                    h = F.gelu(F.linear(rows[start : start + c], w1[e], b1[e]))
                    parts.append(F.linear(h, w2[e], b2[e]))
                start += c
            out = torch.cat(parts) if parts else rows.new_zeros(0, x.shape[-1])
        out = out * weights.reshape(-1)[order, None]
        y = torch.zeros_like(x).index_add_(0, token, out)
        return y, counts

    def _dense(self, x: Tensor, weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Every expert on every token, weighted by the top-k gates (zero for the others): the same function
        without data-dependent shapes, for ONNX export (``dispatch="dense"``); E/k times the FLOPs."""
        gates = torch.zeros(x.shape[0], self.n_routed, dtype=x.dtype, device=x.device).scatter(-1, indices, weights)
        y = torch.zeros_like(x)
        for e in range(self.n_routed):
            h = F.gelu(F.linear(x, self.fc1_weight[e], self.fc1_bias[e]))
            y = y + gates[:, e : e + 1] * F.linear(h, self.fc2_weight[e], self.fc2_bias[e])
        return y, (gates != 0).sum(0)

    def _indexed(self, x: Tensor, weights: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k with one gather per expert and no sort (``dispatch="index"``): every op has a graph form,
        and an expert nobody chose multiplies an empty block."""
        y = torch.zeros_like(x)
        for e in range(self.n_routed):
            hit = indices == e  # (N, k): at most one slot per token
            token = hit.any(-1).nonzero().reshape(-1)
            gate = (weights * hit.to(weights.dtype)).sum(-1).index_select(0, token)
            h = F.gelu(F.linear(x.index_select(0, token), self.fc1_weight[e], self.fc1_bias[e]))
            y = y.index_add(0, token, gate[:, None] * F.linear(h, self.fc2_weight[e], self.fc2_bias[e]))
        counts = (indices[..., None] == torch.arange(self.n_routed, device=x.device)).sum((0, 1))
        return y, counts


def load_balancing_loss(
    routers: list[RouterOutput],
    *,
    n_experts: int,
    top_k: int,
    groups: int = 1,
    valid: list[Tensor | None] | None = None,
) -> Tensor:
    """Switch/Mixtral auxiliary loss over all MoE layers: ``E * sum_{s,e} f_{s,e} P_e`` (k when balanced, -> E
    when collapsed). ``valid`` (per layer, (N,) bool) excludes padding tokens from both averages.

    Fine-grained layers (``groups > 1``; ``n_experts``, ``top_k`` per group) get DeepSeekMoE's expert-level
    balance loss per group, ``sum_i f_i P_i`` with ``f_i = E / (k T) * #tokens choosing i`` and ``P_i`` the
    mean router probability, averaged over groups: 1 when balanced, E / k when collapsed."""
    logits, idx = [], []
    for i, r in enumerate(routers):
        keep = None if valid is None or valid[i] is None else valid[i].reshape(-1)
        logits.append(r.logits if keep is None else r.logits[keep])
        idx.append(r.indices if keep is None else r.indices[keep])
    if groups > 1:
        lg = torch.cat(logits).float()
        t = lg.shape[0]
        probs = torch.softmax(lg.view(t, groups, n_experts), dim=-1).mean(0)  # (G, E)
        counts = torch.bincount(torch.cat(idx).reshape(-1), minlength=groups * n_experts).float()
        f = counts.view(groups, n_experts) * n_experts / (top_k * max(t, 1))
        return (f * probs).sum(-1).mean()
    probs = torch.softmax(torch.cat(logits).float(), dim=-1)  # (T, E)
    chosen = F.one_hot(torch.cat(idx), n_experts).float()  # (T, k, E)
    f = chosen.mean(dim=0)  # (k, E) fraction of tokens per slot and expert
    p = probs.mean(dim=0)  # (E,)
    return n_experts * (f * p[None]).sum()


def router_z_loss(routers: list[RouterOutput], *, valid: list[Tensor | None] | None = None) -> Tensor:
    """ST-MoE router z-loss ``mean_t (logsumexp_e r_{t,e})^2`` over all layers' tokens."""
    parts = []
    for i, r in enumerate(routers):
        z = torch.logsumexp(r.logits.float(), dim=-1) ** 2
        keep = None if valid is None or valid[i] is None else valid[i].reshape(-1)
        parts.append(z if keep is None else z[keep])
    return torch.cat(parts).mean()
