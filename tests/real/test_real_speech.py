"""Real human speech, not eSpeak: English read speech and a speech, real Hindi news and read speech, a stereo
call, and a recording whose language changes half-way. Each test fails on a defect real recordings showed:
speech lost after a language change, Hindi written in the wrong script, channels mixed together.

The recordings are in ``tests/real/media`` (sources and licences: ``SOURCES.md`` there)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from generalist_cli.evaluate.metrics import text_scores
from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
from generalist_cli.media.audio import SAMPLE_RATE, decode_audio

MEDIA = Path(__file__).parent / "media"
ENGLISH = sorted(p for p in MEDIA.glob("*.*") if p.suffix in (".wav", ".flac") and "stereo" not in p.name)
HINDI = sorted((MEDIA / "hindi").glob("*.m4a"))
HINDI_TEXT = dict(
    line.rstrip("\n").split("\t", 1)
    for line in (MEDIA / "hindi" / "transcription_n2w.txt").read_text(encoding="utf-8").splitlines()
)


def reference(path: Path) -> str:
    return path.with_suffix(".txt").read_text(encoding="utf-8").strip()


GERMAN = (
    "Guten Tag. Ich heiße Anna und ich wohne in Berlin. Heute ist das Wetter sehr schön, und wir gehen in den "
    "Park. Am Abend essen wir zusammen mit unseren Freunden, und danach lesen wir ein Buch. Morgen fahren wir "
    "mit dem Zug nach Hamburg, um meine Großmutter zu besuchen."
)


def english(pause: np.ndarray) -> list[np.ndarray]:
    """About 30 s of real English (JFK, LJSpeech) with pauses."""
    return [
        x
        for p in (MEDIA / "jfk.flac", MEDIA / "ljspeech_LJ001-0001.wav", MEDIA / "ljspeech_LJ001-0005.wav")
        for x in (decode_audio(p), pause)
    ]


@pytest.fixture(scope="module")
def switching() -> np.ndarray:
    """About 30 s of real English then about 30 s of real Hindi, with half-second pauses: the language changes
    inside the second 30-s window (the recording that lost 21 s of Hindi)."""
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    parts, hindi = english(pause), 0
    for p in HINDI:
        parts += [decode_audio(p), pause]
        hindi += len(parts[-2]) + len(pause)
        if hindi > 28 * SAMPLE_RATE:
            break
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def to_german() -> np.ndarray:
    """The same real English, then 18 s of German (eSpeak)."""
    from generalist_cli.media.espeak import synthesize_16k

    return np.concatenate(
        english(np.zeros(SAMPLE_RATE // 2, np.float32)) + [synthesize_16k(GERMAN, voice="de", rate=150)]
    )


@pytest.mark.slow
@pytest.mark.parametrize("name,bound", [("tiny_en", 0.08), pytest.param("base", 0.08, marks=pytest.mark.slow)])
def test_english_wer_on_real_recordings(name, bound, request):
    """Measured: tiny.en WER 0.020, base 0.029 over the 8 files (the digit string is most of it)."""
    loaded = request.getfixturevalue(name)
    found = transcribe(
        loaded.model, loaded.tokenizer, [decode_audio(p) for p in ENGLISH], TranscribeOptions(language="en")
    )
    scores = text_scores([reference(p) for p in ENGLISH], [t.text for t in found], lang="en", task="transcribe")
    assert scores["wer"] <= bound, [t.text for t in found]
    assert scores["script"] == 1.0


def covered(segments, start: float) -> float:
    """Seconds after ``start`` inside some segment."""
    return sum(max(0.0, s.end - max(s.start, start)) for s in segments)


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize("case", ["hindi", "german"])
def test_no_speech_lost_when_the_language_changes(case, switching, to_german, base):
    """With the VAD (either kind) the segments cover at least 80 % of the second language's time and gen writes at
    least 95 % of the words it writes without a VAD (before the fix: the segments after the English covered 4 of
    the 30 s of Hindi; the 21 s after the language change were dropped)."""
    audio = switching if case == "hindi" else to_german
    options = TranscribeOptions(languages=("en", "hi") if case == "hindi" else ("en", "de"))
    duration, change = len(audio) / SAMPLE_RATE, 31.0
    words = {}
    for vad in ("silero", "energy", "off"):
        [t] = transcribe(base.model, base.tokenizer, [audio], replace(options, vad=vad))
        words[vad] = len(t.text.split())
        assert covered(t.segments, change) >= 0.8 * (duration - change), (vad, [(s.start, s.end) for s in t.segments])
        if case == "german":  # whisper-base reads eSpeak German well: the words are there, not just times
            late = " ".join(s.text for s in t.segments if s.start >= change - 1.5)
            assert text_scores([GERMAN], [late], lang="de", task="transcribe")["wer"] <= 0.35, late
    assert min(words["silero"], words["energy"]) >= 0.95 * words["off"], words


@pytest.mark.slow
@pytest.mark.slow
def test_segment_and_word_times_are_monotonic_on_long_real_audio(switching, base):
    loaded = base
    [t] = transcribe(loaded.model, loaded.tokenizer, [switching], TranscribeOptions(word_timestamps=True))
    duration = len(switching) / SAMPLE_RATE
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts) and len(starts) >= 6
    for s in t.segments:
        assert 0 <= s.start <= s.end <= duration + 0.01
        times = [x for w in s.words for x in (w.start, w.end)]
        assert times == sorted(times), s
        assert all(s.start <= w.start <= w.end <= s.end for w in s.words), s  # words are kept inside their segment
    words = [w for s in t.segments for w in s.words]
    assert [w.start for w in words] == sorted(w.start for w in words)


@pytest.mark.slow
@pytest.mark.slow
def test_hindi_is_written_in_devanagari(base):
    """The untrained whisper-base, asked for Hindi, writes Urdu, romanised Hindi and English without the script
    rule; with it (the default) nearly every letter is Devanagari and the WER drops."""
    loaded = base
    audio = [decode_audio(p) for p in HINDI[:6]]
    refs = [HINDI_TEXT[p.stem] for p in HINDI[:6]]
    scores = {}
    for script in ("auto", "any"):
        found = transcribe(loaded.model, loaded.tokenizer, audio, TranscribeOptions(language="hi", script=script))
        scores[script] = text_scores(refs, [t.text for t in found], lang="hi", task="transcribe")
    assert scores["auto"]["script"] >= 0.95, scores
    assert scores["any"]["script"] < 0.6, scores  # the defect the rule removes
    assert scores["auto"]["wer"] < scores["any"]["wer"], scores  # (CER: 0.850 vs 0.845 on these 6; see the docs)


@pytest.mark.slow
def test_stereo_channels_are_transcribed_apart(tmp_path):
    """``--channels split``: one transcript per speaker, each matching its own channel's reference."""
    path = MEDIA / "stereo_diarization.wav"
    refs = [line.split("\t", 1)[1] for line in reference(path).splitlines()]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(path),
            "--channels",
            "split",
            "-f",
            "json",
            "-m",
            "whisper-tiny.en",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["channel"] for row in rows] == [0, 1]
    for row, ref in zip(rows, refs):
        assert text_scores([ref], [row["text"]], lang="en", task="transcribe")["wer"] <= 0.1, (row["text"], ref)
    mixed = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "run", str(path), "-m", "whisper-tiny.en"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert mixed.returncode == 0 and "channel" not in mixed.stdout
    srt = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(path),
            "--channels",
            "split",
            "-f",
            "srt",
            "-m",
            "whisper-tiny.en",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "[channel 0]" in srt.stdout and "[channel 1]" in srt.stdout and srt.stdout.startswith("1\n")


SHIPPED = Path(__file__).resolve().parents[2] / "generalist_cli" / "adapters" / "whisper-base-hi.safetensors"


@pytest.mark.slow
def test_the_shipped_hindi_adapter_transcribes_real_hindi_and_leaves_english_exactly_as_it_was(base):
    """whisper-base as gen opens it carries its Hindi adapter (docs/models/whisper-base-hi.md): on real Hindi of
    the held-out valid split it writes Devanagari close to the reference (the same weights without it: WER above
    1, benchmarks/results/hi_adapter.json); English transcripts, language given or detected, are identical to
    whisper-base-plain's (``base``: the store entry opened without adapters)."""
    from generalist_cli.store.store import open_model

    assert SHIPPED.exists() and SHIPPED.stat().st_size <= 20e6  # the wheel grows by at most 20 MB
    hi = open_model("whisper-base")
    assert hi.config.adapter_languages == ("hi",) and base.config.adapter_languages == ()
    assert hi.meta["adapters"][0]["language"] == "hi"
    audio, refs = [decode_audio(p) for p in HINDI[:5]], [HINDI_TEXT[p.stem] for p in HINDI[:5]]
    found = transcribe(hi.model, hi.tokenizer, audio, TranscribeOptions(language="hi"))
    scores = text_scores(refs, [t.text for t in found], lang="hi", task="transcribe")
    assert scores["script"] >= 0.98 and scores["cer"] < 0.5 and scores["wer"] < 0.9, scores
    english = [decode_audio(p) for p in ENGLISH[:3]]
    for language in ("en", None):
        a = transcribe(hi.model, hi.tokenizer, english, TranscribeOptions(language=language))
        b = transcribe(base.model, base.tokenizer, english, TranscribeOptions(language=language))
        assert [t.text for t in a] == [t.text for t in b] and all(t.language == "en" for t in a)
