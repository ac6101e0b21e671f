"""``gen serve``: the HTTP API (generalist_cli/serve) on a checkpoint, a store model or an export."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from generalist_cli.cli import app


@app.command(
    "serve",
    epilog="[bold]Examples:[/]\n\n  gen serve whisper-base\n\n  gen serve exports/base-int8 --port 9000 --workers 2\n\n"
    "  gen serve runs/tts/checkpoints/last --max-batch 16 --queue-size 128\n\n"
    "  curl -F file=@speech.m4a -F language=hi http://127.0.0.1:8000/v1/audio/transcriptions",
)
def serve(
    model: Annotated[str, typer.Argument(help="Store name, checkpoint folder or export folder.")] = "whisper-base",
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes, each with its own copy of the model.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests transcribed together (1: no batching).")] = 8,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long a request waits for others to batch with.")
    ] = 10.0,
    queue_size: Annotated[int, typer.Option(min=1, help="Waiting requests before the server answers 503.")] = 64,
    max_mb: Annotated[float, typer.Option(min=0, help="Largest upload in MB (413 above).")] = 25.0,
    max_seconds: Annotated[float, typer.Option(min=1, help="Longest audio in seconds (400 above).")] = 1800.0,
    device: Annotated[
        str, typer.Option(help="cpu, cuda or cuda:N (a checkpoint; an export picks its provider).")
    ] = "cpu",
    threads: Annotated[int, typer.Option(min=0, help="CPU threads per process (0: all).")] = 0,
    pack: Annotated[
        Optional[bool],
        typer.Option(
            "--pack/--no-pack",
            help="Encode a batch's utterances unpadded, several to an encoder row (default: on for "
            "checkpoints gen train trained on speech, off for plain Whisper and exports).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve MODEL over HTTP: OpenAI-compatible [bold]POST /v1/audio/transcriptions[/] and
    [bold]/v1/audio/translations[/] (multipart file, language, response_format json|text|srt|vtt|verbose_json),
    [bold]POST /v1/convert[/] for text -> speech, text -> text, sign video -> text and speech -> speech,
    [bold]GET /health[/] and Prometheus [bold]GET /metrics[/]. Requests are micro-batched; a full queue
    answers 503 with Retry-After. Interactive API docs at /docs."""
    import dataclasses
    import json
    import os

    from generalist_cli.console import note
    from generalist_cli.serve.app import ServeConfig

    try:
        import uvicorn
    except ImportError:  # pragma: no cover - a dependency of the package
        from generalist_cli.errors import GenError

        raise GenError("gen serve needs uvicorn and fastapi", hint="pip install fastapi uvicorn python-multipart")
    config = ServeConfig(
        model=model,
        device=device,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        max_mb=max_mb,
        max_seconds=max_seconds,
        threads=threads,
        pack=pack,
    )
    note(f"gen serve: {model} on http://{host}:{port} ({workers} worker(s), batches of up to {max_batch})")
    if workers > 1:  # uvicorn starts the processes; each builds the app from the environment
        os.environ["GEN_SERVE_CONFIG"] = json.dumps(dataclasses.asdict(config))
        uvicorn.run(
            "generalist_cli.serve.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )
        return
    from generalist_cli.serve.app import create_app

    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
