"""TTT-MLP: a Test-Time-Training layer whose hidden state is a small MLP trained while it reads
(Sun et al. 2024, "Learning to (Learn at Test Time)", arXiv 2407.04620; ttt-lm-pytorch ``ttt.py``).

Per head h (head size f), the inner model is ``f(x; W) = x + LN_h(GELU_tanh(x W1 + b1) W2 + b2)`` with
hidden width 4f. For token t the self-supervised loss is ``l_t(W) = 1/2 ||LN_h(g(k_t; W)) - (v_t - k_t)||^2``;
its gradient is taken at the state of the start of the token's mini-batch (b = 16 tokens) and applied
with the learnable per-token rate ``eta_t = base_lr * sigmoid(x_t . w_h + c_h) / f`` and the token-index
scale ``tau_i = max(0, 1/i + delta_i)``:  ``W_i = W^(m) - tau_i * sum_{j<=i} eta_j G_j``. The output is
``z_t = f(q_t; W_t)`` (update, then read), then ``o_proj(post_norm(concat_heads(z)))``.

Two exact ways to compute it:
- dual form (:func:`_dual`): a whole (partial) mini-batch at once with b x b matrices; prefill and training;
- primal form (:func:`_primal`): one token, materialising ``W_t``; decoding from a cache that is not on
  a mini-batch boundary.
The state is explicit (:class:`TTTState`) and carried between calls: any split of a sequence into chunks
gives the same outputs as one call. Positions for RoPE restart every mini-batch (position mod b).
Shapes: B batch, H heads, L tokens, n tokens in a mini-batch, f head size, D = H * f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-6


@dataclass
class TTTState:
    """The fast weights of every (row, head): ``W`` at the last mini-batch boundary and ``S``, the sum of
    ``eta_j * G_j`` over the ``i`` tokens seen since (``W_i = W - tau_i * S``)."""

    w1: Tensor  # (B, H, f, 4f)
    b1: Tensor  # (B, H, 1, 4f)
    w2: Tensor  # (B, H, 4f, f)
    b2: Tensor  # (B, H, 1, f)
    s1: Tensor
    sb1: Tensor
    s2: Tensor
    sb2: Tensor
    i: int = 0  # tokens into the current mini-batch

    def select(self, index: Tensor) -> "TTTState":
        """Rows ``index`` (beam search reordering)."""
        t = [getattr(self, n).index_select(0, index) for n in ("w1", "b1", "w2", "b2", "s1", "sb1", "s2", "sb2")]
        return TTTState(*t, i=self.i)


def _gelu_tanh_grad(x: Tensor) -> Tensor:
    """d/dx of GELU's tanh approximation."""
    k = math.sqrt(2.0 / math.pi)
    inner = k * (x + 0.044715 * x**3)
    t = torch.tanh(inner)
    return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)


def _ln(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return gamma * (x - mu) / torch.sqrt(var + LN_EPS) + beta


def _ln_l2_grad(z: Tensor, target: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Gradient w.r.t. ``z`` of ``1/2 ||LN(z) - target||^2`` (closed form of the LayerNorm backward)."""
    d = z.shape[-1]
    mu = z.mean(-1, keepdim=True)
    std = torch.sqrt(z.var(-1, keepdim=True, unbiased=False) + LN_EPS)
    x_hat = (z - mu) / std
    grad_y = gamma * x_hat + beta - target
    g = grad_y * gamma
    return (d * g - g.sum(-1, keepdim=True) - x_hat * (g * x_hat).sum(-1, keepdim=True)) / (d * std)


def _grads(k: Tensor, v: Tensor, w1, b1, w2, b2, gamma, beta) -> tuple[Tensor, Tensor, Tensor]:
    """Inner-loss gradients at (w1, b1, w2, b2): ``X2`` (n, 4f) and ``G1`` (n, 4f), ``G2`` (n, f) per row/head."""
    z1 = k @ w1 + b1
    x2 = F.gelu(z1, approximate="tanh")
    z2 = x2 @ w2 + b2
    g2 = _ln_l2_grad(z2, v - k, gamma, beta)
    g1 = (g2 @ w2.transpose(-2, -1)) * _gelu_tanh_grad(z1)
    return x2, g1, g2


def _dual(q, k, v, eta, tau, w1, b1, w2, b2, gamma, beta):
    """One (partial) mini-batch of n tokens from the boundary state ``W``: outputs (B, H, n, f), the state
    after the n-th token, and ``S`` (sums of eta_j G_j) for carrying a partial mini-batch."""
    x2, g1, g2 = _grads(k, v, w1, b1, w2, b2, gamma, beta)
    n = q.shape[-2]
    tril = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    e = torch.where(tril, tau[:, None] * eta[..., None, :], torch.zeros((), dtype=q.dtype, device=q.device))
    z1 = q @ w1 - (e * (q @ k.transpose(-2, -1))) @ g1 + b1 - e @ g1
    x2_bar = F.gelu(z1, approximate="tanh")
    z2 = x2_bar @ w2 - (e * (x2_bar @ x2.transpose(-2, -1))) @ g2 + b2 - e @ g2
    out = q + _ln(z2, gamma, beta)
    eg1, eg2 = eta[..., None] * g1, eta[..., None] * g2  # (B, H, n, .)
    s1, sb1 = k.transpose(-2, -1) @ eg1, eg1.sum(-2, keepdim=True)
    s2, sb2 = x2.transpose(-2, -1) @ eg2, eg2.sum(-2, keepdim=True)
    last = tau[-1]
    return out, (w1 - last * s1, b1 - last * sb1, w2 - last * s2, b2 - last * sb2), (s1, sb1, s2, sb2)


def _primal(q, k, v, eta, tau_i, state: TTTState, gamma, beta):
    """One token (B, H, 1, f) from ``state`` (not yet counting it): output and the updated sums."""
    x2, g1, g2 = _grads(k, v, state.w1, state.b1, state.w2, state.b2, gamma, beta)
    eg1, eg2 = eta[..., None] * g1, eta[..., None] * g2
    s1 = state.s1 + k.transpose(-2, -1) @ eg1
    sb1 = state.sb1 + eg1
    s2 = state.s2 + x2.transpose(-2, -1) @ eg2
    sb2 = state.sb2 + eg2
    w1, b1 = state.w1 - tau_i * s1, state.b1 - tau_i * sb1
    w2, b2 = state.w2 - tau_i * s2, state.b2 - tau_i * sb2
    z2 = F.gelu(q @ w1 + b1, approximate="tanh") @ w2 + b2
    return q + _ln(z2, gamma, beta), (w1, b1, w2, b2), (s1, sb1, s2, sb2)


def _rope(x: Tensor, pos: Tensor, theta: float = 10_000.0) -> Tensor:
    """Rotary embedding (rotate-half) of ``x`` (B, H, n, f) at positions ``pos`` (n,)."""
    f = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, f, 2, device=x.device, dtype=torch.float64) / f)
    ang = (pos.to(torch.float64)[:, None] * inv[None]).to(x.dtype)  # (n, f/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x1, x2 = x[..., : f // 2], x[..., f // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class TTTMLP(nn.Module):
    """The TTT-MLP layer (Transformer backbone: no pre-conv, no output gate)."""

    def __init__(self, n_state: int, n_head: int, *, mini_batch: int = 16, base_lr: float = 0.1) -> None:
        super().__init__()
        if n_state % n_head:
            raise ValueError("n_state must be divisible by n_head")
        f = n_state // n_head
        self.n_head, self.head_dim, self.mini_batch, self.base_lr = n_head, f, mini_batch, base_lr
        self.q_proj = nn.Linear(n_state, n_state, bias=False)
        self.k_proj = nn.Linear(n_state, n_state, bias=False)
        self.v_proj = nn.Linear(n_state, n_state, bias=False)
        self.o_proj = nn.Linear(n_state, n_state, bias=False)
        self.w1 = nn.Parameter(torch.randn(n_head, f, 4 * f) * 0.02)  # learnable initial state W0
        self.b1 = nn.Parameter(torch.zeros(n_head, 1, 4 * f))
        self.w2 = nn.Parameter(torch.randn(n_head, 4 * f, f) * 0.02)
        self.b2 = nn.Parameter(torch.zeros(n_head, 1, f))
        self.ttt_norm_weight = nn.Parameter(torch.ones(n_head, 1, f))
        self.ttt_norm_bias = nn.Parameter(torch.zeros(n_head, 1, f))
        self.lr_weight = nn.Parameter(torch.randn(n_head, n_state) * 0.02)
        self.lr_bias = nn.Parameter(torch.zeros(n_head))
        self.token_idx_offset = nn.Parameter(torch.zeros(mini_batch))  # delta in tau_i = max(0, 1/i + delta_i)
        self.post_norm = nn.LayerNorm(n_state, eps=LN_EPS)

    def initial_state(self, batch: int) -> TTTState:
        """``W0`` tiled over ``batch`` rows, empty sums."""
        tile = lambda p: p.unsqueeze(0).expand(batch, *p.shape)  # noqa: E731
        w1, b1, w2, b2 = tile(self.w1), tile(self.b1), tile(self.w2), tile(self.b2)
        return TTTState(w1, b1, w2, b2, torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w2),
                        torch.zeros_like(b2), 0)

    def tau(self, start: int, n: int) -> Tensor:
        """``tau_i`` for in-mini-batch indices ``start+1 .. start+n``."""
        i = torch.arange(start + 1, start + n + 1, device=self.token_idx_offset.device,
                         dtype=self.token_idx_offset.dtype)
        return torch.clamp(1.0 / i + self.token_idx_offset[start : start + n], min=0.0)

    def forward(self, x: Tensor, state: TTTState | None = None) -> tuple[Tensor, TTTState]:
        """``x`` (B, L, D) continuing from ``state`` (``None``: a fresh sequence) -> (y (B, L, D), state)."""
        b, length, d = x.shape
        h, f, mb = self.n_head, self.head_dim, self.mini_batch
        state = state if state is not None else self.initial_state(b)
        split = lambda t: t.view(b, length, h, f).transpose(1, 2)  # noqa: E731  (B, H, L, f)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        eta = self.base_lr * torch.sigmoid(torch.einsum("bld,hd->bhl", x, self.lr_weight) + self.lr_bias[:, None]) / f
        gamma, beta = self.ttt_norm_weight, self.ttt_norm_bias
        outs = []
        t = 0
        while t < length:
            i = state.i
            if i > 0:  # finish the current mini-batch token by token (primal form)
                pos = torch.tensor([i], device=x.device)
                qt, kt = _rope(q[:, :, t : t + 1], pos), _rope(k[:, :, t : t + 1], pos)
                tau_i = self.tau(i, 1)[0]
                out, w, s = _primal(qt, kt, v[:, :, t : t + 1], eta[:, :, t : t + 1], tau_i, state, gamma, beta)
                outs.append(out)
                state = self._advance(state, w, s, i + 1)
                t += 1
                continue
            n = min(mb, length - t)  # a (partial) mini-batch from a boundary: dual form
            pos = torch.arange(n, device=x.device)
            qc, kc = _rope(q[:, :, t : t + n], pos), _rope(k[:, :, t : t + n], pos)
            out, w, s = _dual(qc, kc, v[:, :, t : t + n], eta[:, :, t : t + n], self.tau(0, n),
                              state.w1, state.b1, state.w2, state.b2, gamma, beta)
            outs.append(out)
            state = self._advance(state, w, s, n)
            t += n
        z = torch.cat(outs, dim=2).transpose(1, 2).reshape(b, length, d)
        return self.o_proj(self.post_norm(z)), state

    def inner_loss_ratio(self, x: Tensor) -> float:
        """Health metric: the inner loss of the first mini-batch of ``x`` (B, L, D) at the state after that
        mini-batch's update, divided by the loss at the initial state ``W0`` (below 1 = the layer learns)."""
        b, length, _ = x.shape
        n = min(length, self.mini_batch)
        h, f = self.n_head, self.head_dim
        x = x[:, :n].to(self.q_proj.weight.dtype)
        split = lambda t: t.view(b, n, h, f).transpose(1, 2)  # noqa: E731
        pos = torch.arange(n, device=x.device)
        k, v = _rope(split(self.k_proj(x)), pos), split(self.v_proj(x))
        gamma, beta = self.ttt_norm_weight, self.ttt_norm_bias

        def loss(w1, b1, w2, b2) -> Tensor:
            z2 = F.gelu(k @ w1 + b1, approximate="tanh") @ w2 + b2
            return ((_ln(z2, gamma, beta) - (v - k)) ** 2).sum()

        _, after = self(x)
        w = (after.w1, after.b1, after.w2, after.b2)
        if after.i:  # a partial mini-batch: its update is W - tau_n * S
            tau = self.tau(0, n)[-1]
            w = (after.w1 - tau * after.s1, after.b1 - tau * after.sb1, after.w2 - tau * after.s2,
                 after.b2 - tau * after.sb2)
        before = loss(self.w1, self.b1, self.w2, self.b2)
        return float(loss(*w) / before.clamp_min(1e-12))

    def _advance(self, state: TTTState, w, s, i: int) -> TTTState:
        """After ``i`` tokens of a mini-batch: at a boundary, the new W with empty sums; otherwise keep W and S."""
        if i >= self.mini_batch:
            zeros = [torch.zeros_like(t) for t in s]
            return TTTState(*w, *zeros, 0)
        return TTTState(state.w1, state.b1, state.w2, state.b2, *s, i)
