"""Language per window: mixed-language audio gets each segment's language (--langs restricts detection)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k

ROOT = Path(__file__).resolve().parents[2]
SPANISH = [
    "Buenos días, la biblioteca abre a las nueve de la mañana.",
    "Mañana vamos a visitar a nuestros abuelos en el pueblo.",
    "El tren sale de la estación a las seis de la tarde.",
    "Hoy hace mucho calor y no hay nubes en el cielo.",
]


@pytest.mark.slow
def test_english_then_spanish_gets_a_language_per_window(tmp_path):
    english = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()
    parts, n = [], 0
    for s in english:  # a little over 26 s of English, so the second window is Spanish
        parts.append(synthesize_16k(s))
        n += len(parts[-1])
        if n > 26 * 16000:
            break
    parts += [synthesize_16k(s, voice="es") for s in SPANISH]
    path = encode_audio(tmp_path / "mixed.m4a", np.concatenate(parts))
    r = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "run", str(path), "--langs", "en,es", "-f", "json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    langs = [s["language"] for s in out["segments"]]
    assert out["language"] == "en" and langs[0] == "en" and langs[-1] == "es", langs
    spanish = " ".join(s["text"] for s in out["segments"] if s["language"] == "es").lower()
    assert "estación" in spanish or "pueblo" in spanish
    assert all(s["start"] >= n / 16000 - 1.5 for s in out["segments"] if s["language"] == "es")
    r = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "run", str(path), "--langs", "en,xx"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert r.returncode == 2 and "xx" in r.stderr and "Traceback" not in r.stderr
