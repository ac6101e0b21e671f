"""``gen doctor``: what this machine has for gen: versions, devices, models available offline, the hub."""

from __future__ import annotations

from typing import Annotated

import typer

from generalist_cli.cli import app


@app.command(
    "doctor",
    epilog="[bold]Examples:[/]\n\n  gen doctor\n\n  gen doctor --json\n\n"
    "  gen doctor --no-hub   (skip the network check)",
)
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    hub: Annotated[bool, typer.Option(help="Check whether the Hugging Face Hub answers (3 s timeout).")] = True,
) -> None:
    """Report versions (gen, Python, torch, ONNX Runtime, PyAV, transformers), CUDA and its devices, ONNX
    Runtime providers, the model store, which models can load offline, and whether the hub is reachable."""
    import json

    from generalist_cli.console import out as stdout

    report = collect(hub=hub)
    if as_json:
        stdout.print(json.dumps(report), markup=False, highlight=False)
        return
    lines = [f"gen {report['gen']} (Python {report['python']})"]
    lines += [f"  {k}: {v or 'not installed'}" for k, v in report["packages"].items()]
    cuda = report["cuda"]
    lines.append(f"  CUDA: {'available, ' + ', '.join(cuda['devices']) if cuda['available'] else 'not available'}")
    lines.append(f"  ONNX Runtime providers: {', '.join(report['onnxruntime_providers']) or '-'}")
    lines.append(f"  model store: {report['store']}")
    for m in report["models"]:
        lines.append(f"  model {m['name']}: {m['where']}")
    lines.append(f"  Hugging Face Hub: {report['hub']}")
    stdout.print("\n".join(lines), markup=False, highlight=False)


def collect(*, hub: bool = True) -> dict:
    import importlib.metadata as md
    import platform

    import generalist_cli
    from generalist_cli.store.store import list_models, models_dir

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    packages = {
        d: version(d)
        for d in (
            "torch",
            "onnxruntime",
            "onnxruntime-gpu",
            "av",
            "transformers",
            "accelerate",
            "datasets",
            "ctranslate2",
            "faster-whisper",
        )
    }
    cuda: dict = {"available": False, "devices": []}
    if packages["torch"]:
        import torch

        if torch.cuda.is_available():
            cuda = {
                "available": True,
                "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            }
    providers: list[str] = []
    if packages["onnxruntime"] or packages["onnxruntime-gpu"]:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    return {
        "gen": generalist_cli.__version__,
        "python": platform.python_version(),
        "packages": packages,
        "cuda": cuda,
        "onnxruntime_providers": providers,
        "store": str(models_dir()),
        "models": [{"name": m["name"], "where": m["where"]} for m in list_models()],
        "hub": _hub() if hub else "not checked",
    }


def _hub() -> str:
    import os
    import urllib.request

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return "offline (HF_HUB_OFFLINE is set)"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/models?limit=1", timeout=3) as r:  # noqa: S310 - fixed URL
            return f"reachable ({endpoint}, HTTP {r.status})"
    except Exception as exc:  # noqa: BLE001 - any network failure means "unreachable"
        return f"unreachable ({endpoint}: {type(exc).__name__})"
