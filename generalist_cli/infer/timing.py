"""Word timestamps from cross-attention, as openai/whisper ``timing.py`` does: run the decoder over the
window's text once more, keep the raw cross-attention scores of the model's alignment heads (the heads
whose attention follows the speech, listed in the checkpoint's ``alignment_heads``), softmax them over
the window's real frames, standardise per head along the tokens, median-filter along time (width 7),
average the heads, and align tokens to frames with dynamic time warping. A word starts where its first
token's path starts and ends where the next word starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FRAMES_PER_SECOND = 50  # encoder positions per second (the stem halves the 100 Hz mel)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through ``cost`` (N, M) from (0, 0) to (N-1, M-1): (rows, cols)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for i in range(1, n + 1):  # rows are few (tokens), columns many (frames): vectorise along columns
        diag, up = acc[i - 1, :-1], acc[i - 1, 1:]
        for j in range(1, m + 1):
            left = acc[i, j - 1]
            c0, c1 = diag[j - 1], up[j - 1]
            if c0 <= c1 and c0 <= left:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c0, 0
            elif c1 <= left:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + c1, 1
            else:
                acc[i, j], trace[i, j] = cost[i - 1, j - 1] + left, 2
    i, j, rows, cols = n, m, [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    while i > 0:  # the first column: rows above the path's start
        i -= 1
        rows.append(i)
        cols.append(0)
    return np.array(rows[::-1]), np.array(cols[::-1])


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window of ``width`` along the last axis (reflect padding)."""
    if x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    shape = x.shape
    y = torch.nn.functional.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")  # (N, 1, L + 2 pad)
    return y.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)


@torch.inference_mode()
def cross_attention_scores(model, cross_kv, tokens: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Raw scaled query-key scores of every decoder block's cross-attention for ``tokens`` (one row):
    a list over layers of (heads, tokens, frames), and the logits."""
    x = torch.tensor([tokens], device=cross_kv[0][0].device)
    hidden, _, scores = model.decoder.run(x, cross_kv, cross_scores=True)
    return [s[0].float() for s in scores], model.logits(hidden)[0].float()


def align_words(
    model, tokenizer, cross_kv, prompt: list[int], text_tokens: list[int], num_frames: int, *, offset: float = 0.0
) -> list[Word]:
    """Words of ``text_tokens`` (no timestamps) with start/end times in seconds (+ ``offset``), for one window
    whose encoder keys/values are ``cross_kv`` and whose speech covers ``num_frames`` encoder positions."""
    if not text_tokens:
        return []
    heads = model.config.alignment_heads or _default_heads(model)
    tokens = [*prompt, *text_tokens, tokenizer.eot]
    scores, logits = cross_attention_scores(model, cross_kv, tokens)
    p = len(prompt)
    probs = torch.softmax(logits[p - 1 : p - 1 + len(text_tokens)], dim=-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()
    frames = max(2, min(num_frames, scores[0].shape[-1]))
    w = torch.stack([scores[layer][head] for layer, head in heads])[:, :, :frames].softmax(dim=-1)
    std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
    w = _median_filter((w - mean) / (std + 1e-9), 7)
    matrix = w.mean(dim=0)[p - 1 : -1]  # rows predicting each text token and the end of text
    rows, cols = dtw(-matrix.double().cpu().numpy())
    jumps = np.pad(np.diff(rows), (1, 0), constant_values=1).astype(bool)
    times = cols[jumps] / FRAMES_PER_SECOND  # the frame where each row's path begins
    words, groups = _split_words(tokenizer, text_tokens)
    out, at = [], 0
    for word, group in zip(words, groups):
        start = float(times[at])
        at += len(group)
        end = float(times[at]) if at < len(times) else frames / FRAMES_PER_SECOND
        prob = float(np.mean([token_probs[k] for k in range(at - len(group), at)]))
        out.append(Word(round(offset + start, 3), round(offset + max(end, start), 3), word, round(prob, 4)))
    return out


def _split_words(tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Group tokens into words: a token whose text starts with a space starts a word; punctuation and word
    pieces join the word before."""
    words, groups = [], []
    for t in tokens:
        piece = tokenizer.decode([t])
        if not groups or (piece.startswith(" ") and piece.strip()):
            words.append(piece)
            groups.append([t])
        else:
            words[-1] += piece
            groups[-1].append(t)
    return words, groups


def _default_heads(model) -> list[tuple[int, int]]:
    """Without a list from the checkpoint: every head of the upper half of the decoder (openai's fallback)."""
    n_layer, n_head = model.config.n_text_layer, model.config.n_text_head
    return [(layer, h) for layer in range(n_layer // 2, n_layer) for h in range(n_head)]
