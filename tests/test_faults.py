"""Faults: kill -9 during gen prepare then a rerun, a full disk (a file-size limit) and an unwritable output
folder for every verb that writes: one clear error line, exit code 1, no traceback, earlier outputs intact.
(kill -9 during gen train is in tests/train/test_train.py, next to its fixtures.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = Path("/sys")  # sysfs refuses new files, even to root


def gen(*args: str, limit_bytes: int | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk, as a process sees it: writes past the limit fail with EFBIG
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "generalist_cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=limit if limit_bytes is not None else None,
    )


def one_clear_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr, r.stderr[-1500:]
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, r.stderr[-1500:]
    for n in needles:
        assert n in errors[0], errors[0]


@pytest.mark.slow
def test_kill_9_during_prepare_then_rerun_finishes_without_redoing_or_duplicating(tmp_path):
    text = tmp_path / "en.txt"
    text.write_text((ROOT / "examples" / "sentences_en_lifelong.txt").read_text())
    n = len(text.read_text().splitlines())
    args = [
        "prepare",
        "speak",
        str(text),
        "--lang",
        "en",
        "--tasks",
        "transcribe",
        "--shard-size",
        "4",
        "--model",
        "whisper-tiny.en",
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    p = subprocess.Popen(
        [sys.executable, "-m", "generalist_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    work = tmp_path / "out" / ".work"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(work.glob("*/shard-*/done"))) < 3:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    done_before = len(list(work.glob("*/shard-*/done")))
    r = gen(*args)
    assert r.returncode == 0, r.stderr[-1500:]
    report = json.loads(r.stdout)
    assert report["reused_shards"] >= done_before >= 3  # finished shards were not redone
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "out"))
    ids = [i for s in ds for i in ds[s]["id"]]
    assert len(ids) == len(set(ids)) == n  # every line once: nothing lost, nothing twice


@pytest.mark.slow
def test_full_disk_keeps_the_existing_output_of_gen_run(tmp_path):
    out = tmp_path / "hello.json"
    out.write_text("earlier output\n")
    r = gen("run", str(EXAMPLE), "--format", "json", "-m", "whisper-tiny.en", "--out", str(out), limit_bytes=64)
    one_clear_line(r, str(out), "cannot write", "File too large")
    assert out.read_text() == "earlier output\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hello.json"]  # no temporary file left behind


def test_full_disk_during_prepare_is_one_clear_error(tmp_path):
    text = tmp_path / "en.txt"
    text.write_text("Good morning.\nSee you soon.\n")
    r = gen(
        "prepare",
        "speak",
        str(text),
        "--lang",
        "en",
        "--model",
        "whisper-tiny.en",
        "--out",
        str(tmp_path / "out"),
        limit_bytes=2048,
    )
    one_clear_line(r, "cannot write", "File too large")


def _unwritable() -> None:
    try:
        (UNWRITABLE / "gen-probe").write_text("x")
    except OSError:
        return
    (UNWRITABLE / "gen-probe").unlink()
    pytest.fail(f"{UNWRITABLE} is writable on this machine: the test needs an unwritable folder")


@pytest.mark.slow
def test_unwritable_output_folders(tmp_path):
    _unwritable()
    one_clear_line(
        gen("run", str(EXAMPLE), "-m", "whisper-tiny.en", "--out", str(UNWRITABLE / "hello.txt")), "cannot write"
    )
    one_clear_line(
        gen("run", str(EXAMPLE), str(EXAMPLE), "-m", "whisper-tiny.en", "--out", str(UNWRITABLE / "t/")),
        "cannot create the output folder",
    )
    text = tmp_path / "en.txt"
    text.write_text("Good morning.\n")
    one_clear_line(
        gen(
            "prepare",
            "speak",
            str(text),
            "--lang",
            "en",
            "--model",
            "whisper-tiny.en",
            "--out",
            str(UNWRITABLE / "data"),
        ),
        "cannot write",
    )
    one_clear_line(
        gen("export", "whisper-tiny.en", "--out", str(UNWRITABLE / "export"), "--quantize", "none"),
        str(UNWRITABLE / "export"),
    )
