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
- primal form (:func:`_primal`): one token, reading ``W_t`` as ``W`` and ``S`` (``W_t`` itself is formed
  once per mini-batch, by :func:`fold`); decoding from a cache that is not on a mini-batch boundary.
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
    return x2, _gelu_tanh_vjp(g2 @ w2.transpose(-2, -1), z1), g2


def _gelu_tanh_vjp(g: Tensor, x: Tensor) -> Tensor:
    """``g`` times the derivative of GELU's tanh approximation at ``x``: ATen's fused kernel (which has its
    own double backward), written out for ONNX export, which has no such operator."""
    if not torch.onnx.is_in_onnx_export():
        return torch.ops.aten.gelu_backward(g, x, approximate="tanh")
    k = math.sqrt(2.0 / math.pi)
    t = torch.tanh(k * (x + 0.044715 * x**3))
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2))


def _dual(q, k, v, eta, tau, w1, b1, w2, b2, gamma, beta, *, complete: bool):
    """One (partial) mini-batch of n tokens from the boundary state ``W``: outputs (B, H, n, f) and, when the
    mini-batch is ``complete``, the state after it; otherwise ``S`` (sums of eta_j G_j) to carry on from."""
    x2, g1, g2 = _grads(k, v, w1, b1, w2, b2, gamma, beta)
    n = q.shape[-2]
    tril = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    e = torch.where(tril, tau[:, None] * eta[..., None, :], torch.zeros((), dtype=q.dtype, device=q.device))
    z1 = q @ w1 - (e * (q @ k.transpose(-2, -1))) @ g1 + b1 - e @ g1
    x2_bar = F.gelu(z1, approximate="tanh")
    z2 = x2_bar @ w2 - (e * (x2_bar @ x2.transpose(-2, -1))) @ g2 + b2 - e @ g2
    out = q + _ln(z2, gamma, beta)
    if not complete:
        eg1, eg2 = eta[..., None] * g1, eta[..., None] * g2  # (B, H, n, .)
        return out, (
            k.transpose(-2, -1) @ eg1,
            eg1.sum(-2, keepdim=True),
            x2.transpose(-2, -1) @ eg2,
            eg2.sum(-2, keepdim=True),
        )
    # W - tau_n * sum_j eta_j G_j, the scale folded into the small (n, .) factor and the sum into one
    # batched multiply-add, so each large (f x 4f) state is written once per mini-batch
    scale = -tau[-1] * eta[..., None]
    eg1, eg2 = scale * g1, scale * g2
    return out, (
        _add_outer(w1, k, eg1),
        b1 + eg1.sum(-2, keepdim=True),
        _add_outer(w2, x2, eg2),
        b2 + eg2.sum(-2, keepdim=True),
    )


def _add_outer(w: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``w + a^T @ b`` for (B, H, p, r) ``w`` and (B, H, n, p|r) ``a``, ``b``, as one ``baddbmm``."""
    bh, (p, r) = a.shape[:2], w.shape[-2:]
    out = torch.baddbmm(
        w.reshape(-1, p, r), a.transpose(-2, -1).reshape(-1, p, a.shape[-2]), b.reshape(-1, b.shape[-2], r)
    )
    return out.view(*bh, p, r)


def _primal(q, k, v, eta, tau_i, state: TTTState, gamma, beta):
    """One token (B, H, 1, f) from ``state`` (not yet counting it): output and the updated sums ``S``.

    The output reads ``W_i = W - tau_i S`` as ``q W - tau_i (q S)``: two products with the state instead of
    forming W_i, which per token would write two more (B, H, f, 4f) tensors (:func:`fold` forms it once, at the
    mini-batch boundary)."""
    x2, g1, g2 = _grads(k, v, state.w1, state.b1, state.w2, state.b2, gamma, beta)
    eg1, eg2 = eta[..., None] * g1, eta[..., None] * g2
    s1 = state.s1 + k.transpose(-2, -1) @ eg1
    sb1 = state.sb1 + eg1
    s2 = state.s2 + x2.transpose(-2, -1) @ eg2
    sb2 = state.sb2 + eg2
    a = F.gelu(q @ state.w1 - tau_i * (q @ s1) + (state.b1 - tau_i * sb1), approximate="tanh")
    z2 = a @ state.w2 - tau_i * (a @ s2) + (state.b2 - tau_i * sb2)
    return q + _ln(z2, gamma, beta), (s1, sb1, s2, sb2)


def fold(w: tuple[Tensor, ...], sums: tuple[Tensor, ...], tau) -> tuple[Tensor, ...]:
    """The fast weights ``W - tau S`` (the mini-batch's last tau: the state at its boundary)."""
    return tuple(p - tau * s for p, s in zip(w, sums))


def _pieces(x: Tensor, start: int, size: int) -> list[Tensor]:
    """``x`` (B, H, L, ...) from ``start`` in pieces of ``size`` along L. Under autograd one ``split``: the
    backward of each slice would write a gradient the size of the whole sequence (quadratic in its length).
    Without it, slices, which a traced ONNX graph clamps to a shorter input."""
    if torch.is_grad_enabled():
        return list(x[:, :, start:].split(size, dim=2)) if start < x.shape[2] else []
    return [x[:, :, s : s + size] for s in range(start, x.shape[2], size)]


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
        return TTTState(
            w1, b1, w2, b2, torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w2), torch.zeros_like(b2), 0
        )

    def tau(self, start: int, n: int) -> Tensor:
        """``tau_i`` for in-mini-batch indices ``start+1 .. start+n``."""
        i = torch.arange(
            start + 1, start + n + 1, device=self.token_idx_offset.device, dtype=self.token_idx_offset.dtype
        )
        return torch.clamp(1.0 / i + self.token_idx_offset[start : start + n], min=0.0)

    def inputs(self, x: Tensor) -> Tensor:
        """Everything the scan reads per position of ``x`` (B, L, D): q, k, v and the learning-rate gate's
        logits, concatenated (B, L, 3D + H). Per position, so packed rows project before they are split."""
        return torch.cat(
            [self.q_proj(x), self.k_proj(x), self.v_proj(x), F.linear(x, self.lr_weight, self.lr_bias)], -1
        )

    def heads(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`inputs` ``u`` (B, L, 3D + H) -> q, k, v (B, H, L, f) and the learning rates eta (B, H, L).
        One split: the backward of a slice would be a full-size gradient per slice."""
        b, length, _ = u.shape
        h, f = self.n_head, self.head_dim
        q, k, v, gate = u.split([h * f, h * f, h * f, h], dim=-1)
        split = lambda t: t.reshape(b, length, h, f).transpose(1, 2)  # noqa: E731
        return split(q), split(k), split(v), self.base_lr * torch.sigmoid(gate.transpose(1, 2)) / f

    def output(self, z: Tensor) -> Tensor:
        """The scan's concatenated heads ``z`` (B, L, D) -> the layer's output (per position)."""
        return self.o_proj(self.post_norm(z))

    def forward(self, x: Tensor, state: TTTState | None = None) -> tuple[Tensor, TTTState]:
        """``x`` (B, L, D) continuing from ``state`` (``None``: a fresh sequence) -> (y (B, L, D), state)."""
        z, state = self.scan(self.inputs(x), state)
        return self.output(z), state

    def scan(
        self, u: Tensor, state: TTTState | None = None, *, lengths: list[int] | None = None
    ) -> tuple[Tensor, TTTState | None]:
        """The recurrence over :meth:`inputs` ``u`` (B, L, 3D + H) -> (z (B, L, D), state after the last token),
        in the layer's own precision (autocast off: the fast weights take many small steps).

        ``lengths`` (fresh sequences only): rows sorted longest first, row r real for its first ``lengths[r]``
        positions. Each mini-batch then runs only the rows still going (no compute on padding after a row's
        last mini-batch); outputs beyond a row's length are not meaningful and no state is returned."""
        with torch.autocast(u.device.type, enabled=False):
            return self._scan(u.to(self.w1.dtype), state, lengths)

    def _scan(self, u: Tensor, state: TTTState | None, lengths: list[int] | None) -> tuple[Tensor, TTTState | None]:
        b, length, _ = u.shape
        mb, d = self.mini_batch, self.head_dim * self.n_head
        if lengths is not None and (state is not None or list(lengths) != sorted(lengths, reverse=True)):
            raise ValueError("lengths need fresh sequences sorted longest first")
        state = state if state is not None else self.initial_state(b)
        q, k, v, eta = self.heads(u)
        gamma, beta = self.ttt_norm_weight, self.ttt_norm_bias
        w = (state.w1, state.b1, state.w2, state.b2)
        sums = (state.s1, state.sb1, state.s2, state.sb2) if state.i else None  # None: zero, at a boundary
        outs, i, t = [], state.i, 0
        while i and t < length:  # finish the current mini-batch token by token (primal form)
            pos = torch.tensor([i], device=u.device)
            qt, kt = _rope(q[:, :, t : t + 1], pos), _rope(k[:, :, t : t + 1], pos)
            tau = self.tau(i, 1)[0]
            vt, et = v[:, :, t : t + 1], eta[:, :, t : t + 1]
            out, sums = _primal(qt, kt, vt, et, tau, TTTState(*w, *sums, i), gamma, beta)
            outs.append(out)
            i, t = (i + 1) % mb, t + 1
            if i == 0:
                w, sums = fold(w, sums, tau), None
        # then whole mini-batches from a boundary in the dual form
        for qc, kc, vc, ec in zip(*(_pieces(x, t, mb) for x in (q, k, v, eta))):
            n = qc.shape[2]
            rows = b if lengths is None else sum(1 for m in lengths if m > t)  # ended rows leave (longest first)
            w = tuple(p[:rows] for p in w)
            pos = torch.arange(n, device=u.device)
            out, new = _dual(
                _rope(qc[:rows], pos),
                _rope(kc[:rows], pos),
                vc[:rows],
                ec[:rows],
                self.tau(0, n),
                *w,
                gamma,
                beta,
                complete=n == mb,
            )
            if n == mb:
                w = new
            else:
                sums, i = new, n
            outs.append(out if rows == b else F.pad(out, (0, 0, 0, 0, 0, 0, 0, b - rows)))
            t += n
        z = torch.cat(outs, dim=2).transpose(1, 2).reshape(b, length, d)
        if lengths is not None:
            return z, None
        sums = sums if sums is not None else tuple(torch.zeros_like(p) for p in w)
        return z, TTTState(*w, *sums, i)

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
            w = (
                after.w1 - tau * after.s1,
                after.b1 - tau * after.sb1,
                after.w2 - tau * after.s2,
                after.b2 - tau * after.sb2,
            )
        before = loss(self.w1, self.b1, self.w2, self.b2)
        return float(loss(*w) / before.clamp_min(1e-12))
