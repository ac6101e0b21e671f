"""Load a store entry (or any HF-layout Whisper folder) into a ready :class:`~generalist_cli.model.whisper.Whisper`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from generalist_cli.errors import ModelError
from generalist_cli.features.tokenizer import Tokenizer
from generalist_cli.model.config import ModelConfig

if TYPE_CHECKING:
    from generalist_cli.infer.engine import Engine


@dataclass
class Loaded:
    model: "Engine"  # the Generalist in eval mode, or an ONNX export (infer/engine.py)
    tokenizer: Tokenizer
    config: ModelConfig
    path: Path
    meta: dict = field(default_factory=dict)  # meta.json (a store entry or checkpoint) or export.json, read once

    @property
    def kind(self) -> str:
        """ "torch" or "onnx": which engine runs the model."""
        return self.model.kind


def read_meta(path: Path, name: str = "meta.json") -> dict:
    try:
        meta = json.loads((path / name).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def check_version(path: Path, stamp: str) -> None:
    """Refuse a folder written by another major version of gen (the format may differ there); folders with
    no stamp (a transformers Whisper folder) are read as they are. 0.x counts as major 0."""
    from generalist_cli import __version__

    try:
        written = json.loads((path / stamp).read_text()).get("gen_version")
    except (OSError, ValueError):
        return
    if not written:
        return
    major = lambda v: str(v).split(".")[0]  # noqa: E731
    if major(written) != major(__version__):
        raise ModelError(
            f"{path}: was written by gen {written}; this gen {__version__} reads major version "
            f"{major(__version__)} only",
            hint=f"install gen {major(written)}.x to use it, or export it again with that version",
        )


def load_model(path: Path, *, device: str = "cpu", dtype: str = "float32") -> Loaded:
    """Load a store entry / HF Whisper folder."""
    from safetensors.torch import load_file

    check_version(path, "meta.json")
    try:
        config = ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'}: cannot be read as a Whisper config ({exc})") from exc
    try:
        state = load_file(str(path / "model.safetensors"))
    except Exception as exc:
        raise ModelError(f"{path / 'model.safetensors'}: cannot be read ({exc})") from exc
    return _build(config, state, path / "tokenizer.json", path, device=device, dtype=dtype)


def load_export(path: Path, *, device: str = "auto", threads: int | None = None) -> Loaded:
    """An ONNX export folder (``gen export``) run by ONNX Runtime."""
    from generalist_cli.infer.onnx_engine import OnnxModel

    check_version(path, "export.json")
    model = OnnxModel(path, threads=threads, device=device)
    c = model.config
    tok = Tokenizer(
        path / "tokenizer.json", multilingual=c.multilingual, extra_tokens=c.extra_tokens, n_vocab=c.n_vocab
    )
    return Loaded(model, tok, c, path, read_meta(path, "export.json"))


def load_pulled(pulled, *, device: str = "cpu", dtype: str = "float32") -> Loaded:
    """Load a model read from a source (:func:`generalist_cli.store.store.fetch`) without storing it."""
    import torch

    state = {k: torch.from_numpy(v.copy()) for k, v in pulled.weights.items()}
    return _build(pulled.config, state, pulled.tokenizer, Path(pulled.source), device=device, dtype=dtype)


def _build(config: ModelConfig, state: dict, tokenizer: Path, path: Path, *, device: str, dtype: str) -> Loaded:
    import torch

    from generalist_cli.model.generalist import Generalist

    model = Generalist(config)
    state = {k.removeprefix("model."): v for k, v in state.items() if k != "proj_out.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    tok = Tokenizer(
        tokenizer, multilingual=config.multilingual, extra_tokens=config.extra_tokens, n_vocab=config.n_vocab
    )
    return Loaded(model, tok, config, path, read_meta(path))
