"""``gen eval``: every metric of a model on a prepared split, per task, as one JSON-able report.

Per task (speech -> text, translation, text -> text, sign -> text, text -> speech):
- ``loss``, ``token_accuracy``, ``accuracy``: teacher-forced cross-entropy per target token and argmax
  accuracy (PyTorch engine; an ONNX export has no teacher-forcing graph);
- ``wer``/``cer`` (jiwer) after Whisper's English normaliser for English and a Unicode normaliser that keeps
  Indic combining marks for every other language; ``bleu``/``chrf``/``chrf++`` (sacrebleu) for translation;
  ``top1`` for isolated signs (the decoded label equals the reference);
- ``mel_l1`` for speech output (teacher-forced durations) and ``round_trip_wer``/``round_trip_cer``: the
  speech generated with predicted durations, vocoded (Griffin-Lim), transcribed back by an ASR model;
- speed, from greedy decoding one example at a time: latency p50/p95, examples/s, tokens/s, real-time factor.

Per model: size on disk, parameters total and active per token, FLOPs per second of audio (torch's flop
counter), and expert utilisation by task and language (share of (token, slot) assignments per expert,
all MoE layers together).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from generalist_cli.errors import GenError, UsageError
from generalist_cli.evaluate.metrics import TRANSLATION_TASKS, normalizer, text_scores  # noqa: F401 (re-exported)

TEXT_TASKS = ("transcribe", "translate", "text_translate", "sign")


def speed(latencies: list[float], *, tokens: int, audio_seconds: float) -> dict:
    lat = np.asarray(latencies)
    total = float(lat.sum())
    out = {
        "latency_p50_s": float(np.percentile(lat, 50)),
        "latency_p95_s": float(np.percentile(lat, 95)),
        "examples_per_s": len(lat) / total if total else None,
        "tokens_per_s": tokens / total if total else None,
    }
    if audio_seconds:
        out["rtf"] = total / audio_seconds
    return out


def model_size(path: Path) -> int:
    """Bytes of a model folder's weights: safetensors, ONNX graphs and their external data, model.bin."""
    if not path.is_dir():
        return 0
    weights = (".safetensors", ".onnx", ".bin")
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in weights or p.name.endswith(".onnx.data"))


def evaluate(
    model: str,
    data: Path,
    *,
    split: str = "test",
    engine: str = "auto",
    limit: int | None = None,
    device: str = "cpu",
    asr_model: str | None = "whisper-base",
    script: str = "auto",
    beam_size: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    import torch

    from generalist_cli.store.store import open_model

    loaded = open_model(model, device=device)
    exported = loaded.kind == "onnx"
    if engine == "onnx" and not exported:
        raise UsageError(
            f"{model}: --engine onnx needs an export folder", hint=f"make one: gen export {model} --out DIR"
        )
    if engine == "torch" and exported:
        raise UsageError(f"{model}: is an ONNX export; use --engine onnx (or auto)")
    m, c = loaded.model, loaded.config
    rows, examples = _examples(data, split, limit, loaded)
    counts: dict[tuple[str, str], torch.Tensor] = {}
    hooks, current = _route_hooks(m, counts) if not exported else ([], {})
    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_task.setdefault(str(r["task"]), []).append(i)
    report: dict = {"model": model, "engine": loaded.kind, "data": str(data), "split": split,
                    "examples": len(rows), "beam_size": beam_size, "tasks": {}}  # fmt: skip
    done = [0]

    def tick(n: int = 1) -> None:
        done[0] += n
        if on_progress:
            on_progress(done[0], len(rows))

    try:
        for task, idx in by_task.items():
            current["key"] = (task, str(rows[idx[0]]["lang"]))
            if task == "tts":
                picked = [examples[i] for i in idx], [rows[i] for i in idx]
                report["tasks"][task] = {"examples": len(idx), **tts_scores(m, *picked, exported, asr_model=asr_model)}
                tick(len(idx))
                continue
            report["tasks"][task] = _score_task(loaded, [examples[i] for i in idx], [rows[i] for i in idx], task,
                                                script=script, beam_size=beam_size, current=current,
                                                tick=tick)  # fmt: skip
    finally:
        for h in hooks:
            h.remove()
    report["model_info"] = _model_info(m, c, loaded.path, exported)
    if counts:
        report["expert_utilisation"] = {
            f"{t}/{lang}": (v / v.sum()).tolist() for (t, lang), v in counts.items() if float(v.sum()) > 0
        }
    return report


def _examples(data: Path, split: str, limit: int | None, loaded) -> tuple[list, list]:
    """(rows, collated examples) of a prepared split, the first ``limit`` of them."""
    import datasets

    from generalist_cli.train.batches import collate, read_rows

    try:
        dd = datasets.load_from_disk(str(data))
    except FileNotFoundError:
        raise GenError(f"{data}: no prepared dataset there", hint="make one with gen prepare ...") from None
    if split not in dd:
        raise UsageError(f"{data}: has no split {split!r}", hint="it has " + ", ".join(dd))
    ds = dd[split]
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise GenError(f"{data}: split {split!r} is empty")
    ds = ds.with_format("numpy")
    rows = read_rows([ds], [(0, i) for i in range(len(ds))])
    c, tok = loaded.config, loaded.tokenizer
    examples = collate(rows, tok, max_target_tokens=c.n_text_ctx // 2, phonemes=c.tts_input == "phonemes").examples
    return rows, examples


def _score_task(loaded, examples: list, rows: list, task: str, *, script: str, current: dict, tick,
                beam_size: int = 1) -> dict:  # fmt: skip
    """One text task's scores: teacher-forced CE (PyTorch), greedy outputs scored (WER/CER, BLEU/chrF, top-1),
    latency and throughput. Text sources decode in packed batches (:func:`text_batches`); an ONNX export skips
    non-audio examples, and says so."""
    from generalist_cli.evaluate.decode import greedy_group, text_batches

    m, tok, exported = loaded.model, loaded.tokenizer, loaded.kind == "onnx"
    entry: dict = {"examples": len(examples)}
    if not exported:
        from generalist_cli.evaluate.decode import token_loss

        entry.update(token_loss(m, examples, batch_size=16))
    hyps, refs, lat, n_tok, secs = [], [], [], 0, 0.0
    skipped = 0
    langs = [str(r["lang"]) for r in rows]
    for group in text_batches(examples, langs) if not exported else [[i] for i in range(len(examples))]:
        if exported and examples[group[0]].modality != "audio":
            skipped += 1
            continue
        current["key"] = (task, langs[group[0]])
        t0 = time.perf_counter()
        out = greedy_group(m, tok, [examples[i] for i in group], lang=langs[group[0]], always_pad=not m.can_pack,
                           script=script, beam_size=beam_size)  # fmt: skip
        lat += [(time.perf_counter() - t0) / len(group)] * len(group)  # a batch: each example its share
        for i, tokens in zip(group, out):
            n_tok += len(tokens) + 1
            hyps.append(tok.decode(tokens).strip())
            refs.append(str(rows[i]["text"]))
            secs += float(rows[i]["duration"]) if examples[i].modality == "audio" else 0.0
            tick()
    if skipped:
        entry["skipped"] = f"{skipped} non-audio examples: the ONNX export takes audio only"
    if hyps:
        entry.update(text_scores(refs, hyps, lang=str(rows[0]["lang"]), task=task))
        if task == "sign" and not exported:
            entry.update(sign_scores(m, tok, examples, rows, refs, hyps))
        entry.update(speed(lat, tokens=n_tok, audio_seconds=secs))
        entry["sample"] = {"ref": refs[0], "hyp": hyps[0]}
    return entry


def sign_scores(model, tok, examples: list, rows: list, refs: list[str], hyps: list[str]) -> dict:
    """Isolated signs, as the field reports them: ``top5`` (the reference among the 5 likeliest of the split's
    labels, :func:`~generalist_cli.evaluate.decode.rank_labels`) and ``per_class`` top-1 (greedy output equal to
    the reference, per label) with its mean over classes."""
    from generalist_cli.evaluate.decode import rank_labels

    norm = normalizer(str(rows[0]["lang"]))
    labels = sorted({norm(r) for r in refs})
    tokens = {}
    for r, row in zip(refs, rows):
        tokens.setdefault(norm(r), [int(t) for t in row["tgt_tokens"]])
    candidates = [tokens[x] for x in labels]
    hits, per = 0, {x: [0, 0] for x in labels}
    for e, r, h in zip(examples, refs, hyps):
        ranked = rank_labels(model, tok, e, candidates)
        hits += labels.index(norm(r)) in ranked[:5]
        per[norm(r)][0] += norm(h) == norm(r)
        per[norm(r)][1] += 1
    per_class = {x: a / n for x, (a, n) in per.items()}
    return {"top5": hits / max(1, len(refs)), "per_class": per_class,
            "mean_class_top1": sum(per_class.values()) / max(1, len(per_class))}  # fmt: skip


def _route_hooks(model, counts: dict) -> tuple[list, dict]:
    """Forward hooks on every MoE layer adding each call's per-expert counts under the current (task, lang)."""
    from generalist_cli.model.upcycle import moe_layers

    state = {"key": ("", "")}  # the caller sets the (task, language) being decoded

    def hook(mod, args, out):
        key = state["key"]
        counts[key] = counts.get(key, 0) + out[1].counts.detach().cpu().double()

    return [m.register_forward_hook(hook) for m in moe_layers(model)], state


def tts_scores(model, examples, rows, exported: bool, *, asr_model: str | None) -> dict:
    """Text -> speech: mel L1 with teacher-forced durations, and the round-trip WER: speech generated with
    predicted durations, vocoded (Griffin-Lim), transcribed back by ``asr_model``."""
    if exported:
        return {"skipped": "text -> speech is not exported"}
    if getattr(model, "speech_head", None) is None:
        return {"skipped": "the model has no speech head (a dense Whisper cannot speak)"}
    import torch
    import torch.nn.functional as F

    from generalist_cli.features.vocoder import mel_to_audio
    from generalist_cli.train.step import StepModule

    total, n, audios, lat = 0.0, 0, [], []
    with torch.inference_mode():
        for e in examples:
            t0 = time.perf_counter()
            h = model.encode(StepModule(model).embed(e)[None])[0][0]
            pred = model.speech_head(h, e.durations)
            target = e.tgt_mel[: pred.shape[0]]
            total += float(F.l1_loss(pred[: target.shape[0]].float(), target, reduction="sum"))
            n += target.numel()
            if asr_model:  # nothing generated (every duration rounds to 0) is 0.1 s of silence, a miss
                mel = model.speech_head.generate(h)
                audios.append(mel_to_audio(mel.T) if mel.shape[0] else np.zeros(1600, dtype=np.float32))
                lat.append(time.perf_counter() - t0)
    out: dict = {"mel_l1": total / max(1, n)}
    if asr_model and audios:
        from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
        from generalist_cli.store.store import open_model

        asr = open_model(asr_model)
        lang = str(rows[0]["lang"])
        opts = TranscribeOptions(language=lang if asr.tokenizer.multilingual else "en")
        hyps = [t.text for t in transcribe(asr.model, asr.tokenizer, audios, opts)]
        refs = [str(r["text"]) for r in rows]
        scores = text_scores(refs, hyps, lang=lang, task="tts")
        out.update(
            round_trip_wer=scores.get("wer"),
            round_trip_cer=scores.get("cer"),
            asr_model=asr_model,
            sample={"ref": refs[0], "hyp": hyps[0]},
            **speed(lat, tokens=0, audio_seconds=0.0),
        )
        out.pop("tokens_per_s", None)
    return out


def _model_info(model, config, path: Path, exported: bool) -> dict:
    import torch

    from generalist_cli.model.generalist import Generalist
    from generalist_cli.model.info import flops_per_audio_second, parameter_counts

    out = {"bytes_on_disk": model_size(path), "n_experts": config.n_experts, "top_k": config.top_k, "ttt": config.ttt}
    if exported:
        with torch.device("meta"):
            shape_only = Generalist(config)
        total, active = parameter_counts(shape_only)
    else:
        total, active = parameter_counts(model)
        out["flops_per_audio_second"] = flops_per_audio_second(model, padded=not config.generalist)
    out.update(parameters=total, active_parameters_per_token=active)
    return out


def write_plots(report: dict, folder: Path, *, run: Path | None = None) -> list[Path]:
    """PNGs: the expert-utilisation heatmap (task/language x expert) and, given a run folder, its training
    curves (loss and learning rate from metrics.jsonl, evaluation scores from eval.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    util = report.get("expert_utilisation") or {}
    if util:
        names = sorted(util)
        grid = np.array([util[k] for k in names])
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * grid.shape[1], 1.2 + 0.5 * len(names)))
        im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=0)
        ax.set_xticks(range(grid.shape[1]), [str(i) for i in range(grid.shape[1])])
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("expert")
        ax.set_title("share of routed (token, slot) pairs")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        written.append(folder / "expert_utilisation.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if run is not None:
        written += plot_run(run, folder)
    return written


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return out


def plot_run(run: Path, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, evals = _jsonl(run / "metrics.jsonl"), _jsonl(run / "eval.jsonl")
    if not metrics and not evals:
        raise GenError(f"{run}: no metrics.jsonl or eval.jsonl to plot")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if metrics:
        steps = [r["step"] for r in metrics]
        axes[0].plot(steps, [r["loss"] for r in metrics], label="train loss")
    for name in sorted({k for r in evals for k, v in r.items() if isinstance(v, dict)}):
        pts = [(r["step"], r[name]) for r in evals if name in r]
        axes[0].plot([s for s, _ in pts], [e["loss"] for _, e in pts], "o-", ms=3, label=f"{name} loss")
        key = "accuracy" if all("wer" not in e for _, e in pts) else "wer"
        axes[1].plot([s for s, _ in pts], [e.get(key, np.nan) for _, e in pts], "o-", ms=3, label=f"{name} {key}")
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[0].set_title(f"{run.name}: loss")
    axes[1].set_title(f"{run.name}: evaluation")
    fig.tight_layout()
    out = folder / f"{run.name}_curves.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return [out]
