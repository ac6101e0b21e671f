"""PEER: a mixture of a million tiny experts with product-key retrieval (He 2024, arXiv 2407.04153).

Each expert is one hidden neuron: a down vector u_i and an up vector v_i, ``e_i(x) = GELU(u_i . x) v_i``.
Experts are indexed by pairs (a, b) of two sub-key sets of size n (N = n^2 experts). Per head, a query
``q(x)`` is split in halves; the top-k sub-keys of each half give k^2 candidate pairs whose score is the sum
of the halves' scores, and the top-k of those are the head's experts (so finding them costs O(n), not
O(N)). ``y = sum_h sum_{i in top-k(h)} softmax(s)_i e_i(x)``. Expert vectors live in ``nn.Embedding``
tables and are gathered per token, so compute per token is h * k experts whatever N is.

In a block PEER runs beside the (dense or MoE) FFN on the same normalised input; its up vectors start at
zero, so an upcycled model still computes Whisper's function at init (the down vectors get gradients as
soon as the up vectors leave zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PEER(nn.Module):
    def __init__(self, n_state: int, n_experts: int, *, heads: int = 8, top_k: int = 16, key_dim: int = 128) -> None:
        super().__init__()
        n = math.isqrt(n_experts)
        if n * n != n_experts:
            raise ValueError(f"PEER needs a square number of experts (n^2), not {n_experts}")
        if not 1 <= top_k <= n:
            raise ValueError(f"PEER top_k must be in 1..{n} (sqrt of the experts), not {top_k}")
        if key_dim % 2:
            raise ValueError("PEER key_dim must be even (two halves)")
        self.n_experts, self.n_sub, self.heads, self.top_k, self.key_dim = n_experts, n, heads, top_k, key_dim
        self.query = nn.Linear(n_state, heads * key_dim, bias=False)
        self.query_norm = nn.LayerNorm(key_dim)  # the paper's query BatchNorm, per token (packing-safe)
        self.sub_keys = nn.Parameter(torch.randn(heads, 2, n, key_dim // 2) / math.sqrt(key_dim // 2))
        self.down = nn.Embedding(n_experts, n_state)
        self.up = nn.Embedding(n_experts, n_state)
        nn.init.normal_(self.down.weight, std=1 / math.sqrt(n_state))
        nn.init.zeros_(self.up.weight)  # zero output at init: the block is unchanged until PEER trains

    def retrieve(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (N, D) -> expert indices (N, h, k) and their scores (N, h, k), by product keys."""
        k, half = self.top_k, self.key_dim // 2
        q = self.query_norm(self.query(x).view(x.shape[0], self.heads, self.key_dim)).view(-1, self.heads, 2, half)
        s = torch.einsum("nhpd,hpkd->nhpk", q, self.sub_keys)  # (N, h, 2, n)
        s1, i1 = s[:, :, 0].topk(k, dim=-1)
        s2, i2 = s[:, :, 1].topk(k, dim=-1)
        pair = (s1[..., :, None] + s2[..., None, :]).flatten(-2)  # (N, h, k*k)
        scores, best = pair.topk(k, dim=-1)
        index = i1.gather(-1, best // k) * self.n_sub + i2.gather(-1, best % k)
        return index, scores

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        index, scores = self.retrieve(flat)
        gates = torch.softmax(scores.float(), dim=-1).to(flat.dtype)
        u = self.down(index)  # (N, h, k, D)
        act = F.gelu(torch.einsum("nd,nhkd->nhk", flat, u))
        # sum_i w_i v_i without materialising the (N, h, k, D) gather of the up vectors
        y = F.embedding_bag(index.flatten(1), self.up.weight, per_sample_weights=(gates * act).flatten(1), mode="sum")
        return y.reshape(shape)

    def active_parameters(self) -> int:
        """Parameters one token uses: the query network and sub-keys, and h * k experts' two vectors."""
        return (
            self.query.weight.numel()
            + self.sub_keys.numel()
            + 2 * self.heads * self.top_k * self.down.weight.shape[1]
            + sum(p.numel() for p in self.query_norm.parameters())
        )
