"""A trained checkpoint at its best in ONNX Runtime: packed any-length encoder and top-2 experts in the graph,
beside a stock whisper-base INT8 export of the same width, on real 3-7 s Hindi utterances, same run.

Engines, each in its own process (peak RSS is its own), the same real files, greedy, ``--lang hi``, model
loading excluded, no VAD (every engine hears the same audio):
  - ``torch``: the gen train checkpoint in PyTorch fp32, packed (what ``gen run`` does with it);
  - ``packed-int8``: ``gen export CKPT`` (auto: packed encoder, top-2 experts), INT8;
  - ``windows-int8``: the same checkpoint exported as before this work (``--encoder windows --experts all``);
  - ``stock-int8``: ``gen export whisper-base`` (fixed 30-s windows, dense), INT8: the peer.
Reports WER/CER against the references, seconds, decoded tokens, encoder seconds alone, milliseconds per
decoder step (8 rows, 32 steps, no stopping: the cost apart from how much a model writes) and peak memory.

    gen prepare kathbath --lang hi --local ../shared/data/air-hindi-1h --out data/kathbath-hi
    python benchmarks/packed_export.py CKPT [--files 40] [--threads 2] [--work DIR] [--json out.json]
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
HINDI = ROOT.parent / "shared" / "data" / "air-hindi-1h" / "hindi" / "valid"
ENGINES = ("torch", "packed-int8", "windows-int8", "stock-int8")
EXPORTS = {  # engine -> (model, gen export options)
    "packed-int8": (None, []),
    "windows-int8": (None, ["--encoder", "windows", "--experts", "all"]),
    "stock-int8": ("whisper-base-plain", []),  # the untrained weights, without gen's Hindi adapter
}


def corpus(n: int, low: float = 3.0, high: float = 7.0) -> tuple[list[Path], list[str]]:
    """The first ``n`` real Hindi valid files lasting ``low``-``high`` seconds, and their transcripts."""
    from generalist_cli.media.audio import decode_audio

    text = dict(
        line.rstrip("\n").split("\t", 1)
        for line in (HINDI / "transcription_n2w.txt").read_text(encoding="utf-8").splitlines()
    )
    files = [p for p in sorted(HINDI.glob("*.m4a")) if low <= decode_audio(p).size / 16000 <= high][:n]
    return files, [text[p.stem] for p in files]


def export(engine: str, ckpt: str, work: Path) -> Path:
    """The engine's export folder in ``work`` (made once with ``gen export``, reused by later runs)."""
    model, opts = EXPORTS[engine]
    out = work / engine
    if not (out / "export.json").exists():
        cal = ["--calibration", str(ROOT / "data" / "kathbath-hi")] if model is None else []
        cmd = ["gen", "export", model or ckpt, "--out", str(out), *opts, *cal]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def one(engine: str, model: str, files: list[Path], threads: int) -> dict:
    """Transcribe ``files`` in this process: {seconds, encoder_s, hyps, tokens, peak_rss_mb}."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from generalist_cli.features.mel import log_mel_spectrogram, pad_or_trim
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
    from generalist_cli.media.audio import decode_audio
    from generalist_cli.store.store import open_model

    loaded = open_model(model, threads=threads)
    m, tok = loaded.model, loaded.tokenizer
    audio = [decode_audio(p) for p in files]
    options = TranscribeOptions(language="hi", pack=m.can_pack, batch_size=8)
    transcribe(m, tok, audio[:2], options)  # warm-up
    with torch.inference_mode():
        mels = [log_mel_spectrogram(a, n_mels=m.config.n_mels) for a in audio]
        t = time.perf_counter()
        for i in range(0, len(mels), 8):
            chunk = mels[i : i + 8]
            m.encode_mels_packed(chunk) if m.can_pack else m.encode_mels(np.stack([pad_or_trim(x) for x in chunk]))
        encoder_s = time.perf_counter() - t
    t = time.perf_counter()
    hyps = [x.text for x in transcribe(m, tok, audio, options)]
    seconds = time.perf_counter() - t
    return {
        "seconds": seconds,
        "encoder_s": encoder_s,
        "step_ms": step_ms(m, tok, mels[:8]),
        "hyps": hyps,
        "tokens": sum(len(tok.encode(" " + h)) for h in hyps),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def step_ms(m, tok, mels, steps: int = 32) -> float:
    """Milliseconds per decoder step for 8 rows, ``steps`` greedy steps after the prompt (no stopping): the
    decoder's cost apart from how many tokens a model writes."""
    import numpy as np
    import torch

    from generalist_cli.infer.transcribe import encode_windows

    with torch.inference_mode():
        cache = encode_windows(m, mels, pack=m.can_pack)
        prompt = np.array([tok.sot_sequence(language="hi", timestamps=False)] * len(mels))
        prompt = prompt if m.kind == "onnx" else torch.from_numpy(prompt)
        logits = m.logits(m.decoder(prompt, cache.cross_kv, cache, 0))[:, -1]
        t = time.perf_counter()
        for i in range(steps):
            nxt = logits.argmax(-1)[:, None]
            logits = m.decode_step(nxt, cache, prompt.shape[1] + i)
        return 1000 * (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a gen train speech checkpoint (e.g. runs/asr-hi-real/checkpoints/last)")
    ap.add_argument("--files", type=int, default=40, help="real Hindi valid files of 3-7 s (99 in all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, help="where the exports are made (kept; default: a temporary folder)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # engine model: run inside a child
    a = ap.parse_args()
    files, refs = corpus(a.files)
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], files, a.threads), ensure_ascii=False))
        return
    from generalist_cli.evaluate.metrics import text_scores
    from generalist_cli.media.audio import decode_audio

    audio_s = sum(decode_audio(p).size for p in files) / 16000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for engine in a.engines.split(","):
            model = a.checkpoint if engine == "torch" else str(export(engine, a.checkpoint, work))
            cmd = [sys.executable, __file__, a.checkpoint, "--one", engine, model]
            cmd += ["--files", str(a.files), "--threads", str(a.threads)]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            s = text_scores(refs, out["hyps"], lang="hi", task="transcribe")
            row = {"engine": engine, "files": len(files), "audio_s": round(audio_s, 1)}
            row |= {k: round(s[k], 3) for k in ("wer", "cer")} | {"script": round(s.get("script", 0), 3)}
            row |= {k: round(out[k], 2) for k in ("seconds", "encoder_s", "step_ms")} | {"tokens": out["tokens"]}
            row |= {"ms_per_token": round(1000 * (out["seconds"] - out["encoder_s"]) / max(out["tokens"], 1), 1)}
            row |= {"peak_rss_mb": round(out["peak_rss_mb"]), "sample": out["hyps"][0][:60]}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
