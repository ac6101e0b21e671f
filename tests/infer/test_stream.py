"""gen run - --stream: local agreement over re-transcribed chunks; confirmed words never change, the final
text matches the file's transcript."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from generalist_cli.infer.stream import Streamer, pcm_chunks
from generalist_cli.infer.transcribe import TranscribeOptions
from generalist_cli.media.audio import decode_audio
from tests.conftest import EXAMPLE, EXAMPLE_TEXT, wer


def _pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def test_pcm_chunks_reads_raw_and_wav(tmp_path):
    import io

    from generalist_cli.media.audio import encode_audio

    audio = np.sin(np.arange(40000) / 10).astype(np.float32) * 0.5
    raw = list(pcm_chunks(io.BytesIO(_pcm(audio)), seconds=1.0))
    assert [len(c) for c in raw] == [16000, 16000, 8000]
    assert np.abs(np.concatenate(raw) - audio).max() < 1e-4
    wav = encode_audio(tmp_path / "a.wav", audio)
    got = np.concatenate(list(pcm_chunks(open(wav, "rb"))))
    assert abs(len(got) - len(audio)) <= 2
    import pytest

    from generalist_cli.errors import GenError

    other = encode_audio(tmp_path / "b.wav", audio, sample_rate=44100)
    with pytest.raises(GenError, match="44100 Hz"):
        list(pcm_chunks(open(other, "rb")))


@pytest.mark.slow
def test_confirmed_words_only_grow_and_the_end_matches(tiny_en):
    audio = decode_audio(EXAMPLE)
    s = Streamer(tiny_en.model, tiny_en.tokenizer, TranscribeOptions(language="en"))
    confirmed, partials = [], []
    for i in range(0, len(audio), 32000):  # 2-s chunks: fewer re-transcriptions, same agreement rule
        u = s.feed(audio[i : i + 32000])
        confirmed += u.final
        partials.append(u.partial)
        assert [w.word for w in s.confirmed] == [w.word for w in confirmed]  # never revised
    confirmed += s.finish().final
    assert any(partials) and len(confirmed) > 10
    assert all(a.start <= b.start + 0.5 for a, b in zip(confirmed, confirmed[1:]))
    assert wer(EXAMPLE_TEXT, "".join(w.word for w in confirmed)) <= 0.1


@pytest.mark.slow
def test_gen_run_stream_from_stdin():
    r = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "run", "-", "--stream", "-m", "whisper-tiny.en", "-f", "json"],
        input=_pcm(decode_audio(EXAMPLE)),
        capture_output=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr.decode()[-1500:]
    parts = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert len(parts) >= 2 and all(p["start"] <= p["end"] for p in parts)
    assert wer(EXAMPLE_TEXT, " ".join(p["text"] for p in parts)) <= 0.1
