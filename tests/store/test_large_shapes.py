"""Real large checkpoints at their real shapes: random-weight Hugging Face folders with the ``config.json``
of large-v3, large-v3-turbo and distil-large-v3 (128 mel bins, the 51,866-token vocabulary with ``<|yue|>``,
a shallow decoder under a deep encoder), at reduced width and depth where the shape allows, pulled into the
store, transcribing, exported to ONNX and upcycled.

The configs follow the checkpoints' own ``config.json`` (openai/whisper-large-v3, openai/whisper-large-v3-turbo,
distil-whisper/distil-large-v3): vocab_size 51866, num_mel_bins 128, max_source_positions 1500,
max_target_positions 448, 32 encoder layers over 32 / 4 / 2 decoder layers, d_model 1280, 20 heads, FFN 5120.
Width here is 64 (4 heads, FFN 256) and the depths keep each model's ratio: 4 encoder layers over 4 / 1 / 1.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generalist_cli.store import store

LARGE = {  # name -> (encoder layers, decoder layers) at reduced depth
    "large-v3": (4, 4),
    "large-v3-turbo": (4, 1),
    "distil-large-v3": (4, 1),
}


def large_v3_tokenizer(base: dict) -> dict:
    """whisper-base's tokenizer.json with large-v3's 100th language, ``<|yue|>`` after ``<|su|>``: every
    special token after it moves up by one (``<|translate|>`` 50358 -> 50359 ...)."""
    tok = json.loads(json.dumps(base))
    su = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|su|>")
    for t in tok["added_tokens"]:
        if t["id"] > su:
            t["id"] += 1
    tok["added_tokens"].append({**tok["added_tokens"][0], "id": su + 1, "content": "<|yue|>"})
    tok["added_tokens"].sort(key=lambda t: t["id"])
    return tok


def end_each_window_at_once(model) -> None:
    """Random weights write 448 tokens a window, six times over (the temperature fallback): minutes of
    decoding that test nothing about shapes. Pointing the decoder's final layer-norm bias along a unit
    ``<|endoftext|>`` embedding makes that token win by ~8 logits (the random rows score ~N(0, 0.26)), so each
    window ends after its first timestamp; every weight still takes part in the logits the tests compare."""
    decoder = model.model.decoder
    with torch.no_grad():
        eot = decoder.embed_tokens.weight[model.config.eos_token_id]
        eot.copy_(torch.nn.functional.normalize(eot, dim=0))
        decoder.layer_norm.bias.copy_(10 * eot)


@pytest.fixture(scope="module")
def large_folders(tmp_path_factory, base):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    tokenizer = large_v3_tokenizer(json.loads((base.path / "tokenizer.json").read_text()))
    out = {}
    for name, (enc, dec) in LARGE.items():
        cfg = WhisperConfig(
            vocab_size=51866, num_mel_bins=128, d_model=64, encoder_layers=enc, decoder_layers=dec,
            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256,
            max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258,
            bos_token_id=50257, eos_token_id=50257, pad_token_id=50256, begin_suppress_tokens=[220, 50257],
        )  # fmt: skip
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(cfg).eval()
        end_each_window_at_once(model)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        out[name] = folder
    return out


@pytest.mark.parametrize("name", list(LARGE))
def test_large_checkpoint_shapes_pull_transcribe_export_and_upcycle(name, large_folders, tmp_path):
    from generalist_cli.export.onnx import export_graphs
    from generalist_cli.infer.onnx_engine import OnnxModel
    from generalist_cli.model.upcycle import upcycle
    from generalist_cli.store.load import load_model

    entry = store.pull(str(large_folders[name]), dest=tmp_path / name)
    loaded = load_model(entry.path)
    c, tok = loaded.config, loaded.tokenizer
    enc, dec = LARGE[name]
    assert (c.n_mels, c.n_vocab, c.n_audio_layer, c.n_text_layer) == (128, 51866, enc, dec)
    assert tok.multilingual and "yue" in tok.language_codes and len(tok.language_codes) == 100
    assert tok.translate == 50359 and tok.no_timestamps == 50364 and tok.timestamp_begin + 1501 == c.n_vocab
    assert tok.language_token("yue") == 50358 and all(
        tok._tk.token_to_id(f"<|{code}|>") == tok.language_token(code) for code in tok.language_codes
    )  # the arithmetic ids are the file's
    prompt = torch.tensor([tok.sot_sequence(language="hi", timestamps=False)])
    mel = np.random.default_rng(0).normal(0, 1, (1, 128, 200)).astype(np.float32)  # 2 s: shapes, not words
    with torch.inference_mode():
        cache = loaded.model.new_cache(loaded.model.encode_mels(mel))
        logits = loaded.model.decode_step(prompt, cache, 0)
    assert logits.shape[-1] == c.n_vocab == 51866 and torch.isfinite(logits).all()
    (tmp_path / "onnx").mkdir()
    export_graphs(loaded.model, tmp_path / "onnx", n_frames=200)
    (tmp_path / "onnx" / "config.json").write_text(json.dumps(c.to_hf()))
    (tmp_path / "onnx" / "tokenizer.json").write_bytes((entry.path / "tokenizer.json").read_bytes())
    onnx = OnnxModel(tmp_path / "onnx", threads=1, device="cpu")
    onnx_cache = onnx.new_cache(onnx.encode_mels(mel))
    got = onnx.decode_step(prompt.numpy(), onnx_cache, 0)
    assert onnx_cache.cross_kv[0][0].shape[0] == 1 and len(onnx_cache.cross_kv) == dec
    assert np.allclose(got, logits.numpy(), atol=1e-3)
    g = upcycle(loaded.model, n_experts=4, top_k=2, ttt="mlp")
    assert g.config.n_mels == 128 and g.config.n_text_layer == dec and g.config.n_vocab == 51866


@pytest.mark.slow
def test_large_turbo_shape_through_the_cli(large_folders, tmp_path):
    """The commands a user types, on the large-v3-turbo shape (128 mel bins, 51,866 tokens, a 1-layer decoder
    under a 4-layer encoder here): ``gen run`` transcribes a real file with it, ``gen export`` writes graphs
    ONNX Runtime runs, and ``gen run`` on the export writes text too. Random weights: shapes, not words."""
    from tests.conftest import EXAMPLE, gen

    folder = str(large_folders["large-v3-turbo"])
    r = gen("run", str(EXAMPLE), "--to", "text", "--lang", "hi", "--model", folder, "--format", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["language"] == "hi"
    out = tmp_path / "turbo-int8"
    r = gen("export", folder, "--out", str(out), "--max-wer-change", "100", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    report = json.loads(r.stdout)
    assert report["encoder"] == "windows" and report["parity"]["fp32_max_abs_logit_diff"] <= 1e-3
    r = gen("run", str(EXAMPLE), "--to", "text", "--lang", "hi", "--model", str(out), "--format", "json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["language"] == "hi"
