"""Voice activity detection and repetition guards: no text invented on silence or noise, times mapped back
to the file, loops cut."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from generalist_cli.features.vad import TimeMap, compact, speech_regions
from generalist_cli.infer.transcribe import compression_ratio, cut_repetition
from generalist_cli.media.espeak import synthesize_16k

RATE = 16000
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def sentence():
    return synthesize_16k("Good morning. The library opens at nine in the morning and closes at six.")


def test_regions_cover_the_speech_and_nothing_else(sentence):
    gap = np.zeros(3 * RATE, np.float32)
    x = np.concatenate([gap, sentence, gap, sentence, gap])
    regions = speech_regions(x)
    assert len(regions) == 2
    n = len(sentence)
    for (a, b), start in zip(regions, (3 * RATE, 6 * RATE + n)):
        assert abs(a - start) < 0.35 * RATE and abs(b - (start + n)) < 0.35 * RATE


@pytest.mark.parametrize("noise", ["silence", "white", "hum", "brown"])
def test_silence_and_steady_noise_hold_no_speech(noise):
    t = np.arange(60 * RATE) / RATE
    x = {
        "silence": np.zeros_like(t),
        "white": RNG.normal(0, 0.1, t.size),
        "hum": 0.2 * np.sin(2 * np.pi * 50 * t),
        "brown": np.cumsum(RNG.normal(0, 0.01, t.size)) * 0.01,
    }[noise]
    assert speech_regions(x.astype(np.float32)) == []


def test_compact_and_its_time_map(sentence):
    x = np.concatenate([np.zeros(5 * RATE, np.float32), sentence, np.zeros(5 * RATE, np.float32), sentence])
    joined, time_map = compact(x, speech_regions(x), gap=0.3)
    assert len(joined) < len(x) - 9 * RATE
    (c0, o0, n0), (c1, o1, n1) = time_map.pieces
    assert c0 == 0.0 and abs(c1 - (n0 + 0.3)) < 1e-9
    assert time_map(0.0) == o0 and abs(time_map(c1 + 1.0) - (o1 + 1.0)) < 1e-9
    assert time_map(n0 + 0.1) == o0 + n0  # inside the joining silence: the end of the piece before
    assert TimeMap(())(3.0) == 3.0


def test_repetition_measures():
    assert compression_ratio("the cat sat " * 30) > 2.4 > compression_ratio("Good morning, the library opens at nine.")
    assert cut_repetition([1, 2, 3, 9, 9, 9, 9, 5], 100) == [1, 2, 3, 9]
    assert cut_repetition([1, 2, 7, 8, 7, 8, 7, 8, 7, 8], 100) == [1, 2, 7, 8]
    assert cut_repetition([1, 2, 3, 4], 100) == [1, 2, 3, 4]
    assert cut_repetition([1, 150, 2, 2, 2, 151], 100) == [1, 2]  # timestamps dropped from a cut window


@pytest.mark.slow
def test_gen_run_gives_empty_text_for_silence_and_noise_and_maps_times(sentence, tmp_path):
    from generalist_cli.media.audio import encode_audio

    silence = encode_audio(tmp_path / "silence.m4a", np.zeros(60 * RATE, np.float32))
    noise = encode_audio(tmp_path / "noise.m4a", RNG.normal(0, 0.05, 60 * RATE).astype(np.float32))
    late = encode_audio(tmp_path / "late.m4a", np.concatenate([np.zeros(12 * RATE, np.float32), sentence]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(silence),
            str(noise),
            str(late),
            "-f",
            "json",
            "-m",
            "whisper-tiny.en",
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["text"] for row in rows[:2]] == ["", ""] and rows[0]["segments"] == rows[1]["segments"] == []
    assert abs(rows[0]["duration"] - 60) < 0.2
    # tiny.en hears "at nine in the morning and closes" as "and I did the morning and close in" depending on which
    # files share its batch (measured); the words at both ends show the speech is there, at its time
    assert "library opens" in rows[2]["text"].lower() and "six" in rows[2]["text"].lower()
    first = rows[2]["segments"][0]
    assert 11.5 < first["start"] < 12.6 and first["end"] <= rows[2]["duration"] + 0.01
