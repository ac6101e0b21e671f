"""Memory of `gen run` over many short files: peak RSS for 100 vs 1,000 files must stay flat (files are
decoded, transcribed and written batch by batch; nothing grows with the number of inputs).

Writes N short eSpeak clips (1-2 s, 16 kHz WAV), runs `gen run CLIPS... --out DIR` in a fresh process for
each N, and reports the child's peak RSS (getrusage of the finished child), wall time and files/s.

    python benchmarks/many_files.py [--counts 100,1000] [--model whisper-tiny.en] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = [
    "good morning",
    "thank you",
    "see you soon",
    "the library is open",
    "please sit down",
    "hello there",
    "it is raining",
    "one two three",
    "where is the station",
    "my name is Ram",
]


def measure(files: list[Path], model: str, threads: int) -> dict:
    """Run gen run on ``files`` in a child of a fresh process (so the max RSS is this run's alone)."""
    code = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
        "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t, 'err': r.stderr[-500:],\n"
        "                  'max_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-c",
            code,
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            *map(str, files),
            "-m",
            model,
            "--out",
            out,
            "-q",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        res = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout)
        res["outputs"] = len(os.listdir(out))
    res["files"] = len(files)
    res["files_per_s"] = len(files) / res["seconds"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="100,1000")
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from generalist_cli.media.audio import encode_audio
    from generalist_cli.media.espeak import synthesize_16k

    counts = [int(c) for c in a.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = [encode_audio(Path(tmp) / f"w{i}.wav", synthesize_16k(w)) for i, w in enumerate(WORDS)]
        files = []
        for i in range(max(counts)):  # hard links: many inputs, little disk
            f = Path(tmp) / f"clip{i:05d}.wav"
            os.link(clips[i % len(clips)], f)
            files.append(f)
        measure(files[:5], a.model, a.threads)  # warm the model store
        for n in counts:
            r = measure(files[:n], a.model, a.threads)
            rows.append(r)
            print(
                f"{n:>6} files: peak RSS {r['max_rss_mb']:.0f} MB, {r['seconds']:.1f} s, "
                f"{r['files_per_s']:.1f} files/s, "
                f"{r['outputs']} outputs, rc {r['rc']}",
                flush=True,
            )
    if len(rows) > 1:
        print(
            f"peak RSS ratio {rows[-1]['files']}/{rows[0]['files']} files: "
            f"{rows[-1]['max_rss_mb'] / rows[0]['max_rss_mb']:.2f}"
        )
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
