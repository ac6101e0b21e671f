"""``gen export``: graph parity (dense, MoE, TTT encoder, restricted vocabulary), INT8 end to end through
the CLI, pruning to a sparsity, expert pruning that keeps routing valid, and refusal without writing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from generalist_cli.errors import GenError, UsageError
from generalist_cli.export import build
from generalist_cli.export.onnx import export_graphs
from generalist_cli.export.prune import drop_experts, magnitude_prune, prunable
from generalist_cli.infer.onnx_engine import OnnxModel
from tests.conftest import EXAMPLE, EXAMPLE_TEXT, NO_TORCH, dense, gen, generalist, wer


def _export(model, tokenizer_dir, tmp_path, n_frames=3000):
    export_graphs(model, tmp_path, n_frames=n_frames)
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_hf()))
    shutil.copy(tokenizer_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    return OnnxModel(tmp_path, threads=1, device="cpu")


def _logits(m, mel, prompt, steps=14):
    """Prompt logits, then ``steps`` cached steps feeding fixed tokens (4 + 14 tokens cross the TTT
    mini-batch boundary at 16)."""
    cache = m.new_cache(m.encode_audio(mel))
    out = [m.logits(m.decoder(prompt, cache.cross_kv, cache, 0))]
    for i in range(steps):
        out.append(m.decode_step(torch.full((mel.shape[0], 1), 400 + i), cache, prompt.shape[1] + i))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "moe-ttt", "moe-ttt-encoder", "restricted-vocab", "adapter"])
def test_fp32_graphs_equal_pytorch(kind, tiny_en, tmp_path):
    prompt = torch.tensor([[50258, 50259, 50359, 50363]] * 2)
    if kind == "dense":
        model = dense()
    elif kind == "adapter":  # a Hindi adapter: the row prompted <|hi|> uses it, the <|en|> row does not
        from generalist_cli.model.adapters import LowRank, add_adapters

        model = add_adapters(dense(), "hi", 4, 50276)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, LowRank):
                    mod.up.normal_(0, 0.2)
        prompt = torch.tensor([[50258, 50259, 50359, 50363], [50258, 50276, 50359, 50363]])
    elif kind == "moe-ttt":  # TTT in the decoder too: its state goes in and out of the decoder graph
        model = generalist()
    else:
        model = generalist()
        for block in model.decoder.layers:
            block.ttt = None
        model.config = replace(model.config, ttt="none")
        if kind == "restricted-vocab":
            model.config = replace(model.config, output_tokens=tuple(range(300, 420)) + (50257,))
    model = model.eval()
    torch.manual_seed(0)
    mel = torch.randn(2, 80, 200)  # a short window keeps the unrolled TTT scans of the graph small
    onnx = _export(model, tiny_en.path, tmp_path, n_frames=200)
    with torch.inference_mode():
        want = _logits(model, mel, prompt)
    got = [torch.from_numpy(x) for x in _logits(onnx, mel, prompt)]  # the engine works in numpy
    for a, b in zip(want, got):
        assert a.shape == b.shape
        assert bool((a.isfinite() == b.isfinite()).all())
        finite = a.isfinite()
        assert (a[finite] - b[finite]).abs().max() <= 1e-4
    if kind == "restricted-vocab":
        assert int(got[0].isfinite().sum(-1).max()) == 121
    if kind == "adapter":  # the export routes as PyTorch does: English exactly the base model's
        model.decoder.adapter_tokens = ()
        with torch.inference_mode():
            plain = _logits(model, mel, prompt)
        assert all((p[0] - g[0]).abs().max() <= 1e-4 for p, g in zip(plain, got))
        assert max(float((p[1] - g[1]).abs().max()) for p, g in zip(plain, got)) > 1e-2


@pytest.fixture(scope="module")
def tiny_int8(tiny_en, tmp_path_factory):
    """``gen export whisper-tiny.en`` (INT8): the export folder and the command's JSON report."""
    out = tmp_path_factory.mktemp("export") / "tiny-int8"
    r = gen("export", "whisper-tiny.en", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


@pytest.mark.slow
def test_int8_export_cli_runs_the_example(tiny_int8):
    out, report = tiny_int8
    assert {"path", "quantize", "parity", "bytes", "gen_version"} <= set(report)
    assert report["parity"]["fp32_max_abs_logit_diff"] <= 1e-4
    assert report["parity"]["wer_change"] <= 0.05
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "decoder.onnx",
        "encoder.onnx",
        "export.json",
        "parity.json",
        "tokenizer.json",
    ]
    assert report["bytes"]["total"] < 45e6  # int8: about a quarter of tiny.en's 150 MB of fp32 weights
    r = gen("run", str(EXAMPLE), "--to", "text", "--model", str(out))
    assert r.returncode == 0, r.stderr
    assert wer(EXAMPLE_TEXT, r.stdout) <= 0.05, r.stdout
    again = gen("export", "whisper-tiny.en", "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.slow
def test_an_export_runs_and_serves_without_torch(tiny_int8, tmp_path):
    """What the CPU container runs: ONNX Runtime and numpy, ``import torch`` failing. ``gen run`` (greedy,
    beam search) and ``gen serve``'s transcription endpoint give the text the PyTorch model gives."""
    from tests.conftest import EXAMPLE as HELLO
    from tests.conftest import Server

    out, _ = tiny_int8
    for beam in ("1", "5"):
        want = gen("run", str(EXAMPLE), "--model", "whisper-tiny.en", "--beam-size", beam)
        r = subprocess.run(
            [sys.executable, *NO_TORCH, "run", str(EXAMPLE), "--model", str(out), "--beam-size", beam],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert wer(EXAMPLE_TEXT, r.stdout) <= 0.05, (r.stdout, want.stdout)
        # the same words; greedy also the same characters. Beam search on the INT8 graph drops the two commas
        # fp32 writes (measured with the Silero VAD's cut; with the energy VAD's, 20 ms longer, both had them)
        assert wer(want.stdout, r.stdout) == 0.0 and (beam == "5" or r.stdout == want.stdout), (r.stdout, want.stdout)
        if beam == "1":
            greedy = r.stdout
    server = Server(str(out), tmp=tmp_path / "serve", python=tuple(NO_TORCH))
    try:
        with HELLO.open("rb") as f:
            res = server.post(
                "/v1/audio/transcriptions",
                files={"file": ("hello.m4a", f, "audio/mp4")},
                data={"response_format": "json"},
            )
        assert res.status_code == 200, res.text
        assert res.json()["text"].strip() == greedy.strip()
        refused = server.post("/v1/convert", data={"to": "speech", "text": "hello"})
        assert refused.status_code == 400 and "speech -> text" in refused.json()["error"]["message"], refused.text
    finally:
        assert "Traceback" not in server.stop()
    for verb in ("serve", "run"):  # fixed 30-s windows in the graph: packing is refused, in one line
        args = [str(out), "--pack"] if verb == "serve" else [str(EXAMPLE), "--model", str(out), "--pack"]
        r = subprocess.run([sys.executable, *NO_TORCH, verb, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "cannot pack" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "PARITY_LIMIT", -1.0)
    out = tmp_path / "never"
    with pytest.raises(GenError, match="differ from PyTorch"):
        build.export_model("whisper-tiny.en", out, quantize="none")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_magnitude_pruning_reaches_the_sparsity(sparsity):
    model = generalist()
    info = magnitude_prune(model, sparsity)
    weights = [p for _, p in prunable(model)]
    zeros = sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)
    assert abs(zeros - sparsity) < 1e-3 and abs(info["sparsity"] - zeros) < 1e-9
    assert not any((p == 0).all() for n, p in model.named_parameters() if "embed" in n or "router" in n)
    with pytest.raises(UsageError):
        magnitude_prune(model, 1.0)


def test_expert_pruning_keeps_routing_valid_and_drops_only_unused_experts():
    model = generalist()
    with torch.no_grad():
        for name, m in model.named_modules():
            if hasattr(m, "logit_bias"):
                m.logit_bias[1] = -1e4  # expert 1 is never chosen
    mel, tokens = torch.randn(1, 80, 3000), torch.randint(0, 50000, (1, 7))
    usage = [torch.tensor([5, 0, 7, 3]) for _ in range(4)]
    pruned, info = drop_experts(model, 1, usage)
    assert info["experts_after"] == 3 and pruned.config.n_experts == 3 and pruned.config.top_k == 2
    for m in pruned.modules():
        if hasattr(m, "logit_bias"):
            assert m.router.weight.shape[0] == 3 and m.fc1_weight.shape[0] == 3
    with torch.no_grad():
        a, b = model(mel, tokens), pruned(mel, tokens)
    assert (a - b).abs().max() < 1e-5  # renormalised top-k weights do not depend on unchosen experts
    small, _ = drop_experts(model, 3, usage)  # one expert left (expert 2, the most used): a dense FFN
    assert small.config.n_experts == 1 and small.config.top_k == 1
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "logit_bias"):
                m.logit_bias[:] = torch.tensor([-1e4, -1e4, 0.0, -1e4])
        assert (model(mel, tokens) - small(mel, tokens)).abs().max() < 1e-5
    with pytest.raises(UsageError):
        drop_experts(model, 4, usage)


@pytest.mark.slow
def test_static_int8_with_a_calibration_folder(tmp_path):
    cal = tmp_path / "cal"
    cal.mkdir()
    shutil.copy(EXAMPLE, cal / "hello.m4a")
    (cal / "hello.txt").write_text(EXAMPLE_TEXT)
    report = build.export_model(
        "whisper-tiny.en", tmp_path / "static", static=True, calibration=cal, max_wer_change=0.1
    )
    assert report["static"] and report["calibration_examples"] == 1
    assert report["parity"]["calibration_wer_export"] <= 0.1  # 0.056: one word of 18 (measured)
    ops = {n.op_type for n in __import__("onnx").load(str(tmp_path / "static" / "encoder.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ format


def test_graphs_with_external_data_load_quantise_and_equal_the_inline_ones(tiny_en, tmp_path):
    """Past protobuf's 2 GB (large-v3's encoder) weights go to ``<graph>.onnx.data``: forced here on a small
    model, the graphs give the same logits as inline ones, INT8 quantisation keeps the format, sizes count it."""
    from generalist_cli.export.onnx import has_external_data
    from generalist_cli.export.quantize import quantize_dynamic

    model = dense().eval()
    mel = torch.randn(1, 80, 3000)
    prompt = torch.tensor([[50258, 50259, 50359, 50363]])
    for name in ("inline", "ext", "q"):
        (tmp_path / name).mkdir()
    inline = _export(model, tiny_en.path, tmp_path / "inline")
    export_graphs(model, tmp_path / "ext", external=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(tmp_path / "inline" / name, tmp_path / "ext" / name)
    assert sorted(p.name for p in (tmp_path / "ext").glob("*.data")) == ["decoder.onnx.data", "encoder.onnx.data"]
    assert has_external_data(tmp_path / "ext" / "encoder.onnx") and not has_external_data(
        tmp_path / "inline" / "encoder.onnx"
    )
    ext = OnnxModel(tmp_path / "ext", threads=1, device="cpu")
    for a, b in zip(_logits(inline, mel, prompt, steps=2), _logits(ext, mel, prompt, steps=2)):
        assert (a == b).all()
    quantize_dynamic(tmp_path / "ext" / "encoder.onnx", tmp_path / "q" / "encoder.onnx")
    assert (tmp_path / "q" / "encoder.onnx.data").exists()
    assert build.graph_bytes(tmp_path / "ext" / "encoder.onnx") > (tmp_path / "ext" / "encoder.onnx").stat().st_size
    import onnxruntime as ort

    ort.InferenceSession(str(tmp_path / "q" / "encoder.onnx"), providers=["CPUExecutionProvider"])


def test_calibration_from_a_prepared_dataset(tmp_path):
    """Prepared shards store log-mels as (frames, n_mels), as gen prepare writes them: calibration reads them
    so (it once read them transposed and refused every prepared dataset)."""
    import datasets
    import numpy as np

    mel = np.random.default_rng(0).standard_normal((569, 80)).astype(np.float32)
    rows = {"mel": [mel], "text": ["नमस्ते"], "lang": ["hi"], "modality": ["audio"], "task": ["transcribe"]}
    datasets.DatasetDict({"valid": datasets.Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "d"))
    (tmp_path / "d" / "prepare.json").write_text("{}")
    cal = build.load_calibration(tmp_path / "d", n_mels=80)
    assert cal.mels[0].shape == (80, 3000) and cal.frames == [569] and cal.language == "hi"
    assert torch.equal(cal.mels[0][:, :569], torch.from_numpy(mel.T))
    with pytest.raises(UsageError, match="80 bins, the model takes 128"):
        build.load_calibration(tmp_path / "d", n_mels=128)
