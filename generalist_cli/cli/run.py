"""``gen run``: convert local files from one modality to another (today: speech -> text)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from generalist_cli.cli import app

if TYPE_CHECKING:
    from generalist_cli.cli.outputs import Sink

DEFAULT_MODEL = "whisper-base"


class To(str, Enum):
    text = "text"
    speech = "speech"


class Task(str, Enum):
    transcribe = "transcribe"
    translate = "translate"


class From(str, Enum):
    auto = "auto"
    text = "text"
    audio = "audio"
    video = "video"


class Vad(str, Enum):
    silero = "silero"
    energy = "energy"
    off = "off"


class Script(str, Enum):
    auto = "auto"
    any = "any"


class Channels(str, Enum):
    mix = "mix"
    split = "split"


class Format(str, Enum):
    txt = "txt"
    json = "json"
    srt = "srt"
    vtt = "vtt"


@app.command(
    epilog="""[bold]Examples:[/]\n
  gen run examples/hello.m4a --to text\n
  gen run talk.m4a --to text --lang hi --format srt --out talk.srt\n
  gen run a.wav b.mp3 c.mov --format json --out transcripts/\n
  gen run interview.m4a --task translate --beam-size 5 --model whisper-base\n
  arecord -f S16_LE -r 16000 -c 1 | gen run - --stream --lang en\n
  gen run call.wav --channels split --format json\n
  gen run meeting.m4a --hotwords "Kathbath,AI4Bharat" --prompt "Notes from the data team."\n
  gen run notes.txt --to speech --lang hi --out notes.m4a --model runs/tts/checkpoints/last\n
  gen run sign.mov --to text --format json --model runs/isl/checkpoints/last""",
)
def run(
    files: Annotated[
        list[Path], typer.Argument(help="Media files (m4a, wav, mp3, flac, ogg/opus, mov/mp4 ...).", show_default=False)
    ],
    to: Annotated[To, typer.Option("--to", help="Output modality.")] = To.text,
    from_: Annotated[
        From, typer.Option("--from", help="Input modality; auto: from the file's name and content.")
    ] = From.auto,
    src_lang: Annotated[Optional[str], typer.Option(help="Language of text inputs (text -> text translation).")] = None,
    lang: Annotated[
        Optional[str], typer.Option("--lang", "-l", help="Spoken language: hi, hin or hindi; absent = detect.")
    ] = None,
    task: Annotated[
        Task, typer.Option(help="transcribe (same language) or translate (into English).")
    ] = Task.transcribe,
    model: Annotated[str, typer.Option("--model", "-m", help="Store name, hub id, or model folder.")] = DEFAULT_MODEL,
    beam_size: Annotated[int, typer.Option("--beam-size", min=1, max=16, help="Beam width; 1 = greedy.")] = 1,
    length_penalty: Annotated[
        Optional[float],
        typer.Option(help="Beam ranking: sum log-prob / ((5 + length) / 6)^A (GNMT); default: mean log-prob."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.txt,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file, or folder for many inputs.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Audio windows decoded together.")] = 8,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ... or auto.")] = "auto",
    langs: Annotated[
        Optional[str],
        typer.Option(
            "--langs", help="Without --lang: detect among these only, window by window (e.g. hi,en for Hindi/English)."
        ),
    ] = None,
    prompt: Annotated[
        str, typer.Option(help="Initial prompt: text the speech continues (names, spelling, style).")
    ] = "",
    hotwords: Annotated[
        str, typer.Option(help="Comma-separated names or terms to prefer, e.g. 'Kathbath,AI4Bharat'.")
    ] = "",
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", help="Per-word start/end (json words; srt/vtt get one cue per word).")
    ] = False,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Live: read 16 kHz PCM (raw s16le or WAV) from stdin "
            "(FILES = -) or a file, print confirmed words as they "
            "become stable, partial text on stderr.",
        ),
    ] = False,
    vad: Annotated[
        Vad,
        typer.Option(
            "--vad",
            help="Voice-activity detection: decode only the speech regions "
            "(silence and noise give empty text, not invented sentences); "
            "silero (Silero VAD), energy, or off.",
        ),
    ] = Vad.silero,
    no_vad: Annotated[bool, typer.Option("--no-vad", help="Same as --vad off.", hidden=True)] = False,
    script: Annotated[
        Script,
        typer.Option(
            "--script",
            help="auto: text keeps to the language's own script "
            "(Devanagari for hi; Latin words stay allowed once it "
            "has begun); any: no rule.",
        ),
    ] = Script.auto,
    channels: Annotated[
        Channels,
        typer.Option(
            "--channels", help="mix: down-mix to mono; split: transcribe each channel on its own (json 'channel')."
        ),
    ] = Channels.mix,
    pack: Annotated[
        Optional[bool],
        typer.Option(
            "--pack/--no-pack",
            help="Encode speech windows unpadded, several to an encoder row (default: on for "
            "checkpoints gen train trained on speech, off for plain Whisper and exports).",
            show_default=False,
        ),
    ] = None,
    share_windows: Annotated[
        bool,
        typer.Option(
            "--share-windows/--no-share-windows",
            help="With a fixed language and 30-s windows, join short files (2 s of silence between) into shared "
            "windows; a file whose text cannot be handed back for sure is transcribed again alone.",
        ),
    ] = True,
    num_processes: Annotated[
        int,
        typer.Option(
            "--num-processes",
            "-n",
            min=1,
            help="Share the files among N processes (one per GPU, or CPU processes); outputs keep the input order.",
        ),
    ] = 1,
) -> None:
    """Convert FILES with the generalist model: speech -> text (transcribe or translate to English), and, with a
    checkpoint trained for them, text -> speech, text -> text, sign video -> text, speech -> speech.

    Results go to stdout (or --out); progress and errors go to stderr. A bad file is reported on one line
    and skipped; the exit code is 1 when any file failed. Under [bold]accelerate launch[/] (or with
    --num-processes), each process converts its share of the files and the outputs are merged in input order.
    """
    from generalist_cli.cli.common import warn
    from generalist_cli.cli.outputs import Sink, process_state, relaunch
    from generalist_cli.cli.outputs import out_dir as find_out_dir
    from generalist_cli.errors import UsageError
    from generalist_cli.languages import resolve_language

    language = resolve_language(lang) if lang else None
    source_language = resolve_language(src_lang) if src_lang else None
    if num_processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise typer.Exit(relaunch(num_processes))
    out_dir = find_out_dir(out, len(files))
    state = process_state()
    loaded = _open(model, device, state, n_files=len(files))
    from generalist_cli.infer.transcribe import TranscribeOptions, pack_setting

    language, allowed = _check_languages(loaded, model, language, langs, task, word_timestamps)
    options = TranscribeOptions(
        language=language,
        languages=allowed,
        task=task.value,
        beam_size=beam_size,
        length_penalty=length_penalty,
        batch_size=batch_size,
        vad="off" if no_vad else vad.value,
        script=script.value,
        word_timestamps=word_timestamps,
        prompt=prompt,
        hotwords=tuple(w for w in hotwords.split(",") if w.strip()),
        pack=pack_setting(loaded, model, pack),
        share_windows=share_windows,
    )
    if stream:
        raise typer.Exit(_stream(loaded, files, options, fmt))
    from generalist_cli.infer.convert import detect_modality, modality_rule

    rule = modality_rule(loaded)
    kinds = {f: (from_.value if from_ is not From.auto else detect_modality(f, **rule)) for f in files}
    if to is To.speech and out is None:
        raise UsageError("--to speech writes audio: give --out FILE.m4a|.wav (or a folder)")

    def ext_of(f: Path) -> str:
        if to is To.speech:
            return (out.suffix if out_dir is None and out.suffix else ".m4a").lstrip(".")
        return fmt.value if kinds[f] == "audio" else "json" if fmt is Format.json else "txt"

    sink = Sink(out, out_dir, files, ext_of, gather=state is not None)
    files_total = len(files)
    if state is not None:  # this process's share: every num_processes-th file
        files = files[state.process_index :: state.num_processes]
    others = [f for f in files if kinds[f] != "audio" or to is not To.text]
    failed = 0
    if others:
        failed += _convert(
            loaded, model, others, kinds, to=to, fmt=fmt, language=language, src_lang=source_language,
            options=options, sink=sink,
        )  # fmt: skip
    speech = [f for f in files if kinds[f] == "audio" and to is To.text]
    failed += _transcribe(
        loaded, speech, options, fmt, channels, sink, quiet=state is not None and not state.is_main_process
    )
    failed = sink.finish(failed, state)
    if state is not None:  # leave the job cleanly: gloo's threads left running can abort the exit (code 250,
        import torch.distributed as dist  # "terminate called without an active exception")

        if dist.is_initialized():
            dist.destroy_process_group()
    if failed and (state is None or state.is_main_process):
        warn(f"{failed} of {files_total} file(s) failed")
        raise typer.Exit(1)


def _open(model: str, device: str, state, *, n_files: int):
    """The model on this process's device (open_model resolves a plain "auto"), pulled on first use."""
    from rich.markup import escape

    from generalist_cli.console import debug, note
    from generalist_cli.store.store import open_model

    if device == "auto" and state is not None:
        device = str(state.device)
    loaded = open_model(model, device=device, on_pull=lambda m: note(escape(m)))
    debug(f"model {model}: {loaded.path} on {device}; {n_files} file(s)")
    return loaded


def _check_languages(loaded, model: str, language, langs, task, word_timestamps) -> tuple:
    """(--lang checked against the model, --langs as codes); refuses what the model cannot do."""
    from generalist_cli.errors import UsageError
    from generalist_cli.infer.convert import check_language
    from generalist_cli.languages import resolve_language

    tok = loaded.tokenizer
    language = check_language(tok, language, model)
    if task is Task.translate and not tok.multilingual:
        raise UsageError(f"model {model} is English-only and cannot translate", hint="use --model whisper-base")
    if word_timestamps and loaded.kind == "onnx":
        raise UsageError(
            f"{model}: word timestamps read the PyTorch model's cross-attention",
            hint="use the checkpoint the export came from for --word-timestamps",
        )
    allowed = tuple(resolve_language(x.strip()) for x in (langs or "").split(",") if x.strip())
    unknown = [c for c in allowed if c not in tok.language_codes]
    if unknown:
        raise UsageError(f"model {model} does not know language(s) {', '.join(unknown)}")
    return language, allowed


def _transcribe(loaded, files: list[Path], options, fmt, channels, sink, *, quiet: bool) -> int:
    """Speech -> text for ``files`` in batches, with a progress bar in audio seconds; returns the failures."""
    from generalist_cli.cli.common import print_error
    from generalist_cli.console import progress
    from generalist_cli.errors import GenError
    from generalist_cli.infer.files import transcribe_files
    from generalist_cli.infer.writers import render, render_channels

    failed = 0
    with progress(disable=not files or quiet) as bar:
        job = bar.add_task("transcribing", total=0)

        def add_total(seconds: float) -> None:
            bar.update(job, total=(bar.tasks[0].total or 0) + round(seconds, 2))

        results = transcribe_files(
            loaded.model, loaded.tokenizer, files, options, on_progress=lambda s: bar.advance(job, round(s, 2)),
            on_duration=add_total, channels=channels.value,
        )  # fmt: skip
        for result in results:
            if result.error is not None:
                failed += 1
                print_error(result.error)
                continue
            text = (
                render_channels(result.channels, fmt.value, file=str(result.path))
                if result.channels
                else render(result.transcript, fmt.value, file=str(result.path))
            )
            try:
                sink.emit(text, result.path)
            except GenError as exc:
                failed += 1
                print_error(exc)
    return failed


def _convert(
    loaded, model_name: str, files: list[Path], kinds: dict, *, to, fmt, language, src_lang, options, sink: "Sink"
) -> int:
    """Every conversion but speech -> text, file by file (the conversion service, infer/convert.py); returns
    the number of failed files."""
    import json

    from generalist_cli.cli.common import print_error
    from generalist_cli.console import progress
    from generalist_cli.errors import GenError
    from generalist_cli.infer import convert
    from generalist_cli.media.audio import encode_audio

    convert.check_request(loaded, model_name, {kinds[f] for f in files}, to.value, language)
    failed = 0
    with progress() as bar:
        for f in files:
            job = bar.add_task(f"{f.name}: {kinds[f]} -> {to.value}", total=None)
            try:
                if kinds[f] == "text" and to.value == "text":
                    bar.update(job, total=convert.count_sentences(convert.read_text(f)))
                result = convert.convert(
                    loaded, f, kinds[f], to.value, language=language, src_lang=src_lang, options=options,
                    on_progress=lambda n, job=job: bar.advance(job, n),
                )  # fmt: skip
                if result.audio is not None:
                    encode_audio(sink.target(f), result.audio)
                else:
                    text = (
                        json.dumps(result.as_json(str(f)), ensure_ascii=False) if fmt.value == "json" else result.text
                    )
                    sink.emit(text + "\n", f)
            except GenError as exc:
                failed += 1
                print_error(exc)
            bar.remove_task(job)
    return failed


def _stream(loaded, files: list[Path], options, fmt) -> int:
    """``--stream``: local-agreement live transcription of stdin (``-``) or one file."""
    import json
    import sys

    from generalist_cli import console
    from generalist_cli.errors import UsageError
    from generalist_cli.infer.stream import Streamer, pcm_chunks

    if len(files) != 1:
        raise UsageError("--stream reads one input: - (stdin) or a file")
    source = sys.stdin.buffer if str(files[0]) == "-" else open(files[0], "rb")  # noqa: SIM115
    streamer = Streamer(loaded.model, loaded.tokenizer, options)
    show_partial = console.verbosity >= 0 and console.err.is_terminal

    def emit(update) -> None:
        if update.final:
            if fmt.value == "json":
                print(
                    json.dumps(
                        {
                            "start": update.final[0].start,
                            "end": update.final[-1].end,
                            "text": "".join(w.word for w in update.final).strip(),
                            "words": [{"start": w.start, "end": w.end, "word": w.word.strip()} for w in update.final],
                        },
                        ensure_ascii=False,
                    ),
                    flush=True,
                )
            else:
                print("".join(w.word for w in update.final), end="", flush=True)
        if show_partial:
            console.err.print(f"\r[dim]{update.partial[-70:]:<70}[/]", end="", markup=True, highlight=False)

    try:
        for chunk in pcm_chunks(source):
            emit(streamer.feed(chunk))
        emit(streamer.finish())
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if fmt.value != "json":
        print(flush=True)
    if show_partial:
        console.err.print()
    return 0
