"""Decoding every common container with PyAV, down-mixing, resampling, and every bad-input case."""

from __future__ import annotations

import numpy as np
import pytest

from generalist_cli.errors import MediaError
from generalist_cli.media.audio import decode_audio, encode_audio, is_silent
from tests.conftest import RATE, tone, write_av


@pytest.mark.parametrize("suffix", [".wav", ".m4a", ".mp3", ".flac", ".ogg", ".opus"])
def test_containers_decode_to_16k_mono(tmp_path, suffix):
    path = encode_audio(tmp_path / f"a{suffix}", tone(1.5))
    audio = decode_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / RATE - 1.5) < 0.15  # codec priming/padding only
    assert 0.3 < np.abs(audio).max() < 0.5


def test_mov_audio_track_stereo_44k_is_downmixed_and_resampled(tmp_path):
    path = tmp_path / "clip.mov"
    write_av(path, rate=44_100, channels=2, video=True)
    audio = decode_audio(path)
    assert abs(len(audio) / RATE - 1.0) < 0.1
    assert np.abs(audio).max() < 0.05  # left and right are in opposite phase: the mono mix cancels


def test_mp4_mono_48k_resampled(tmp_path):
    path = tmp_path / "clip.mp4"
    write_av(path, rate=48_000, channels=1, video=True)
    audio = decode_audio(path)
    assert abs(len(audio) / RATE - 1.0) < 0.1 and np.abs(audio).max() > 0.3
    # the resampled tone keeps its pitch: 440 Hz peak in the spectrum
    spec = np.abs(np.fft.rfft(audio[2000:14000]))
    assert abs(np.argmax(spec) * RATE / 12000 - 440) < 5


def test_missing_file():
    with pytest.raises(MediaError, match="not found"):
        decode_audio("/nonexistent/speech.m4a")


def test_directory(tmp_path):
    with pytest.raises(MediaError, match="directory"):
        decode_audio(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.m4a").write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        decode_audio(tmp_path / "e.m4a")


def test_not_media(tmp_path):
    (tmp_path / "notes.m4a").write_text("this is plain text, not audio\n" * 50)
    with pytest.raises(MediaError, match="not a media file"):
        decode_audio(tmp_path / "notes.m4a")


@pytest.mark.parametrize("suffix", [".m4a", ".wav", ".flac"])
def test_truncated(tmp_path, suffix):
    full = encode_audio(tmp_path / f"full{suffix}", tone(4.0))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(MediaError, match="truncated|not a media file|corrupt"):
        decode_audio(cut)


def test_no_audio_track(tmp_path):
    path = tmp_path / "silent_video.mp4"
    write_av(path, rate=16_000, channels=1, video=True, audio=False)
    with pytest.raises(MediaError, match="no audio track"):
        decode_audio(path)


def test_silence_detection(tmp_path):
    quiet = decode_audio(encode_audio(tmp_path / "quiet.wav", np.zeros(RATE, np.float32)))
    assert is_silent(quiet)
    assert not is_silent(tone(0.5))


def test_encode_refuses_unknown_suffix(tmp_path):
    with pytest.raises(MediaError, match="cannot write audio"):
        encode_audio(tmp_path / "a.xyz", tone(0.1))


def test_video_frames_round_trip_and_fps(tmp_path):
    from generalist_cli.media.video import decode_video, encode_video

    frames = np.zeros((20, 48, 64, 3), np.uint8)
    for i in range(20):
        frames[i, :, : 3 * i + 1] = 255  # a white bar that grows: frames stay distinguishable
    path = encode_video(tmp_path / "sign.mov", frames, fps=10)
    got = decode_video(path)
    assert got.shape == (20, 48, 64, 3) and got.dtype == np.uint8
    assert abs(float(got[10].mean()) - float(frames[10].mean())) < 8
    assert decode_video(path, fps=5).shape[0] == 10
    assert decode_video(path, size=(24, 32), max_frames=4).shape == (4, 24, 32, 3)


def test_video_errors(tmp_path):
    from generalist_cli.media.video import decode_video

    path = encode_audio(tmp_path / "speech.m4a", tone(0.5))
    with pytest.raises(MediaError, match="no video track"):
        decode_video(path)
    with pytest.raises(MediaError, match="not found"):
        decode_video(tmp_path / "none.mov")


@pytest.mark.parametrize("voice, text", [("en", "Hello world, this is a test."), ("hi", "आज राम स्कूल में क्रिकेट खेलता है।")])
def test_espeak_reports_phonemes_in_order_one_bpe_word_each(voice, text):
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.media.espeak import phoneme_text, phonemize, synthesize
    from generalist_cli.store.store import tokenizer_for

    speech = synthesize(text, voice=voice)
    starts = [t for t, _ in speech.phonemes]
    assert len(speech.phonemes) >= 10 and starts == sorted(starts)
    assert 0 <= starts[0] < 0.2 and starts[-1] < len(speech.audio) / speech.sample_rate
    assert phonemize(text, voice=voice) == speech.phoneme_names  # what gen run reads = what training read
    if voice == "en":
        assert speech.phoneme_names[:4] == ["h", "@", "l", "'oU"]
    tok = Tokenizer(tokenizer_for("whisper-tiny.en"), multilingual=False)
    pieces = [tok.decode([i]) for i in tok.encode(phoneme_text(speech.phoneme_names))]
    assert sum(p.startswith(" ") for p in pieces) == len(speech.phonemes)  # each phoneme starts a token
