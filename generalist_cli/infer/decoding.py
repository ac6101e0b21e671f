"""Decoding one 30-second window per row: greedy or beam search over a KV cache, with Whisper's logit rules.

Follows openai/whisper ``decoding.py``: suppress non-speech tokens and specials, suppress a blank start,
and the timestamp rules (timestamps come in pairs, never decrease, the first token is a timestamp no
later than 1 s, and a timestamp is forced when the timestamps' total probability beats every text token).
Shapes: B audio rows, K beams, N = B*K decoder rows, V vocabulary, P prompt length.

The arrays are the model's own kind: torch tensors (on the model's device) for a PyTorch model, numpy arrays
for an ONNX export - which then runs without torch installed. The few operations the two spell differently
are the small functions below.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np

from generalist_cli.features.mel import TIME_PRECISION
from generalist_cli.features.tokenizer import Tokenizer

NEG_INF = float("-inf")


def no_grad():
    """``torch.inference_mode()`` when torch is in use (imported), else nothing to switch off."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()


def array(values, like):
    """``values`` (a list) as an array of ``like``'s kind: numpy, or a torch tensor on ``like``'s device."""
    if isinstance(like, np.ndarray):
        return np.asarray(values)
    import torch

    return torch.tensor(values, device=like.device)


def _float(x):
    return x.astype(np.float32, copy=False) if isinstance(x, np.ndarray) else x.float()


def _logsumexp(x):
    if not isinstance(x, np.ndarray):
        return x.logsumexp(dim=-1)
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def _log_softmax(x):
    if not isinstance(x, np.ndarray):
        return x.float().log_softmax(dim=-1)
    x = x.astype(np.float32, copy=False)
    return x - _logsumexp(x)[..., None]


def _softmax(x):
    return np.exp(_log_softmax(x)) if isinstance(x, np.ndarray) else x.float().softmax(dim=-1)


def _max(x):
    return x.max(axis=-1) if isinstance(x, np.ndarray) else x.max(dim=-1).values


def _topk(x, k: int):
    """(values, indices) of the ``k`` largest along the last axis, largest first."""
    if not isinstance(x, np.ndarray):
        return x.topk(k, dim=-1)
    idx = np.argpartition(-x, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(x, idx, axis=-1), axis=-1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=-1)
    return np.take_along_axis(x, idx, axis=-1), idx


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"  # transcribe | translate
    timestamps: bool = True  # predict segment timestamps (needed for long-form)
    beam_size: int = 1  # 1 = greedy
    max_new_tokens: int = 224  # openai's sample_len: half the decoder context
    max_initial_timestamp: float = 1.0  # seconds: latest first timestamp
    suppress_blank: bool = True
    script: tuple[str, ...] = ()  # keep to these scripts (+ Latin, digits, punctuation): features/script.py
    no_repeat_ngram: int = 0  # > 0: no n-gram of this many tokens twice in a row's output (text decoding)
    length_penalty: float | None = None  # beam ranking: None = mean log-probability; a: sum / ((5 + len) / 6)^a


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # generated tokens, without prompt and end of text
    avg_logprob: float
    no_speech_prob: float


class LogitRules:
    """Whisper's logit filters for rows that all share ``sample_begin`` (the prompt length)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        suppress: list[int],
        options: DecodeOptions,
        sample_begin: int,
        vocab: int,
        *,
        blank_start: bool = False,
    ) -> None:
        tk = tokenizer
        self.tk = tokenizer
        self.vocab = vocab
        self.options = options
        self.sample_begin = sample_begin
        # specials are never written: start of transcript, languages, tasks, no-speech, no-timestamps
        ids = set(suppress) | set(range(tk.sot, tk.timestamp_begin))
        if not options.timestamps:
            ids |= set(range(tk.timestamp_begin, vocab))
        self.later: list[int] = []  # until a row has a letter of its own script: all but its own letters (empty for
        # Latin-script languages: the rule is for the scripts Whisper strays from)
        self.latin: list[int] = []  # Latin letters, while a row has fewer than 3 of its own letters per Latin one
        self.continuing: list[int] = []  # tokens that begin inside a character, unless one is open
        if options.script:
            from generalist_cli.features.script import script_tokens

            classes = script_tokens(tk, options.script)
            ids |= set(classes.banned)
            self.later, self.latin = list(classes.later), list(classes.latin)
            self.continuing = list(classes.continuing)
        self.suppress = sorted(i for i in ids if i < vocab)
        # a generalist learned its targets' own first tokens: a first word with no space-led token in the
        # vocabulary (" thank" in Whisper's multilingual one) starts with a lone space, so only the end of
        # text is kept from starting an output (Whisper's blank suppression would force a wrong label)
        begin = tk.non_speech_begin()
        self.begin_suppress = [tk.eot] if blank_start else list(begin)
        self.max_initial = round(options.max_initial_timestamp / TIME_PRECISION)
        self._arrays: dict = {}  # the id lists as index arrays of the logits' kind, made once

    def _index(self, name: str, like):
        key = (name, type(like), getattr(like, "device", None))
        if key not in self._arrays:
            self._arrays[key] = array(getattr(self, name), like)
        return self._arrays[key]

    def _script(self, logits, seqs: list[list[int]]) -> None:
        """The script rule (features/script.py) for a non-Latin script, per row by what its text is so far:
        nothing but the language's own letters until it has one (and no end before some text); then Latin only
        while it has at least three of its own letters per Latin one.
        Byte-level tokens make whole characters: a token that begins inside a character comes only after one
        left open, and after an open one only a token that finishes it in an allowed script."""
        from generalist_cli.features.script import completions, text_state

        masks: dict[str, list[int]] = {"later": [], "latin": [], "continuing": []}
        for k, seq in enumerate(seqs):
            prefix, own, latin = text_state(self.tk, self.options.script, seq)
            if prefix:
                keep = list(completions(self.tk, self.options.script, prefix, letter=not own))
                if not keep:  # no allowed way to finish it: end the text
                    logits[k, :] = NEG_INF
                    logits[k, self.tk.eot] = 0.0
                    continue
                idx = array(keep, logits)
                kept = logits[k, idx]
                logits[k, :] = NEG_INF
                logits[k, idx] = kept
                continue
            masks["continuing"].append(k)
            if not own:
                masks["later"].append(k)
                if not any(t < self.tk.eot for t in seq):  # nothing written yet: a window the VAD kept as
                    logits[k, self.tk.eot] = NEG_INF  # speech does not end before it says anything
            elif own < 3 * (latin + 1):
                masks["latin"].append(k)
        for name, rows in masks.items():
            if rows and getattr(self, name):
                logits[array(rows, logits)[:, None], self._index(name, logits)[None, :]] = NEG_INF

    def __call__(self, logits, seqs: list[list[int]]):
        """Filter ``logits`` (N, V) in place given each row's sampled tokens ``seqs`` (N lists)."""
        tk = self.tk
        logits[:, self._index("suppress", logits)] = NEG_INF
        logits[:, self.vocab :] = NEG_INF  # task/modality tokens appended after Whisper's vocabulary
        if self.later:
            self._script(logits, seqs)
        if self.options.no_repeat_ngram:
            _block_repeats(logits, seqs, self.options.no_repeat_ngram)
        first = len(seqs[0]) == 0
        if first and self.options.suppress_blank:
            logits[:, self._index("begin_suppress", logits)] = NEG_INF
        if not self.options.timestamps:
            return logits
        ts = tk.timestamp_begin
        logits[:, tk.no_timestamps] = NEG_INF
        for k, seq in enumerate(seqs):
            last_ts = len(seq) >= 1 and seq[-1] >= ts
            penult_ts = len(seq) < 2 or seq[-2] >= ts
            if last_ts:
                if penult_ts:  # a pair just closed: text must follow
                    logits[k, ts:] = NEG_INF
                else:  # a lone timestamp: another timestamp or the end
                    logits[k, : tk.eot] = NEG_INF
            stamps = [t for t in seq if t >= ts]
            if stamps:  # timestamps never decrease
                floor = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, ts:floor] = NEG_INF
        if first:
            logits[:, :ts] = NEG_INF  # start with a timestamp
            logits[:, ts + self.max_initial + 1 :] = NEG_INF
        logprobs = _log_softmax(logits)
        stamp_lp = _logsumexp(logprobs[:, ts:])
        text_lp = _max(logprobs[:, :ts])
        logits[stamp_lp > text_lp, :ts] = NEG_INF
        return logits


def _block_repeats(logits, seqs: list[list[int]], n: int) -> None:
    """No token that would complete an n-gram already in the row (fairseq's and transformers'
    ``no_repeat_ngram_size``): the repetition loops greedy text decoding falls into."""
    for k, seq in enumerate(seqs):
        if len(seq) < n:
            continue
        prefix = tuple(seq[len(seq) - n + 1 :])
        banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == prefix}
        if banned:
            logits[k, array(sorted(banned), logits)] = NEG_INF


def _rank(score: float, length: int, penalty: float | None) -> float:
    """A finished beam's ranking score (openai/whisper's MaximumLikelihoodRanker): the log-probability over
    the length, or with ``penalty`` over GNMT's ((5 + length) / 6) ** penalty."""
    return score / (length if penalty is None else ((5 + length) / 6) ** penalty)


def detect_language(
    model, tokenizer: Tokenizer, cross_kv, *, allowed: tuple[str, ...] | None = None, top: int = 1, cross_mask=None
) -> list:
    """Most likely language of each audio row from the first decoder step: ``[(code, probability)]``, or with
    ``top > 1`` the ``top`` best per row, best first: ``[[(code, probability), ...]]``."""
    with no_grad():
        b = cross_kv[0][0].shape[0]
        sot = array([[tokenizer.sot]] * b, cross_kv[0][0])
        masked = {} if cross_mask is None else {"cross_mask": cross_mask}  # packed audio of different lengths
        hidden = model.decoder(sot, cross_kv, **masked)
        logits = _float(model.logits(hidden)[:, 0])
    codes = [c for c in tokenizer.language_codes if allowed is None or c in allowed]
    probs = _softmax(logits[:, [tokenizer.language_token(c) for c in codes]])
    if top > 1:
        p, i = _topk(probs, min(top, len(codes)))
        p, i = p.tolist(), i.tolist()
        return [[(codes[int(c)], float(q)) for q, c in zip(pr, ir)] for pr, ir in zip(p, i)]
    best = probs.argmax(-1).tolist()
    return [(codes[i], float(probs[r, i])) for r, i in enumerate(best)]


def decode(
    model, tokenizer: Tokenizer, cache, prompts: list[list[int]], options: DecodeOptions, suppress: list[int]
) -> list[Decoded]:
    """Decode every row of ``cache`` (one audio window each) from its prompt; prompts share one length P.

    ``cache`` is ``model.new_cache(audio_features)`` for B rows; beam search widens it to B*K rows.
    """
    with no_grad():
        return _decode(model, tokenizer, cache, prompts, options, suppress)


def _decode(
    model, tokenizer: Tokenizer, cache, prompts: list[list[int]], options: DecodeOptions, suppress: list[int]
) -> list[Decoded]:
    p = len(prompts[0])
    k = max(1, options.beam_size)
    vocab = model.config.n_vocab
    rules = LogitRules(
        tokenizer, suppress, options, p, vocab, blank_start=bool(getattr(model.config, "generalist", False))
    )
    max_new = min(options.max_new_tokens, model.config.n_text_ctx - p)
    prompt = array(prompts, cache.cross_kv[0][0])

    # prefill: logits at <|startoftranscript|> (for the no-speech probability) and at the prompt's end
    hidden = model.decoder(prompt, cache.cross_kv, cache, 0)
    sot_pos = prompts[0].index(tokenizer.sot)
    first = _float(model.logits(hidden[:, [sot_pos, p - 1]]))
    no_speech = _softmax(first[:, 0])[:, tokenizer.no_speech].tolist()
    logits = first[:, 1]
    if k == 1:
        tokens = _greedy(model, cache, logits, rules, p, max_new, tokenizer.eot)
    else:
        tokens = _beam(model, cache, logits, rules, p, max_new, tokenizer.eot, k, options.length_penalty)
    return [Decoded(t, lp, ns) for (t, lp), ns in zip(tokens, no_speech)]


def _greedy(model, cache, logits, rules: LogitRules, p: int, max_new: int, eot: int) -> list[tuple[list[int], float]]:
    n = logits.shape[0]
    seqs: list[list[int]] = [[] for _ in range(n)]
    sum_lp = [0.0] * n
    done = [False] * n
    for step in range(max_new):
        logits = rules(logits, seqs)
        nxt_list = logits.argmax(-1).tolist()
        picked = _max(_log_softmax(logits)).tolist()  # the argmax token's log-probability
        for i in range(n):
            if done[i]:
                continue
            sum_lp[i] += picked[i]
            if nxt_list[i] == eot:
                done[i] = True
            else:
                seqs[i].append(nxt_list[i])
        if all(done) or step == max_new - 1:
            break
        feed = array([[eot if done[i] else nxt_list[i]] for i in range(n)], logits)
        logits = _float(model.decode_step(feed, cache, p + step))
    return [(s, lp / (len(s) + 1)) for s, lp in zip(seqs, sum_lp)]


def _beam(
    model, cache, logits, rules: LogitRules, p: int, max_new: int, eot: int, k: int, penalty: float | None = None
) -> list[tuple[list[int], float]]:
    """Beam search with ``k`` beams per audio row; the best finished hypothesis by :func:`_rank` (mean
    log-probability, or GNMT's length penalty)."""
    b = logits.shape[0]
    rows = array([a for a in range(b) for _ in range(k)], logits)
    cache = cache.select(rows)  # K rows per audio, all from the prefilled state
    logits = logits[rows]
    seqs: list[list[int]] = [[] for _ in range(b * k)]
    scores = array([0.0 if j == 0 else NEG_INF for _ in range(b) for j in range(k)], logits)  # identical beams
    # at the start: expand only the first
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(b)]
    for step in range(max_new):
        logprobs = _log_softmax(rules(logits, seqs))
        total = (scores[:, None] + logprobs).reshape(b, -1)  # (B, K*V)
        top_scores, top_idx = _topk(total, 2 * k)
        new_seqs, new_scores, source = [], [], []
        top_scores_l, top_idx_l = top_scores.tolist(), top_idx.tolist()
        for a in range(b):
            kept = 0
            for score, flat in zip(top_scores_l[a], top_idx_l[a]):
                if score == NEG_INF:
                    break
                beam, token = divmod(flat, logprobs.shape[1])
                row = a * k + beam
                if len(finished[a]) >= k and kept >= k:
                    break
                if token == eot:
                    if len(finished[a]) < k:
                        finished[a].append((seqs[row], score))
                elif kept < k:
                    new_seqs.append(seqs[row] + [token])
                    new_scores.append(score)
                    source.append(row)
                    kept += 1
            while kept < k:  # keep K rows per audio; dead rows score -inf
                new_seqs.append(list(seqs[a * k]))
                new_scores.append(NEG_INF)
                source.append(a * k)
                kept += 1
        if all(len(f) >= k for f in finished) or step == max_new - 1:
            break
        seqs = new_seqs
        scores = array(new_scores, logits)
        cache.reorder(array(source, logits))
        feed = array([[s[-1]] for s in seqs], logits)
        logits = _float(model.decode_step(feed, cache, p + step))
    out = []
    for a in range(b):
        cands = finished[a] or [(seqs[a * k + j], float(scores[a * k + j])) for j in range(k)]
        best = max(cands, key=lambda c: _rank(c[1], len(c[0]) + 1, penalty))
        out.append((best[0], best[1] / (len(best[0]) + 1)))
    return out
