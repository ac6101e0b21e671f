"""Text metrics. The normaliser keeps Indic combining marks (matras, viramas): it only case-folds, applies
Unicode NFC and turns punctuation and symbols into spaces, so Devanagari words stay whole.
:func:`text_scores` is what training evaluations and ``gen eval`` report per task: WER/CER (jiwer, Whisper's
English normaliser for English), BLEU/chrF/chrF++ (sacrebleu) for translation, top-1 for isolated signs."""

from __future__ import annotations

import unicodedata
from typing import Callable

TRANSLATION_TASKS = ("translate", "text_translate")


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


def normalizer(lang: str) -> Callable[[str], str]:
    """Whisper's English normaliser for English; the Indic-safe Unicode normaliser for other languages."""
    if lang.startswith("en"):
        from whisper_normalizer.english import EnglishTextNormalizer

        english = EnglishTextNormalizer()
        return lambda s: " ".join(english(s).split())
    return normalize


def text_scores(refs: list[str], hyps: list[str], *, lang: str, task: str) -> dict:
    """``wer``/``cer`` of ``hyps`` against ``refs`` (``lang``'s normaliser), ``script`` (the share of the hypotheses'
    letters written in the output language's script: Devanagari for hi), plus ``bleu``/``chrf``/``chrf++``
    (character n-grams with word bigrams, sacrebleu's ``CHRF(word_order=2)``) for a translation task and
    ``top1`` for ``sign``."""
    import jiwer

    norm = normalizer(lang)
    r, h = [norm(x) for x in refs], [norm(x) for x in hyps]
    keep = [i for i, x in enumerate(r) if x]  # jiwer refuses empty references
    out: dict = {}
    if keep:
        rr, hh = [r[i] for i in keep], [h[i] for i in keep]
        out["wer"] = jiwer.wer(rr, hh)
        out["cer"] = jiwer.cer(rr, hh)
    if task != "sign":
        from generalist_cli.features.script import script_share

        share = script_share(" ".join(hyps), "en" if task == "translate" else lang)
        if share is not None:
            out["script"] = share  # share of the output's letters in the expected script
    if task in TRANSLATION_TASKS:
        import sacrebleu

        out["bleu"] = sacrebleu.corpus_bleu(hyps, [refs]).score
        out["chrf"] = sacrebleu.corpus_chrf(hyps, [refs]).score
        out["chrf++"] = sacrebleu.metrics.CHRF(word_order=2).corpus_score(hyps, [refs]).score  # Indic MT's main one
    if task == "sign":
        out["top1"] = sum(a == b for a, b in zip(r, h)) / max(1, len(r))
    return out
