"""Short files sharing 30-s windows (infer/sharing.py): planning, handing segments back, and real transcripts."""

from __future__ import annotations

import numpy as np

from generalist_cli.infer import sharing
from generalist_cli.infer.transcribe import Segment, TranscribeOptions, Transcript, shares_windows, transcribe
from tests.conftest import SENTENCES, wer


def test_plan_fills_windows_in_order_and_leaves_long_files_alone():
    groups = sharing.plan([5.0, 6.0, 40.0, 7.0, 9.0, 3.0], capacity=28.0, gap=2.0)
    assert [g.members for g in groups] == [(0, 1, 3, 5), (2,), (4,)]  # first fit: 5+2+6+2+7+2+3 = 27 s
    first = groups[0]
    assert first.offsets == (0.0, 7.0, 15.0, 24.0) and first.durations == (5.0, 6.0, 7.0, 3.0)
    assert all(o + d <= 28.0 for g in groups if len(g.members) > 1 for o, d in zip(g.offsets, g.durations))


def test_join_puts_each_file_at_its_offset_with_silence_between():
    a, b = np.full(16_000, 0.5, np.float32), np.full(8_000, -0.5, np.float32)
    [g] = sharing.plan([1.0, 0.5], gap=2.0)
    joined = sharing.join([a, b], g)
    assert len(joined) == 16_000 * 3 + 8_000
    assert np.all(joined[:16_000] == 0.5) and np.all(joined[16_000:48_000] == 0) and np.all(joined[48_000:] == -0.5)


def _joined(*segments):
    return Transcript("en", 0.9, 20.0, [Segment(a, b, t) for a, b, t in segments])


def test_split_hands_segments_back_in_each_files_own_time():
    g = sharing.Group((3, 7), (0.0, 7.0), (5.0, 6.0))
    parts, redo = sharing.split(_joined((0.0, 5.2, " one"), (6.8, 12.9, " two"), (12.9, 13.4, " tail")), g, None)
    assert redo == []
    assert [(s.start, s.end, s.text) for s in parts[0].segments] == [(0.0, 5.0, " one")]
    # a timestamp a little early or late stays in its file; a short segment in the gap goes to the nearest file
    assert [(s.start, s.end, s.text) for s in parts[1].segments] == [(0.0, 5.9, " two"), (5.9, 6.0, " tail")]
    assert parts[0].duration == 5.0 and parts[1].duration == 6.0 and parts[1].language == "en"


def test_split_names_files_a_segment_spans_and_files_left_empty():
    g = sharing.Group((0, 1, 2), (0.0, 7.0, 15.0), (5.0, 6.0, 4.0))
    spanning = _joined((0.0, 8.5, " one and the start of two"), (15.0, 19.0, " three"))
    _, redo = sharing.split(spanning, g, None)
    assert redo == [0, 1]
    speech = [((0.0, 5.0),), ((0.0, 6.0),), ((0.0, 0.5),)]  # the third holds too little speech to count as lost
    parts, redo = sharing.split(_joined((0.0, 5.0, " one")), g, speech)
    assert redo == [1] and parts[2].segments == []


def test_shares_only_with_one_fixed_language_and_fixed_windows(base, tiny_en):
    assert shares_windows(tiny_en.model, tiny_en.tokenizer, TranscribeOptions())  # English-only: fixed
    assert not shares_windows(base.model, base.tokenizer, TranscribeOptions())  # detected per window
    assert shares_windows(base.model, base.tokenizer, TranscribeOptions(language="en"))
    assert not shares_windows(base.model, base.tokenizer, TranscribeOptions(language="en", share_windows=False))


def test_shared_windows_keep_each_files_words_and_cost_fewer_windows(tiny_en, speech):
    model, tok = tiny_en.model, tiny_en.tokenizer
    ids = [4, 5, 6, 8, 10, 11]
    audios = [speech(i) for i in ids]
    rows = []
    encode = model.encode_mels

    def counting(mels):
        rows.append(len(mels))
        return encode(mels)

    model.encode_mels = counting
    try:
        shared = transcribe(model, tok, audios, TranscribeOptions())
        shared_rows, rows[:] = sum(rows), []
        alone = transcribe(model, tok, audios, TranscribeOptions(share_windows=False))
    finally:
        del model.encode_mels
    assert shared_rows <= 3 < sum(rows) == len(ids)
    for i, s, a, audio in zip(ids, shared, alone, audios):
        assert wer(SENTENCES[i], s.text) <= wer(SENTENCES[i], a.text) + 0.15, (s.text, a.text)
        # times are rounded to the millisecond (a file of 4.2945 s may end a segment at 4.295)
        assert s.segments and all(0 <= x.start <= x.end <= s.duration + 5e-4 for x in s.segments)
        assert s.duration == len(audio) / 16_000
    # each file's first and last words are its own (none moved to a neighbour)
    for i, s in zip(ids, shared):
        words = s.text.lower().replace(",", "").replace(".", "").split()
        ref = SENTENCES[i].lower().replace(",", "").replace(".", "").split()
        assert words[0] == ref[0] and words[-1] == ref[-1], (SENTENCES[i], s.text)
