"""Our Whisper equals transformers' WhisperForConditionalGeneration with the same weights (fp32, 1e-4)."""

from __future__ import annotations

import pytest
import torch

from generalist_cli.model.config import ModelConfig
from generalist_cli.model.generalist import Generalist as Whisper
from tests.conftest import hf_twin, tiny_config


@pytest.mark.parametrize("frames", [3000, 800])
def test_random_weights_match_transformers(frames):
    torch.manual_seed(0)
    model = Whisper(tiny_config()).eval()
    for p in model.parameters():  # non-trivial biases and norms
        p.data.normal_(0, 0.05)
    hf = hf_twin(model)
    mel = torch.randn(2, 80, frames)
    tokens = torch.randint(0, 51865, (2, 9))
    with torch.no_grad():
        ours = model(mel, tokens)
        if frames != 3000:  # transformers insists on 3000 frames; compare the decoder on our encoder output
            enc = model.encode_audio(mel)
            ref = hf(encoder_outputs=(enc,), decoder_input_ids=tokens).logits
        else:
            ref = hf(input_features=mel, decoder_input_ids=tokens).logits
    assert ours.shape == ref.shape == (2, 9, 51865)
    assert (ours - ref).abs().max() <= 1e-4


def test_real_tiny_en_matches_transformers(tiny_en):
    """The store entry is itself a transformers Whisper folder; both give the same logits on real speech."""
    from transformers import WhisperForConditionalGeneration

    from generalist_cli.features.mel import N_SAMPLES, log_mel_spectrogram
    from generalist_cli.media.audio import decode_audio
    from tests.conftest import EXAMPLE

    hf = WhisperForConditionalGeneration.from_pretrained(tiny_en.path, dtype=torch.float32).eval()
    mel = torch.from_numpy(log_mel_spectrogram(decode_audio(EXAMPLE), padding=N_SAMPLES)[:, :3000][None])
    tokens = torch.tensor([[50257, 50363] + tiny_en.tokenizer.encode(" Hello and welcome.")])
    with torch.no_grad():
        ref = hf(input_features=mel, decoder_input_ids=tokens).logits
        ours = tiny_en.model(mel, tokens)
    assert (ours - ref).abs().max() <= 1e-4
    # and the model reads the speech: greedy next tokens follow the transcript
    assert ours[0, 1:-1].argmax(-1).tolist() == tokens[0, 2:].tolist()


def test_cached_decoding_equals_full_forward():
    torch.manual_seed(1)
    model = Whisper(tiny_config()).eval()
    mel = torch.randn(3, 80, 3000)
    tokens = torch.randint(0, 50000, (3, 7))
    with torch.no_grad():
        full = model(mel, tokens)
        cache = model.new_cache(model.encode_audio(mel))
        steps = [model.decode_step(tokens[:, :4], cache, 0)]  # prefill 4, then one at a time
        for t in range(4, 7):
            steps.append(model.decode_step(tokens[:, t : t + 1], cache, t))
    cached = torch.stack(steps, 1)
    assert (cached - full[:, 3:]).abs().max() < 1e-4


def test_config_round_trips_through_hf_dict():
    cfg = tiny_config(suppress_tokens=(1, 2), begin_suppress_tokens=(220,), alignment_heads=((1, 0),))
    assert ModelConfig.from_hf(cfg.to_hf()) == cfg
    assert cfg.multilingual and not tiny_config(n_vocab=51864).multilingual
