"""``gen train RECIPE``: train the generalist from a TOML recipe (accelerate; ``accelerate launch`` for many)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import app


@app.command(
    epilog="""[bold]Examples:[/]\n
  gen train recipes/tiny.toml\n
  gen train recipes/asr-hi.toml --set train.max_steps=300 --set run.name=asr-hi-300\n
  gen train recipes/asr-hi.toml --resume\n
  accelerate launch --num_processes 2 -m generalist_cli train recipes/multitask.toml   (DDP)\n
  accelerate launch --config_file recipes/fsdp.yaml -m generalist_cli train recipes/multitask.toml   (FSDP)"""
)
def train(
    recipe: Annotated[Path, typer.Argument(help="A TOML recipe (see recipes/).")],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override: section.key=value (repeatable).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the result (run folder, step, loss, checkpoint, last evaluation) as JSON."),
    ] = False,
) -> None:
    """Train from RECIPE into runs/<name>/: recipe.resolved.toml, metrics.jsonl, eval.jsonl, TensorBoard
    events and checkpoints/step_N (each loadable by gen run / gen eval), checkpoints/last -> newest."""
    import signal

    from rich.markup import escape

    from generalist_cli import console
    from generalist_cli.cli.common import warn
    from generalist_cli.console import err, out
    from generalist_cli.recipe import load
    from generalist_cli.train.loop import Interrupted
    from generalist_cli.train.loop import train as run_training

    r = load(recipe, set_ or [])
    terminated = []

    def on_term(signum, frame):  # a scheduler's SIGTERM: save like Ctrl-C, exit 143
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started in the background: still honour Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]:.1f} ex/s"),
        TimeRemainingColumn(),
        console=err,
        disable=console.verbosity < 0 or not err.is_terminal,
    )

    def on_eval(row: dict) -> None:
        if console.verbosity >= 0:
            err.print(f"[cyan]eval @ step {row['step']}[/] " + escape(eval_line(row)), soft_wrap=True)

    with bar:
        job = bar.add_task(f"training {r.run.name}", total=r.train.max_steps, loss=float("nan"), speed=0.0)

        def on_step(step: int, loss: float, speed: float) -> None:
            bar.update(job, completed=step, loss=loss, speed=speed)

        try:
            result = run_training(r, resume=resume, on_step=on_step, on_warn=warn, on_eval=on_eval)
        except Interrupted as exc:
            bar.stop()
            err.print(
                f"{'terminated' if terminated else 'interrupted'}: checkpoint {exc.checkpoint}; continue with --resume"
            )
            raise typer.Exit(143 if terminated else 130) from None
    if as_json:
        import json

        out.print(
            json.dumps(
                {
                    "run_dir": str(result.run_dir),
                    "step": result.step,
                    "loss": result.loss,
                    "checkpoint": str(result.checkpoint) if result.checkpoint else None,
                    "eval": result.evals[-1] if result.evals else None,
                }
            ),
            markup=False,
        )
    else:
        out.print(
            f"{result.run_dir}: step {result.step}, loss {result.loss:.4f}, checkpoint {result.checkpoint}",
            markup=False,
        )


def eval_line(row: dict) -> str:
    """One line of an evaluation row: per source, loss and accuracy, and its text or speech scores."""
    parts = []
    for name, e in row.items():
        if isinstance(e, dict):
            s = f"{name}: loss {e['loss']:.3f} acc {e['accuracy']:.3f}" if e.get("tokens") else f"{name}:"
            if "mel_l1" in e:
                s += f" mel L1 {e['mel_l1']:.3f}"
            if "wer" in e:
                s += f" WER {e['wer']:.3f} CER {e['cer']:.3f}"
            if "bleu" in e:
                s += f" BLEU {e['bleu']:.1f} chrF {e['chrf']:.1f} chrF++ {e.get('chrf++', float('nan')):.1f}"
            parts.append(s)
    return "; ".join(parts)
