"""Cost growth: wall time and peak memory against input size, for ``gen run`` and for a training step.

``run``: ``gen run`` (default model, default options: Silero VAD, long-form windows) on one WAV file of 1, 10 and
60 minutes made by repeating the real English recordings of ``tests/real/media`` (47 s, 8 speakers; each copy
its own, so VAD cuts them as it would a real long recording), ``--out`` a file, a fresh process per size;
peak RSS is that process's (``getrusage`` of the child).

``train``: steps of ``recipes/asr-hi-real.toml`` with its encoder frozen (the form the 60-minute run trained),
batch 8 real Hindi utterances of ``data/kathbath-hi`` tiled (log-mels and target tokens repeated) to exactly 2,
10 and 30 seconds each; seconds per step (steps 1-3; step 0 warms up) and peak RSS, a process per length.

Both should grow linearly in the input (per-minute / per-second cost flat); the table says where they do not.

    pip install -e '.[bench]'
    gen prepare kathbath --lang hi --local ../shared/data/air-hindi-1h --out data/kathbath-hi
    python benchmarks/cost_growth.py [--minutes 1,10,60] [--seconds 2,10,30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "tests" / "real" / "media"


def long_recording(minutes: float, path: Path) -> float:
    """A WAV of ``minutes`` made of the real recordings end to end (0.5 s of silence between): its seconds."""
    import numpy as np

    from generalist_cli.media.audio import decode_audio, encode_audio

    clips = [decode_audio(p) for p in sorted(MEDIA.glob("*.*")) if p.suffix in (".wav", ".flac")]
    gap = np.zeros(8000, dtype=np.float32)
    parts, n, i = [], 0, 0
    while n < minutes * 60 * 16000:
        parts += [clips[i % len(clips)], gap]
        n += clips[i % len(clips)].size + gap.size
        i += 1
    audio = np.concatenate(parts)[: int(minutes * 60 * 16000)]
    encode_audio(path, audio)
    return audio.size / 16000


def run_row(minutes: float, threads: int, work: Path) -> dict:
    wav = work / f"long-{minutes:g}min.wav"
    seconds = long_recording(minutes, wav)
    text = work / f"out-{minutes:g}.txt"
    cmd = ["gen", "run", str(wav), "--to", "text", "--out", str(text)]  # all cores, as a user runs it
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"gen run on {minutes} min: {done.stderr.strip().splitlines()[-1]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    words = len(text.read_text().split())
    return {"minutes": minutes, "audio_s": round(seconds, 1), "wall_s": round(wall, 1),
            "s_per_audio_min": round(wall / minutes, 2), "peak_rss_mb": round(max(peak, before) / 1024),
            "words": words}  # fmt: skip


def tiled(example, seconds: float, max_tokens: int):
    """``example`` with its log-mel and target tokens repeated (or cut) to ``seconds`` of audio."""
    import torch

    frames = int(seconds * 100)
    reps = -(-frames // example.source.shape[-1])
    source = example.source.repeat(1, reps)[:, :frames]
    prompt, target = example.tokens[: example.prompt_len], example.tokens[example.prompt_len : -1]
    n = max(1, round(len(target) * frames / example.source.shape[-1]))
    body = target.repeat(-(-n // len(target)))[: min(n, max_tokens - example.prompt_len - 1)]
    tokens = torch.cat([prompt, body, example.tokens[-1:]])
    return type(example)(**{**example.__dict__, "source": source, "tokens": tokens})


def train_row(seconds: float, threads: int, steps: int = 4) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_profile import _setup

    from generalist_cli.train.batches import Batch

    step_module, opt, batch, autocast, _ = _setup(["model.train_encoder=false"], threads)
    times = []
    for step in range(steps):
        b = batch(step)
        b = Batch([tiled(e, seconds, 448) for e in b.examples])
        t = time.perf_counter()
        with autocast():
            out = step_module(b)
        (out["ce_sum"] / max(1, b.n_target_tokens) + 1e-3 * out.get("aux", 0.0)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    per_step = sum(times[1:]) / len(times[1:])
    return {"utterance_s": seconds, "batch": len(b.examples), "s_per_step": round(per_step, 2),
            "s_per_audio_s": round(per_step / (seconds * len(b.examples)), 3),
            "target_tokens": b.n_target_tokens,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10,60")
    ap.add_argument("--seconds", default="2,10,30")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--train-child", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.train_child is not None:
        print(json.dumps(train_row(a.train_child, a.threads)))
        return
    results: dict = {"run": [], "train": []}
    with tempfile.TemporaryDirectory() as tmp:
        for m in [float(x) for x in a.minutes.split(",") if x]:
            results["run"].append(run_row(m, a.threads, Path(tmp)))
            print(json.dumps(results["run"][-1]), flush=True)
    for s in [float(x) for x in a.seconds.split(",") if x]:
        cmd = [sys.executable, __file__, "--train-child", str(s), "--threads", str(a.threads)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"training step at {s} s: {done.stderr.strip().splitlines()[-1]}")
        results["train"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results["train"][-1]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
