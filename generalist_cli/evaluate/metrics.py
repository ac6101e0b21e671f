"""Text metrics. The normaliser keeps Indic combining marks (matras, viramas): it only case-folds, applies
Unicode NFC and turns punctuation and symbols into spaces, so Devanagari words stay whole."""

from __future__ import annotations

import unicodedata


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).casefold()
    out = [" " if unicodedata.category(ch)[0] in "PS" and ch != "'" else ch for ch in text]
    return " ".join("".join(out).split())


def _edits(ref: list, hyp: list) -> int:
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(hyp)]


def wer(refs: list[str], hyps: list[str]) -> float:
    """Corpus word error rate: total word edits / total reference words, after :func:`normalize`."""
    edits = words = 0
    for r, h in zip(refs, hyps):
        rw, hw = normalize(r).split(), normalize(h).split()
        edits += _edits(rw, hw)
        words += len(rw)
    return edits / max(1, words)


def cer(refs: list[str], hyps: list[str]) -> float:
    """Corpus character error rate over normalised text without spaces."""
    edits = chars = 0
    for r, h in zip(refs, hyps):
        rc, hc = list(normalize(r).replace(" ", "")), list(normalize(h).replace(" ", ""))
        edits += _edits(rc, hc)
        chars += len(rc)
    return edits / max(1, chars)
