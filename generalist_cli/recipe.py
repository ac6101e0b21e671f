"""Training recipes: TOML -> frozen dataclasses. Unknown keys and wrong types fail naming the file and key;
``--set section.key=value`` overrides any field; :func:`dump` writes the resolved recipe back as TOML.

Sections: ``[run]``, ``[model]``, ``[data]`` with ``[[data.sources]]``, ``[train]``, ``[eval]``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from generalist_cli.errors import GenError
from generalist_cli.model.config import FrontEndOptions, UpcycleOptions


class RecipeError(GenError):
    pass


@dataclass(frozen=True)
class RunSection:
    name: str = "run"  # the run folder: <out>/<name>
    out: str = "runs"  # parent folder of runs
    seed: int = 42  # seeds torch, numpy, random and the data order


@dataclass(frozen=True)
class ModelSection(FrontEndOptions, UpcycleOptions):  # + their keys (model/config.py): experts, ..., video_tokens
    init: str = "whisper-base"  # checkpoint to start from: store name, hub id or folder; "scratch": random
    tokenizer: str = "whisper-base"  # vocabulary of a scratch model
    scratch_width: int = 128  # d_model of a scratch model
    scratch_layers: int = 1  # encoder and decoder blocks of a scratch model
    scratch_heads: int = 4
    upcycle: bool = True  # turn a dense Whisper into the MoE + TTT generalist first (with the keys above)
    add_experts: int = 0  # lifelong learning: experts appended before training
    add_experts_init: str = "mean"  # "mean" or "copy"
    freeze_old_experts: bool = False  # keep the experts the init had (and their router rows) bit-identical
    train_encoder: bool = True  # False freezes the encoder and what feeds only it (modality embeddings, video)
    output_tokens: str = "all"  # "targets": only tokens that occur in the training targets may be output
    adapter: str = ""  # a language code: train only a low-rank decoder adapter for it (model/adapters.py)
    adapter_rank: int = 64  # its rank r

    def problems(self, name=lambda key: key) -> list[str]:
        from generalist_cli.languages import CODES

        out = UpcycleOptions.problems(self, name) + FrontEndOptions.problems(self, name)
        if self.adapter and self.adapter not in CODES:
            out.append(f"{name('adapter')}: {self.adapter!r} is not a Whisper language code")
        if self.adapter and self.upcycle:
            out.append(f"{name('adapter')}: adapters train on a dense Whisper: set {name('upcycle')} = false")
        if self.adapter and not 1 <= self.adapter_rank <= 512:
            out.append(f"{name('adapter_rank')}: must be 1..512")
        return out


@dataclass(frozen=True)
class DataSource:
    path: str  # a folder written by `gen prepare`
    weight: float = 1.0  # sampling weight among sources (multitask mixing)
    split: str = "train"
    eval_split: str = "valid"  # "" for none
    tasks: tuple[str, ...] = ()  # keep only these tasks (empty: all)


@dataclass(frozen=True)
class DataSection:
    sources: tuple[DataSource, ...] = ()
    capacity: int = 2048  # encoder positions per packed row
    max_target_tokens: int = 220  # longer targets are cut


@dataclass(frozen=True)
class TrainSection:
    lr: float = 1.7e-5  # peak learning rate
    batch_size: int = 32  # examples per optimizer step (over all processes and accumulation steps)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.0
    warmup_steps: int = 10_000
    max_steps: int = 5_000
    max_minutes: float = 0.0  # wall-clock budget of training, evaluations excluded (0: none); the run stops at
    # the first step past it, and a linear schedule decays to 0 when it is spent (or at max_steps, if sooner)
    schedule: str = "linear"  # linear warm-up then linear decay to 0 at max_steps; or "constant"
    mixed_precision: str = "bf16"  # "no", "bf16", "fp16" (GPU only)
    grad_accum: int = 1  # micro-batches per optimizer step
    clip: float = 1.0  # max gradient norm (0 = off)
    aux_loss_coef: float = 1e-3  # MoE load-balancing loss
    z_loss_coef: float = 1e-3  # router z-loss
    mel_loss_coef: float = 1.0  # text -> speech: mel L1
    duration_loss_coef: float = 0.1  # text -> speech: log-duration MSE
    log_every: int = 10
    save_every: int = 500
    keep_last: int = 3  # checkpoints kept
    release_new_experts_at: int = 0  # step at which added experts join routing
    pose_augment: bool = False  # landmark clips: mirror, rotate/scale/shear, drop frames (features/pose.py augment)
    spec_augment: bool = False  # audio: SpecAugment frequency and time masks on the log-mel (features/mel.py)
    sampling: str = "random"  # "random": by source weight; "epochs": shuffled passes; "packed": batch_size = rows


@dataclass(frozen=True)
class EvalSection:
    every: int = 500  # steps between evaluations (0: only at the end)
    every_minutes: float = 0.0  # or minutes of training between evaluations (equal-wall-time curves)
    batch_size: int = 32
    max_examples: int = 200  # per source
    wer_examples: int = 50  # greedy-decoded for WER/CER per source (0: loss only)
    max_new_tokens: int = 200  # decoding cap per example (an untrained model may never stop)
    train_examples: int = 0  # also score this many training examples (reported as "<source>/train")


@dataclass(frozen=True)
class Recipe:
    run: RunSection = field(default_factory=RunSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    path: str = ""  # the file it came from


def _typename(t) -> str:
    return getattr(t, "__name__", str(t))


def _convert(value, hint, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table, got {value!r}")
        return _build(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise RecipeError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{where}: unsupported type {_typename(hint)}")


def _build(cls, table: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not (cls is Recipe and f.name == "path")}
    unknown = sorted(set(table) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}", hint="known keys: " + ", ".join(sorted(names)))
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in table.items()}
    return cls(**kwargs)


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(table: dict, overrides: list[str], *, source: str) -> dict:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected section.key=value")
        parts = key.strip().split(".")
        node = table
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {p} is not a section of {source}")
        node[parts[-1]] = _parse_value(value.strip())
    return table


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe; ``overrides`` are ``section.key=value`` strings."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe not found", hint="see recipes/ for the shipped ones") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot be read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from exc
    table = apply_overrides(table, overrides or [], source=str(path))
    try:
        recipe = _build(Recipe, table, "")
    except RecipeError as exc:
        raise RecipeError(f"{path}: {exc.message}", hint=exc.hint) from None
    recipe = dataclasses.replace(recipe, path=str(path))
    _check(recipe, path)
    return recipe


def _check(r: Recipe, path: Path) -> None:
    def bad(key: str, problem: str):
        raise RecipeError(f"{path}: {key}: {problem}")

    for problem in r.model.problems(lambda key: f"model.{key}"):
        raise RecipeError(f"{path}: {problem}")
    if r.model.add_experts_init not in ("mean", "copy"):
        bad("model.add_experts_init", "must be 'mean' or 'copy'")
    if r.train.mixed_precision not in ("no", "bf16", "fp16"):
        bad("train.mixed_precision", "must be 'no', 'bf16' or 'fp16'")
    if r.train.sampling not in ("random", "epochs", "packed"):
        bad("train.sampling", "must be 'random', 'epochs' or 'packed'")
    if r.model.output_tokens not in ("all", "targets"):
        bad("model.output_tokens", "must be 'all' or 'targets'")
    if r.train.schedule not in ("linear", "constant"):
        bad("train.schedule", "must be 'linear' or 'constant'")
    for key in ("batch_size", "max_steps", "grad_accum", "log_every"):
        if getattr(r.train, key) < 1:
            bad(f"train.{key}", "must be at least 1")
    if r.train.lr <= 0:
        bad("train.lr", "must be positive")
    if r.train.max_minutes < 0 or r.eval.every_minutes < 0:
        bad("train.max_minutes" if r.train.max_minutes < 0 else "eval.every_minutes", "must be 0 (off) or more")
    if not r.data.sources:
        bad("data.sources", "no [[data.sources]] given")
    for i, s in enumerate(r.data.sources):
        if s.weight <= 0:
            bad(f"data.sources[{i}].weight", "must be positive")


def dump(recipe: Recipe) -> str:
    """The recipe as TOML (every field, defaults included)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(type(v))

    lines = [f"# resolved from {recipe.path}"]
    for section in ("run", "model", "data", "train", "eval"):
        obj = getattr(recipe, section)
        lines.append(f"\n[{section}]")
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.name == "sources":
                continue
            lines.append(f"{f.name} = {value(v)}")
        if section == "data":
            for s in recipe.data.sources:
                lines.append("\n[[data.sources]]")
                lines += [f"{f.name} = {value(getattr(s, f.name))}" for f in dataclasses.fields(s)]
    return "\n".join(lines) + "\n"
