"""``gen models init / add-experts / info`` through the real entry point."""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLE, gen


def strip(stdout: str) -> dict:
    """A ``gen run -f json`` line without its file name."""
    return {k: v for k, v in json.loads(stdout).items() if k != "file"}


@pytest.fixture(scope="module")
def dense() -> dict:
    """whisper-tiny.en's transcript of the example, which every model made from it must write again."""
    r = gen("run", str(EXAMPLE), "--model", "whisper-tiny.en", "-f", "json")
    assert r.returncode == 0, r.stderr
    return strip(r.stdout)


@pytest.mark.slow
def test_init_run_info_add_experts(tmp_path, dense):
    out = tmp_path / "gen-tiny"
    r = gen(
        "models",
        "init",
        "--from",
        "whisper-tiny.en",
        "--experts",
        "4",
        "--top-k",
        "2",
        "--ttt",
        "mlp",
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["architecture"] == "generalist" and meta["upcycled_from"] == "whisper-tiny.en"

    upcycled = gen("run", str(EXAMPLE), "--model", str(out), "-f", "json")
    assert upcycled.returncode == 0, upcycled.stderr
    assert strip(upcycled.stdout) == dense  # identical transcript and segment times

    r = gen("models", "info", str(out), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert (info["experts"], info["top_k"], info["ttt"], info["d_model"]) == (4, 2, "mlp", 384)
    assert info["params_active"] < info["params_total"] and info["size_on_disk"] > 4 * info["params_active"]
    assert info["flops_per_audio_second"] > 0 and info["vocabulary"] == 51864 + 3

    grown = tmp_path / "grown"
    r = gen("models", "add-experts", str(out), "--n", "2", "--out", str(grown), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"path": str(grown), "old_experts": 4, "experts": 6}
    again = gen("run", str(EXAMPLE), "--model", str(grown), "-f", "json")
    assert strip(again.stdout) == dense


def init_like_whisper(out, dense: dict, *options: str, says: str) -> dict:
    """``gen models init`` from whisper-tiny.en with ``options``; the new model must transcribe the example
    exactly like whisper-tiny.en (``dense``). Returns its ``gen models info``."""
    r = gen("models", "init", "--from", "whisper-tiny.en", *options, "--ttt", "none", "--out", str(out))
    assert r.returncode == 0 and says in r.stdout, r.stderr
    variant = gen("run", str(EXAMPLE), "--model", str(out), "-f", "json")
    assert strip(variant.stdout) == dense
    return json.loads(gen("models", "info", str(out), "--json").stdout)


@pytest.mark.slow
def test_fine_grained_conformer_init_transcribes_like_whisper_and_info_counts_it(tmp_path, dense):
    out = tmp_path / "gen-fg"
    info = init_like_whisper(
        out,
        dense,
        "--moe",
        "fine-grained",
        "--segments",
        "4",
        "--shared",
        "1",
        "--experts",
        "4",
        "--top-k",
        "1",
        "--encoder",
        "conformer",
        says="3 groups of 4 experts (1/4 width) top-1 each + 1/4 shared",
    )
    assert (info["moe"], info["moe_segments"], info["moe_shared"], info["encoder"]) == (
        "fine-grained",
        4,
        1,
        "conformer",
    )
    # a token skips 3 of 4 quarter-width experts in each of 3 groups, in each of the 8 blocks
    quarter = 2 * 384 * 384 + 384 + 384  # fc1 (384 of tiny.en's 1536 hidden units) + biases + fc2
    assert info["params_total"] - info["params_active"] == 8 * 3 * 3 * quarter  # conformer modules: always active
    r = gen("models", "add-experts", str(out), "--out", str(tmp_path / "more"))
    assert r.returncode != 0 and "fine-grained" in r.stderr and "Traceback" not in r.stderr
    r = gen(
        "models",
        "init",
        "--from",
        "whisper-tiny.en",
        "--moe",
        "fine-grained",
        "--segments",
        "2",
        "--shared",
        "2",
        "--out",
        str(tmp_path / "bad"),
    )
    assert r.returncode == 2 and "--shared < --segments" in r.stderr


@pytest.mark.slow
def test_peer_init_transcribes_like_whisper(tmp_path, dense):
    info = init_like_whisper(
        tmp_path / "gen-peer",
        dense,
        "--moe",
        "peer",
        "--experts",
        "4096",
        "--top-k",
        "8",
        says="PEER 4,096 experts, 8 heads x top-8",
    )
    assert (info["moe"], info["peer_experts"]) == ("peer", 4096)
    assert info["params_total"] - info["params_active"] == 8 * 2 * (4096 - 8 * 8) * 384
    r = gen(
        "models",
        "init",
        "--from",
        "whisper-tiny.en",
        "--moe",
        "peer",
        "--experts",
        "1000",
        "--out",
        str(tmp_path / "x"),
    )
    assert r.returncode == 2 and "square" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_usage_errors(tmp_path):
    r = gen(
        "models", "init", "--from", "whisper-tiny.en", "--experts", "2", "--top-k", "3", "--out", str(tmp_path / "x")
    )
    assert r.returncode == 2 and "--top-k 3 is more than --experts 2" in r.stderr
    r = gen("models", "add-experts", "whisper-tiny.en", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "dense model" in r.stderr and "Traceback" not in r.stderr
