"""``gen prepare`` through the real entry point: report, rejection summary, exit codes."""

from __future__ import annotations

import json

import pytest

from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k
from tests.conftest import gen


@pytest.mark.slow
def test_manifest_prepare_reports_rejections_and_exits_0(tmp_path):
    encode_audio(tmp_path / "a.wav", synthesize_16k("good morning everyone"))
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not really")
    (tmp_path / "m.tsv").write_text("path\ttext\na.wav\tgood morning everyone\nbroken.wav\thello\nmissing.wav\thi\n")
    r = gen("prepare", "manifest", str(tmp_path / "m.tsv"), "--out", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["counts"] == {"train": 1} and report["rejected"] == 2
    assert "rejected 2 item(s)" in r.stderr and "file not found (1)" in r.stderr and "Traceback" not in r.stderr
    lines = (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["reason"] for x in lines)
    again = gen("prepare", "manifest", str(tmp_path / "m.tsv"), "--out", str(tmp_path / "out"))
    assert again.returncode == 0 and "already prepared" in again.stdout


@pytest.mark.slow
def test_nothing_prepared_is_exit_1_and_bad_options_exit_2(tmp_path):
    (tmp_path / "m.tsv").write_text("path\ttext\nmissing.wav\thi\n")
    r = gen("prepare", "manifest", str(tmp_path / "m.tsv"), "--out", str(tmp_path / "out"))
    assert r.returncode == 1 and "no example could be prepared" in r.stderr and "Traceback" not in r.stderr
    r = gen("prepare", "kathbath", "--lang", "klingon", "--out", str(tmp_path / "kb"))
    assert r.returncode == 2 and "Kathbath has no language 'klingon'" in r.stderr
    r = gen("prepare", "include", "--local", str(tmp_path), "--out", str(tmp_path / "inc"))
    assert r.returncode == 1 and "no <Category>/<N>. <Sign>/*.MOV (INCLUDE), <gloss>/<id>.mp4" in r.stderr
    r = gen("prepare", "speak", str(tmp_path / "none.txt"), "--lang", "hi", "--out", str(tmp_path / "sp"))
    assert r.returncode == 1 and "none.txt: not found" in r.stderr
