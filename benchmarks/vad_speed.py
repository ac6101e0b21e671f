"""What voice-activity detection saves on audio that is half silence, and what it costs in accuracy.

Builds a recording of eSpeak sentences separated by silences as long as the speech (with faint noise),
transcribes it with VAD (the default) and without, same model, same process, and reports seconds, the
real-time factor, WER against the known text, and the VAD pass's own time. Also runs 60 s of silence and 60 s
of white noise through both and prints what each invents.

    python benchmarks/vad_speed.py [--model whisper-base] [--threads 2]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

SENTENCES = (Path(__file__).resolve().parents[1] / "examples" / "sentences_en.txt").read_text().splitlines()


def norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", s.lower()).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whisper-base")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import jiwer
    import torch

    from generalist_cli.features.vad import speech_regions
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
    from generalist_cli.media.espeak import synthesize_16k
    from generalist_cli.store.store import open_model

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    parts = []
    for s in SENTENCES[:8]:
        speech = synthesize_16k(s)
        parts += [speech, np.zeros(len(speech), np.float32)]
    audio = np.concatenate(parts)
    audio += rng.normal(0, 0.001, len(audio)).astype(np.float32)
    seconds = len(audio) / 16000
    loaded = open_model(a.model)
    ref = norm(" ".join(SENTENCES[:8]))
    t = time.perf_counter()
    speech_s = sum(b - a_ for a_, b in speech_regions(audio)) / 16000
    vad_s = time.perf_counter() - t
    print(
        f"{seconds:.1f} s of audio, {speech_s:.1f} s of it speech by the VAD ({vad_s * 1000:.0f} ms for the VAD pass)"
    )
    for vad in (True, False):
        t = time.perf_counter()
        [tr] = transcribe(loaded.model, loaded.tokenizer, [audio], TranscribeOptions(language="en", vad=vad))
        dt = time.perf_counter() - t
        print(f"vad={vad!s:5}: {dt:6.1f} s, RTF {dt / seconds:.3f}, WER {jiwer.wer(ref, norm(tr.text)):.3f}")
    for name, x in (
        ("60 s silence", np.zeros(60 * 16000, np.float32)),
        ("60 s white noise", rng.normal(0, 0.05, 60 * 16000).astype(np.float32)),
    ):
        for vad in (True, False):
            [tr] = transcribe(loaded.model, loaded.tokenizer, [x], TranscribeOptions(language="en", vad=vad))
            print(f"{name}, vad={vad!s:5}: {tr.text!r}")


if __name__ == "__main__":
    main()
