"""The generalist's invariants: upcycled == dense, packed == per-example (and fails without the TTT reset),
function-preserving expert addition, frozen experts, cached TTT decoding, gradients everywhere."""

from __future__ import annotations

import pytest
import torch

from generalist_cli.model.generalist import Generalist
from generalist_cli.model.moe import load_balancing_loss, router_z_loss
from generalist_cli.model.packing import pack, plan_rows, unpack
from generalist_cli.model.upcycle import add_experts, freeze_experts, release_new_experts, upcycle
from tests.conftest import dense, generalist


def test_upcycled_equals_dense_at_init():
    d = dense()
    g = upcycle(d, n_experts=8, top_k=2, ttt="mlp").eval()
    mel, tokens = torch.randn(2, 80, 3000), torch.randint(0, 51865, (2, 9))
    with torch.no_grad():
        a, b = d(mel, tokens), g(mel, tokens)
    assert b.shape[-1] == a.shape[-1] + 3  # <|speech|> <|sign|> <|text|> appended
    assert (a - b[..., : a.shape[-1]]).abs().max() <= 1e-4
    assert all((p == 0).all() for n, p in g.named_parameters() if "ttt_gate" in n)
    routers = [p for n, p in g.named_parameters() if n.endswith("router.weight")]
    assert len(routers) == 4 and 0.01 < torch.cat([r.flatten() for r in routers]).std() < 0.03


def _examples(g: Generalist):
    torch.manual_seed(3)
    audio = [g.embed_audio(torch.randn(1, 80, 2 * n))[0] for n in (37, 50, 16, 23)]
    video = [g.embed_video(torch.rand(5, 24, 32, 3))]  # 3 x 3 x 4 tubelets
    text = [g.embed_text(torch.randint(0, 50000, (11,)))]
    return audio + video + text


def test_packed_equals_per_example_and_needs_the_reset(monkeypatch):
    g = generalist()
    with torch.no_grad():
        seqs = _examples(g)
        rows = plan_rows([s.shape[0] for s in seqs], 96)
        assert len(rows) < len(seqs)  # several examples share a row
        x, packing = pack(seqs, rows)
        packed = unpack(g.encode(x, packing)[0], packing)
        alone = [g.encode(s[None])[0][0] for s in seqs]
        for p, a in zip(packed, alone):
            assert (p - a).abs().max() < 1e-5
        # the same packed forward with the TTT state *not* reset at example boundaries must differ
        monkeypatch.setattr(
            "generalist_cli.model.whisper.per_row_spans",
            lambda pk: [[(0, int((pk.segment_ids[r] >= 0).sum()))] for r in range(pk.segment_ids.shape[0])],
        )
        leaky = unpack(g.encode(x, packing)[0], packing)
    assert max((p - a).abs().max() for p, a in zip(leaky, alone)) > 1e-3


def test_packed_gradients_equal_per_example_gradients():
    """pack / TTT gather-scatter / embed_texts are single ops; their backward must match per-example autograd."""
    g = generalist().double()
    tokens = [torch.randint(0, 50000, (n,)) for n in (11, 4, 17, 6)]
    seqs = g.embed_texts(tokens)
    for s, t in zip(seqs, tokens):
        assert (s - g.embed_text(t)).abs().max() == 0
    x, packing = pack(seqs, plan_rows([len(t) for t in tokens], 24))
    packed = sum((o**2).sum() for o in unpack(g.encode(x, packing)[0], packing))
    weights = [g.decoder.embed_tokens.weight, g.encoder.layers[0].ttt.q_proj.weight]
    got = torch.autograd.grad(packed, weights)
    alone = sum((g.encode(g.embed_text(t)[None])[0] ** 2).sum() for t in tokens)
    want = torch.autograd.grad(alone, weights)
    for a, b in zip(got, want):
        assert (a - b).abs().max() < 1e-8 * b.abs().max()


def test_packed_decoder_equals_per_example():
    g = generalist()
    torch.manual_seed(5)
    with torch.no_grad():
        seqs = _examples(g)
        targets = [torch.randint(0, 51868, (n,)) for n in (5, 9, 3, 7, 4, 6)]
        rows = plan_rows([s.shape[0] for s in seqs], 96)
        ex, ep = pack(seqs, rows)
        tx, tp = pack(targets, rows)
        logits, enc_r, dec_r = g.forward_packed(ex, ep, tx, tp)
        for i, (s, t) in enumerate(zip(seqs, targets)):
            enc = g.encode(s[None])[0]
            ref = g.logits(g.decoder(t[None], g.cross_kv(enc)))[0]
            r, a, b = tp.spans[i]
            assert (logits[r, a:b] - ref).abs().max() < 1e-4
    assert len(enc_r) == 2 and len(dec_r) == 2
    assert ep.padding_fraction < 0.25


def test_plan_rows_is_greedy_and_respects_capacity():
    lengths = [1500, 250, 250, 700, 50, 1200, 800]
    rows = plan_rows(lengths, 2048)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 2048 for r in rows)
    assert len(rows) == 3  # 4750 positions need at least 3 rows of 2048
    with pytest.raises(ValueError, match="more than a row"):
        plan_rows([3000], 2048)


def test_cached_generation_with_ttt_equals_teacher_forcing():
    g = generalist()
    mel = torch.randn(2, 80, 400)
    tokens = torch.randint(0, 51865, (2, 21))
    with torch.no_grad():
        enc = g.encode_audio(mel)
        full = g.logits(g.decoder(tokens, g.cross_kv(enc)))
        cache = g.new_cache(enc)
        steps = [g.decode_step(tokens[:, :3], cache, 0)]
        for t in range(3, 21):
            steps.append(g.decode_step(tokens[:, t : t + 1], cache, t))
        # beam-style reordering: two hypotheses over one audio swap rows, each keeps its TTT and KV state
        one = enc[:1].expand(2, -1, -1)
        swapped = g.new_cache(one)
        g.decode_step(tokens[:, :5], swapped, 0)
        swapped.reorder(torch.tensor([1, 0]))
        after_swap = g.decode_step(tokens.flip(0)[:, 5:6], swapped, 5)
        ref = g.logits(g.decoder(tokens.flip(0)[:, :6], g.cross_kv(one)))[:, 5]
    assert (torch.stack(steps, 1) - full[:, 2:]).abs().max() < 1e-4
    assert (after_swap - ref).abs().max() < 1e-4


@pytest.mark.parametrize("init", ["mean", "copy"])
def test_add_experts_is_function_preserving(init):
    g = generalist()
    grown = add_experts(g, 3, init=init, source=1).eval()
    mel, tokens = torch.randn(1, 80, 200), torch.randint(0, 51865, (1, 6))
    with torch.no_grad():
        assert torch.equal(g(mel, tokens), grown(mel, tokens))
        release_new_experts(grown)
        _, routers = grown.encode(grown.embed_audio(mel))
    assert grown.config.n_experts == 7
    assert any(int(r.counts[4:].sum()) > 0 for r in routers)  # released: the router now uses them


def test_frozen_experts_stay_bit_identical_under_adamw():
    g = add_experts(generalist(), 2).train()
    release_new_experts(g)
    freeze = freeze_experts(g, 4)
    before = {n: p.detach().clone() for n, p in g.named_parameters() if "moe" in n}
    opt = torch.optim.AdamW(g.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        mel, tokens = torch.randn(2, 80, 200), torch.randint(0, 51865, (2, 6))
        enc, routers = g.encode(g.embed_audio(mel))
        hidden, dec_routers, _ = g.decoder.run(tokens, g.cross_kv(enc))
        loss = torch.nn.functional.cross_entropy(
            g.logits(hidden).flatten(0, 1), tokens.flatten()
        ) + 0.01 * load_balancing_loss(routers + dec_routers, n_experts=6, top_k=2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        freeze.restore()
    for n, p in g.named_parameters():
        if "moe" in n:
            assert torch.equal(p[:4], before[n][:4]), n
            assert not torch.equal(p[4:], before[n][4:]), n  # the new experts and router rows trained


def test_gradients_reach_every_parameter():
    g = generalist().train()
    torch.manual_seed(7)
    seqs = _examples(g)
    targets = [torch.randint(0, 51868, (n,)) for n in (5, 9, 3, 7, 4, 6)]
    rows = plan_rows([s.shape[0] for s in seqs], 96)
    ex, ep = pack(seqs, rows)
    tx, tp = pack(targets, rows)
    logits, enc_r, dec_r = g.forward_packed(ex, ep, tx, tp)
    valid = tp.valid
    loss = torch.nn.functional.cross_entropy(logits[valid], tx[valid])
    loss = loss + 0.01 * load_balancing_loss(
        enc_r + dec_r, n_experts=4, top_k=2, valid=[ep.valid] * len(enc_r) + [tp.valid] * len(dec_r)
    )
    loss = loss + 0.001 * router_z_loss(enc_r + dec_r)
    h = seqs[-1]  # the text example: speech head with durations
    log_d = g.speech_head.log_durations(h[None])[0]
    mel = g.speech_head(h, torch.full((h.shape[0],), 2))
    loss = loss + mel.pow(2).mean() + log_d.pow(2).mean()
    loss.backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # experts that no token chose this step have no gradient, by design (dropless, but sparse)
    missing = [n for n in missing if ".moe.fc" not in n]
    assert not missing, missing


def test_config_and_checkpoint_round_trip(tmp_path):
    from generalist_cli.store.load import load_model
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.store.store import save_model

    g = generalist()
    tok = PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json"
    entry = save_model(g, tok, tmp_path / "g", name="g", source="test", kind="test")
    loaded = load_model(entry.path)
    assert loaded.config == g.config and entry.meta["architecture"] == "generalist"
    assert loaded.tokenizer.extra == {"<|speech|>": 51865, "<|sign|>": 51866, "<|text|>": 51867}
    mel, tokens = torch.randn(1, 80, 120), torch.randint(0, 51865, (1, 5))
    with torch.no_grad():
        assert torch.equal(g(mel, tokens), loaded.model(mel, tokens))


@pytest.mark.slow
def test_upcycled_real_whisper_gives_identical_transcripts(tiny_en, speech):
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe

    g = upcycle(tiny_en.model, n_experts=8, top_k=2, ttt="mlp").eval()
    audios = [speech(0), speech(5)]
    a = transcribe(tiny_en.model, tiny_en.tokenizer, audios, TranscribeOptions())
    b = transcribe(g, tiny_en.tokenizer, audios, TranscribeOptions())
    assert [t.text for t in a] == [t.text for t in b]
    assert [[(s.start, s.end) for s in t.segments] for t in a] == [[(s.start, s.end) for s in t.segments] for t in b]


def test_reversed_scan_of_reversed_input_is_the_reversed_forward_scan():
    g = generalist()
    block = g.encoder.layers[0]
    h = torch.randn(2, 37, 32)
    with torch.no_grad():
        forward = block.ttt_scans(h, None)[0]
        backward_of_flipped = block.ttt_scans(h.flip(1), None, (True,))[0]
    assert torch.allclose(backward_of_flipped, forward.flip(1), atol=1e-6)


def test_video_motion_stream_starts_at_zero_sees_only_what_moves_and_round_trips(tmp_path):
    """The motion stream (clip minus its per-pixel temporal mean) leaves embeddings unchanged at init, gives
    a still clip nothing, learns (gradients), and is saved and loaded with the checkpoint."""
    from dataclasses import replace

    from generalist_cli.store.load import load_model
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.store.store import save_model

    g = generalist()
    torch.manual_seed(5)
    clip = torch.rand(6, 24, 32, 3)
    before = g.embed_video(clip)
    g.video.add_motion()
    g.config = replace(g.config, video_motion=True)
    assert torch.equal(before, g.embed_video(clip))  # zero at init
    with torch.no_grad():
        g.video.motion.weight.normal_(0, 0.02)
    still = clip[:1].expand(6, -1, -1, -1)
    no_motion = g.embed_video(still) - g.video.motion.bias  # a still clip: the motion input is exactly zero
    g.video.motion = None
    assert torch.allclose(no_motion, g.embed_video(still), atol=1e-6)
    g.video.add_motion()
    with torch.no_grad():
        g.video.motion.weight.normal_(0, 0.02)
    g.embed_video(clip).pow(2).sum().backward()
    assert g.video.motion.weight.grad.abs().sum() > 0
    tok = PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json"
    loaded = load_model(save_model(g, tok, tmp_path / "m", name="m", source="test", kind="test").path).model
    assert loaded.config.video_motion and torch.equal(loaded.embed_video(clip), g.embed_video(clip))


def test_motion_map_tokens_see_where_things_move_not_their_colours(tmp_path):
    """``video_tokens = "motion-map"``: one token per tubelet time step; the map ignores the colours of what
    moves (channel permutation) and the contrast (a scaled clip), a still clip gives an all-zero map, the
    layer learns, and the setting is saved with the checkpoint. "tubelets+motion-map" gives both."""
    from dataclasses import replace

    from generalist_cli.store.load import load_model
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.store.store import save_model

    g = generalist()
    torch.manual_seed(7)
    clip = torch.rand(6, 32, 32, 3)
    n_tubelets = g.embed_video(clip).shape[0]  # 3 x 4 x 4
    g.video.set_tokens("motion-map")
    g.config = replace(g.config, video_tokens="motion-map")
    tokens = g.embed_video(clip)
    assert tokens.shape == (3, g.config.n_audio_state)
    x = (clip.reshape(3, 2, 4, 8, 4, 8, 3).permute(0, 2, 4, 1, 3, 5, 6).reshape(48, -1) - 0.5) / 0.5
    maps = g.video.motion_maps(x, (3, 4, 4))
    assert maps.shape == (3, 14 * 14) and bool((maps >= 0).all())
    assert torch.allclose(g.embed_video(clip[..., [2, 0, 1]]), tokens, atol=1e-5)  # colours swapped
    assert torch.allclose(g.embed_video(0.5 + 0.3 * (clip - 0.5)), tokens, rtol=1e-4, atol=1e-3)  # lower contrast
    still = clip[:1].expand(6, -1, -1, -1)
    bias_only = g.video.motion_map.bias + g.video.pos_time[:3] + g.video.map_embedding + g._modality("video")
    assert torch.allclose(g.embed_video(still), bias_only, atol=1e-4)  # (float rounding of the mean only)
    g.embed_video(clip).pow(2).sum().backward()
    assert g.video.motion_map.weight.grad.abs().sum() > 0
    tok = PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json"
    loaded = load_model(save_model(g, tok, tmp_path / "m", name="m", source="test", kind="test").path).model
    assert loaded.config.video_tokens == "motion-map" and torch.equal(loaded.embed_video(clip), g.embed_video(clip))
    g.video.set_tokens("tubelets+motion-map")
    assert g.embed_video(clip).shape[0] == n_tubelets + 3
    with pytest.raises(ValueError, match="video tokens"):
        g.video.set_tokens("pixels")


def test_upcycled_text_is_not_drowned_by_encoder_positions():
    """Whisper's token embeddings are ~25x smaller than its sinusoidal encoder positions; upcycling scales
    text entering the encoder by sqrt(D), and a checkpoint without the key keeps 1.0."""
    from generalist_cli.model.config import ModelConfig as MC

    d = dense()
    with torch.no_grad():
        d.decoder.embed_tokens.weight.normal_(0, 0.03)
    g = upcycle(d, n_experts=2, top_k=1, ttt="none")
    assert g.config.text_scale == 32**0.5
    tokens = torch.randint(0, 50000, (40,))
    tok = g.embed_text(tokens) - g.encoder.embed_positions.weight[:40] - g.modality_embedding.weight[2]
    pos = g.encoder.embed_positions.weight[:40]
    ratio = float(tok.pow(2).mean().sqrt() / pos.pow(2).mean().sqrt())
    assert 0.1 < ratio < 2.0  # was 0.03 / 0.71 = 0.04 unscaled
    assert torch.allclose(
        torch.cat(g.embed_texts([tokens[:15], tokens[15:]])),
        torch.cat([g.embed_text(tokens[:15]), g.embed_text(tokens[15:])]),
        atol=1e-6,
    )
    old = MC.from_hf(
        {**g.config.to_hf(), "generalist": {k: v for k, v in g.config.generalist_dict().items() if k != "text_scale"}}
    )
    assert old.text_scale == 1.0


def test_speech_head_frames_know_their_place_in_their_phoneme(tmp_path):
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.heads import SpeechHead, span_progress

    p = span_progress(torch.tensor([2, 0, 3]))
    assert torch.allclose(p[:, 0], torch.tensor([0.25, 0.75, 1 / 6, 0.5, 5 / 6]))
    assert torch.allclose(p[:, 0] + p[:, 1], torch.ones(5))
    assert torch.allclose(p[:, 2], torch.log1p(torch.tensor([2.0, 2, 3, 3, 3])) / 4)
    assert generalist().config.speech_progress  # new generalists have it ...
    old = ModelConfig.from_hf({**dense().config.to_hf(), "generalist": {"generalist": True}})
    assert not old.speech_progress and old.tts_input == "text" and old.speech_layers == 3  # ... old checkpoints not
    assert Generalist(old).speech_head.progress is None
    head = SpeechHead(16, 8, hidden=8, progress=True, layers=2)
    h = torch.randn(3, 16)
    a, b = head(h, torch.tensor([1, 4, 2])), head(h, torch.tensor([1, 2, 4]))
    assert a.shape == (7, 8) and not torch.allclose(a[1:5], b[1:5])  # same states, different place in the span


def test_conformer_upcycling_keeps_whisper_and_its_convolution_stays_inside_each_packed_example():
    from generalist_cli.model.conformer import segment_depthwise_conv

    d = dense()
    g = upcycle(d, n_experts=4, top_k=2, ttt="none", conformer=True).eval()
    mel, tokens = torch.randn(1, 80, 3000), torch.randint(0, 51865, (1, 6))
    with torch.no_grad():
        assert (d(mel, tokens) - g(mel, tokens)[..., :51865]).abs().max() <= 1e-4  # gates at zero: Whisper
        for name, p in g.named_parameters():
            if name.endswith(("conv_gate", "macaron_gate")):
                p.normal_(0, 0.5)  # open the gates: the conv module and macaron FFN now contribute
        assert (d(mel, tokens) - g(mel, tokens)[..., :51865]).abs().max() > 1e-2
        seqs = _examples(g)
        x, packing = pack(seqs, plan_rows([s.shape[0] for s in seqs], 96))
        packed = unpack(g.encode(x, packing)[0], packing)
        for p, s in zip(packed, seqs):
            assert (p - g.encode(s[None])[0][0]).abs().max() < 1e-5
    # the masked convolution equals conv1d on each segment alone, and ignores the neighbours
    x = torch.randn(1, 10, 4)
    w, b = torch.randn(4, 1, 5), torch.randn(4)
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, -1, -1]])
    y = segment_depthwise_conv(x, w, b, seg)
    assert torch.allclose(y[:, :3], segment_depthwise_conv(x[:, :3], w, b, None), atol=1e-6)
    assert torch.allclose(y[:, 3:8], segment_depthwise_conv(x[:, 3:8], w, b, None), atol=1e-6)


def test_block_attention_equals_the_masked_attention_of_packed_rows():
    """``Blocks`` (attention example by example) gives the block-diagonal masked SDPA on every real
    position, causal or not, for self- and cross-attention rows of different segment lengths."""
    import torch.nn.functional as F

    from generalist_cli.model.packing import Blocks

    torch.manual_seed(0)
    queries, keys = ((3, 5), (7,)), ((4, 2), (6,))
    q, k, v = torch.randn(2, 2, 9, 8), torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)

    def segments(sizes, width):
        seg = torch.full((len(sizes), width), -1)
        for r, row in enumerate(sizes):
            seg[r, : sum(row)] = torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row))
        return seg

    for causal, ks in ((False, keys), (True, queries)):
        kk, vv = (k, v) if not causal else (torch.randn(2, 2, 9, 8), torch.randn(2, 2, 9, 8))
        sq, sk = segments(queries, 9), segments(ks, kk.shape[2])
        mask = (sq[:, :, None] == sk[:, None, :]) & (sq[:, :, None] >= 0)
        if causal:
            mask &= torch.ones(9, 9, dtype=torch.bool).tril()
        mask |= sq[:, :, None] < 0  # padding queries: any row, ignored
        want = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask[:, None])
        got = Blocks(queries, ks, causal).attend(q, kk, vv)
        real = (sq >= 0)[:, None, :, None].expand_as(got)
        assert (got - want)[real].abs().max() < 1e-6
        assert not got[~real].any()


def test_encoder_ttt_with_gates_held_at_zero_is_skipped_exactly_and_runs_once_a_gate_can_move(monkeypatch):
    from generalist_cli.model.ttt import TTTMLP
    from generalist_cli.model.whisper import BlockOptions, EncoderBlock

    torch.manual_seed(0)
    block = EncoderBlock(32, 2, 64, BlockOptions(ttt=True)).eval()
    x = torch.randn(2, 40, 32)
    calls = []
    original = TTTMLP.scan
    monkeypatch.setattr(TTTMLP, "scan", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with torch.no_grad():
        skipped = block(x)[0]
    assert not calls  # inference with tanh(0) gates: no scan
    monkeypatch.setattr(EncoderBlock, "_ttt_closed", lambda self: False)
    with torch.no_grad():
        full = block(x)[0]
    assert calls and torch.equal(skipped, full)  # exactly what the scan would have added: 0
    monkeypatch.undo()
    monkeypatch.setattr(TTTMLP, "scan", lambda self, *a, **k: calls.append(2) or original(self, *a, **k))
    block(x)[0].sum().backward()  # trainable gates: the scan runs, so its gradient reaches the gates
    assert 2 in calls and block.ttt_gate.grad is not None and block.ttt_gate.grad.abs().sum() > 0
    calls.clear()
    for p in block.parameters():
        p.requires_grad_(False)  # a frozen encoder (train_encoder = false)
    block(x)
    assert not calls
    with torch.no_grad():
        block.ttt_gate_reverse.fill_(0.1)  # a trained gate: the scan runs again
    block(x)
    assert calls


def test_a_prefill_on_a_used_cache_starts_afresh():
    """Decoding again from a cache already decoded (transcription's loop guard retries with beam search on
    the same cache) gives the first decode's logits: the decoder's TTT state restarts at offset 0 (it once
    continued from the end of the first attempt)."""
    from tests.conftest import generalist

    model = generalist().eval()
    prompt = torch.tensor([[50258, 50259, 50359, 50363]])
    with torch.inference_mode():
        cache = model.new_cache(model.encode_audio(torch.randn(1, 80, 200)))
        runs = []
        for _ in range(2):
            logits = [model.logits(model.decoder(prompt, cache.cross_kv, cache, 0))[:, -1]]
            for i in range(20):  # past a TTT mini-batch boundary
                logits.append(model.decode_step(logits[-1].argmax(-1, keepdim=True), cache, 4 + i))
            runs.append(torch.stack(logits))
    assert torch.equal(runs[0], runs[1])
