"""Decoding one 30-second window per row: greedy or beam search over a KV cache, with Whisper's logit rules.

Follows openai/whisper ``decoding.py``: suppress non-speech tokens and specials, suppress a blank start,
and the timestamp rules (timestamps come in pairs, never decrease, the first token is a timestamp no
later than 1 s, and a timestamp is forced when the timestamps' total probability beats every text token).
Shapes: B audio rows, K beams, N = B*K decoder rows, V vocabulary, P prompt length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from generalist_cli.features.mel import TIME_PRECISION
from generalist_cli.features.tokenizer import Tokenizer

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodeOptions:
    task: str = "transcribe"  # transcribe | translate
    timestamps: bool = True  # predict segment timestamps (needed for long-form)
    beam_size: int = 1  # 1 = greedy
    max_new_tokens: int = 224  # openai's sample_len: half the decoder context
    max_initial_timestamp: float = 1.0  # seconds: latest first timestamp
    suppress_blank: bool = True


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # generated tokens, without prompt and end of text
    avg_logprob: float
    no_speech_prob: float


class LogitRules:
    """Whisper's logit filters for rows that all share ``sample_begin`` (the prompt length)."""

    def __init__(self, tokenizer: Tokenizer, suppress: list[int], options: DecodeOptions, sample_begin: int,
                 vocab: int, *, blank_start: bool = False) -> None:
        tk = tokenizer
        self.tk = tokenizer
        self.vocab = vocab
        self.options = options
        self.sample_begin = sample_begin
        ids = set(suppress) | {tk.transcribe, tk.translate, tk.sot, tk.sot_prev, tk.sot_lm, tk.no_speech}
        if not options.timestamps:
            ids |= set(range(tk.timestamp_begin, vocab))
        self.suppress = torch.tensor(sorted(i for i in ids if i < vocab))
        # a generalist learned its targets' own first tokens: a first word with no space-led token in the
        # vocabulary (" thank" in Whisper's multilingual one) starts with a lone space, so only the end of
        # text is kept from starting an output (Whisper's blank suppression would force a wrong label)
        begin = tk.non_speech_begin()
        self.begin_suppress = torch.tensor([tk.eot] if blank_start else begin)
        self.max_initial = round(options.max_initial_timestamp / TIME_PRECISION)

    def __call__(self, logits: Tensor, seqs: list[list[int]]) -> Tensor:
        """Filter ``logits`` (N, V) in place given each row's sampled tokens ``seqs`` (N lists)."""
        tk = self.tk
        logits[:, self.suppress] = NEG_INF
        logits[:, self.vocab :] = NEG_INF  # task/modality tokens appended after Whisper's vocabulary
        first = len(seqs[0]) == 0
        if first and self.options.suppress_blank:
            logits[:, self.begin_suppress] = NEG_INF
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
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        stamp_lp = logprobs[:, ts:].logsumexp(dim=-1)
        text_lp = logprobs[:, :ts].max(dim=-1).values
        logits[stamp_lp > text_lp, :ts] = NEG_INF
        return logits


@torch.inference_mode()
def detect_language(model, tokenizer: Tokenizer, cross_kv, *, allowed: tuple[str, ...] | None = None,
                    top: int = 1) -> list:
    """Most likely language of each audio row from the first decoder step: ``[(code, probability)]``, or with
    ``top > 1`` the ``top`` best per row, best first: ``[[(code, probability), ...]]``."""
    b = cross_kv[0][0].shape[0]
    sot = torch.full((b, 1), tokenizer.sot, dtype=torch.long, device=cross_kv[0][0].device)
    logits = model.logits(model.decoder(sot, cross_kv))[:, 0].float()
    codes = [c for c in tokenizer.language_codes if allowed is None or c in allowed]
    ids = torch.tensor([tokenizer.language_token(c) for c in codes], device=logits.device)
    probs = torch.softmax(logits[:, ids], dim=-1)
    if top > 1:
        p, i = probs.topk(min(top, len(codes)), dim=-1)
        return [[(codes[int(c)], float(q)) for q, c in zip(pr, ir)] for pr, ir in zip(p, i)]
    best = probs.argmax(dim=-1)
    return [(codes[int(i)], float(probs[r, i])) for r, i in enumerate(best)]


@torch.inference_mode()
def decode(model, tokenizer: Tokenizer, cache, prompts: list[list[int]], options: DecodeOptions,
           suppress: list[int]) -> list[Decoded]:
    """Decode every row of ``cache`` (one audio window each) from its prompt; prompts share one length P.

    ``cache`` is ``model.new_cache(audio_features)`` for B rows; beam search widens it to B*K rows.
    """
    p = len(prompts[0])
    k = max(1, options.beam_size)
    device = cache.cross_kv[0][0].device
    vocab = model.config.n_vocab
    rules = LogitRules(tokenizer, suppress, options, p, vocab,
                       blank_start=bool(getattr(model.config, "generalist", False)))
    max_new = min(options.max_new_tokens, model.config.n_text_ctx - p)
    prompt = torch.tensor(prompts, dtype=torch.long, device=device)

    # prefill: logits at <|startoftranscript|> (for the no-speech probability) and at the prompt's end
    hidden = model.decoder(prompt, cache.cross_kv, cache, 0)
    sot_pos = prompts[0].index(tokenizer.sot)
    first = model.logits(hidden[:, [sot_pos, p - 1]]).float()
    no_speech = torch.softmax(first[:, 0], dim=-1)[:, tokenizer.no_speech].tolist()
    logits = first[:, 1]
    if k == 1:
        tokens = _greedy(model, cache, logits, rules, p, max_new, tokenizer.eot)
    else:
        tokens = _beam(model, cache, logits, rules, p, max_new, tokenizer.eot, k)
    return [Decoded(t, lp, ns) for (t, lp), ns in zip(tokens, no_speech)]


def _greedy(model, cache, logits: Tensor, rules: LogitRules, p: int, max_new: int, eot: int
            ) -> list[tuple[list[int], float]]:
    n = logits.shape[0]
    seqs: list[list[int]] = [[] for _ in range(n)]
    sum_lp = [0.0] * n
    done = [False] * n
    for step in range(max_new):
        logits = rules(logits, seqs)
        logprobs = torch.log_softmax(logits, dim=-1)
        nxt = logits.argmax(dim=-1)
        picked = logprobs.gather(1, nxt[:, None])[:, 0].tolist()
        nxt_list = nxt.tolist()
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
        feed = torch.tensor([[eot if done[i] else nxt_list[i]] for i in range(n)], device=logits.device)
        logits = model.decode_step(feed, cache, p + step).float()
    return [(s, lp / (len(s) + 1)) for s, lp in zip(seqs, sum_lp)]


def _beam(model, cache, logits: Tensor, rules: LogitRules, p: int, max_new: int, eot: int, k: int
          ) -> list[tuple[list[int], float]]:
    """Beam search with ``k`` beams per audio row; the best finished hypothesis by mean log-probability."""
    b = logits.shape[0]
    rows = torch.arange(b, device=logits.device).repeat_interleave(k)
    cache = cache.select(rows)  # K rows per audio, all from the prefilled state
    logits = logits.index_select(0, rows)
    seqs: list[list[int]] = [[] for _ in range(b * k)]
    scores = torch.zeros(b * k, device=logits.device)
    scores.view(b, k)[:, 1:] = NEG_INF  # identical beams at the start: expand only the first
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(b)]
    for step in range(max_new):
        logprobs = torch.log_softmax(rules(logits, seqs), dim=-1)
        total = (scores[:, None] + logprobs).view(b, -1)  # (B, K*V)
        top_scores, top_idx = total.topk(2 * k, dim=-1)
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
        scores = torch.tensor(new_scores, device=logits.device)
        index = torch.tensor(source, device=logits.device)
        cache.reorder(index)
        feed = torch.tensor([[s[-1]] for s in seqs], device=logits.device)
        logits = model.decode_step(feed, cache, p + step).float()
    out = []
    for a in range(b):
        cands = finished[a] or [(seqs[a * k + j], float(scores[a * k + j])) for j in range(k)]
        best = max(cands, key=lambda c: c[1] / (len(c[0]) + 1))
        out.append((best[0], best[1] / (len(best[0]) + 1)))
    return out
