"""``gen eval``: scores, speed and cost of a model on a prepared split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import app


@app.command(
    "eval",
    epilog="""[bold]Examples:[/]\n
  gen eval whisper-base --data data/speak-hi-dev --split valid\n
  gen eval runs/asr-hi/checkpoints/last --data data/speak-hi-dev --split valid --plots reports/asr-hi\n
  gen eval exports/whisper-base-int8 --data data/speak-en --split valid --json report.json""",
)
def eval_(
    model: Annotated[str, typer.Argument(help="A model name, store entry, checkpoint or ONNX export folder.")],
    data: Annotated[Path, typer.Option("--data", help="A folder written by gen prepare.")],
    split: Annotated[str, typer.Option(help="The split to score.")] = "test",
    engine: Annotated[str, typer.Option(help="auto, torch or onnx (onnx: MODEL is a gen export folder).")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N examples.")] = None,
    as_json: Annotated[
        Optional[Path], typer.Option("--json", help="Write the full report as JSON here ('-': stdout).")
    ] = None,
    plots: Annotated[Optional[Path], typer.Option(help="Write PNG plots here (expert use; training curves).")] = None,
    run: Annotated[
        Optional[Path], typer.Option(help="A run folder whose curves to plot (default: MODEL's run).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    asr_model: Annotated[
        str, typer.Option(help="Transcribes generated speech back (round-trip WER); 'none': skip.")
    ] = "whisper-base",
    script: Annotated[
        str,
        typer.Option(
            "--script", help="auto: decode keeping to each language's script (as gen run does); any: no rule."
        ),
    ] = "auto",
    beam_size: Annotated[
        int, typer.Option("--beam-size", min=1, help="Beam width for text sources (translation); 1: greedy.")
    ] = 1,
) -> None:
    """Score MODEL on a prepared split: loss, WER/CER, BLEU/chrF, top-1, mel L1, latency p50/p95, throughput,
    real-time factor, size, parameters (total, active per token), FLOPs per audio second, expert use."""
    import json

    from generalist_cli.cli.common import write_atomic
    from generalist_cli.console import note, progress
    from generalist_cli.console import out as stdout
    from generalist_cli.errors import UsageError
    from generalist_cli.evaluate.report import evaluate, write_plots

    if script not in ("auto", "any"):
        raise UsageError(f"--script must be auto or any, not {script!r}")
    if engine not in ("auto", "torch", "onnx"):
        raise UsageError(f"--engine must be auto, torch or onnx, not {engine!r}")
    with progress() as bar:
        job = bar.add_task("evaluating", total=None)
        report = evaluate(
            model,
            data,
            split=split,
            engine=engine,
            limit=limit,
            device=device,
            asr_model=None if asr_model == "none" else asr_model,
            script=script,
            beam_size=beam_size,
            on_progress=lambda done, total: bar.update(job, completed=done, total=total),
        )
    if plots is not None:
        run = run or _run_of(Path(model))
        for p in write_plots(report, plots, run=run):
            note(f"wrote {p}")
    text = json.dumps(report, indent=2)
    if as_json is not None and str(as_json) == "-":
        stdout.print(text, markup=False, highlight=False)
        return
    if as_json is not None:
        write_atomic(as_json, text + "\n")
    stdout.print(_table(report))


def _run_of(model: Path) -> Optional[Path]:
    """``runs/NAME`` for a checkpoint ``runs/NAME/checkpoints/...`` (None otherwise)."""
    for parent in model.resolve().parents:
        if (parent / "metrics.jsonl").exists():
            return parent
    return None


def _table(report: dict):
    from rich.table import Table

    cols = [
        ("examples", "{:d}", "n"),
        ("loss", "{:.3f}", "loss"),
        ("accuracy", "{:.3f}", "acc"),
        ("wer", "{:.3f}", "WER"),
        ("cer", "{:.3f}", "CER"),
        ("script", "{:.1%}", "script"),
        ("bleu", "{:.1f}", "BLEU"),
        ("chrf", "{:.1f}", "chrF"),
        ("chrf++", "{:.1f}", "chrF++"),
        ("top1", "{:.3f}", "top-1"),
        ("mel_l1", "{:.3f}", "mel L1"),
        ("round_trip_wer", "{:.3f}", "rt WER"),
        ("latency_p50_s", "{:.2f}", "p50 s"),
        ("latency_p95_s", "{:.2f}", "p95 s"),
        ("examples_per_s", "{:.2f}", "ex/s"),
        ("tokens_per_s", "{:.1f}", "tok/s"),
        ("rtf", "{:.3f}", "RTF"),
    ]
    shown = [(k, f, label) for k, f, label in cols if any(k in e for e in report["tasks"].values())]
    if all(e.get("script", 1.0) == 1.0 for e in report["tasks"].values()):  # all in their script: the JSON says so
        shown = [c for c in shown if c[0] != "script"]
    info = report["model_info"]
    caption = (
        f"{info['bytes_on_disk'] / 1e6:.1f} MB on disk, {info['parameters'] / 1e6:.1f} M parameters "
        f"({info['active_parameters_per_token'] / 1e6:.1f} M active per token)"
    )
    if "flops_per_audio_second" in info:
        caption += f", {info['flops_per_audio_second'] / 1e9:.1f} GFLOPs per audio second"
    table = Table(
        title=f"{report['model']} on {report['data']} [{report['split']}] ({report['engine']})", caption=caption
    )
    table.add_column("task")
    for _, _, label in shown:
        table.add_column(label, justify="right")
    for task, e in report["tasks"].items():
        table.add_row(task, *[f.format(e[k]) if e.get(k) is not None else "-" for k, f, _ in shown])
    return table
