"""--word-timestamps: word times from the alignment heads' cross-attention, checked against eSpeak NG's own
word events (it reports when each word starts), after a second of leading silence (VAD maps it back)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from generalist_cli.infer.timing import dtw
from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
from generalist_cli.media.espeak import synthesize, to_16k

TEXTS = [
    "Good morning. Today we will talk about the weather, the news, and a few good books.",
    "Please remember to bring your passport and a pen to the meeting on Friday.",
]
LEAD = 1.5


def _norm(w: str) -> str:
    return re.sub(r"[^\w]", "", w.lower())


def test_dtw_finds_the_diagonal_and_is_monotonic():
    cost = np.ones((3, 6))
    cost[0, :2] = cost[1, 2:4] = cost[2, 4:] = 0
    rows, cols = dtw(cost)
    assert rows[0] == cols[0] == 0 and rows[-1] == 2 and cols[-1] == 5
    assert all(np.diff(rows) >= 0) and all(np.diff(cols) >= 0)
    starts = [int(cols[list(rows).index(r)]) for r in range(3)]
    assert starts == [0, 2, 4]


@pytest.mark.parametrize("model", ["tiny_en", "base"])
@pytest.mark.parametrize("vad", ["silero", "energy"])
def test_word_starts_match_espeak_within_0_3_s(model, vad, request):
    """90 % of words within 0.3 s, all within 0.4 s. Measured, tiny.en: max 0.36 s with Silero's cut (one "the"
    of 56 words), 0.33 s with the energy VAD's (0.20 s before its regions ended a frame earlier); base: 0.28 s."""
    loaded = request.getfixturevalue(model)
    errors, total = [], 0
    for text in TEXTS:
        sp = synthesize(text, voice="en")
        audio = np.concatenate([np.zeros(int(LEAD * 16000), np.float32), to_16k(sp)])
        ref = [(text[o : o + n], t + LEAD) for t, o, n in sp.words]
        total += len(ref)
        [tr] = transcribe(
            loaded.model, loaded.tokenizer, [audio], TranscribeOptions(language="en", word_timestamps=True, vad=vad)
        )
        hyp = [w for s in tr.segments for w in s.words]
        assert all(w.start <= w.end for w in hyp) and all(a.start <= b.start for a, b in zip(hyp, hyp[1:]))
        j = 0
        for word, t in ref:  # match in order, allowing a recognition slip
            for k in range(j, min(j + 3, len(hyp))):
                if _norm(hyp[k].word) == _norm(word):
                    errors.append(abs(hyp[k].start - t))
                    j = k + 1
                    break
    assert len(errors) >= 0.85 * total  # words recognised and matched
    assert max(errors) <= 0.4, sorted(errors)[-5:]
    assert sorted(errors)[int(0.9 * len(errors))] <= 0.3, sorted(errors)[-5:]


@pytest.mark.slow
def test_cli_words_in_json_and_one_cue_per_word_in_srt(tmp_path):
    from generalist_cli.media.audio import encode_audio

    sp = synthesize(TEXTS[1], voice="en")
    path = encode_audio(tmp_path / "s.m4a", to_16k(sp))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(path),
            "-m",
            "whisper-tiny.en",
            "--word-timestamps",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    words = [w for s in json.loads(r.stdout)["segments"] for w in s["words"]]
    assert [w["word"] for w in words][:3] == ["Please", "remember", "to"]
    assert all(set(w) == {"start", "end", "word", "probability"} and 0 < w["probability"] <= 1 for w in words)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(path),
            "-m",
            "whisper-tiny.en",
            "--word-timestamps",
            "-f",
            "srt",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    cues = r.stdout.strip().split("\n\n")
    assert len(cues) == len(words) and cues[0].splitlines()[2] == "Please"
