"""Speech -> text for whole files of any length, many files batched together.

Long-form follows openai/whisper ``transcribe.py``: the log-mel of the whole file is cut into 30-second
windows; each window is decoded with timestamp tokens; the window's segments come from consecutive
timestamp pairs and the next window starts at the last complete timestamp (or after the window when the
last segment is complete). Windows whose no-speech probability is high and whose text is unlikely are
skipped. In every round, the current window of each unfinished file is encoded and decoded as one batch.

Before that, voice-activity detection (``features/vad.py``, on by default) keeps only the speech regions of
each file, joined by short silences: silence and steady noise are never decoded (a file without speech
gets an empty transcript, not invented sentences) and segment times are mapped back to the file's own
timeline. A window whose text compresses too well (gzip ratio above 2.4: a repetition loop) is decoded
again with beam search; if it still loops, its repeated tail is cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from generalist_cli.features.mel import HOP_LENGTH, INPUT_STRIDE, N_FRAMES, N_SAMPLES, TIME_PRECISION, pad_or_trim
from generalist_cli.infer.decoding import DecodeOptions, array, decode, detect_language, no_grad
from generalist_cli.media.audio import SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    text: str
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    language: str = ""  # of the window the segment came from
    words: tuple = ()  # infer.timing.Word per word, with --word-timestamps


@dataclass
class Transcript:
    language: str
    language_probability: float | None
    duration: float  # seconds of audio
    segments: list[Segment] = field(default_factory=list)
    channel: int | None = None  # of a file transcribed channel by channel

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: detect, window by window (mixed-language audio)
    languages: tuple[str, ...] = ()  # detection chooses among these only (e.g. ("hi", "en")); empty: any
    task: str = "transcribe"
    beam_size: int = 1
    length_penalty: float | None = None  # beam ranking (infer/decoding.py); None: mean log-probability
    batch_size: int = 8  # windows encoded and decoded together
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    vad: str = "silero"  # decode only the speech regions (features/vad.py): silero | energy | off
    prompt: str = ""  # initial prompt: text the audio continues (spelling, style, context)
    hotwords: tuple[str, ...] = ()  # names and jargon to prefer; put before the prompt as previous text
    compression_ratio_threshold: float = 2.4  # above: a repetition loop, decoded again
    language_confidence: float = 0.7  # below: the window is also decoded in the runner-up language
    word_timestamps: bool = False  # per-word start/end from the alignment heads' cross-attention
    pack: bool = False  # encode windows unpadded, several to an encoder row (gen train checkpoints; see below)
    script: str = "auto"  # auto: text keeps to the output language's script (features/script.py); any: no rule
    share_windows: bool = True  # short files share 30-s windows when the language is fixed (infer/sharing.py)


@dataclass
class _File:
    mel: np.ndarray  # (n_mels, frames + N_FRAMES)
    content_frames: int
    transcript: Transcript
    speech: tuple[tuple[int, int], ...] = ()  # mel-frame ranges that hold speech (by the VAD; all without it)
    seek: int = 0
    window_language: str = ""

    def speech_between(self, a: int, b: int) -> float:
        """Seconds of speech in mel frames ``[a, b)``."""
        frames = sum(max(0, min(b, e) - max(a, s)) for s, e in self.speech)
        return frames * HOP_LENGTH / SAMPLE_RATE


MIN_TAIL = 1.0  # seconds of speech left after a window's last timestamp that are decoded in the next window


def transcribe(
    model,
    tokenizer,
    audios: list[np.ndarray],
    options: TranscribeOptions,
    *,
    on_progress: Callable[[float], None] | None = None,
) -> list[Transcript]:
    """Transcribe each 16 kHz mono waveform in ``audios``; ``on_progress(seconds_done)`` after each round."""
    with no_grad():
        return _transcribe(model, tokenizer, audios, options, on_progress)


def _transcribe(model, tokenizer, audios, options, on_progress):
    from generalist_cli.features.vad import compact, speech_regions

    if options.vad == "off":
        return _transcribe_shared(model, tokenizer, audios, options, on_progress)
    kept, maps, out = [], [], []
    for audio in audios:
        regions = speech_regions(audio, method=options.vad)
        joined, time_map = compact(audio, regions)
        maps.append(time_map)
        if len(joined):
            kept.append(joined)
    speech = [tuple((c, c + n) for c, _, n in m.pieces) for m in maps if m.pieces]
    done = iter(_transcribe_shared(model, tokenizer, kept, options, on_progress, speech) if kept else [])
    for audio, time_map in zip(audios, maps):
        duration = len(audio) / SAMPLE_RATE
        if not time_map.pieces:  # no speech: nothing to decode
            out.append(Transcript(options.language or "", None, duration))
            continue
        t = next(done)
        t.duration = duration
        t.segments = [
            replace(
                s,
                start=round(time_map(s.start), 3),
                end=round(time_map(s.end), 3),
                words=tuple(
                    replace(w, start=round(time_map(w.start), 3), end=round(time_map(w.end), 3)) for w in s.words
                ),
            )
            for s in t.segments
        ]
        out.append(t)
    return out


def shares_windows(model, tokenizer, options: TranscribeOptions) -> bool:
    """Whether short files are joined into shared windows: asked for, one output language for all of them
    (given, or an English-only model), and 30-s windows (packed windows carry no padding to save)."""
    fixed = options.language is not None or not tokenizer.multilingual
    return options.share_windows and fixed and not _packs(model, options)


def _packs(model, options: TranscribeOptions) -> bool:
    return options.pack and not options.word_timestamps and model.can_pack


def _transcribe_shared(model, tokenizer, audios, options, on_progress, speech=None):
    """:func:`_transcribe_windows`, short files joined into shared windows when :func:`shares_windows`; a file
    whose text cannot be handed back for sure (infer/sharing.py) is transcribed again alone."""
    from generalist_cli.infer import sharing

    if len(audios) < 2 or not shares_windows(model, tokenizer, options):
        return _transcribe_windows(model, tokenizer, audios, options, on_progress, speech)
    groups = sharing.plan([len(a) / SAMPLE_RATE for a in audios])
    joined = [sharing.join(audios, g) for g in groups]
    regions = [sharing.speech_of(g, speech) for g in groups]
    out: list[Transcript | None] = [None] * len(audios)
    redo: list[int] = []
    for g, t in zip(groups, _transcribe_windows(model, tokenizer, joined, options, on_progress, regions)):
        parts, again = sharing.split(t, g, speech)
        for i, part in zip(g.members, parts):
            out[i] = part
        redo += again
    if redo:
        alone = [speech[i] for i in redo] if speech is not None else None
        for i, t in zip(redo, _transcribe_windows(model, tokenizer, [audios[i] for i in redo], options, None, alone)):
            out[i] = t
    return out


def _transcribe_windows(model, tokenizer, audios, options, on_progress, speech=None):
    """Long-form decoding of ``audios``; ``speech[i]``: the (start, end) seconds of ``audios[i]`` that hold speech
    (None: all of it)."""
    from generalist_cli.features.mel import log_mel_spectrogram

    cfg = model.config
    files = []
    per_second = SAMPLE_RATE / HOP_LENGTH
    for i, audio in enumerate(audios):
        mel = log_mel_spectrogram(audio, n_mels=cfg.n_mels, padding=N_SAMPLES)
        frames = mel.shape[-1] - N_FRAMES
        regions = speech[i] if speech is not None else ((0.0, frames / per_second),)
        files.append(
            _File(
                mel,
                frames,
                Transcript(options.language or "", None, len(audio) / SAMPLE_RATE),
                tuple((round(a * per_second), round(b * per_second)) for a, b in regions),
            )
        )
    pack = _packs(model, options)
    # packed windows decode as gen train trains (unpadded audio, <|notimestamps|>): a window is one segment
    dopts = DecodeOptions(task=options.task, beam_size=options.beam_size, timestamps=not pack,
                          length_penalty=options.length_penalty)  # fmt: skip
    suppress = list(cfg.suppress_tokens)
    done_frames = 0
    context = previous_text(tokenizer, options, limit=cfg.n_text_ctx // 2 - 1)  # the same for every window
    while True:
        active = [f for f in files if f.seek < f.content_frames][: options.batch_size]
        if not active:
            break
        # the window holds only real frames, zero-padded in log-mel space (as openai/whisper and faster-whisper)
        windows = [f.mel[:, f.seek : min(f.seek + N_FRAMES, f.content_frames)] for f in active]
        cache = encode_windows(model, windows, pack=pack)
        runner_up: dict[int, str] = {}
        if options.language is None and tokenizer.multilingual:  # every window: languages may change
            found = detect_language(
                model,
                tokenizer,
                cache.cross_kv,
                allowed=options.languages or None,
                top=2,
                cross_mask=getattr(cache, "cross_mask", None),
            )
            for i, (f, ranked) in enumerate(zip(active, found)):
                (code, prob), rest = ranked[0], ranked[1:]
                f.window_language = code
                if rest and prob < options.language_confidence:
                    runner_up[i] = rest[0][0]
                if not f.transcript.language:
                    f.transcript.language, f.transcript.language_probability = code, prob
        for f in active:
            f.transcript.language = f.transcript.language or "en"
            f.window_language = options.language or f.window_language or f.transcript.language
        # rows sharing a prompt decode together (same language and task)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(active):
            prompt = tuple(
                context
                + tokenizer.sot_sequence(language=f.window_language, task=options.task, timestamps=dopts.timestamps)
            )
            groups.setdefault(prompt, []).append(i)
        for prompt, idx in groups.items():
            sub_cache = cache if len(idx) == len(active) else _select(cache, idx)
            gopts = script_options(dopts, options, active[idx[0]].window_language)
            results = decode(model, tokenizer, sub_cache, [list(prompt)] * len(idx), gopts, suppress)
            results = _unloop(model, tokenizer, sub_cache, list(prompt), results, gopts, suppress, options)
            results = _second_opinion(
                model, tokenizer, cache, context, active, idx, results, runner_up, dopts, suppress, options
            )
            for i, res in zip(idx, results):
                before, n_segments = active[i].seek, len(active[i].transcript.segments)
                _advance(active[i], res, tokenizer, options)
                if options.word_timestamps:
                    _add_words(model, tokenizer, cache, i, active[i], before, n_segments)
                done_frames += active[i].seek - before
        if on_progress is not None:
            on_progress(done_frames / (SAMPLE_RATE / HOP_LENGTH))
    return [f.transcript for f in files]


def script_options(dopts: DecodeOptions, options: TranscribeOptions, language: str) -> DecodeOptions:
    """``dopts`` keeping to the script of ``language`` (or of English, for translate) unless ``script="any"``."""
    from generalist_cli.features.script import script_of

    scripts = script_of(language, options.task) if options.script == "auto" else None
    return replace(dopts, script=scripts or ())


def previous_text(tokenizer, options: TranscribeOptions, *, limit: int) -> list[int]:
    """``<|startofprev|>`` + the hotwords and the prompt as tokens (their last ``limit``), or nothing: Whisper
    reads text there as what was said before, so names and spellings in it become likely (faster-whisper's
    hotwords work the same way)."""
    text = " ".join([", ".join(w.strip() for w in options.hotwords if w.strip()), options.prompt.strip()]).strip()
    if not text:
        return []
    return [tokenizer.sot_prev, *tokenizer.encode(" " + text)[-limit:]]


def _add_words(model, tokenizer, cache, row: int, f: _File, seek: int, first: int) -> None:
    """Word times for the segments this window added (``f.transcript.segments[first:]``)."""
    from generalist_cli.infer.timing import align_words

    new = f.transcript.segments[first:]
    tokens = [t for s in new for t in s.tokens]
    if not tokens:
        return
    prompt = tokenizer.sot_sequence(language=f.window_language, task="transcribe", timestamps=False)
    frames = min(N_FRAMES, f.content_frames - seek) // 2
    cross = [(k[row : row + 1], v[row : row + 1]) for k, v in cache.cross_kv]
    words = align_words(model, tokenizer, cross, prompt, tokens, frames, offset=seek * HOP_LENGTH / SAMPLE_RATE)
    from generalist_cli.infer.timing import _split_words

    at = 0
    for j, s in enumerate(new):  # hand each segment as many words as its own tokens make
        n = len(_split_words(tokenizer, list(s.tokens))[0])
        inside = tuple(
            replace(w, start=min(max(w.start, s.start), s.end), end=max(min(w.end, s.end), s.start))
            for w in words[at : at + n]
        )  # a word does not outlast its segment (DTW can run on)
        f.transcript.segments[first + j] = replace(s, words=inside)
        at += n


def _second_opinion(model, tokenizer, cache, context, active, idx, results, runner_up, dopts, suppress, options):
    """Windows whose language was uncertain (a window may start in one language and go on in another) are
    decoded again in the runner-up language; the result with the higher mean log-probability wins."""
    retry = [(j, i) for j, i in enumerate(idx) if i in runner_up]
    if not retry:
        return results
    results = list(results)
    for j, i in retry:
        lang = runner_up[i]
        prompt = context + tokenizer.sot_sequence(language=lang, task=options.task, timestamps=dopts.timestamps)
        [other] = decode(
            model, tokenizer, _select(cache, [i]), [prompt], script_options(dopts, options, lang), suppress
        )
        if other.avg_logprob > results[j].avg_logprob:
            results[j] = other
            active[i].window_language = lang
    return results


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (openai/whisper's repetition measure)."""
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _unloop(model, tokenizer, cache, prompt, results, dopts, suppress, options):
    """Windows whose text loops (compression ratio above the threshold) are decoded again with beam search;
    a result that still loops keeps its text up to where the repetition starts."""
    bad = [
        i
        for i, r in enumerate(results)
        if compression_ratio(tokenizer.decode(r.tokens)) > options.compression_ratio_threshold
    ]
    if not bad:
        return results
    results = list(results)
    retry = decode(model, tokenizer, _select(cache, bad), [prompt] * len(bad), replace(dopts, beam_size=5), suppress)
    for i, r in zip(bad, retry):
        if compression_ratio(tokenizer.decode(r.tokens)) > options.compression_ratio_threshold:
            r = replace(r, tokens=cut_repetition(r.tokens, tokenizer.timestamp_begin))
        results[i] = r
    return results


def cut_repetition(tokens: list[int], timestamp_begin: int, *, min_repeats: int = 3) -> list[int]:
    """``tokens`` up to the second occurrence of the earliest n-gram (n <= 8) that repeats back to back
    ``min_repeats`` times (the loop's first round is kept)."""
    text = [t for t in tokens if t < timestamp_begin]
    for start in range(len(text)):
        for n in range(1, 9):
            unit = text[start : start + n]
            if len(unit) < n:
                break
            k = 1
            while text[start + k * n : start + (k + 1) * n] == unit:
                k += 1
            if k >= min_repeats:
                return text[: start + n]
    return text


def packs_by_default(loaded) -> bool:
    """Whether speech is packed unless told otherwise (``gen run``, ``gen serve``): for a checkpoint
    ``gen train`` trained on speech -> text, which learned on unpadded, packed audio; a plain Whisper loops
    without its 30-s padding, and a fixed-window export cannot (a packed export of such a checkpoint can)."""
    from generalist_cli.infer.convert import trained_tasks

    speech = {"transcribe", "translate"} & (trained_tasks(loaded) or set())
    return loaded.model.can_pack and bool(speech)


def pack_setting(loaded, model_name: str, requested: bool | None) -> bool:
    """``--pack/--no-pack`` as given (None: :func:`packs_by_default`); packing a fixed-window export is refused."""
    from generalist_cli.errors import UsageError

    if requested and not loaded.model.can_pack:
        raise UsageError(
            f"{model_name}: this ONNX export encodes fixed 30-s windows and cannot pack",
            hint="export the checkpoint with gen export --encoder packed, or drop --pack",
        )
    return packs_by_default(loaded) if requested is None else requested


def encode_windows(model, windows: list[np.ndarray], *, pack: bool):
    """A decoding cache for log-mel ``windows`` (each (n_mels, <= N_FRAMES)).

    Whisper hears each window zero-padded to 30 s, as it was trained. With ``pack`` (a PyTorch model) the
    windows are encoded unpadded and packed several to an encoder row (Patch n' Pack; a PyTorch model or a
    packed export), which is how
    ``gen train`` trains: a 5-s utterance then costs 250 encoder positions instead of 1,500. A plain Whisper
    must not be packed: without the padding it loops (measured: whisper-tiny.en WER 0.15 -> 5.9 on 12
    sentences), so gen run and gen serve pack by default only checkpoints trained by gen train."""
    if not pack:  # any engine: fixed 30-s windows
        return model.new_cache(model.encode_mels(np.stack([pad_or_trim(w) for w in windows])))
    return model.new_cache(*model.encode_mels_packed(windows))


def _select(cache, idx: list[int]):
    return cache.select(array(idx, cache.cross_kv[0][0]))


def _advance(f: _File, res, tokenizer, options: TranscribeOptions) -> None:
    """Add the window's segments to ``f`` and move its seek (openai/whisper's rules)."""
    segment_size = min(N_FRAMES, f.content_frames - f.seek)
    offset = f.seek * HOP_LENGTH / SAMPLE_RATE
    segment_duration = segment_size * HOP_LENGTH / SAMPLE_RATE
    if res.no_speech_prob > options.no_speech_threshold and res.avg_logprob < options.logprob_threshold:
        f.seek += segment_size  # silence: skip the window
        return
    tokens = res.tokens
    ts = tokenizer.timestamp_begin
    is_ts = [t >= ts for t in tokens]
    single_ending = len(tokens) >= 2 and is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]

    def add(start: float, end: float, toks: list[int]) -> None:
        text = tokenizer.decode(toks)
        if text.strip():
            f.transcript.segments.append(
                Segment(
                    round(offset + start, 3),
                    round(offset + min(end, segment_duration), 3),
                    text,
                    tuple(t for t in toks if t < tokenizer.eot),
                    res.avg_logprob,
                    res.no_speech_prob,
                    f.window_language,
                )
            )

    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cur in slices:
            part = tokens[last:cur]
            add((part[0] - ts) * TIME_PRECISION, (part[-1] - ts) * TIME_PRECISION, part)
            last = cur
        if single_ending:
            f.seek += _rest(f, (tokens[-1] - ts) * INPUT_STRIDE, segment_size)
        else:
            advance = (tokens[last - 1] - ts) * INPUT_STRIDE
            f.seek += advance if advance > 0 else segment_size
    else:
        stamps = [t for t in tokens if t >= ts]
        duration = segment_duration
        if stamps and stamps[-1] != ts:
            duration = (stamps[-1] - ts) * TIME_PRECISION
        start = (stamps[0] - ts) * TIME_PRECISION if stamps else 0.0
        add(start, duration, tokens)
        f.seek += _rest(f, (stamps[-1] - ts) * INPUT_STRIDE if stamps else 0, segment_size)


def _rest(f: _File, last: int, segment_size: int) -> int:
    """How far to move after a window whose text ended, complete, at frame ``last`` of it.

    openai/whisper moves past the whole window, taking what follows the last timestamp for silence. When the
    language changes inside a window, Whisper often transcribes the first language, stops, and the rest of the
    window is lost (measured: 21 s of Hindi after 30 s of English). So when the VAD holds at least ``MIN_TAIL``
    seconds of speech after ``last``, the next window starts there instead."""
    if 0 < last < segment_size and f.speech_between(f.seek + last, f.seek + segment_size) >= MIN_TAIL:
        return last
    return segment_size
