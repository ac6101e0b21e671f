"""--prompt and --hotwords: previous-text context that makes names and spellings likely."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k


@pytest.mark.slow
def test_a_hotword_fixes_a_misrecognised_name(tmp_path):
    speech = encode_audio(tmp_path / "call.m4a", synthesize_16k("Please call Doctor Venkataraman tomorrow."))

    def run(*extra):
        r = subprocess.run(
            [sys.executable, "-m", "generalist_cli", "run", str(speech), "-m", "whisper-tiny.en", *extra],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "Venkataraman" not in run()  # tiny.en hears "Venka Tamaam"
    assert "Venkataraman" in run("--hotwords", "Venkataraman")
    assert "Venkataraman" in run("--prompt", "A note for Doctor Venkataraman.")


def test_previous_text_tokens():
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.infer.transcribe import TranscribeOptions, previous_text
    from generalist_cli.store.sources import PACKAGES

    tok = Tokenizer(PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json", multilingual=False)
    assert previous_text(tok, TranscribeOptions(), limit=10) == []
    ids = previous_text(tok, TranscribeOptions(hotwords=("Kathbath", "AI4Bharat"), prompt="Data notes."), limit=223)
    assert ids[0] == tok.sot_prev and tok.decode(ids[1:]) == " Kathbath, AI4Bharat Data notes."
    assert len(previous_text(tok, TranscribeOptions(prompt="word " * 500), limit=223)) == 224  # the last 223 kept
