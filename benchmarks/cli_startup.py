"""How fast the CLI answers without doing work: `gen --help`, `gen run --help` and a shell-completion
request, each in a fresh process (median of N runs). None of them imports torch."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def timed(args: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "generalist_cli", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    cases = {
        "gen --help": (["--help"], None),
        "gen run --help": (["run", "--help"], None),
        "completion of 'gen r'": ([], {"_GEN_COMPLETE": "complete_bash", "COMP_WORDS": "gen r", "COMP_CWORD": "1"}),
        "python -c pass (floor)": None,
    }
    for name, case in cases.items():
        if case is None:
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                times.append(time.perf_counter() - t)
        else:
            times = [timed(*case) for _ in range(a.runs)]
        print(f"{name:28s} median {statistics.median(times):.3f} s  (min {min(times):.3f})")


if __name__ == "__main__":
    main()
