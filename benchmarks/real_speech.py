"""Real recordings: gen vs faster-whisper on the same whisper-base weights, same files, same run.

Two sets, both real human speech:
  - English: the 8 mono recordings in tests/real/media (JFK, LJSpeech, Harvard sentences, digits), language given;
  - Hindi: the valid split of ../shared/data/air-hindi-1h (All India Radio news and read speech; the first N
    files), --lang hi.
Engines, each in its own process (peak RSS is its own):
  - gen, PyTorch fp32, the default settings (Silero VAD, script rule on);
  - gen with ``--script any`` (Hindi only: what decoding wrote before the script rule);
  - faster-whisper float32 and int8 on the same model.bin, greedy, its VAD off (gen's VAD is measured apart).
Reports WER/CER (gen's normalisers), the share of letters in the expected script, seconds (model loading
excluded) and peak memory. Also the VAD alone on the real files: speech kept and milliseconds, Silero vs energy.

    pip install -e '.[bench]' && python benchmarks/real_speech.py [--hindi 40] [--threads 2] [--json out.json]
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
HINDI = ROOT.parent / "shared" / "data" / "air-hindi-1h" / "hindi" / "valid"
ENGINES = ("gen", "gen-script-any", "faster-whisper-float32", "faster-whisper-int8")


def corpus(name: str, n: int) -> tuple[list[Path], list[str], str]:
    if name == "en":
        files = sorted(p for p in MEDIA.glob("*.*") if p.suffix in (".wav", ".flac") and "stereo" not in p.name)
        return files, [p.with_suffix(".txt").read_text().strip() for p in files], "en"
    text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (HINDI / "transcription_n2w.txt").read_text(encoding="utf-8").splitlines()
    )
    files = sorted(HINDI.glob("*.m4a"))[:n]
    return files, [text[p.stem] for p in files], "hi"


def one(engine: str, files: list[Path], lang: str, threads: int, work: Path) -> dict:
    """Transcribe ``files`` with one engine in this process: {seconds, hyps, peak_rss_mb}."""
    import torch

    torch.set_num_threads(threads)
    from generalist_cli.media.audio import decode_audio

    audio = [decode_audio(p) for p in files]
    if engine.startswith("gen"):
        from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
        from generalist_cli.store.store import open_model

        loaded = open_model("whisper-base-plain")  # the weights faster-whisper runs (no Hindi adapter)
        options = TranscribeOptions(language=lang, script="any" if engine == "gen-script-any" else "auto")
        transcribe(loaded.model, loaded.tokenizer, audio[:1], options)  # warm-up
        t = time.perf_counter()
        hyps = [x.text for x in transcribe(loaded.model, loaded.tokenizer, audio, options)]
    else:
        from faster_whisper import WhisperModel

        sys.path.insert(0, str(ROOT / "benchmarks"))
        from asr_cpu import ct2_folder

        folder = work / "fw" if (work / "fw").exists() else ct2_folder(work).rename(work / "fw")
        model = WhisperModel(str(folder), device="cpu", compute_type=engine.rsplit("-", 1)[1], cpu_threads=threads)

        def run(a):
            segs, _ = model.transcribe(a, language=lang, beam_size=1, temperature=0.0, vad_filter=False)
            return "".join(s.text for s in segs).strip()

        run(audio[0])
        t = time.perf_counter()
        hyps = [run(a) for a in audio]
    return {
        "seconds": time.perf_counter() - t,
        "hyps": hyps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def vad_table(files: list[Path]) -> list[dict]:
    from generalist_cli.features.vad import speech_regions
    from generalist_cli.media.audio import decode_audio

    rows = []
    for method in ("silero", "energy"):
        kept = total = ms = 0.0
        for p in files:
            a = decode_audio(p)
            t = time.perf_counter()
            regions = speech_regions(a, method=method)
            ms += (time.perf_counter() - t) * 1000
            kept += sum(b - x for x, b in regions) / 16000
            total += len(a) / 16000
        rows.append({"vad": method, "audio_s": round(total, 1), "kept_s": round(kept, 1), "ms": round(ms)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hindi", type=int, default=40, help="Hindi valid files to use (of 111)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # engine corpus workdir: run inside a child
    a = ap.parse_args()
    if a.one:
        engine, name, work = a.one
        files, _, lang = corpus(name, a.hindi)
        print(json.dumps(one(engine, files, lang, a.threads, Path(work))))
        return
    from generalist_cli.evaluate.metrics import text_scores

    results = {"vad": vad_table(corpus("en", 0)[0] + corpus("hi", a.hindi)[0]), "asr": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("en", "hi"):
            files, refs, lang = corpus(name, a.hindi)
            for engine in ENGINES:
                if engine == "gen-script-any" and name == "en":
                    continue
                r = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        engine,
                        name,
                        tmp,
                        "--hindi",
                        str(a.hindi),
                        "--threads",
                        str(a.threads),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out = json.loads(r.stdout.splitlines()[-1])
                s = text_scores(refs, out["hyps"], lang=lang, task="transcribe")
                audio = (
                    sum(__import__("generalist_cli.media.audio", fromlist=["x"]).decode_audio(p).size for p in files)
                    / 16000
                )
                row = {
                    "set": name,
                    "engine": engine,
                    "files": len(files),
                    "audio_s": round(audio, 1),
                    "wer": round(s["wer"], 3),
                    "cer": round(s["cer"], 3),
                    "script": round(s.get("script", 0), 3),
                    "seconds": round(out["seconds"], 2),
                    "rtf": round(out["seconds"] / audio, 3),
                    "peak_rss_mb": round(out["peak_rss_mb"]),
                    "sample": out["hyps"][0][:80],
                }
                results["asr"].append(row)
                print(json.dumps(row, ensure_ascii=False), flush=True)
    for row in results["vad"]:
        print(json.dumps(row))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
