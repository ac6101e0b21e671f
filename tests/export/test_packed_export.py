"""``gen export --encoder packed``: an encoder graph for utterances of any length, several to a row, and MoE
layers that run only the experts the router chose (top-k inside the graph), equal to PyTorch's packed forward."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from generalist_cli.export.onnx import export_graphs, why_not_packed
from generalist_cli.infer.onnx_engine import OnnxModel
from tests.conftest import generalist


def _closed_encoder(model):
    """``model`` with its encoder's TTT gates at 0 (a frozen-encoder recipe's checkpoint): exportable packed."""
    with torch.no_grad():
        for block in model.encoder.layers:
            block.ttt_gate.zero_()
            block.ttt_gate_reverse.zero_()
    return model


def _export(model, tokenizer_dir, out, **kw):
    out.mkdir(parents=True, exist_ok=True)
    export_graphs(model, out, packed=True, **kw)
    (out / "config.json").write_text(json.dumps(model.config.to_hf()))
    shutil.copy(tokenizer_dir / "tokenizer.json", out / "tokenizer.json")
    return OnnxModel(out, threads=1, device="cpu")


def _windows(seed=0, frames=(37, 120, 64, 9, 200)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((80, n)).astype(np.float32) for n in frames]  # odd counts too


def _decode_logits(m, cache, prompt, steps=14):
    out = [np.asarray(m.logits(m.decoder(prompt, cache.cross_kv, cache, 0)))]
    for i in range(steps):
        tok = np.full((prompt.shape[0], 1), 400 + i)
        out.append(np.asarray(m.decode_step(tok if m.kind == "onnx" else torch.from_numpy(tok), cache, 4 + i)))
    return out


def test_packed_export_equals_pytorch_packed(tiny_en, tmp_path):
    model = _closed_encoder(generalist()).eval()
    onnx = _export(model, tiny_en.path, tmp_path)
    assert onnx.can_pack
    windows = _windows()
    prompt = np.array([[50258, 50259, 50359, 50363]] * len(windows))
    with torch.inference_mode():
        feats, lengths = model.encode_mels_packed(windows)
        want = _decode_logits(model, model.new_cache(feats, lengths), torch.from_numpy(prompt))
        ref_k = torch.stack([kk for kk, _ in model.cross_kv(feats)]).numpy()
    (k, v), got_lengths = onnx.encode_mels_packed(windows)
    assert got_lengths == lengths == [19, 60, 32, 5, 100]
    for i, n in enumerate(lengths):  # each utterance's own keys, as PyTorch's packed forward gives them
        assert np.abs(k[:, i, :, :n] - ref_k[:, i, :, :n]).max() <= 1e-4
    got = _decode_logits(onnx, onnx.new_cache((k, v), lengths), prompt)
    for a, b in zip(want, got):
        finite = np.isfinite(a)
        assert (finite == np.isfinite(b)).all() and np.abs(a[finite] - b[finite]).max() <= 1e-4


def test_packed_rows_equal_each_utterance_alone(tiny_en, tmp_path):
    """The graph's segment masks: an utterance packed beside others gives its keys when encoded alone."""
    onnx = _export(_closed_encoder(generalist()).eval(), tiny_en.path, tmp_path)
    windows = _windows(1, (50, 80, 30))
    (k, _), lengths = onnx.encode_mels_packed(windows)
    for i, w in enumerate(windows):
        (alone, _), _ = onnx.encode_mels_packed([w])
        assert np.abs(k[:, i, :, : lengths[i]] - alone[:, 0]).max() <= 1e-4


def test_top_k_experts_in_the_graph(tiny_en, tmp_path):
    """The MoE layers gather the routed tokens per expert (no expert runs on every token), and the
    all-experts graph (``experts="dense"``) computes the same logits."""
    import onnx as onnx_lib

    model = _closed_encoder(generalist()).eval()
    top = _export(model, tiny_en.path, tmp_path / "top")
    every = _export(model, tiny_en.path, tmp_path / "dense", experts="dense")
    ops = {n.op_type for n in onnx_lib.load(str(tmp_path / "top" / "encoder.onnx")).graph.node}
    assert "NonZero" in ops
    windows = _windows(2, (40, 90))
    prompt = np.array([[50258, 50259, 50359, 50363]] * 2)
    a = _decode_logits(top, top.new_cache(*top.encode_mels_packed(windows)), prompt, steps=3)
    b = _decode_logits(every, every.new_cache(*every.encode_mels_packed(windows)), prompt, steps=3)
    for x, y in zip(a, b):
        finite = np.isfinite(x)
        assert np.abs(x[finite] - y[finite]).max() <= 1e-4


def test_an_encoder_with_live_ttt_is_not_exported_packed(tmp_path):
    model = generalist()  # live encoder TTT gates: its scans would cross the examples of a packed row
    assert "TTT" in why_not_packed(model)
    with pytest.raises(ValueError, match="cannot be exported packed"):
        export_graphs(model, tmp_path, packed=True)
    assert why_not_packed(_closed_encoder(model)) is None


def test_transcribe_through_the_packed_export_equals_pytorch(tiny_en, tmp_path, speech):
    """Long-form transcription (utterances of different lengths, batched): the packed export writes the tokens
    the PyTorch model writes packed, greedy and beam search alike."""
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe

    model = _closed_encoder(generalist()).eval()
    onnx = _export(model, tiny_en.path, tmp_path)
    tok = Tokenizer(tmp_path / "tokenizer.json", multilingual=False, n_vocab=model.config.n_vocab)
    audio = [speech(0), speech(1)[:20000], speech(2)]
    for beam in (1, 3):
        opts = TranscribeOptions(language="en", pack=True, beam_size=beam, batch_size=3)
        with torch.inference_mode():
            want = [t.text for t in transcribe(model, tok, audio, opts)]
        got = [t.text for t in transcribe(onnx, tok, audio, opts)]
        assert got == want


def test_export_packs_what_gen_run_packs(monkeypatch):
    """``--encoder auto`` packs a checkpoint gen train trained on speech (gen run packs it too), not a plain
    Whisper; ``--encoder packed`` names why an encoder cannot be, in one line."""
    from generalist_cli.errors import UsageError
    from generalist_cli.export.build import _packed
    from generalist_cli.store.load import Loaded

    def loaded(model, tasks):
        return Loaded(model, None, model.config, None, {"tasks": tasks} if tasks else {})

    closed = _closed_encoder(generalist()).eval()
    assert _packed(loaded(closed, ["transcribe"]), "auto", "ckpt")
    assert not _packed(loaded(closed, None), "auto", "whisper")  # a plain Whisper loops unpadded
    assert not _packed(loaded(closed, ["transcribe"]), "windows", "ckpt")
    assert not _packed(loaded(generalist(), ["transcribe"]), "auto", "ckpt")  # live encoder TTT: windows
    with pytest.raises(UsageError, match="cannot be exported with a packed encoder: its encoder's TTT"):
        _packed(loaded(generalist(), ["transcribe"]), "packed", "ckpt")
