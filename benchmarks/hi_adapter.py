"""The Hindi adapter gen ships (docs/models/whisper-base-hi.md), measured the way a user meets it: ``gen run``
with its default options on the real Hindi ``valid`` split of ../shared/data/air-hindi-1h (111 files, held out
from training), whisper-base (adapter attached) beside whisper-base-plain (the same weights without it), with the
language given (``--lang hi``) and detected; then the real English recordings of tests/real/media through both
(transcripts must be identical), the time the adapter adds to loading, and its size (the wheel's growth).

    python benchmarks/hi_adapter.py [--limit 111] [--json benchmarks/results/hi_adapter.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HINDI = ROOT.parent / "shared" / "data" / "air-hindi-1h" / "hindi" / "valid"
MEDIA = ROOT / "tests" / "real" / "media"


def gen_run(files: list[Path], model: str, *args: str) -> tuple[list[dict], float]:
    """``gen run FILES --model MODEL --format json ARGS``: (one object per file, seconds)."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "generalist_cli", "run", *map(str, files), "--model", model, "--format", "json"]
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"gen run failed: {r.stderr[-2000:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()], time.perf_counter() - start


def hindi(limit: int) -> dict:
    from generalist_cli.evaluate.metrics import text_scores

    text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (HINDI / "transcription_n2w.txt").read_text(encoding="utf-8").splitlines()
    )
    files = sorted(HINDI.glob("*.m4a"))[:limit]
    refs = [text[p.stem] for p in files]
    out = {}
    for model, args in (("whisper-base-plain", ["--lang", "hi"]), ("whisper-base", ["--lang", "hi"]),
                        ("whisper-base", [])):  # fmt: skip
        rows, seconds = gen_run(files, model, *args)
        scores = text_scores(refs, [r["text"] for r in rows], lang="hi", task="transcribe")
        name = f"{model} {' '.join(args) or '(language detected)'}"
        detected = sum(r.get("language") == "hi" for r in rows)
        out[name] = {k: round(v, 4) for k, v in scores.items() if k in ("wer", "cer", "script")}
        out[name] |= {"seconds": round(seconds, 1), "files": len(rows), "detected_hi": detected}
        print(name, out[name], flush=True)
    return out


def english() -> dict:
    files = sorted(p for p in MEDIA.glob("*.*") if p.suffix in (".wav", ".flac") and "stereo" not in p.name)
    out = {}
    for args in (["--lang", "en"], []):
        a, _ = gen_run(files, "whisper-base", *args)
        b, _ = gen_run(files, "whisper-base-plain", *args)
        same = sum(x["text"] == y["text"] for x, y in zip(a, b))
        out[" ".join(args) or "(language detected)"] = {"files": len(files), "identical": same}
    print("english", out, flush=True)
    return out


def loading(repeats: int = 5) -> dict:
    """Seconds to open the model from the store, with and without the adapter (median of ``repeats``)."""
    from generalist_cli.store.store import open_model

    open_model("whisper-base-plain")  # the store entry exists, caches are warm
    times = {}
    for name in ("whisper-base-plain", "whisper-base"):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            open_model(name)
            runs.append(time.perf_counter() - start)
        times[name] = round(statistics.median(runs), 3)
    times["added_by_adapter_s"] = round(times["whisper-base"] - times["whisper-base-plain"], 3)
    print("loading", times, flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=111)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from generalist_cli.store.sources import adapter_files

    files = adapter_files("whisper-base")
    if not files:
        raise SystemExit("no shipped adapter: gen models extract-adapter ... first (recipes/hi-adapter.toml)")
    result = {"adapter_bytes": files[0].stat().st_size, "loading": loading(), "english": english(),
              "hindi_valid": hindi(a.limit)}  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
