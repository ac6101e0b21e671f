"""MoE invariants (TECHNIQUES.md §2 and §7)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from generalist_cli.model.moe import MoEFFN, RouterOutput, load_balancing_loss, router_z_loss


def moe(e=8, k=2, d=16, h=32, seed=0, dtype=torch.float64) -> MoEFFN:
    torch.manual_seed(seed)
    return MoEFFN(d, h, e, k).to(dtype)


def dense(x, w1, b1, w2, b2):
    return F.gelu(x @ w1.T + b1) @ w2.T + b2


def test_identical_experts_equal_the_dense_ffn_for_any_router():
    m = moe()
    w1, b1, w2, b2 = torch.randn(32, 16), torch.randn(32), torch.randn(16, 32), torch.randn(16)
    with torch.no_grad():
        m.fc1_weight.copy_(w1.expand(8, -1, -1))
        m.fc1_bias.copy_(b1.expand(8, -1))
        m.fc2_weight.copy_(w2.expand(8, -1, -1))
        m.fc2_bias.copy_(b2.expand(8, -1))
        m.router.weight.normal_(0, 1.0)
        x = torch.randn(5, 7, 16, dtype=torch.float64)
        y, _ = m(x)
    assert (y - dense(x, w1.double(), b1.double(), w2.double(), b2.double())).abs().max() < 1e-12


def test_grouped_dispatch_equals_loop_and_per_token_reference():
    m = moe(dtype=torch.float32)
    x = torch.randn(64, 16)
    with torch.no_grad():
        m.dispatch = "grouped"
        y, r = m(x)
        m.dispatch = "sorted"
        y_loop, r_loop = m(x)
        m.dispatch = "dense"  # the export path: every expert, zero gates for the unchosen
        y_dense, r_dense = m(x)
        _, weights, idx = m.route(x)
        ref = torch.stack(
            [
                sum(
                    weights[t, s]
                    * dense(
                        x[t],
                        m.fc1_weight[idx[t, s]],
                        m.fc1_bias[idx[t, s]],
                        m.fc2_weight[idx[t, s]],
                        m.fc2_bias[idx[t, s]],
                    )
                    for s in range(2)
                )
                for t in range(64)
            ]
        )
    assert (y - y_loop).abs().max() < 1e-5 and (y - ref).abs().max() < 1e-5
    assert (y_dense - ref).abs().max() < 1e-5 and torch.equal(r_dense.counts, r_loop.counts)


def test_routing_weights_counts_and_equivalent_softmax_forms():
    m = moe()
    x = torch.randn(50, 16, dtype=torch.float64)
    logits, w, idx = m.route(x)
    assert torch.allclose(w.sum(-1), torch.ones(50, dtype=torch.float64))
    _, r = m(x)
    assert int(r.counts.sum()) == 2 * 50 and r.counts.tolist() == torch.bincount(idx.reshape(-1), minlength=8).tolist()
    assert all(len(set(row)) == 2 for row in idx.tolist())  # each token goes to two distinct experts
    top_logits, top_idx = logits.topk(2, -1)
    assert torch.equal(top_idx, idx) and torch.allclose(torch.softmax(top_logits, -1), w)


def test_aux_loss_is_k_when_uniform_and_approaches_e_when_collapsed():
    n, e, k = 4000, 8, 2
    uniform = RouterOutput(
        torch.zeros(n, e), torch.stack([torch.arange(n) % e, (torch.arange(n) + 1) % e], 1), torch.zeros(e)
    )
    assert load_balancing_loss([uniform], n_experts=e, top_k=k).item() == pytest.approx(2.0, abs=1e-6)
    logits = torch.full((n, e), -20.0)
    logits[:, :2] = 20.0
    collapsed = RouterOutput(logits, torch.tensor([[0, 1]]).expand(n, 2), torch.zeros(e))
    assert load_balancing_loss([collapsed], n_experts=e, top_k=k).item() == pytest.approx(8.0, abs=1e-3)
    assert router_z_loss([uniform]).item() == pytest.approx(math.log(8) ** 2, rel=1e-6)


def test_padding_is_excluded_from_aux_statistics():
    m = moe(dtype=torch.float32)
    x = torch.randn(30, 16)
    _, r = m(x)
    valid = torch.zeros(30, dtype=torch.bool)
    valid[:20] = True
    _, r20 = m(x[:20])
    assert torch.allclose(
        load_balancing_loss([r], n_experts=8, top_k=2, valid=[valid]), load_balancing_loss([r20], n_experts=8, top_k=2)
    )
    assert torch.allclose(router_z_loss([r], valid=[valid]), router_z_loss([r20]))


def test_permuting_experts_with_router_rows_changes_nothing():
    m = moe()
    x = torch.randn(20, 16, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
        perm = torch.randperm(8)
        for p in (m.fc1_weight, m.fc1_bias, m.fc2_weight, m.fc2_bias):
            p.copy_(p[perm])
        m.router.weight.copy_(m.router.weight[perm])
        y2, _ = m(x)
    assert (y - y2).abs().max() < 1e-12


def test_gradients_reach_router_and_experts():
    m = moe(dtype=torch.float32)
    x = torch.randn(40, 16)
    y, r = m(x)
    loss = (y * torch.randn_like(y)).sum() + 0.01 * load_balancing_loss([r], n_experts=8, top_k=2)
    loss.backward()
    assert m.router.weight.grad.abs().sum() > 0
    used = r.counts > 0
    assert (m.fc1_weight.grad.abs().sum(dim=(1, 2))[used] > 0).all()


def test_fine_grained_upcycling_keeps_whisper_and_routes_k_per_group():
    """DeepSeekMoE segments: the upcycled model equals the dense one whatever the routers say, each token uses
    top_k experts in every group (ids inside its group) plus the shared expert; counts sum to groups * k."""
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.model.info import parameter_counts
    from generalist_cli.model.upcycle import moe_layers, upcycle

    torch.manual_seed(0)
    cfg = ModelConfig(
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=2,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=2,
        n_audio_ffn=64,
        n_text_ffn=64,
        n_vocab=51864,
    )
    dense = Generalist(cfg).eval()
    g = upcycle(dense, n_experts=4, top_k=2, ttt="none", segments=4, shared=1).eval()
    with torch.no_grad():
        for name, p in g.named_parameters():
            if "router" in name:
                p.normal_(0, 1.0)  # any routing: the experts of a group are still copies
    mel, tokens = torch.randn(2, 80, 60), torch.randint(0, 51864, (2, 5))
    with torch.no_grad():
        assert torch.allclose(dense(mel, tokens), g(mel, tokens)[..., :51864], atol=1e-4)
    layer = moe_layers(g)[0]
    assert layer.n_routed == 12 and layer.k_routed == 6 and layer.fc1_weight.shape[1] == 16
    assert layer.shared_fc1.out_features == 16
    x = torch.randn(7, 32)
    y, r = layer(x)
    assert r.indices.shape == (7, 6) and int(r.counts.sum()) == 7 * 6
    assert ((r.indices // 4) == torch.tensor([0, 0, 1, 1, 2, 2])).all()  # two experts in each group
    # parameters: 12 routed experts of a quarter width + a quarter-width shared expert per layer
    total, active = parameter_counts(g)
    per_expert = sum(p[0].numel() for p in (layer.fc1_weight, layer.fc1_bias, layer.fc2_weight, layer.fc2_bias))
    assert total - active == len(moe_layers(g)) * (12 - 6) * per_expert
    y.sum().backward()  # gradients reach the routed experts, the router and the shared expert
    assert layer.router.weight.grad.abs().sum() > 0 and layer.shared_fc1.weight.grad.abs().sum() > 0


def test_deepseek_balance_loss_is_one_when_balanced_and_e_over_k_when_collapsed():
    from generalist_cli.model.moe import RouterOutput, load_balancing_loss

    groups, e, k, t = 3, 4, 2, 8
    flat = torch.zeros(t, groups * e)  # uniform probabilities, every expert chosen equally often
    idx = torch.stack(
        [torch.tensor([g * e + (i * k + j) % e for g in range(groups) for j in range(k)]) for i in range(t)]
    )
    r = RouterOutput(flat, idx, torch.bincount(idx.reshape(-1), minlength=groups * e))
    assert float(load_balancing_loss([r], n_experts=e, top_k=k, groups=groups)) == pytest.approx(1.0)
    logits = torch.full((t, groups, e), -30.0)
    logits[:, :, :k] = 30.0  # every token to the same k experts of each group, all probability on them
    idx = torch.tensor([g * e + j for g in range(groups) for j in range(k)]).expand(t, -1)
    r = RouterOutput(logits.reshape(t, -1), idx, torch.bincount(idx.reshape(-1), minlength=groups * e))
    assert float(load_balancing_loss([r], n_experts=e, top_k=k, groups=groups)) == pytest.approx(e / k, rel=1e-3)


def test_peer_product_keys_find_the_true_top_k_and_upcycling_keeps_whisper():
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.model.info import parameter_counts
    from generalist_cli.model.peer import PEER
    from generalist_cli.model.upcycle import upcycle

    torch.manual_seed(0)
    p = PEER(64, 1024, heads=4, top_k=8, key_dim=32)
    x = torch.randn(10, 64)
    assert p(x).abs().max() == 0  # up vectors start at zero
    index, scores = p.retrieve(x)
    q = p.query_norm(p.query(x).view(10, 4, 32)).view(10, 4, 2, 16)
    halves = torch.einsum("nhpd,hpkd->nhpk", q, p.sub_keys)
    every = (halves[:, :, 0, :, None] + halves[:, :, 1, None, :]).flatten(-2)  # all 1,024 experts' scores
    best, which = every.topk(8, dim=-1)
    assert torch.equal(which.sort(-1).values, index.sort(-1).values) and torch.allclose(best, scores)
    with torch.no_grad():
        p.up.weight.normal_()
    p(x).pow(2).sum().backward()
    assert all(
        t.grad is not None and t.grad.abs().sum() > 0 for t in (p.down.weight, p.up.weight, p.query.weight, p.sub_keys)
    )
    assert p.down.weight.grad.abs().sum(-1).gt(0).sum() <= 10 * 4 * 8  # only retrieved experts get gradients
    with pytest.raises(ValueError, match="square"):
        PEER(64, 1000)

    cfg = ModelConfig(
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=2,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=2,
        n_audio_ffn=64,
        n_text_ffn=64,
        n_vocab=51864,
    )
    dense = Generalist(cfg).eval()
    g = upcycle(dense, n_experts=1, top_k=1, ttt="none", peer_experts=4096, peer_top_k=8).eval()
    mel, tokens = torch.randn(1, 80, 60), torch.randint(0, 51864, (1, 5))
    with torch.no_grad():
        assert torch.allclose(dense(mel, tokens), g(mel, tokens)[..., :51864], atol=1e-5)
    total, active = parameter_counts(g)
    assert total - active == 4 * 2 * (4096 - 8 * 8) * 32  # per layer: all but 8 heads x 8 experts' two vectors


def test_grouped_dispatch_follows_cpu_autocast_like_the_linear_layers():
    """``grouped_mm`` is not on autocast's lists; under bf16 autocast the experts are cast as ``F.linear`` is
    (the sorted path), not left in fp32 beside bf16 layers: same result as the sorted path, fp32 gradients."""
    if not hasattr(F, "grouped_mm"):
        pytest.skip("torch < 2.9 has no grouped_mm: the sorted path is the only one")
    torch.manual_seed(0)
    moe = MoEFFN(64, 128, 4, 2, dispatch="grouped")
    x = torch.randn(256, 64)
    exact = moe(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grouped = moe(x)[0]
        moe.dispatch = "sorted"
        ordered = moe(x)[0]
    assert grouped.dtype == torch.float32
    assert (grouped - ordered).abs().max() < 2e-2 * exact.abs().max()
    assert (grouped - exact).abs().max() > 1e-5  # it ran in bf16
    moe.dispatch = "grouped"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moe(x)[0].sum().backward()
    assert moe.fc1_weight.grad.dtype == torch.float32 and moe.fc1_weight.grad.abs().sum() > 0
