"""Evaluation helpers shared by training and ``gen eval``: greedy decoding of prepared examples and the
teacher-forced loss of a set of examples."""

from __future__ import annotations

import torch

from generalist_cli.infer.decoding import DecodeOptions, decode


@torch.inference_mode()
def greedy_tokens(
    model, tokenizer, e, *, lang: str = "en", always_pad: bool = False, max_new_tokens: int = 200, script: str = "auto"
) -> list[int]:
    """Greedy text tokens for one prepared example (a :class:`~generalist_cli.train.batches.Example`).

    A plain Whisper hears a 30 s window and decodes with timestamps, as it was trained (without them
    tiny.en stops after the first sentence: measured), and the timestamps are dropped; a generalist gets its
    training input (the unpadded window; ``always_pad`` for an engine that cannot pack: a fixed-window export)
    and task prompt.
    ``script="auto"`` keeps the text to the output language's script, as ``gen run`` does."""
    from generalist_cli.features.mel import pad_or_trim
    from generalist_cli.features.script import script_of
    from generalist_cli.train.step import StepModule

    whisper = not model.config.generalist
    source = e.source.to(model.device)
    if e.modality == "audio":  # source: (n_mels, frames)
        enc = model.encode_audio((pad_or_trim(source) if whisper or always_pad else source)[None].float())
    else:
        e.source = source
        enc = model.encode(StepModule(model).embed(e)[None])[0]
    timestamps = whisper and e.modality == "audio"
    if timestamps:
        task = "translate" if e.task == "translate" else "transcribe"
        prompt = tokenizer.sot_sequence(language=lang if tokenizer.multilingual else None, task=task, timestamps=True)
    else:
        prompt = e.tokens[: e.prompt_len].tolist()
    if e.task == "text_translate":
        options = _text_options(e.task, lang, len(e.source), max_new_tokens=max_new_tokens, script=script)
    else:
        scripts = script_of(lang, e.task) if script == "auto" and e.task != "sign" else None
        options = DecodeOptions(timestamps=timestamps, max_new_tokens=max_new_tokens, script=scripts or ())
    [res] = decode(model, tokenizer, model.new_cache(enc), [prompt], options, list(model.config.suppress_tokens))
    return [t for t in res.tokens if t < tokenizer.timestamp_begin]


TEXT_BATCH = 16  # text-source examples decoded together (gen eval, training evaluations)


@torch.inference_mode()
def greedy_text_tokens(
    model, tokenizer, examples, *, lang: str = "en", max_new_tokens: int = 200, script: str = "auto", beam_size: int = 1
) -> list[list[int]]:
    """:func:`greedy_tokens` of text-source examples sharing one prompt (a translation direction), encoded
    packed and decoded as one batch: the same function (packed == each alone, a row's decoding does not see
    the others), a batch of steps instead of one per example. Translations decode by ``gen run``'s rules
    (:func:`generalist_cli.infer.convert.translation_options`), so an evaluation scores what it writes;
    ``beam_size`` > 1: beam search."""
    first = examples[0]
    prompt = first.tokens[: first.prompt_len].tolist()
    longest = max(len(e.source) for e in examples)
    options = _text_options(first.task, lang, longest, max_new_tokens=max_new_tokens, script=script,
                            beam_size=beam_size)  # fmt: skip
    states, lengths = model.encode_texts_packed([e.source.to(model.device) for e in examples])
    cache = model.new_cache(states, lengths)
    results = decode(model, tokenizer, cache, [prompt] * len(examples), options, list(model.config.suppress_tokens))
    return [[t for t in r.tokens if t < tokenizer.timestamp_begin] for r in results]


def _text_options(task: str, lang: str, longest: int, *, max_new_tokens: int, script: str, beam_size: int = 1):
    """Decoding options for a text source: a translation by ``gen run``'s rules
    (:func:`generalist_cli.infer.convert.translation_options`), anything else greedy in its script."""
    from generalist_cli.features.script import script_of
    from generalist_cli.infer.convert import translation_options

    if task == "text_translate":
        return translation_options(lang, longest, beam_size=beam_size, max_new_tokens=max_new_tokens,
                                   script=script == "auto")  # fmt: skip
    scripts = script_of(lang, task) if script == "auto" else None
    return DecodeOptions(timestamps=False, max_new_tokens=max_new_tokens, script=scripts or (), beam_size=beam_size)


@torch.inference_mode()
def rank_labels(model, tokenizer, e, candidates: list[list[int]]) -> list[int]:
    """Indices of ``candidates`` (each a label's target tokens) from the most to the least likely label of
    example ``e`` (an isolated sign), by the label's teacher-forced log-probability, end of text included: what
    top-5 accuracy ranks."""
    from generalist_cli.train.step import StepModule

    e.source = e.source.to(model.device)
    enc = model.encode(StepModule(model).embed(e)[None])[0]
    prompt = e.tokens[: e.prompt_len].tolist()
    seqs = [prompt + list(c) + [tokenizer.eot] for c in candidates]
    width = max(len(q) for q in seqs)
    tokens = torch.tensor([q + [tokenizer.eot] * (width - len(q)) for q in seqs], device=model.device)
    cache = model.new_cache(enc.expand(len(seqs), *enc.shape[1:]))
    logp = model.logits(model.decoder(tokens, cache.cross_kv, cache, 0)).float().log_softmax(-1)
    scores = [
        float(logp[k, torch.arange(len(prompt) - 1, len(q) - 1), torch.tensor(q[len(prompt) :])].sum())
        for k, q in enumerate(seqs)
    ]  # position t predicts token t + 1; padding comes after each sequence (causal: it changes nothing)
    return sorted(range(len(seqs)), key=lambda k: -scores[k])


def text_batches(examples, langs: list[str], size: int = TEXT_BATCH) -> list[list[int]]:
    """Indices of text-source ``examples`` grouped by prompt and language, ``size`` at most per group, in
    input order; every other example (audio, video) alone."""
    groups: dict[tuple, list[int]] = {}
    out: list[list[int]] = []
    for i, (e, lang) in enumerate(zip(examples, langs)):
        if not _text_source(e):
            out.append([i])
            continue
        key = (tuple(e.tokens[: e.prompt_len].tolist()), lang)
        groups.setdefault(key, []).append(i)
        if len(groups[key]) == size:
            out.append(groups.pop(key))
    return sorted(out + list(groups.values()), key=lambda g: g[0])


def _text_source(e) -> bool:
    return e.modality == "text" and e.task != "tts"


def greedy_group(model, tokenizer, examples: list, *, lang: str, beam_size: int = 1, **options) -> list[list[int]]:
    """Tokens of one :func:`text_batches` group: text sources as one packed batch (``beam_size``: their beam),
    any other example alone, greedy (``options``: :func:`greedy_tokens`' keywords)."""
    if _text_source(examples[0]):
        options.pop("always_pad", None)  # text has no window to pad
        return greedy_text_tokens(model, tokenizer, examples, lang=lang, beam_size=beam_size, **options)
    return [greedy_tokens(model, tokenizer, e, lang=lang, **options) for e in examples]


def greedy_texts(model, tokenizer, examples, *, langs: list[str] | None = None, max_new_tokens: int = 200) -> list[str]:
    """:func:`greedy_tokens` of each example, decoded to text, in order; text sources in packed batches
    (:func:`text_batches`)."""
    langs = langs or ["en"] * len(examples)
    out: list[str] = [""] * len(examples)
    for group in text_batches(examples, langs):
        part = [examples[i] for i in group]
        tokens = greedy_group(model, tokenizer, part, lang=langs[group[0]], max_new_tokens=max_new_tokens)
        for i, t in zip(group, tokens):
            out[i] = tokenizer.decode(t).strip()
    return out


@torch.inference_mode()
def token_loss(model, examples, *, batch_size: int = 32, capacity: int = 2048) -> dict:
    """Teacher-forced, packed scores of ``examples``: ``loss`` (mean cross-entropy per target token),
    ``token_accuracy`` (argmax == target), ``accuracy`` (every target token of an example right: for
    one-word answers such as arithmetic results or sign labels, top-1 accuracy) and the counts."""
    from generalist_cli.train.batches import Batch, n_targets
    from generalist_cli.train.step import StepModule

    step = StepModule(model, capacity=capacity)
    total, count, correct, exact, n = 0.0, 0, 0, 0, 0
    for i in range(0, len(examples), batch_size):
        part = [e for e in examples[i : i + batch_size] if n_targets(e)]
        if part:
            out = step(Batch(part))
            total += float(out["ce_sum"])
            count += sum(n_targets(e) for e in part)
            correct += out["correct_tokens"]
            exact += out["exact_examples"]
            n += len(part)
    return {
        "loss": total / max(1, count),
        "tokens": count,
        "token_accuracy": correct / max(1, count),
        "accuracy": exact / max(1, n),
    }
