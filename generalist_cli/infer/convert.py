"""The conversion service of ``gen run`` and ``gen serve`` for everything but speech -> text (which the
batched transcriber owns): text -> speech, text -> text, sign video -> text, speech -> speech. Both front
ends check a request with :func:`check_request` / :func:`check_language` and run it with :func:`convert`;
``gen run`` writes the :class:`Converted` result, ``gen serve`` returns it (a ``GenError`` becomes HTTP 400).
Inputs are featurised exactly as ``gen prepare`` featurises training examples, so a checkpoint sees at
inference what it saw in training.

A checkpoint records the tasks it was trained on (``meta.json`` ``tasks``, written by ``gen train``); a
conversion whose task is not among them is refused with the recipe that trains it, instead of decoding
noise from untrained weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generalist_cli.data.tables import clean
from generalist_cli.errors import MediaError, UsageError

TEXT_SUFFIXES = {".txt", ".text", ".md"}
TASK_RECIPES = {
    "tts": "gen train recipes/tts.toml",
    "text_translate": "gen train recipes/translate.toml",
    "sign": "gen train recipes/isl.toml",
}
TASK_NAMES = {"tts": "text -> speech", "text_translate": "text -> text translation", "sign": "sign video -> text"}
# (input modality, output) -> the training task a checkpoint needs for it (speech -> text needs none)
CONVERSION_TASKS = {
    ("text", "speech"): "tts",
    ("audio", "speech"): "tts",
    ("text", "text"): "text_translate",
    ("video", "text"): "sign",
}


MEDIA_SUFFIXES = {
    ".m4a",
    ".wav",
    ".mp3",
    ".flac",
    ".ogg",
    ".opus",
    ".aac",
    ".wma",
    ".mov",
    ".mp4",
    ".mkv",
    ".webm",
    ".avi",
    ".m4v",
    ".gif",
}


def detect_modality(path: Path, *, sign: bool = False, speech: bool = True) -> str:
    """``text`` for text files (by suffix; without a media suffix also by UTF-8 content without NUL bytes);
    ``video`` when the model reads sign video (``sign``) and the container has a video track: always for a
    sign-only model (``speech=False``: a camera clip's audio track is room noise, as in INCLUDE's MOVs),
    for a model that also transcribes only when there is no audio track; otherwise ``audio`` (the audio
    reader then names whatever is wrong with the file). ``--from`` overrides all of it."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix not in MEDIA_SUFFIXES:
        try:
            head = path.read_bytes()[:4096]
        except OSError:
            return "audio"
        if head and b"\0" not in head:
            try:
                head.decode("utf-8")
                return "text"
            except UnicodeDecodeError:
                pass
    if not sign:
        return "audio"
    try:
        import av

        with av.open(str(path)) as container:
            if container.streams.video and (not speech or not container.streams.audio):
                return "video"
    except Exception:  # noqa: BLE001 - PyAV raises many types; the audio reader will name the problem
        pass
    return "audio"


def modality_rule(loaded) -> dict:
    """The keywords of :func:`detect_modality` for ``loaded``: what its trained tasks say."""
    tasks = trained_tasks(loaded) or set()
    return {"sign": "sign" in tasks, "speech": not tasks or bool({"transcribe", "translate"} & tasks)}


def trained_tasks(loaded) -> set[str] | None:
    """Tasks the model was trained on (a ``gen train`` checkpoint), or None when unknown (a plain Whisper)."""
    tasks = loaded.meta.get("tasks")
    return set(tasks) if tasks is not None else None


def require(loaded, task: str, model_name: str) -> None:
    """Refuse a conversion the model was not trained for, naming the recipe that trains it; an ONNX export
    (speech -> text only) names the checkpoint instead."""
    if loaded.kind == "onnx":
        raise UsageError(
            f"{model_name}: an ONNX export runs speech -> text only",
            hint="use the checkpoint it was exported from for other conversions",
        )
    tasks = trained_tasks(loaded)
    generalist = loaded.config.generalist
    if not generalist or tasks is None or task not in tasks:
        trained = (
            "a plain Whisper"
            if not generalist
            else ("trained on " + ", ".join(sorted(tasks)) if tasks else "not trained by gen train")
        )
        raise UsageError(
            f"model {model_name} cannot do {TASK_NAMES[task]} ({trained})",
            hint=f"train a checkpoint for it: {TASK_RECIPES[task]}",
        )


@dataclass
class Converted:
    """One conversion's result: ``text`` (also the words spoken for ``--to speech``), and 16-kHz ``audio``
    for speech outputs; a sign's ``probability``."""

    text: str
    audio: np.ndarray | None = None
    probability: float | None = None

    def as_json(self, file: str) -> dict:
        out = {"file": file, "text": self.text}
        return out | ({"label": self.text, "probability": self.probability} if self.probability is not None else {})


def check_language(tok, language: str | None, model_name: str) -> str | None:
    """The language code of ``language`` (a code or name), refused when the model does not know it."""
    if not language:
        return None
    from generalist_cli.languages import resolve_language

    code = resolve_language(language)
    if code not in tok.language_codes:
        raise UsageError(
            f"model {model_name} does not know language {code!r}", hint="it knows: " + ", ".join(tok.language_codes)
        )
    return code


def check_request(loaded, model_name: str, kinds: set[str], to: str, language: str | None) -> None:
    """Refuse, before any work, what cannot be done: a pair of modalities gen does not convert, a task the
    model was not trained for, text -> text without a target language. Speech -> text always passes."""
    pairs = [(kind, to) for kind in sorted(kinds) if (kind, to) != ("audio", "text")]
    for pair in pairs:
        if pair not in CONVERSION_TASKS:
            raise UsageError(
                f"{pair[0]} -> {to} is not a conversion gen offers",
                hint="text -> speech|text, speech -> text|speech, sign video -> text",
            )
    if ("text", "text") in pairs and language is None:
        raise UsageError("text -> text translation needs lang, the target language (gen run: --lang)")
    for pair in pairs:
        require(loaded, CONVERSION_TASKS[pair], model_name)


def convert(
    loaded,
    source: Path | str,
    kind: str,
    to: str,
    *,
    language: str | None,
    src_lang: str | None,
    options,
    on_progress=None,
) -> Converted:
    """Convert one input (a file, or the text itself for ``kind == "text"``) checked by
    :func:`check_request`. Speech -> speech transcribes with ``options`` (the caller's VAD, packing, ...)
    and speaks the transcript in its language."""
    m, tok = loaded.model, loaded.tokenizer
    text = (source if isinstance(source, str) else read_text(source)) if kind == "text" else None
    if to == "speech":
        speak = language or "en"
        if kind == "audio":
            from generalist_cli.infer.files import transcribe_files

            [res] = list(transcribe_files(m, tok, [Path(source)], options))
            if res.error is not None:
                raise res.error
            text, speak = res.transcript.text, language or res.transcript.language or "en"
        return Converted(text, audio=text_to_speech(m, tok, text, lang=speak))
    if kind == "text":
        return Converted(text_to_text(m, tok, text, lang=language, src_lang=src_lang or "en",
                                      beam_size=options.beam_size, length_penalty=options.length_penalty,
                                      on_progress=on_progress))  # fmt: skip
    if kind == "video":
        d = video_to_text(m, tok, Path(source))
        return Converted(d.text, probability=d.probability)
    raise UsageError(f"{kind} -> {to} goes through the transcriber, not convert()")


def read_text(path: Path) -> str:
    """A text input as ``gen prepare`` reads text: UTF-8 (a BOM is dropped), NFC, ends trimmed."""
    try:
        text = clean(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise MediaError(path, "is not UTF-8 text") from exc
    except OSError as exc:
        raise MediaError(path, exc.strerror or "cannot be read") from exc
    if not text:
        raise MediaError(path, "is empty")
    return text


def _encode_text(model, tok, text: str):
    import torch

    ids = tok.encode(text)[:1500]
    return model.encode(model.embed_text(torch.tensor(ids))[None])[0]


def text_to_speech(model, tok, text: str, *, lang: str = "en") -> np.ndarray:
    """16 kHz audio: the text (or, for a ``tts_input = "phonemes"`` model, eSpeak NG's phonemes of it in
    ``lang``) through the encoder, the speech head with its predicted durations, and the Griffin-Lim vocoder
    (line by line for multi-line text, joined by 0.3 s of silence)."""
    import torch

    from generalist_cli.data.tables import text_lines
    from generalist_cli.features.vocoder import mel_to_audio
    from generalist_cli.media.espeak import phoneme_text, phonemize

    phonemes = model.config.tts_input == "phonemes"
    pieces = []
    with torch.inference_mode():
        for line in text_lines(text):
            source = phoneme_text(phonemize(line, voice=lang)) if phonemes else line
            mel = model.speech_head.generate(_encode_text(model, tok, source)[0])
            if mel.shape[0]:
                pieces += [mel_to_audio(mel.T), np.zeros(4800, dtype=np.float32)]
    if not pieces:
        return np.zeros(1600, dtype=np.float32)
    return np.concatenate(pieces[:-1])


@dataclass
class Decoded:
    text: str
    probability: float  # exp of the summed log-probability of the tokens


def _decode(model, tok, enc, prompt: list[int], max_new_tokens: int = 200) -> Decoded:
    import math

    import torch

    from generalist_cli.infer.decoding import DecodeOptions, decode

    with torch.inference_mode():
        cache = model.new_cache(enc)
        [res] = decode(
            model,
            tok,
            cache,
            [prompt],
            DecodeOptions(timestamps=False, max_new_tokens=max_new_tokens),
            list(model.config.suppress_tokens),
        )
    return Decoded(tok.decode(res.tokens).strip(), math.exp(res.avg_logprob * (len(res.tokens) + 1)))


# a sentence ends at . ! ? (Latin) or the danda / double danda (Devanagari and the other Indic scripts), with
# any closing quotes or brackets, before white space; not after an abbreviation or a lone capital ("U.S.")
_END = re.compile(r"(?<=[.!?\u0964\u0965])[\"'\u201d\u2019)\]]*\s+")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "jr", "sr"}
MAX_TARGET_RATIO = 8  # target tokens per source token, at most: Hindi takes 4.3x English's (p95 5.9, max 7.5)


def split_sentences(line: str) -> list[str]:
    """The sentences of one line, their end punctuation kept: see ``_END``."""
    out, start = [], 0
    for m in _END.finditer(line):
        head = line[start : m.start()].rstrip()
        word = head.rsplit(None, 1)[-1].rstrip(".").lower() if head else ""
        initials = all(len(part) == 1 and part.isalpha() for part in word.split("."))
        if head.endswith(".") and (word in _ABBREVIATIONS or initials):
            continue  # "Dr. Rao", "U.S. cent", "J. Smith"
        out.append(line[start : m.end()].strip())
        start = m.end()
    rest = line[start:].strip()
    return out + ([rest] if rest else [])


def count_sentences(text: str) -> int:
    """How many sentences :func:`text_to_text` translates in ``text`` (for a progress bar)."""
    return sum(len(split_sentences(clean(line))) for line in text.split("\n"))


def text_to_text(model, tok, text: str, *, lang: str, src_lang: str, beam_size: int = 1,
                 length_penalty: float | None = None, batch_size: int = 16, on_progress=None) -> str:  # fmt: skip
    """Translation of a document: lines (paragraphs) cut into sentences, translated ``batch_size`` at a
    time (encoded packed, decoded together) with the ``text_translate`` prompt, then put back: one output
    line per input line, blank lines kept. ``on_progress(n)`` is told of every ``n`` sentences done."""
    lines = [clean(x) for x in text.split("\n")]
    units = [(i, s) for i, line in enumerate(lines) for s in split_sentences(line)]
    done: dict[int, list[str]] = {}
    for start in range(0, len(units), batch_size):
        chunk = units[start : start + batch_size]
        outs = _translate(model, tok, [s for _, s in chunk], lang=lang, src_lang=src_lang, beam_size=beam_size,
                          length_penalty=length_penalty)  # fmt: skip
        for (i, _), out in zip(chunk, outs):
            done.setdefault(i, []).append(out)
        if on_progress is not None:
            on_progress(len(chunk))
    return "\n".join(" ".join(done.get(i, [])) for i in range(len(lines))).strip("\n")


def translation_options(lang: str, longest: int, *, beam_size: int = 1, length_penalty: float | None = None,
                        max_new_tokens: int | None = None, script: bool = True):  # fmt: skip
    """How text is translated, for ``gen run`` and for every evaluation of it: output kept to ``lang``'s
    script, no 4-gram repeated (the loops greedy decoding falls into), at most :data:`MAX_TARGET_RATIO` tokens
    per token of the ``longest`` source (and ``max_new_tokens``, if given)."""
    from generalist_cli.features.script import script_of
    from generalist_cli.infer.decoding import DecodeOptions

    cap = MAX_TARGET_RATIO * longest + 8
    return DecodeOptions(timestamps=False, beam_size=beam_size, length_penalty=length_penalty, no_repeat_ngram=4,
                         max_new_tokens=min(cap, max_new_tokens or cap),
                         script=(script_of(lang) or ()) if script else ())  # fmt: skip


def _translate(model, tok, sentences: list[str], *, lang: str, src_lang: str, beam_size: int,
               length_penalty: float | None) -> list[str]:  # fmt: skip
    """One batch of sentences: packed encoding, one decode; output kept to the target's script, n-grams not
    repeated (the loops greedy decoding falls into), at most :data:`MAX_TARGET_RATIO` tokens per source token."""
    import torch

    from generalist_cli.infer.decoding import decode

    ids = [torch.tensor(tok.encode(s)[: model.config.n_audio_ctx]) for s in sentences]
    prompt = tok.task_prompt("text_translate", lang=lang, src_lang=src_lang)
    options = translation_options(lang, max(len(i) for i in ids), beam_size=beam_size, length_penalty=length_penalty)
    with torch.inference_mode():
        states, lengths = model.encode_texts_packed([i.to(model.device) for i in ids])
        cache = model.new_cache(states, lengths)
        results = decode(model, tok, cache, [prompt] * len(ids), options, list(model.config.suppress_tokens))
    return [tok.decode(r.tokens).strip() for r in results]


def video_to_text(model, tok, path: Path, *, lang: str = "en") -> Decoded:
    """An isolated sign: the clip as ``gen prepare include`` featurises it (tubelets, or landmarks for a
    ``video_tokens = "pose"`` checkpoint: the ``[sign]`` extra), decoded with the sign prompt."""
    import torch

    from generalist_cli.features.video import VIDEO_FPS, VIDEO_SIZE, patchify
    from generalist_cli.media.video import decode_video

    if model.config.video_tokens == "pose":  # a checkpoint trained on landmarks: MediaPipe reads them first
        from generalist_cli.features.pose import clip_landmarks

        landmarks = clip_landmarks(path)
        with torch.inference_mode():
            x = model.embed_pose(torch.from_numpy(landmarks))
            enc = model.encode(x[None])[0]
        return _decode(model, tok, enc, tok.task_prompt("sign", lang=lang), max_new_tokens=16)
    frames = decode_video(path, fps=VIDEO_FPS, size=VIDEO_SIZE, max_frames=128)
    patches, grid = patchify(frames, tuple(model.config.video_patch))
    with torch.inference_mode():
        x = model.embed_patches(torch.from_numpy(np.ascontiguousarray(patches)), tuple(grid))
        enc = model.encode(x[None])[0]
    return _decode(model, tok, enc, tok.task_prompt("sign", lang=lang), max_new_tokens=16)
