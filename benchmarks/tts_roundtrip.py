"""Text -> speech, measured by ear of a machine: the round-trip WER of a checkpoint's speech (generated
with predicted durations, vocoded with Griffin-Lim, transcribed by whisper-base) on held-out sentences,
next to two bounds on the same sentences: the eSpeak NG audio itself, and its true log-mel through the
same vocoder (the best the vocoder allows). Also writes a PNG of target vs generated log-mel.

    python benchmarks/tts_roundtrip.py runs/tts/checkpoints/last data/tts-en-dev --split valid --png docs/tts_mel.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", type=Path)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--asr-model", default="whisper-base")
    ap.add_argument("--voice", default="en", help="eSpeak voice for the eSpeak bound (gen prepare speak's default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import datasets
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from generalist_cli.evaluate.report import text_scores, tts_scores
    from generalist_cli.features.vocoder import mel_to_audio
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
    from generalist_cli.media.espeak import synthesize_16k
    from generalist_cli.store.store import open_model
    from generalist_cli.train.batches import collate, read_rows

    model = open_model(args.checkpoint)
    ds = datasets.load_from_disk(str(args.data))[args.split].with_format("numpy")
    rows = [r for r in read_rows([ds], [(0, i) for i in range(len(ds))]) if r["task"] == "tts"]
    refs = [str(r["text"]) for r in rows]
    examples = collate(
        rows, model.tokenizer, max_target_tokens=200, phonemes=model.model.config.tts_input == "phonemes"
    ).examples
    t = time.perf_counter()
    generated = tts_scores(model.model, examples, rows, False, asr_model=args.asr_model)
    gen_seconds = time.perf_counter() - t
    asr = open_model(args.asr_model)
    opts = TranscribeOptions(language="en" if asr.tokenizer.multilingual else None)

    def wer_of(audios):
        hyps = [x.text for x in transcribe(asr.model, asr.tokenizer, audios, opts)]
        return text_scores(refs, hyps, lang="en", task="tts")["wer"]

    espeak = wer_of([synthesize_16k(r, voice=args.voice) for r in refs])
    true_mel = wer_of([mel_to_audio(np.asarray(r["tgt_mel"], dtype=np.float32).T) for r in rows])
    result = {
        "sentences": len(rows),
        "round_trip_wer": generated["round_trip_wer"],
        "espeak_wer": espeak,
        "true_mel_vocoded_wer": true_mel,
        "mel_l1": generated["mel_l1"],
        "ratio_to_true_mel_bound": generated["round_trip_wer"] / max(true_mel, 1e-9),
        "generation_seconds": gen_seconds,
        "sample": generated.get("sample"),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from generalist_cli.train.step import StepModule

        e, m = examples[0], model.model
        with torch.inference_mode():
            h = m.encode(StepModule(m).embed(e)[None])[0][0]
            pred = m.speech_head.generate(h)
        fig, axes = plt.subplots(2, 1, figsize=(10, 5))
        for ax, mel, title in ((axes[0], e.tgt_mel, "target (eSpeak)"), (axes[1], pred, "generated")):
            ax.imshow(np.asarray(mel, dtype=np.float32).T, origin="lower", aspect="auto", cmap="magma")
            ax.set_title(f"{title}: {refs[0]}", fontsize=9)
            ax.set_ylabel("mel bin")
        axes[1].set_xlabel("frame (10 ms)")
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
