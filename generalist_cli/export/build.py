"""``gen export``: prune, export to ONNX, check parity, quantise, and write the folder in one atomic step.

Output folder: ``encoder.onnx``, ``decoder.onnx`` (see :mod:`generalist_cli.export.onnx` for inputs and
outputs), ``config.json`` and ``tokenizer.json`` (the model's, after pruning), ``parity.json`` and
``export.json`` (what was done, with which versions). The folder is built beside ``out`` and renamed into
place only when everything passed, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from generalist_cli.errors import GenError, UsageError, is_write_failure, write_failure

AUDIO_SUFFIXES = {".m4a", ".wav", ".mp3", ".flac", ".ogg", ".opus", ".mov", ".mp4", ".webm", ".aac"}
PARITY_LIMIT = 1e-3  # max |logit| difference of the fp32 graphs vs PyTorch


@dataclass
class Calibration:
    mels: list = field(default_factory=list)  # (n_mels, 3000) tensors
    frames: list = field(default_factory=list)  # each window's frames of audio before its padding
    audios: list = field(default_factory=list)  # 16 kHz waveforms (for WER)
    texts: list = field(default_factory=list)  # reference transcripts ("" when unknown)
    language: str = "en"


def load_calibration(path: Path | None, *, n_mels: int, limit: int = 16) -> Calibration:
    """Calibration audio: a folder of audio files (a same-named ``.txt`` beside each gives its transcript),
    one audio file, or a prepared dataset's speech examples; default: the bundled ``examples/hello.m4a``."""
    import torch

    from generalist_cli.features.mel import log_mel_spectrogram, pad_or_trim
    from generalist_cli.media.audio import decode_audio

    if path is None:
        path = Path(__file__).resolve().parents[2] / "examples" / "hello.m4a"
        if not path.exists():
            raise UsageError("no calibration audio: pass --calibration FILE|DIR")
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    cal = Calibration()
    if (path / "prepare.json").exists():
        return _calibration_from_dataset(path, n_mels=n_mels, limit=limit)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UsageError(f"{path}: no audio files for calibration")
    for f in files[:limit]:
        audio = decode_audio(f)
        cal.audios.append(audio)
        mel = log_mel_spectrogram(audio, n_mels=n_mels)
        cal.mels.append(torch.from_numpy(pad_or_trim(mel, 3000)))
        cal.frames.append(min(mel.shape[-1], 3000))
        txt = f.with_suffix(".txt")
        cal.texts.append(txt.read_text(encoding="utf-8").strip() if txt.exists() else "")
    return cal


def _calibration_from_dataset(path: Path, *, n_mels: int, limit: int) -> Calibration:
    import datasets
    import torch

    from generalist_cli.features.mel import pad_or_trim

    dd = datasets.load_from_disk(str(path))
    split = next((s for s in ("valid", "test", "train") if s in dd), None)
    ds = dd[split].filter(lambda r: r["modality"] == "audio" and r["task"] in ("transcribe", "asr"))
    if len(ds) == 0:
        raise UsageError(f"{path}: holds no speech -> text examples for calibration")
    cal = Calibration()
    for row in ds.select(range(min(limit, len(ds)))).with_format("numpy"):
        mel = torch.from_numpy(np.asarray(row["mel"], dtype=np.float32).T.copy())  # shards: (frames, n_mels)
        if mel.shape[0] != n_mels:
            raise UsageError(f"{path}: its log-mels have {mel.shape[0]} bins, the model takes {n_mels}")
        cal.mels.append(pad_or_trim(mel, 3000))
        cal.frames.append(min(mel.shape[-1], 3000))
        cal.texts.append(str(row["text"]))
        cal.language = str(row["lang"]) or "en"
    return cal


def export_model(
    model: str,
    out: Path,
    *,
    quantize: str = "int8",
    prune: float = 0.0,
    prune_experts: int = 0,
    calibration: Path | None = None,
    static: bool = False,
    max_wer_change: float = 0.05,
    encoder: str = "auto",
    experts: str = "top-k",
    on_step: Callable[[str], None] | None = None,
) -> dict:
    import generalist_cli
    from generalist_cli.store.load import load_export
    from generalist_cli.store.store import open_model

    step = on_step or (lambda s: None)
    if quantize not in ("int8", "none"):
        raise UsageError(f"--quantize must be int8 or none, not {quantize!r}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out}: already exists and is not empty", hint="choose another --out or remove it")
    step(f"loading {model}")
    loaded = open_model(model)
    torch_model, tok = loaded.model.float().eval(), loaded.tokenizer
    cal = load_calibration(calibration, n_mels=torch_model.config.n_mels)
    tokenizer_file = loaded.path / "tokenizer.json"
    if not tokenizer_file.exists():
        raise GenError(
            f"{loaded.path}: has no tokenizer.json to ship with the export",
            hint=f"pull the model into the store first: gen models pull {model}",
        )
    if experts not in EXPERTS:
        raise UsageError(f"--experts must be {' or '.join(EXPERTS)}, not {experts!r}")
    packed = _packed(loaded, encoder, model)
    report: dict = {"model": model, "quantize": quantize, "calibration_examples": len(cal.mels)}
    report |= {"encoder": "packed" if packed else "windows", "experts": experts, "tasks": loaded.meta.get("tasks")}
    pruned = _prune(torch_model, tok, cal, prune=prune, prune_experts=prune_experts, report=report, step=step)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
            fp32, final = Path(tmp) / "fp32", Path(tmp) / "final"
            for folder in (fp32, final):
                folder.mkdir()
                (folder / "config.json").write_text(json.dumps(pruned.config.to_hf(), indent=2))
                shutil.copy(tokenizer_file, folder / "tokenizer.json")
            _graphs(pruned, tok, cal, fp32, final, out=out, quantize=quantize, static=static, report=report,
                    step=step, packed=packed, experts=EXPERTS[experts])  # fmt: skip
            step("measuring WER on the calibration audio")
            _check_wer(torch_model, load_export(final, device="cpu").model, tok, cal, out, max_wer_change, report)
            sizes = {n: graph_bytes(final / n) for n in ("encoder.onnx", "decoder.onnx")}
            report["bytes"] = sizes | {"total": sum(sizes.values())}
            report["gen_version"] = generalist_cli.__version__
            report["prune"], report["prune_experts"], report["static"] = prune, prune_experts, static
            (final / "parity.json").write_text(json.dumps(report["parity"], indent=2))
            (final / "export.json").write_text(json.dumps(report, indent=2))
            if out.exists():
                out.rmdir()
            final.rename(out)
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        raise write_failure(out, exc, hint="choose a writable --out with free space; nothing was written") from exc
    return report


EXPERTS = {"top-k": "index", "all": "dense"}  # --experts -> the MoE dispatch in the graphs


def _packed(loaded, encoder: str, name: str) -> bool:
    """Whether the encoder graph is packed: ``auto`` packs what ``gen run`` packs (a checkpoint trained on
    speech by gen train) when its encoder allows it; ``packed`` refuses, in one line, an encoder that cannot."""
    from generalist_cli.export.onnx import why_not_packed
    from generalist_cli.infer.transcribe import packs_by_default

    if encoder not in ("auto", "packed", "windows"):
        raise UsageError(f"--encoder must be auto, packed or windows, not {encoder!r}")
    reason = why_not_packed(loaded.model)
    if encoder == "packed" and reason:
        raise UsageError(f"{name}: cannot be exported with a packed encoder: {reason}", hint="use --encoder windows")
    return encoder == "packed" or (encoder == "auto" and reason is None and packs_by_default(loaded))


def _prune(model, tok, cal: Calibration, *, prune: float, prune_experts: int, report: dict, step):
    """The model to export: with ``prune_experts``, the least-used experts on the calibration audio dropped;
    with ``prune``, magnitude pruning of a copy (the original stays the WER reference)."""
    from generalist_cli.export import prune as pruning

    pruned = model
    if prune_experts:
        step("measuring expert use on the calibration audio")
        usage = pruning.expert_usage(model, cal.mels, tok, language=cal.language)
        pruned, info = pruning.drop_experts(model, prune_experts, usage)
        report["expert_pruning"] = info | {"usage": [u.tolist() for u in usage]}
    if prune:
        if pruned is model:
            import copy

            pruned = copy.deepcopy(model)
        report["magnitude_pruning"] = pruning.magnitude_prune(pruned, prune)
    return pruned


def _graphs(model, tok, cal: Calibration, fp32: Path, final: Path, *, out: Path, quantize: str, static: bool,
            report: dict, step, packed: bool = False, experts: str = "index") -> None:  # fmt: skip
    """fp32 ONNX graphs into ``fp32``, checked against PyTorch, then (quantised) into ``final``."""
    from generalist_cli.export.onnx import TTT_INIT, export_graphs
    from generalist_cli.export.quantize import quantize_dynamic, quantize_static
    from generalist_cli.store.load import load_export

    step("exporting ONNX graphs" + (" (packed encoder)" if packed else ""))
    export_graphs(model, fp32, packed=packed, experts=experts)
    step("checking parity with PyTorch")
    diff = logit_difference(model, load_export(fp32, device="cpu").model, tok, cal, language=cal.language)
    report["parity"] = {"fp32_max_abs_logit_diff": diff, "limit": PARITY_LIMIT}
    if not diff <= PARITY_LIMIT:
        raise GenError(
            f"{out}: the fp32 ONNX graphs differ from PyTorch by {diff:.3g} in the logits "
            f"(limit {PARITY_LIMIT:g}); nothing was written"
        )
    if (fp32 / TTT_INIT).exists():  # the decoder TTT layers' starting state
        shutil.move(str(fp32 / TTT_INIT), final / TTT_INIT)
    if quantize != "int8":
        for f in fp32.iterdir():  # the graphs and their external data, if any
            if f.name.startswith(("encoder.onnx", "decoder.onnx")):
                shutil.move(str(f), final / f.name)
        return
    step("quantising to INT8" + (" (static, calibrated)" if static else " (dynamic)"))
    # static: the encoder (most of the compute) with calibrated activation ranges; the decoder stays
    # dynamic, its activations change token by token (static decoder INT8 gave WER 1.0: measured)
    if static:
        quantize_static(fp32 / "encoder.onnx", final / "encoder.onnx", _feeds(cal, packed=packed))
    else:
        quantize_dynamic(fp32 / "encoder.onnx", final / "encoder.onnx")
    quantize_dynamic(fp32 / "decoder.onnx", final / "decoder.onnx")


def _check_wer(original, exported, tok, cal: Calibration, out: Path, max_wer_change: float, report: dict) -> None:
    """The export's WER on the calibration audio beside the original PyTorch model's; refused past the limit."""
    ref_wer, export_wer = calibration_wer(original, exported, tok, cal)
    report["parity"].update(
        calibration_wer_pytorch=ref_wer,
        calibration_wer_export=export_wer,
        wer_change=None if ref_wer is None else export_wer - ref_wer,
    )
    if ref_wer is not None and export_wer - ref_wer > max_wer_change:
        raise GenError(
            f"{out}: the export's WER on the calibration audio is {export_wer:.3f}, "
            f"{export_wer - ref_wer:+.3f} against PyTorch's {ref_wer:.3f} (limit +{max_wer_change}); "
            "nothing was written",
            hint="prune less, or export with --quantize none",
        )


def graph_bytes(path: Path) -> int:
    """A graph's bytes on disk, its external data (``<name>.data``) included."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _feeds(cal: Calibration, *, packed: bool = False) -> list[dict]:
    """Encoder calibration inputs: the calibration windows (a packed encoder: each one alone in its row)."""
    from generalist_cli.model.rows import row_layout

    feeds = []
    for m in cal.mels:
        feed = {"mel": m[None].numpy().astype(np.float32)}
        if packed:
            layout = row_layout([m.shape[-1] // 2], m.shape[-1] // 2)
            feed |= {"pack_index": layout.pack_index, "segments": layout.segments}
            feed["unpack_index"] = layout.unpack_index
        feeds.append(feed)
    return feeds


def logit_difference(torch_model, onnx_model, tok, cal: Calibration, *, language: str) -> float:
    """Max |logit| difference between PyTorch and the ONNX graphs: the prompt step and two cached steps on
    the first calibration window."""
    import torch

    from generalist_cli.infer.transcribe import encode_windows

    prompt = torch.tensor([tok.sot_sequence(language=language if tok.multilingual else None, timestamps=False)])
    pack = onnx_model.can_pack
    mel = cal.mels[0].numpy()
    windows = [mel, mel[:, :900]] if pack else [mel]  # packed: the window whole and its first 9 s, in one row
    prompt = prompt.repeat(len(windows), 1)
    worst = 0.0
    with torch.inference_mode():
        caches = [encode_windows(m, windows, pack=pack) for m in (torch_model, onnx_model)]
        logits = [m.logits(m.decoder(prompt, c.cross_kv, c, 0)) for m, c in zip((torch_model, onnx_model), caches)]
        worst = max(worst, _finite_diff(*logits))
        nxt = logits[0][:, -1:].argmax(-1)
        for i in range(2):
            steps = [m.decode_step(nxt, c, prompt.shape[1] + i) for m, c in zip((torch_model, onnx_model), caches)]
            worst = max(worst, _finite_diff(*steps))
            nxt = steps[0].argmax(-1, keepdim=True)
    return worst


def _finite_diff(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a), torch.as_tensor(b)  # the export's logits are numpy
    keep = a.isfinite()
    if not bool((keep == b.isfinite()).all()):
        return float("inf")
    return float((a[keep] - b[keep]).abs().max()) if bool(keep.any()) else 0.0


def calibration_wer(torch_model, onnx_model, tok, cal: Calibration) -> tuple[float | None, float]:
    """WER of PyTorch and of the export against the references (None for PyTorch when there are none: then
    the export is scored against PyTorch's transcripts)."""
    from generalist_cli.evaluate.metrics import wer
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe

    if not cal.audios:  # dataset calibration: decode the prepared windows directly
        return _dataset_wer(torch_model, onnx_model, tok, cal)
    opts = TranscribeOptions(language=cal.language if tok.multilingual else "en", pack=onnx_model.can_pack)
    ref = [t.text for t in transcribe(torch_model, tok, cal.audios, opts)]
    got = [t.text for t in transcribe(onnx_model, tok, cal.audios, opts)]
    if all(cal.texts):
        return wer(cal.texts, ref), wer(cal.texts, got)
    return None, wer(ref, got)


def _dataset_wer(torch_model, onnx_model, tok, cal: Calibration) -> tuple[float | None, float]:
    import torch

    from generalist_cli.evaluate.metrics import wer
    from generalist_cli.infer.decoding import DecodeOptions, decode
    from generalist_cli.infer.transcribe import encode_windows

    prompt = tok.sot_sequence(language=cal.language if tok.multilingual else None, timestamps=False)
    options = DecodeOptions(timestamps=False, max_new_tokens=200)
    hyps = {}
    for name, m in (("torch", torch_model), ("onnx", onnx_model)):
        texts = []
        with torch.inference_mode():
            for mel, n in zip(cal.mels, cal.frames):  # packed: unpadded, as such a checkpoint trained and runs
                cache = encode_windows(m, [mel[:, :n].numpy()], pack=onnx_model.can_pack)
                [res] = decode(m, tok, cache, [prompt], options, list(m.config.suppress_tokens))
                texts.append(tok.decode(res.tokens).strip())
        hyps[name] = texts
    return wer(cal.texts, hyps["torch"]), wer(cal.texts, hyps["onnx"])
