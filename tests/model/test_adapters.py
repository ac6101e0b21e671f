"""Language adapters (model/adapters.py): zero at init, routed by the prompt's language token (other rows
bit-identical, mixed batches, packed examples, the decoding cache and beam reordering), float16 files that
round-trip and refuse a model they do not fit, and training that moves the adapter alone."""

from __future__ import annotations

import pytest
import torch

from generalist_cli.model import adapters as A
from generalist_cli.model.generalist import Generalist
from generalist_cli.model.packing import pack, plan_rows
from tests.conftest import tiny_config

SOT, EN, HI = 50258, 50259, 50259 + 17  # <|startoftranscript|>, <|en|>, <|hi|> (Whisper's language order)


def _model(seed: int = 0, *, live: bool = True) -> Generalist:
    torch.manual_seed(seed)
    m = A.add_adapters(Generalist(tiny_config()).eval(), "hi", 8, HI)
    if live:  # an adapter that has trained: its up halves non-zero
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, A.LowRank):
                    mod.up.normal_(0, 0.2)
    return m


def _prompts(*langs: int, n: int = 12) -> torch.Tensor:
    torch.manual_seed(1)
    text = torch.randint(0, 50000, (len(langs), n))
    return torch.cat([torch.tensor([[SOT, lang, 50359] for lang in langs]), text], 1)


def test_an_adapter_starts_as_the_base_function_and_only_its_language_sees_it():
    torch.manual_seed(0)
    base = Generalist(tiny_config()).eval()
    mel, tokens = torch.randn(2, 80, 200), _prompts(EN, HI)
    with torch.no_grad():
        before = base(mel, tokens)
        fresh = A.add_adapters(base, "hi", 8, HI)
        assert fresh.config.adapter_languages == ("hi",) and fresh.config.adapter_tokens == (HI,)
        assert torch.equal(fresh(mel, tokens), before)  # zero-initialised up halves
        live = _model()
        alone_en, alone_hi = live(mel[:1], tokens[:1]), live(mel[1:], tokens[1:])
        mixed = live(mel, tokens)
        live.decoder.adapter_tokens = ()  # the same weights, nothing routed: the base function
        plain, plain_en = live(mel, tokens), live(mel[:1], tokens[:1])
    assert torch.equal(mixed[0], plain[0]) and torch.equal(alone_en, plain_en)  # English: bit-identical
    assert (mixed[1] - plain[1]).abs().max() > 1e-2  # Hindi: the adapter acts
    assert (mixed[1] - alone_hi[0]).abs().max() < 1e-4  # a row's result does not depend on its neighbours


def test_packed_examples_are_routed_by_their_own_prompt():
    m = _model()
    tokens = [_prompts(HI, n=5)[0], _prompts(EN, n=9)[0], _prompts(HI, n=3)[0]]
    x, packing = pack([m.decoder.embed_tokens(t) for t in tokens], plan_rows([len(t) for t in tokens], 64))
    ids = torch.zeros(packing.segment_ids.shape, dtype=torch.long)
    for i, (r, a, b) in enumerate(packing.spans):
        ids[r, a:b] = tokens[i]
    route = A.route_of(ids, (HI,), packing.segment_ids)
    for i, (r, a, b) in enumerate(packing.spans):
        assert bool((route[r, a:b] == (1.0 if i != 1 else 0.0)).all())
    assert float(route[packing.segment_ids < 0].sum()) == 0.0  # padding is never routed
    assert A.route_of(_prompts(EN, EN), (HI,)) is None  # no Hindi anywhere: the adapter is not evaluated


def test_cached_decoding_and_beam_reordering_keep_each_rows_route():
    m = _model()
    mel, tokens = torch.randn(2, 80, 200), _prompts(HI, EN)
    with torch.no_grad():
        enc = m.encode_audio(mel)
        full = m.logits(m.decoder(tokens, m.cross_kv(enc)))
        cache = m.new_cache(enc)
        steps = [m.decode_step(tokens[:, :3], cache, 0)]
        steps += [m.decode_step(tokens[:, t : t + 1], cache, t) for t in range(3, tokens.shape[1])]
        cache.reorder(torch.tensor([1, 0]))  # rows swap (beam search): routes go with them
        assert cache.route[:, 0, 0].tolist() == [0.0, 1.0]
        assert cache.select(torch.tensor([1])).route[:, 0, 0].tolist() == [1.0]
    assert (torch.stack(steps, 1) - full[:, 2:]).abs().max() < 1e-4


def test_adapter_file_round_trips_in_float16_and_refuses_a_model_it_does_not_fit(tmp_path):
    m = _model()
    path = A.save(m, "hi", tmp_path / "hi.safetensors", meta={"data": "test"})
    head = A.read_header(path)
    assert head["language"] == "hi" and head["rank"] == "8" and head["token"] == str(HI) and head["data"] == "test"
    n = sum(v.numel() for v in A.adapter_state(m, "hi").values())
    assert n == 2 * 8 * (4 * (64 + 64) + 2 * (64 + 128)) and path.stat().st_size < 2 * n + 10_000  # float16
    torch.manual_seed(0)
    bare = Generalist(tiny_config()).eval()
    mel, tokens = torch.randn(1, 80, 200), _prompts(HI)
    with torch.no_grad():
        without = (bare(mel, tokens) - m(mel, tokens)).abs().max()
        rounded = (A.load(bare, path)(mel, tokens) - m(mel, tokens)).abs().max()
    assert rounded < 0.05 and without > 20 * rounded  # the same weights, float16-rounded
    wide = Generalist(tiny_config(n_text_state=32, n_audio_state=32)).eval()
    with pytest.raises(Exception):
        A.load(wide, path)
    with pytest.raises(ValueError, match="dense Whisper"):
        from generalist_cli.model.upcycle import upcycle

        A.add_adapters(upcycle(Generalist(tiny_config()), n_experts=4, top_k=2, ttt="none"), "hi", 8, HI)


def test_config_with_adapters_round_trips_through_config_json():
    from generalist_cli.model.config import ModelConfig

    c = _model().config
    again = ModelConfig.from_hf(c.to_hf())
    assert again == c and Generalist(again).decoder.adapter_tokens == (HI,)


def test_training_an_adapter_moves_it_alone():
    from generalist_cli.recipe import ModelSection, Recipe
    from generalist_cli.train.loop import freeze_unused

    m = _model(live=False).train()
    recipe = Recipe(model=ModelSection(adapter="hi", upcycle=False, ttt="none"))
    assert not recipe.model.problems()
    assert ModelSection(adapter="xx").problems() == [
        "adapter: 'xx' is not a Whisper language code",
        "adapter: adapters train on a dense Whisper: set upcycle = false",
    ]
    freeze_unused(m, recipe)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    mel, tokens = torch.randn(2, 80, 200), _prompts(HI, HI)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(m(mel, tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
    moved = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(".adapters.by_lang.hi." in k for k in moved)
    assert any(k.endswith(".up") for k in moved)
