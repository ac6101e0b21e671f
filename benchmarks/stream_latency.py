"""Streaming latency: how long after a word is spoken its text is final (`gen run - --stream`).

Audio is fed in 1-second chunks at real-time pace in a simulated clock: chunk k arrives at k+1 seconds
(when its last sample was spoken); it is processed when it has arrived and the previous step is done, and
the step takes its measured wall time. A word's latency = the time the step that confirmed it finished
minus the time the word ended in the audio. Reports the median and 90th percentile over the words, the
real-time factor of the processing and the WER of the confirmed text.

    python benchmarks/stream_latency.py [--model whisper-tiny.en] [--threads 2]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

SENTENCES = (Path(__file__).resolve().parents[1] / "examples" / "sentences_en.txt").read_text().splitlines()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sentences", type=int, default=4)
    a = ap.parse_args()
    import jiwer
    import torch

    from generalist_cli.infer.stream import Streamer
    from generalist_cli.infer.transcribe import TranscribeOptions
    from generalist_cli.media.espeak import synthesize_16k
    from generalist_cli.store.store import open_model

    torch.set_num_threads(a.threads)
    texts = SENTENCES[: a.sentences]
    audio = np.concatenate([np.concatenate([synthesize_16k(t), np.zeros(8000, np.float32)]) for t in texts])
    loaded = open_model(a.model)
    s = Streamer(loaded.model, loaded.tokenizer, TranscribeOptions(language="en"))
    clock, busy, latencies, words = 0.0, 0.0, [], []
    for k in range(0, len(audio), 16000):
        arrived = min(len(audio), k + 16000) / 16000
        clock = max(clock, arrived)
        t = time.perf_counter()
        update = s.feed(audio[k : k + 16000])
        dt = time.perf_counter() - t
        busy += dt
        clock += dt
        latencies += [clock - w.end for w in update.final]
        words += update.final
    t = time.perf_counter()
    update = s.finish()
    clock += time.perf_counter() - t
    latencies += [clock - w.end for w in update.final]
    words += update.final
    seconds = len(audio) / 16000
    norm = lambda x: " ".join(re.sub(r"[^\w\s']", " ", x.lower()).split())  # noqa: E731
    lat = np.asarray(latencies)
    print(f"{seconds:.1f} s of speech, {len(words)} words confirmed, processing RTF {busy / seconds:.2f}")
    print(
        f"word latency (end of the word -> final text): median {np.median(lat):.2f} s, p90 "
        f"{np.percentile(lat, 90):.2f} s, max {lat.max():.2f} s"
    )
    print(f"WER of the confirmed text: {jiwer.wer(norm(' '.join(texts)), norm(''.join(w.word for w in words))):.3f}")


if __name__ == "__main__":
    main()
