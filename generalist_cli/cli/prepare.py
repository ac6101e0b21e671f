"""``gen prepare SOURCE``: dataset adapters -> training-ready Arrow shards (``datasets.load_from_disk(OUT)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from generalist_cli.cli import app

prepare_app = typer.Typer(help="Download and preprocess datasets into training-ready shards.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

Features = Annotated[
    str,
    typer.Option(
        help="Video as patches (RGB tubelets) or pose (body and hand landmarks per frame: the \\[sign] extra)."
    ),
]


Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder (a datasets.DatasetDict).")]
Local = Annotated[
    Optional[Path], typer.Option("--local", help="Read a local copy in the release layout instead of the hub.")
]
NumProc = Annotated[int, typer.Option("--num-proc", min=1, help="Worker processes.")]
Limit = Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N items per split (quick runs).")]
ShardSize = Annotated[int, typer.Option("--shard-size", min=1, help="Items per resumable shard.")]
Force = Annotated[bool, typer.Option("--force", help="Replace a dataset prepared with other options.")]
Json = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
Model = Annotated[str, typer.Option("--model", help="Whose tokenizer makes the token ids.")]
Repo = Annotated[
    str,
    typer.Option(
        help="Hub dataset id, or a local folder in the Hub's layout (a README with configs: and "
        "parquet files), read by datasets.load_dataset exactly as the Hub."
    ),
]


def _run(
    items,
    *,
    source: str,
    options: dict,
    out: Path,
    num_proc: int,
    limit: Optional[int],
    shard_size: int,
    force: bool,
    as_json: bool,
    model: str,
) -> None:
    import json

    from generalist_cli.console import err, progress
    from generalist_cli.console import out as stdout
    from generalist_cli.data.prepare import prepare
    from generalist_cli.store.store import tokenizer_for

    tokenizer = tokenizer_for(model)
    with progress() as bar:
        job = bar.add_task(f"preparing {source}", total=None)
        report = prepare(
            items,
            out=out,
            source=source,
            options=options,
            tokenizer=tokenizer,
            num_proc=num_proc,
            shard_size=shard_size,
            limit=limit,
            force=force,
            on_progress=lambda n: bar.advance(job, n),
        )
    n_rejected = report.n_rejected
    if n_rejected:
        top = sorted(report.rejected.items(), key=lambda kv: -kv[1])[:5]
        err.print(
            f"[yellow]rejected {n_rejected} item(s), listed in {out / 'rejected.jsonl'}:[/] "
            + "; ".join(f"{reason} ({n})" for reason, n in top),
            soft_wrap=True,
        )
    if as_json:
        stdout.print(
            json.dumps(
                {
                    "out": str(out),
                    "counts": report.counts,
                    "read": report.read,
                    "taken": report.taken,
                    "rejected": n_rejected,
                    "rejected_reasons": report.rejected,
                    "reused_shards": report.reused_shards,
                    "seconds": round(report.seconds, 2),
                    "already_prepared": report.already,
                }
            ),
            markup=False,
        )
    elif report.already:
        stdout.print(f"{out}: already prepared ({report.examples} examples); nothing to do", markup=False)
    else:
        per = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
        rate = report.examples / report.seconds if report.seconds else 0
        stdout.print(
            f"{out}: {report.examples} examples ({per}); items {report.accounting()}; "
            f"{report.seconds:.1f} s ({rate:.1f} examples/s)",
            markup=False,
        )


@prepare_app.command(
    epilog="""[bold]Examples:[/]\n
  gen prepare kathbath --lang hi --out data/kathbath-hi                (hub; needs HF_TOKEN)\n
  gen prepare kathbath --lang hindi --local ~/kathbath --out data/kathbath-hi --num-proc 4\n
  gen prepare kathbath --lang ta --splits valid,test_known --limit 200 --out data/kb-ta-small"""
)
def kathbath(
    lang: Annotated[
        Optional[str],
        typer.Option(
            "--lang",
            "-l",
            help="hi, hin or hindi; one of Kathbath's 12 languages (default: Hindi, said on "
            "stderr: all 12 are 1,684 hours).",
        ),
    ] = None,
    out: Out = Path("data/kathbath"),
    local: Local = None,
    splits: Annotated[str, typer.Option(help="Comma-separated splits.")] = "train,valid,test_known,test_unknown",
    text_column: Annotated[Optional[str], typer.Option(help="Hub text column (default: detected).")] = None,
    repo: Repo = "ai4bharat/Kathbath",
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 256,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
) -> None:
    """Kathbath Indic speech (AI4Bharat): speech -> text pairs as log-mel + token ids."""
    from generalist_cli.cli.common import warn
    from generalist_cli.data import kathbath as kb

    if lang is None:
        warn("Kathbath: no --lang given; preparing Hindi (hi). Pass --lang for another of its 12 languages")
    code = kb.language(lang or "hi")
    split_list = tuple(s.strip() for s in splits.split(",") if s.strip())
    items = kb.items(lang=code, splits=split_list, local=local, repo=repo, text_column=text_column, limit=limit,
                     on_skip=warn)  # fmt: skip
    _run(
        items,
        source="kathbath",
        options={"lang": code, "splits": list(split_list), "local": str(local or ""), "hub_id": repo},
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )


@prepare_app.command(
    epilog="""[bold]Examples:[/]\n
  gen prepare include --local ~/INCLUDE --out data/include\n
  gen prepare include --local ~/INCLUDE --subset include50 --out data/include50 --num-proc 4\n
  gen prepare include --local ~/INCLUDE --features pose --out data/include-pose   (needs the \\[sign] extra)\n
  gen prepare include --local ~/WLASL --features pose --out data/wlasl-pose   (WLASL_v0.3.json + videos/)"""
)
def include(
    local: Annotated[
        Path,
        typer.Option(
            "--local",
            help="The release folder: INCLUDE (<Category>/<N>. <Sign>/*.MOV) or WLASL-style "
            "(<gloss>/<id>.mp4, <split>/<gloss>/<id>.mp4, or WLASL_v0.3.json + videos/).",
        ),
    ],
    out: Out = Path("data/include"),
    subset: Annotated[Optional[str], typer.Option(help="include50 for the INCLUDE-50 subset.")] = None,
    features: Features = "patches",
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 64,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
) -> None:
    """Isolated-sign videos (INCLUDE ISL, WLASL-style ASL): sign video -> word, as tubelet patches (or landmarks)."""
    from generalist_cli.data import include as inc

    _check_features(features, [p for p, _, _ in inc.videos(local)])
    items = inc.items(local=local, subset=subset)
    _run(
        items,
        source="include",
        options={"local": str(local), "subset": subset or ""} | ({"features": "pose"} if features == "pose" else {}),
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )
    _pose_report(features, out)


def _check_features(features: str, paths: list[Path]) -> None:
    """``--features`` is known, and with ``pose`` and videos to read the [sign] extra is there (one line naming it
    if not), before any work; landmark files (.npy) need no MediaPipe."""
    from generalist_cli.data.schema import VIDEO_FEATURES
    from generalist_cli.errors import UsageError

    if features not in VIDEO_FEATURES:
        raise UsageError(f"--features must be patches or pose, not {features!r}")
    if features == "pose" and any(p.suffix.lower() != ".npy" for p in paths):
        from generalist_cli.features.pose import require

        require()


def _pose_report(features: str, out: Path) -> None:
    if features == "pose":
        from generalist_cli.console import note
        from generalist_cli.features.pose import dataset_report

        r = dataset_report(out)
        note(f"hands found in {r.hands_found:.0%} of {r.frames} frames, the body in {r.body_found:.0%}")


@prepare_app.command(
    "wiki-translate",
    epilog="""[bold]Examples:[/]\n
  gen prepare wiki-translate --src-lang en --tgt-lang hi --out data/wiki-en-hi   (hub)\n
  gen prepare wiki-translate --src-lang en --tgt-lang ta --local ~/bhasha --limit 10000 --out data/wiki-en-ta\n
  gen prepare wiki-translate --local examples/parallel_en_hi_test.tsv --split test --out data/para-en-hi-test""",
)
def wiki_translate(
    src_lang: Annotated[str, typer.Option(help="Source language (en, hi, ...).")] = "en",
    tgt_lang: Annotated[str, typer.Option(help="Target language.")] = "hi",
    out: Out = Path("data/wiki-translate"),
    local: Local = None,
    hub_id: Annotated[
        str,
        typer.Option(
            "--repo",
            "--hub-id",
            help="Hub dataset id, or a local folder in the Hub's layout (read by "
            "datasets.load_dataset exactly as the Hub).",
        ),
    ] = "soketlabs/bhasha-wiki-translated",
    src_column: Annotated[
        Optional[str], typer.Option(help="Source column (default: FLORES code, e.g. eng_Latn).")
    ] = None,
    tgt_column: Annotated[
        Optional[str], typer.Option(help="Target column (default: FLORES code, e.g. hin_Deva).")
    ] = None,
    split: Annotated[
        Optional[str], typer.Option(help="Put every row in this split (default: every 100th in valid).")
    ] = None,
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 1024,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
) -> None:
    """Wikipedia-derived parallel text: text -> text translation pairs as token ids."""
    from generalist_cli.data import wiki_translate as wt

    items = wt.items(
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        local=local,
        hub_id=hub_id,
        src_column=src_column,
        tgt_column=tgt_column,
        limit=limit,
        into=split,
    )
    _run(
        items,
        source="wiki-translate",
        options={
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
            "local": str(local or ""),
            "hub_id": hub_id,
            "src_column": src_column or "",
            "tgt_column": tgt_column or "",
            "split": split or "",
        },
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )


@prepare_app.command(
    epilog="""[bold]Examples:[/]\n
  gen prepare speak sentences_hi.txt --lang hi --out data/speak-hi\n
  gen prepare speak examples/sentences_en.txt --lang en --voices en-us,en-gb,en --tasks transcribe --out data/speak-en"""
)
def speak(
    text_file: Annotated[Path, typer.Argument(help="One sentence per line.")],
    lang: Annotated[str, typer.Option("--lang", "-l", help="Language of the text (hi, hin, hindi ...).")],
    out: Out = Path("data/speak"),
    voices: Annotated[
        Optional[str], typer.Option(help="Comma-separated eSpeak NG voices (default: the language).")
    ] = None,
    rate: Annotated[str, typer.Option(help="Words per minute, low-high.")] = "130-170",
    pitch: Annotated[str, typer.Option(help="Pitch 0-99, low-high.")] = "40-60",
    tasks: Annotated[
        str, typer.Option(help="transcribe (speech -> text) and/or tts (text -> speech).")
    ] = "transcribe,tts",
    seed: Annotated[int, typer.Option(help="Seed for voice/rate/pitch choices.")] = 0,
    split: Annotated[
        Optional[str], typer.Option(help="Put every line in this split (default: every 20th in valid).")
    ] = None,
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 256,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
) -> None:
    """Synthesise a spoken corpus with eSpeak NG: speech -> text pairs and text -> speech pairs."""
    from generalist_cli.data import speak as sp
    from generalist_cli.errors import UsageError

    def span(value: str, name: str) -> tuple[int, int]:
        try:
            lo, _, hi = value.partition("-")
            return int(lo), int(hi or lo)
        except ValueError:
            raise UsageError(f"--{name} must look like 130-170, not {value!r}") from None

    voice_list = tuple(v.strip() for v in (voices or "").split(",") if v.strip())
    task_list = tuple(t.strip() for t in tasks.split(",") if t.strip())
    items = sp.items(
        text_file=text_file,
        lang=lang,
        voices=voice_list,
        rate=span(rate, "rate"),
        pitch=span(pitch, "pitch"),
        tasks=task_list,
        seed=seed,
        split=split,
    )
    _run(
        items,
        source="speak",
        options={
            "text_file": str(text_file),
            "lang": lang,
            "voices": list(voice_list),
            "rate": rate,
            "pitch": pitch,
            "tasks": list(task_list),
            "seed": seed,
            "split": split or "",
        },
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )


@prepare_app.command(
    epilog="""[bold]Examples:[/]\n
  gen prepare manifest my_data.tsv --out data/mine                 (columns: path, text [, lang, task, target, split])\n
  gen prepare manifest clips.jsonl --lang hi --num-proc 4 --out data/clips"""
)
def manifest(
    manifest_file: Annotated[Path, typer.Argument(help="TSV, CSV or JSONL with path and text columns.")],
    out: Out = Path("data/manifest"),
    lang: Annotated[
        Optional[str], typer.Option("--lang", "-l", help="Language for rows without a lang column.")
    ] = None,
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 256,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
    features: Features = "patches",
) -> None:
    """Your own recordings or videos with their transcripts."""
    from generalist_cli.data import manifest as mf

    items = mf.items(manifest=manifest_file, lang=lang)
    if features == "pose":  # the rows are held to see whether any is a video to read
        items = list(items)
    _check_features(
        features, [Path(str(i.source)) for i in items if i.modality == "video"] if features == "pose" else []
    )
    _run(
        items,
        source="manifest",
        options={"manifest": str(manifest_file), "lang": lang or ""}
        | ({"features": "pose"} if features == "pose" else {}),
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )
    _pose_report(features, out)


@prepare_app.command(
    epilog="""[bold]Examples:[/]\n
  gen prepare arithmetic --p 97 --op add --train-fraction 0.5 --out data/arith-add-97"""
)
def arithmetic(
    p: Annotated[int, typer.Option("--p", min=2, help="The modulus (a prime for division).")] = 97,
    op: Annotated[str, typer.Option(help="add, sub, div or x2y2.")] = "add",
    train_fraction: Annotated[float, typer.Option(help="Share of all equations that trains.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the train/valid split.")] = 0,
    out: Out = Path("data/arith"),
    num_proc: NumProc = 1,
    limit: Limit = None,
    shard_size: ShardSize = 4096,
    force: Force = False,
    as_json: Json = False,
    model: Model = "whisper-base",
) -> None:
    """Modular arithmetic tables (grokking): "a + b =" -> "c" as text -> text examples."""
    from generalist_cli.data import arithmetic as ar

    items = ar.items(p=p, op=op, train_fraction=train_fraction, seed=seed)
    _run(
        items,
        source="arithmetic",
        options={"p": p, "op": op, "train_fraction": train_fraction, "seed": seed},
        out=out,
        num_proc=num_proc,
        limit=limit,
        shard_size=shard_size,
        force=force,
        as_json=as_json,
        model=model,
    )


@prepare_app.command(
    "synthetic-signs",
    epilog="""[bold]Examples:[/]\n
  gen prepare synthetic-signs --out raw/signs\n
  gen prepare include --local raw/signs --out data/signs""",
)
def synthetic_signs(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the videos (INCLUDE release layout).")] = Path(
        "raw/signs"
    ),
    signs: Annotated[int, typer.Option(min=1, help="How many signs (classes), at most 12.")] = 12,
    signers: Annotated[int, typer.Option(min=2, help="Signers (colour, size, position, speed variations).")] = 40,
    takes: Annotated[int, typer.Option(min=1, max=10, help="Videos per sign and signer.")] = 3,
    test_signers: Annotated[int, typer.Option(min=1, help="Signers held out for the test split.")] = 4,
    val_signers: Annotated[int, typer.Option(min=0, help="Signers held out for the val split.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the signers and takes.")] = 0,
    pose: Annotated[
        bool,
        typer.Option(
            "--pose", help="Write each take's body and hand landmarks (.npy) instead of its video (--features pose)."
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Write synthetic isolated-sign videos (hand-like shapes moving differently per sign) as an INCLUDE-layout
    release with signer-independent split lists; prepare them with [bold]gen prepare include --local[/]."""
    import json

    from generalist_cli.console import out as stdout
    from generalist_cli.console import progress
    from generalist_cli.data.synthetic_signs import write_release

    with progress() as bar:
        job = bar.add_task(
            "writing sign landmarks" if pose else "rendering sign videos", total=min(signs, 12) * signers * takes
        )
        counts = write_release(
            out,
            signs=signs,
            signers=signers,
            takes=takes,
            val_signers=val_signers,
            test_signers=test_signers,
            seed=seed,
            on_video=lambda: bar.advance(job),
            pose=pose,
        )
    if as_json:
        stdout.print(json.dumps({"out": str(out), "counts": counts}), markup=False)
    else:
        per = ", ".join(f"{k} {v}" for k, v in counts.items())
        stdout.print(
            f"{out}: {sum(counts.values())} {'landmark sequences' if pose else 'videos'} ({per}); next: gen prepare "
            f"include --local {out}{' --features pose' if pose else ''}",
            markup=False,
        )
