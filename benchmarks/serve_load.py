"""Load test of `gen serve` on loopback: throughput and p50/p95 latency at 1, 4 and 16 concurrent clients,
micro-batched (--max-batch 8) vs unbatched (--max-batch 1), in one run on the same machine; with --pack also
micro-batched with the batch's utterances packed unpadded into encoder rows (a `gen train` checkpoint).

Each client posts short eSpeak NG utterances (1-3 s, WAV) to the OpenAI-compatible
/v1/audio/transcriptions endpoint back to back; every level sends a bounded number of requests. The server
is a fresh `gen serve` process per mode; the word error rate of the answers is checked too.

    python benchmarks/serve_load.py [--model whisper-tiny.en] [--clients 1,4,16] [--requests 32] [--threads 2]
    python benchmarks/serve_load.py --model runs/multitask-cpu/checkpoints/last --pack
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

SENTENCES = [
    "Good morning.",
    "Thank you very much.",
    "See you soon.",
    "The library is open.",
    "Please sit down.",
    "It is raining today.",
    "Where is the station?",
    "My name is Ram.",
    "The tea is hot.",
    "We will meet at nine.",
]


def clips() -> list[tuple[str, bytes]]:
    import av
    import numpy as np

    from generalist_cli.media.espeak import synthesize_16k

    out = []
    for text in SENTENCES:
        audio = synthesize_16k(text, voice="en")
        buf = io.BytesIO()
        with av.open(buf, "w", format="wav") as c:
            s = c.add_stream("pcm_s16le", rate=16000, layout="mono")
            frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
            frame.sample_rate = 16000
            for p in s.encode(frame):
                c.mux(p)
            for p in s.encode(None):
                c.mux(p)
        out.append((text, buf.getvalue()))
    return out


def start(model: str, max_batch: int, threads: int, pack: bool) -> tuple[subprocess.Popen, str]:
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "serve",
            model,
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--threads",
            str(threads),
            "--queue-size",
            "256",
            "-q",
            "--pack" if pack else "--no-pack",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(proc.stderr.read())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def level(url: str, data: list[tuple[str, bytes]], clients: int, requests: int) -> dict:
    import httpx
    import jiwer

    def one(i: int):
        text, wav = data[i % len(data)]
        t = time.perf_counter()
        r = httpx.post(
            url + "/v1/audio/transcriptions",
            files={"file": ("clip.wav", wav, "audio/wav")},
            data={"language": "en"},
            timeout=600,
        )
        return time.perf_counter() - t, r.status_code, text, r.json().get("text", "") if r.status_code == 200 else ""

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))  # warm-up, not counted
        t = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - t
    lat = sorted(r[0] for r in results)
    ok = [r for r in results if r[1] == 200]

    def norm(s: str) -> str:
        return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())

    return {
        "clients": clients,
        "requests": requests,
        "ok": len(ok),
        "seconds": round(wall, 2),
        "requests_per_s": round(requests / wall, 2),
        "p50_s": round(lat[len(lat) // 2], 3),
        "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
        "wer": round(jiwer.wer([norm(r[2]) for r in ok], [norm(r[3]) for r in ok]), 3) if ok else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--requests", type=int, default=32, help="requests per level")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pack", action="store_true", help="also serve with packing (a gen train checkpoint)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = clips()
    rows = []
    modes = [("batched", 8, False), ("unbatched", 1, False)] + ([("batched+packed", 8, True)] if args.pack else [])
    for mode, max_batch, pack in modes:
        proc, url = start(args.model, max_batch, args.threads, pack)
        try:
            for c in (int(x) for x in args.clients.split(",")):
                row = {"mode": mode, **level(url, data, c, max(args.requests, c))}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print("\n| mode | clients | requests/s | p50 s | p95 s | WER |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['clients']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | {r['wer']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
