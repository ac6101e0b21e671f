"""``gen export``: ONNX graphs (encoder, decoder with KV cache), INT8, pruning, parity report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import app


@app.command(
    "export",
    epilog="""[bold]Examples:[/]\n
  gen export --quantize int8                      (the default model into exports/whisper-base-int8)\n
  gen export whisper-base --out exports/whisper-base-int8\n
  gen run examples/hello.m4a --to text --model exports/whisper-base-int8\n
  gen export whisper-base --out exports/base-fp32 --quantize none\n
  gen export runs/asr-hi-real/checkpoints/last --encoder packed    (any-length utterances, top-2 experts)\n
  gen export runs/asr-hi/last --out exports/asr-hi --prune 0.3 --prune-experts 2 --calibration data/speak-hi-dev""",
)
def export(
    model: Annotated[
        str, typer.Argument(help="A model name, store entry, checkpoint or Whisper folder (default: gen run's).")
    ] = "whisper-base",
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="The export folder to create (must not hold files); default exports/<model>-<quantize>."
        ),
    ] = None,
    quantize: Annotated[str, typer.Option(help="int8 (ONNX Runtime quantisation) or none (fp32).")] = "int8",
    prune: Annotated[float, typer.Option(help="Global magnitude pruning: fraction of weights set to zero.")] = 0.0,
    prune_experts: Annotated[int, typer.Option(help="Drop this many least-used experts per MoE layer.")] = 0,
    calibration: Annotated[
        Optional[Path],
        typer.Option(
            help="Audio file, folder of audio (+ .txt transcripts) or prepared dataset; default examples/hello.m4a."
        ),
    ] = None,
    static: Annotated[
        bool, typer.Option("--static", help="Static INT8 with activation ranges from calibration.")
    ] = False,
    max_wer_change: Annotated[float, typer.Option(help="Fail when the export's calibration WER rises more.")] = 0.05,
    encoder: Annotated[
        str,
        typer.Option(
            help="packed: utterances of any length, several to a row (as gen train trains); windows: fixed 30-s "
            "windows (stock Whisper); auto: packed for a checkpoint trained on speech whose encoder allows it."
        ),
    ] = "auto",
    experts: Annotated[
        str, typer.Option(help="MoE layers in the graphs: top-k (only the chosen experts run) or all.")
    ] = "top-k",
    as_json: Annotated[bool, typer.Option("--json", help="Print the export report as JSON.")] = False,
) -> None:
    """Export MODEL to ONNX for ONNX Runtime: encoder.onnx, decoder.onnx (one graph for the prompt and the
    cached steps), config.json, tokenizer.json, parity.json. Fails, writing nothing, when the fp32 graphs
    differ from PyTorch or the INT8/pruned export loses too much WER on the calibration audio."""
    import json

    from rich.markup import escape

    from generalist_cli.console import note
    from generalist_cli.console import out as stdout
    from generalist_cli.export.build import export_model

    out = out or default_out(model, quantize)
    report = export_model(
        model,
        out,
        quantize=quantize,
        prune=prune,
        prune_experts=prune_experts,
        calibration=calibration,
        static=static,
        max_wer_change=max_wer_change,
        encoder=encoder,
        experts=experts,
        on_step=lambda s: note(escape(s)),
    )
    if as_json:
        stdout.print(json.dumps({"path": str(out), **report}), markup=False)
        return
    p = report["parity"]
    mb = report["bytes"]["total"] / 1e6
    lines = [
        f"{out}: {mb:.1f} MB ({report['quantize']}, {report['encoder']} encoder, experts {report['experts']})",
        f"  fp32 parity: max |logit diff| {p['fp32_max_abs_logit_diff']:.2e} (limit {p['limit']:g})",
    ]
    if p.get("wer_change") is not None:
        lines.append(
            f"  calibration WER: PyTorch {p['calibration_wer_pytorch']:.3f}, export "
            f"{p['calibration_wer_export']:.3f} ({p['wer_change']:+.3f})"
        )
    else:
        lines.append(
            f"  calibration WER of the export against PyTorch's transcripts: {p['calibration_wer_export']:.3f}"
        )
    if "magnitude_pruning" in report:
        lines.append(f"  sparsity: {report['magnitude_pruning']['sparsity']:.3f}")
    if "expert_pruning" in report:
        e = report["expert_pruning"]
        lines.append(f"  experts: {e['experts_before']} -> {e['experts_after']} (top-{e['top_k']})")
    stdout.print("\n".join(lines), markup=False, highlight=False)


def default_out(model: str, quantize: str) -> Path:
    """``exports/<model>-<int8|fp32>``; a checkpoint path is named by its run (``runs/asr-hi/checkpoints/last``
    -> ``exports/asr-hi-last-int8``)."""
    path = Path(model)
    name = path.name
    if name == "last" or name.startswith("step_"):
        name = (
            f"{path.parent.parent.name}-{name}" if path.parent.name == "checkpoints" else f"{path.parent.name}-{name}"
        )
    return Path("exports") / f"{name}-{'fp32' if quantize == 'none' else quantize}"
