"""Text -> text for documents: sentence splitting (Latin and Indic end punctuation, abbreviations), lines and
blank lines kept, batched packed translation equal to one sentence at a time, n-gram blocking, the beam's
length penalty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generalist_cli.infer import convert
from generalist_cli.infer.convert import split_sentences


def test_sentences_split_at_latin_and_indic_ends_but_not_after_abbreviations():
    assert split_sentences('Dr. Rao went to the U.S. on Monday. He said "Hello!" Then he left.') == [
        "Dr. Rao went to the U.S. on Monday.", 'He said "Hello!"', "Then he left."]  # fmt: skip
    assert split_sentences("यह पहला वाक्य है। यह दूसरा है॥ और तीसरा? चौथा") == [
        "यह पहला वाक्य है।", "यह दूसरा है॥", "और तीसरा?", "चौथा"]  # fmt: skip
    assert split_sentences("Price: 3.5 dollars, i.e. cheap. OK") == ["Price: 3.5 dollars, i.e. cheap.", "OK"]
    assert split_sentences("") == [] and split_sentences("no end") == ["no end"]


def test_a_document_keeps_its_lines_and_blank_lines(monkeypatch):
    seen = []

    def fake(model, tok, sentences, **kw):
        seen.append(list(sentences))
        return [s.upper() for s in sentences]

    monkeypatch.setattr(convert, "_translate", fake)
    doc = "First one. Second one.\n\n  Third paragraph।  \nLast."
    said = []
    out = convert.text_to_text(None, None, doc, lang="hi", src_lang="en", batch_size=3, on_progress=said.append)
    assert out == "FIRST ONE. SECOND ONE.\n\nTHIRD PARAGRAPH।\nLAST."
    assert seen == [["First one.", "Second one.", "Third paragraph।"], ["Last."]] and said == [3, 1]
    assert convert.count_sentences(doc) == 4


@pytest.fixture(scope="module")
def small(base):
    from generalist_cli.features.tokenizer import Tokenizer
    from tests.conftest import generalist

    g = generalist(live=True).eval()
    c = g.config
    tok = Tokenizer(base.path / "tokenizer.json", multilingual=True, extra_tokens=c.extra_tokens, n_vocab=c.n_vocab)
    return g, tok


def test_a_batch_of_sentences_translates_as_each_one_alone(small):
    g, tok = small
    sentences = ["The cat sleeps.", "A much longer sentence about the weather in Delhi today.", "Yes."]
    together = convert._translate(g, tok, sentences, lang="hi", src_lang="en", beam_size=1, length_penalty=None)
    alone = [convert._translate(g, tok, [s], lang="hi", src_lang="en", beam_size=1, length_penalty=None)[0]
             for s in sentences]  # fmt: skip
    assert together == alone


def test_repeated_ngrams_are_blocked_and_the_length_penalty_ranks_beams():
    from generalist_cli.infer.decoding import _block_repeats, _rank

    logits = np.zeros((2, 10), np.float32)
    _block_repeats(logits, [[1, 2, 3, 1, 2], [4, 5]], 3)  # "1 2 3" seen: after "1 2" token 3 is banned
    assert np.isneginf(logits[0, 3]) and np.isfinite(logits[0]).sum() == 9 and np.isfinite(logits[1]).all()
    t = torch.zeros(1, 10)
    _block_repeats(t, [[7, 7, 7]], 2)
    assert torch.isinf(t[0, 7]) and torch.isfinite(t[0]).sum() == 9
    assert _rank(-6.0, 3, None) == -2.0  # mean log-probability (Whisper's default)
    short, long = (-3.0, 3), (-5.0, 10)  # a longer hypothesis with a higher mean
    assert _rank(*long, None) > _rank(*short, None)
    assert _rank(*short, 0.0) > _rank(*long, 0.0)  # penalty 0: the raw sum prefers the short one
    assert _rank(-5.0, 10, 1.0) == pytest.approx(-5.0 / (15 / 6))


def test_a_lead_byte_without_its_continuation_bytes_opens_no_text():
    """Found by the batch test's random model: a token of a UTF-8 lead byte and ASCII raised TypeError."""
    from generalist_cli.features.script import _opens

    assert not _opens(b"\xe0ab", {"DEVANAGARI"}) and _opens(" क".encode(), {"DEVANAGARI"})
