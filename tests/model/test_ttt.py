"""TTT-MLP invariants (TECHNIQUES.md §1.8 and §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from generalist_cli.model.ttt import TTTMLP, _ln, _ln_l2_grad, _rope

torch.set_default_dtype(torch.float32)


def layer(d=24, h=3, seed=0, base_lr=0.1) -> TTTMLP:
    torch.manual_seed(seed)
    m = TTTMLP(d, h, base_lr=base_lr).double()
    with torch.no_grad():  # non-trivial learnable parts
        m.token_idx_offset.normal_(0, 0.05)
        m.lr_bias.normal_(0, 0.5)
        m.ttt_norm_weight.normal_(1, 0.1)
        m.ttt_norm_bias.normal_(0, 0.1)
        m.b1.normal_(0, 0.02)
    return m


def reference(m: TTTMLP, x: torch.Tensor) -> torch.Tensor:
    """Slow primal form with autograd: per token, gradients at the mini-batch start state, W_i explicit."""
    b, length, d = x.shape
    h, f, mb = m.n_head, m.head_dim, m.mini_batch
    split = lambda t: t.view(b, length, h, f).transpose(1, 2)  # noqa: E731
    q, k, v = split(m.q_proj(x)), split(m.k_proj(x)), split(m.v_proj(x))
    eta = m.base_lr * torch.sigmoid(torch.einsum("bld,hd->bhl", x, m.lr_weight) + m.lr_bias[:, None]) / f
    gamma, beta = m.ttt_norm_weight, m.ttt_norm_bias
    W = [p.detach().unsqueeze(0).expand(b, *p.shape).clone() for p in (m.w1, m.b1, m.w2, m.b2)]
    outs = []
    for start in range(0, length, mb):
        n = min(mb, length - start)
        pos = torch.arange(n)
        qc, kc, vc = (
            _rope(q[:, :, start : start + n], pos),
            _rope(k[:, :, start : start + n], pos),
            v[:, :, start : start + n],
        )
        grads = []
        for j in range(n):
            Wg = [w.clone().requires_grad_() for w in W]
            kj = kc[:, :, j : j + 1].detach()
            z2 = F.gelu(kj @ Wg[0] + Wg[1], approximate="tanh") @ Wg[2] + Wg[3]
            loss = 0.5 * ((_ln(z2, gamma.detach(), beta.detach()) - (vc[:, :, j : j + 1].detach() - kj)) ** 2).sum()
            grads.append(torch.autograd.grad(loss, Wg))
        for i in range(n):
            tau = max(0.0, 1.0 / (i + 1) + float(m.token_idx_offset[i].detach()))
            Wi = [
                W[p] - sum(tau * eta[:, :, start + j, None, None].detach() * grads[j][p] for j in range(i + 1))
                for p in range(4)
            ]
            z2 = F.gelu(qc[:, :, i : i + 1] @ Wi[0] + Wi[1], approximate="tanh") @ Wi[2] + Wi[3]
            outs.append(qc[:, :, i : i + 1] + _ln(z2, gamma, beta))
        tau_n = max(0.0, 1.0 / n + float(m.token_idx_offset[n - 1].detach()))
        W = [
            W[p] - sum(tau_n * eta[:, :, start + j, None, None].detach() * grads[j][p] for j in range(n))
            for p in range(4)
        ]
    z = torch.cat(outs, 2).transpose(1, 2).reshape(b, length, d)
    return m.o_proj(m.post_norm(z))


def test_dual_equals_autograd_primal_fp64():
    m = layer()
    x = torch.randn(2, 40, 24, dtype=torch.float64)  # 40 = 16 + 16 + 8
    with torch.no_grad():
        y, _ = m(x)
    ref = reference(m, x).detach()
    assert (y - ref).abs().max() < 1e-12


def test_inner_gradient_closed_form_equals_autograd():
    torch.manual_seed(1)
    z = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    target, gamma, beta = (
        torch.randn(2, 3, 5, 8, dtype=torch.float64),
        torch.randn(3, 1, 8, dtype=torch.float64),
        torch.randn(3, 1, 8, dtype=torch.float64),
    )
    loss = 0.5 * ((_ln(z, gamma, beta) - target) ** 2).sum()
    (auto,) = torch.autograd.grad(loss, z)
    assert (auto - _ln_l2_grad(z.detach(), target, gamma, beta)).abs().max() < 1e-12


def test_causal():
    m = layer()
    x = torch.randn(1, 37, 24, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 20:] += torch.randn_like(x2[:, 20:])
    with torch.no_grad():
        a, _ = m(x)
        b, _ = m(x2)
    assert torch.equal(a[:, :20], b[:, :20]) and not torch.allclose(a[:, 20:], b[:, 20:])


def test_chunks_and_token_by_token_equal_one_call():
    m = layer()
    x = torch.randn(2, 45, 24, dtype=torch.float64)
    with torch.no_grad():
        full, end = m(x)
        for cut in (16, 21, 3):
            a, s = m(x[:, :cut])
            b, s2 = m(x[:, cut:], s)
            assert (torch.cat([a, b], 1) - full).abs().max() < 1e-12
            assert s2.i == end.i and (s2.w1 - end.w1).abs().max() < 1e-12
        outs, s = [], None
        for t in range(45):
            o, s = m(x[:, t : t + 1], s)
            outs.append(o)
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-12


def test_zero_learning_rate_is_a_fixed_function_of_q():
    m = layer(base_lr=0.0)
    x = torch.randn(1, 20, 24, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
        q = m.q_proj(x).view(1, 20, 3, 8).transpose(1, 2)
        q = torch.cat([_rope(q[:, :, :16], torch.arange(16)), _rope(q[:, :, 16:], torch.arange(4))], 2)
        z2 = F.gelu(q @ m.w1 + m.b1, approximate="tanh") @ m.w2 + m.b2
        z = (q + _ln(z2, m.ttt_norm_weight, m.ttt_norm_bias)).transpose(1, 2).reshape(1, 20, 24)
        assert (y - m.o_proj(m.post_norm(z))).abs().max() < 1e-12


def test_inner_loss_decreases_after_the_update():
    m = layer()
    x = torch.randn(4, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        _, s = m(x)
        k = _rope(m.k_proj(x).view(4, 16, 3, 8).transpose(1, 2), torch.arange(16))
        v = m.v_proj(x).view(4, 16, 3, 8).transpose(1, 2)

        def loss(w1, b1, w2, b2):
            z2 = F.gelu(k @ w1 + b1, approximate="tanh") @ w2 + b2
            return 0.5 * ((_ln(z2, m.ttt_norm_weight, m.ttt_norm_bias) - (v - k)) ** 2).sum()

        before = loss(m.w1, m.b1, m.w2, m.b2)
        after = loss(s.w1, s.b1, s.w2, s.b2)
    assert after < before


def test_gradients_reach_every_parameter_and_gradcheck():
    m = TTTMLP(8, 2, mini_batch=4).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    y, _ = m(x)
    (y * torch.randn_like(y)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.autograd.gradcheck(lambda inp: m(inp)[0], (x,), eps=1e-6, atol=1e-5)


def test_ragged_scan_equals_each_row_alone_values_and_gradients():
    """``scan(lengths=...)``: rows sorted longest first leave the recurrence once they have ended (no compute on
    their padding); each row's outputs and the gradients equal scanning that row alone."""
    m = layer()
    lengths = [37, 33, 16, 5]
    u = torch.randn(len(lengths), max(lengths), 3 * 24 + 3, dtype=torch.float64, requires_grad=True)
    z, state = m.scan(u, lengths=lengths)
    assert state is None
    alone = [m.scan(u[r : r + 1, :n])[0][0] for r, n in enumerate(lengths)]
    for r, n in enumerate(lengths):
        assert (z[r, :n] - alone[r]).abs().max() < 1e-12
    assert not z[3, 16:].any()  # a row that has left reads zeros (within its last mini-batch: not meaningful)
    w = torch.randn_like(z) * (torch.arange(z.shape[1])[None, :, None] < torch.tensor(lengths)[:, None, None])
    got = torch.autograd.grad((z * w).sum(), [u, m.w1, m.token_idx_offset])
    want = torch.autograd.grad(
        sum((a * w[r, : len(a)]).sum() for r, a in enumerate(alone)), [u, m.w1, m.token_idx_offset]
    )
    for a, b in zip(got, want):
        assert (a - b).abs().max() < 1e-10 * max(1.0, float(b.abs().max()))
    try:
        m.scan(u, lengths=[5, 37, 33, 16])
    except ValueError as exc:
        assert "longest first" in str(exc)
    else:
        raise AssertionError("unsorted lengths were accepted")
