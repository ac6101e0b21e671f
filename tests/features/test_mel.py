"""Whisper log-mel parity with transformers' WhisperFeatureExtractor on real (synthesised) speech."""

from __future__ import annotations

import numpy as np
import pytest

from generalist_cli.features.mel import N_FRAMES, N_SAMPLES, log_mel_spectrogram, mel_filters, pad_or_trim
from generalist_cli.media.audio import decode_audio
from tests.conftest import EXAMPLE


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_transformers(n_mels, speech):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    for audio in (speech(1), decode_audio(EXAMPLE)):
        ref = fe(audio, sampling_rate=16_000, return_tensors="np").input_features[0]
        ours = log_mel_spectrogram(np.pad(audio, (0, N_SAMPLES - len(audio))), n_mels=n_mels)
        assert ours.shape == ref.shape == (n_mels, N_FRAMES)
        assert np.abs(ours - ref).max() <= 1e-4


def test_filters_match_transformers():
    from transformers.audio_utils import mel_filter_bank

    for n in (80, 128):
        ref = mel_filter_bank(
            num_frequency_bins=201,
            num_mel_filters=n,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=16_000,
            norm="slaney",
            mel_scale="slaney",
        ).T
        assert np.abs(mel_filters(n) - ref).max() < 1e-6


def test_batch_equals_single(speech):
    a, b = speech(2)[:40_000], speech(3)[:40_000]
    batch = log_mel_spectrogram(np.stack([a, b]))
    assert np.allclose(batch[1], log_mel_spectrogram(b), atol=1e-6)


def test_padding_and_frames():
    audio = np.zeros(16_000, np.float32)
    mel = log_mel_spectrogram(audio, padding=N_SAMPLES)
    assert mel.shape[-1] == (16_000 + N_SAMPLES) // 160
    assert pad_or_trim(mel).shape[-1] == N_FRAMES


def test_blocks_of_frames_equal_the_whole_at_once(monkeypatch):
    """The spectrum is computed a block of frames at a time (an hour at once took 2.5 GB); the global clamp
    to 8 below the peak comes after, so blocks of any size give the same log-mel (batched input too)."""
    from generalist_cli.features import mel as m

    audio = np.random.default_rng(0).normal(0, 0.1, (2, 16000 * 7 + 123)).astype(np.float32)
    audio[0, 40000:50000] *= 50  # the peak sits in one block only
    monkeypatch.setattr(m, "BLOCK_FRAMES", 10**9)
    whole = log_mel_spectrogram(audio)
    monkeypatch.setattr(m, "BLOCK_FRAMES", 97)
    assert np.allclose(log_mel_spectrogram(audio), whole, atol=1e-6, rtol=0)
