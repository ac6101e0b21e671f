"""Speech -> text on CPU: gen (PyTorch, ONNX fp32, ONNX INT8) vs faster-whisper (fp32, int8), same
whisper-base weights, same audio, greedy, in one run.

Synthesises English sentences with eSpeak NG (real speech, known transcripts) and transcribes them with
  - gen, PyTorch fp32: one file at a time, and all files as one batch (what `gen run a b c` does);
  - gen, ONNX Runtime fp32 and INT8 exports (`gen export whisper-base [--quantize none]`), one at a time
    and batched;
  - gen ONNX INT8 as `gen run a b c ...` runs it (`-run`): chunks of 8 files, short files sharing 30-s windows
    (infer/sharing.py);
  - faster-whisper (CTranslate2) on the same model.bin, float32 and int8, one file at a time.
``--corpus real`` uses the real English recordings in ../shared/media/real/en (their .txt transcripts) instead.
Each engine runs in its own process, so its peak memory (max RSS) is its own. Reports WER/CER (jiwer,
lower-cased, punctuation removed), seconds, real-time factor (compute seconds per audio second; lower is
faster), peak memory and model size. Model loading is timed on its own (load s); each engine gets a warm-up file.
For the window-sharing engine it also counts files whose first or last word is wrong in it but right one at a
time (words that may have moved between files).

    pip install -e '.[bench]' && python benchmarks/asr_cpu.py [--threads 2] [--corpus espeak|real] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()
REAL = ROOT.parent / "shared" / "media" / "real" / "en"


def corpus(name: str) -> tuple[list[str], list]:
    """(reference transcripts, 16 kHz waveforms) of the eSpeak sentences or of the real English recordings."""
    if name == "real":
        from generalist_cli.media.audio import decode_audio

        files = sorted(p for p in REAL.iterdir() if p.suffix in (".wav", ".flac"))
        return [p.with_suffix(".txt").read_text().strip() for p in files], [decode_audio(p) for p in files]
    from generalist_cli.media.espeak import synthesize_16k

    return SENTENCES, [synthesize_16k(s, voice="en-us", rate=140) for s in SENTENCES]


ENGINES = (
    "torch",
    "torch-batched",
    "onnx-fp32",
    "onnx-fp32-batched",
    "onnx-int8",
    "onnx-int8-batched",
    "onnx-int8-run",
    "faster-whisper-float32",
    "faster-whisper-int8",
)


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


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".bin", ".safetensors"))


def one(engine: str, threads: int, work: Path, corpus_name: str) -> dict:
    """Run one engine in this process: {seconds, load_s, hyps, peak_rss_mb, model_mb}."""
    import torch

    torch.set_num_threads(threads)
    _, audios = corpus(corpus_name)
    loading = time.perf_counter()
    if engine.startswith("faster-whisper"):
        from faster_whisper import WhisperModel

        compute = engine.rsplit("-", 1)[1]
        fw = WhisperModel(str(work / "faster-whisper-base"), device="cpu", compute_type=compute, cpu_threads=threads)

        def run_all(batch: list):
            out = []
            for a in batch:
                segs, _ = fw.transcribe(
                    a, language="en", beam_size=1, temperature=0.0, vad_filter=False, condition_on_previous_text=False
                )
                out.append("".join(s.text for s in segs))
            return out

        size = _size(work / "faster-whisper-base")
    else:
        from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
        from generalist_cli.store.load import load_export, load_model
        from generalist_cli.store.store import resolve

        if engine.startswith("onnx"):
            folder = work / engine.removesuffix("-batched").removesuffix("-run")
            loaded = load_export(folder, device="cpu", threads=threads)
            size = _size(folder)
        else:
            loaded = load_model(resolve("whisper-base"))
            size = _size(loaded.path)
        batched = engine.endswith("batched")

        def run_all(batch: list):
            if engine.endswith("-run"):  # gen run's defaults: chunks of 8 files (infer/files.py), windows shared
                opts = TranscribeOptions(language="en")
                chunks = [batch[i : i + opts.batch_size] for i in range(0, len(batch), opts.batch_size)]
                return [t.text for c in chunks for t in transcribe(loaded.model, loaded.tokenizer, c, opts)]
            if batched:  # every file's windows decoded as one batch, each file its own window
                opts = TranscribeOptions(language="en", batch_size=len(batch), share_windows=False)
                return [t.text for t in transcribe(loaded.model, loaded.tokenizer, batch, opts)]
            opts = TranscribeOptions(language="en")
            return [transcribe(loaded.model, loaded.tokenizer, [a], opts)[0].text for a in batch]

    load_s = time.perf_counter() - loading
    run_all(audios[:1])  # warm-up
    t = time.perf_counter()
    hyps = run_all(audios)
    seconds = time.perf_counter() - t
    encoder = None if engine.startswith("faster-whisper") else encoder_seconds(loaded.model, audios)
    return {"seconds": seconds, "load_s": load_s, "encoder_s": encoder, "hyps": hyps, "peak_rss_mb": peak_rss_mb(),
            "model_mb": size / 1e6}  # fmt: skip


def encoder_seconds(model, audios: list) -> float:
    """The encoder alone on every file's 30-s window, one at a time: its share of the transcription time."""
    import numpy as np
    import torch

    from generalist_cli.features.mel import log_mel_spectrogram, pad_or_trim

    mels = [pad_or_trim(log_mel_spectrogram(a, n_mels=model.config.n_mels)) for a in audios]
    t = time.perf_counter()
    with torch.inference_mode():
        for m in mels:
            model.encode_mels(np.ascontiguousarray(m[None]))
    return time.perf_counter() - t


def edge_errors(refs: list[str], shared: list[str], alone: list[str]) -> int:
    """Files whose first or last word differs from the reference in ``shared`` but not in ``alone``."""

    def edges(ref: str, hyp: str) -> tuple[bool, bool]:
        r, h = normalise(ref).split(), normalise(hyp).split()
        return (bool(h) and h[0] == r[0], bool(h) and h[-1] == r[-1])

    return sum(
        any(a and not s for s, a in zip(edges(ref, s), edges(ref, al))) for ref, s, al in zip(refs, shared, alone)
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: per address space, so not inherited from the parent the
    way ``ru_maxrss`` survives fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--corpus", choices=("espeak", "real"), default="espeak")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.threads, args.work, args.corpus)))
        return

    import torch

    from generalist_cli.export.build import export_model

    refs, audios = corpus(args.corpus)
    seconds = sum(len(a) for a in audios) / 16_000
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ct2_folder(work)
        if any(e.startswith("onnx-fp32") for e in engines):
            export_model("whisper-base-plain", work / "onnx-fp32", quantize="none")
        if any(e.startswith("onnx-int8") for e in engines):
            export_model("whisper-base-plain", work / "onnx-int8", quantize="int8")
        for engine in engines:
            print(f"running {engine} ...", file=sys.stderr, flush=True)
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    engine,
                    "--threads",
                    str(args.threads),
                    "--work",
                    str(work),
                    "--corpus",
                    args.corpus,
                ],  # fmt: skip
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((engine, json.loads(r.stdout.strip().splitlines()[-1])))

    results = []
    what = "eSpeak NG English sentences" if args.corpus == "espeak" else "real English recordings"
    print(
        f"{len(refs)} {what}, {seconds:.1f} s of audio, whisper-base, greedy, "
        f"{args.threads} threads, torch {torch.__version__}\n"
    )
    print("| engine | WER | CER | seconds | RTF | load s | encoder s | peak RSS MB | model MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        w, c = scores(refs, r["hyps"])
        results.append(
            {
                "engine": name,
                "wer": w,
                "cer": c,
                "seconds": r["seconds"],
                "load_s": r["load_s"],
                "rtf": r["seconds"] / seconds,
                "encoder_s": r["encoder_s"],
                "peak_rss_mb": r["peak_rss_mb"],
                "model_mb": r["model_mb"],
            }
        )
        print(
            f"| {name} | {w:.3f} | {c:.3f} | {r['seconds']:.2f} | {r['seconds'] / seconds:.3f} | {r['load_s']:.2f} | "
            f"{'-' if r['encoder_s'] is None else round(r['encoder_s'], 2)} | {r['peak_rss_mb']:.0f} | "
            f"{r['model_mb']:.1f} |"
        )
    by = {r["engine"]: r for r in results}
    if "onnx-int8" in by and "faster-whisper-int8" in by:
        a, b = by["onnx-int8"], by["faster-whisper-int8"]
        print(
            f"\ngen ONNX INT8 / faster-whisper int8: RTF ratio {a['rtf'] / b['rtf']:.2f} (target <= 1.0), "
            f"WER {a['wer']:.3f} vs {b['wer']:.3f} (target: within 0.01 or better)"
        )
    if "onnx-int8-run" in by and "faster-whisper-int8" in by:
        a, b = by["onnx-int8-run"], by["faster-whisper-int8"]
        ta, tb = a["seconds"] + a["load_s"], b["seconds"] + b["load_s"]
        print(f"gen run (INT8, windows shared) / faster-whisper int8, load included: {ta:.2f} / {tb:.2f} s = "
              f"{ta / tb:.2f} (target <= 0.5), WER {a['wer']:.3f} vs {b['wer']:.3f}")  # fmt: skip
    runs = dict(rows)
    if "onnx-int8-run" in runs and "onnx-int8" in runs:
        moved = edge_errors(refs, runs["onnx-int8-run"]["hyps"], runs["onnx-int8"]["hyps"])
        print(f"files whose first or last word is wrong with windows shared but right alone: {moved}")
        results.append({"engine": "onnx-int8-run vs onnx-int8", "edge_errors": moved})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"corpus": args.corpus, "audio_seconds": seconds, "threads": args.threads, "results": results},
                indent=2,
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
