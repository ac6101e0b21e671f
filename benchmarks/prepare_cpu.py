"""Throughput of ``gen prepare`` (examples per second) on the speak and manifest sources, 1 and 2 processes.

speak: N English lines synthesised with eSpeak NG, each giving a speech->text and a text->speech example.
manifest: N WAV files of eSpeak speech (made before timing) listed in a TSV.

    python benchmarks/prepare_cpu.py [--n 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()

    from generalist_cli.data import manifest, speak
    from generalist_cli.data.prepare import prepare
    from generalist_cli.media.audio import encode_audio
    from generalist_cli.media.espeak import synthesize_16k
    from generalist_cli.store.store import tokenizer_for

    base = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()
    lines = [f"{base[i % len(base)]} Number {i}." for i in range(args.n)]
    tok = tokenizer_for("whisper-base")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "lines.txt").write_text("\n".join(lines) + "\n")
        for procs in (1, 2):
            t = time.perf_counter()
            r = prepare(
                speak.items(text_file=tmp / "lines.txt", lang="en"),
                out=tmp / f"speak{procs}",
                source="speak",
                options={},
                tokenizer=tok,
                num_proc=procs,
                shard_size=25,
            )
            rows.append((f"speak ({args.n} lines -> ASR + TTS pairs)", procs, r.examples, time.perf_counter() - t))
        (tmp / "wav").mkdir()
        for i, line in enumerate(lines):
            encode_audio(tmp / "wav" / f"{i:05d}.wav", synthesize_16k(line))
        (tmp / "m.tsv").write_text("path\ttext\n" + "".join(f"wav/{i:05d}.wav\t{x}\n" for i, x in enumerate(lines)))
        for procs in (1, 2):
            t = time.perf_counter()
            r = prepare(
                manifest.items(manifest=tmp / "m.tsv"),
                out=tmp / f"manifest{procs}",
                source="manifest",
                options={},
                tokenizer=tok,
                num_proc=procs,
                shard_size=25,
            )
            rows.append((f"manifest ({args.n} WAV files)", procs, r.examples, time.perf_counter() - t))
    print("| source | processes | examples | seconds | examples/s |")
    print("|---|---|---|---|---|")
    for name, procs, n, sec in rows:
        print(f"| {name} | {procs} | {n} | {sec:.1f} | {n / sec:.1f} |")


if __name__ == "__main__":
    main()
