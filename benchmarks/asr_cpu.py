"""Speech -> text on CPU: gen vs faster-whisper, same whisper-base weights, greedy, in one run.

Synthesises English sentences with eSpeak NG (real speech, known transcripts), then transcribes them with
  - gen (our torch Whisper, float32), one file at a time and all files as one batch (what `gen run` does);
  - faster-whisper (CTranslate2) with the same model.bin, float32 and int8, one file at a time.
Reports WER/CER (jiwer, lower-cased, punctuation removed) and real-time factor (seconds of compute per
second of audio; lower is faster). Model loading is excluded; each engine gets one warm-up file.

    pip install -e '.[bench]' && python benchmarks/asr_cpu.py [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

SENTENCES = (Path(__file__).resolve().parents[1] / "examples" / "sentences_en.txt").read_text().splitlines()


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def scores(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    import jiwer

    r, h = [normalise(x) for x in refs], [normalise(x) for x in hyps]
    return jiwer.wer(r, h), jiwer.cer(r, h)


def ct2_folder(tmp: Path) -> Path:
    """A faster-whisper folder made from the same packages gen uses (model.bin = part1 + part2)."""
    from generalist_cli.store.sources import PACKAGES

    pkg = PACKAGES["whisper-base"]
    folder = tmp / "faster-whisper-base"
    folder.mkdir()
    with open(folder / "model.bin", "wb") as out:
        for part in pkg.files():
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(pkg.folder_path() / name, folder / name)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from faster_whisper import WhisperModel

    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
    from generalist_cli.media.espeak import synthesize_16k
    from generalist_cli.store.load import load_model
    from generalist_cli.store.store import resolve

    audios = [synthesize_16k(s, voice="en-us", rate=140) for s in SENTENCES]
    seconds = sum(len(a) for a in audios) / 16_000
    rows = []

    gen = load_model(resolve("whisper-base"))
    opts = TranscribeOptions(language="en")
    transcribe(gen.model, gen.tokenizer, audios[:1], opts)  # warm-up
    t = time.perf_counter()
    hyps = [transcribe(gen.model, gen.tokenizer, [a], opts)[0].text for a in audios]
    rows.append(("gen (torch fp32), one file at a time", time.perf_counter() - t, hyps))
    t = time.perf_counter()
    hyps = [r.text for r in transcribe(gen.model, gen.tokenizer, audios, TranscribeOptions(language="en", batch_size=12))]
    rows.append(("gen (torch fp32), all files batched", time.perf_counter() - t, hyps))

    with tempfile.TemporaryDirectory() as tmp:
        folder = ct2_folder(Path(tmp))
        for compute in ("float32", "int8"):
            fw = WhisperModel(str(folder), device="cpu", compute_type=compute, cpu_threads=args.threads)

            def run(a):
                segs, _ = fw.transcribe(a, language="en", beam_size=1, temperature=0.0, vad_filter=False,
                                        condition_on_previous_text=False)
                return "".join(s.text for s in segs)

            run(audios[0])
            t = time.perf_counter()
            hyps = [run(a) for a in audios]
            rows.append((f"faster-whisper {compute}, one file at a time", time.perf_counter() - t, hyps))

    results = []
    print(f"{len(audios)} eSpeak NG English sentences, {seconds:.1f} s of audio, whisper-base, greedy, "
          f"{args.threads} threads, torch {torch.__version__}\n")
    print("| engine | WER | CER | seconds | RTF |")
    print("|---|---|---|---|---|")
    for name, elapsed, hyps in rows:
        w, c = scores(SENTENCES, hyps)
        results.append({"engine": name, "wer": w, "cer": c, "seconds": elapsed, "rtf": elapsed / seconds})
        print(f"| {name} | {w:.3f} | {c:.3f} | {elapsed:.2f} | {elapsed / seconds:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"audio_seconds": seconds, "threads": args.threads, "results": results},
                                        indent=2))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
