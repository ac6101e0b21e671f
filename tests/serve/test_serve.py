"""gen serve: a real server on 127.0.0.1 (whisper-tiny.en), plain HTTP with httpx: the OpenAI-compatible
endpoints and formats, error statuses (400, 413, 503 with Retry-After), metrics, temporary files; and the
micro-batcher on its own."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import EXAMPLE as HELLO
from tests.conftest import Server

ROOT = Path(__file__).resolve().parents[2]
HELLO_TEXT = "hello and welcome this voice was made by a computer and the model turns it back into text"


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


@pytest.fixture(scope="module")
def server(tiny_en, tmp_path_factory):
    s = Server("whisper-tiny.en", tmp=tmp_path_factory.mktemp("serve-tmp"))
    yield s
    assert "Traceback" not in s.stop()


@pytest.mark.slow
def test_openai_compatible_transcription_in_every_format(server):
    audio = {"file": ("hello.m4a", HELLO.read_bytes(), "audio/mp4")}
    r = server.post("/v1/audio/transcriptions", files=audio, data={"model": "whisper-1", "language": "en"})
    assert r.status_code == 200 and words(r.json()["text"]) == HELLO_TEXT
    r = server.post("/v1/audio/transcriptions", files=audio, data={"response_format": "text"})
    assert r.headers["content-type"].startswith("text/plain") and words(r.text) == HELLO_TEXT
    r = server.post("/v1/audio/transcriptions", files=audio, data={"response_format": "srt"})
    assert r.text.startswith("1\n00:00:00,000 --> ") and words(r.text.split("\n", 2)[2]) == HELLO_TEXT
    r = server.post("/v1/audio/transcriptions", files=audio, data={"response_format": "vtt"})
    assert r.text.startswith("WEBVTT\n\n00:00:00.000 --> ")
    v = server.post("/v1/audio/transcriptions", files=audio, data={"response_format": "verbose_json"}).json()
    assert v["task"] == "transcribe" and v["language"] == "en" and v["duration"] == pytest.approx(7.1, abs=0.1)
    assert v["segments"] and v["segments"][0]["start"] == 0.0 and v["segments"][0]["tokens"]
    # the convert endpoint transcribes audio the same way
    r = server.post("/v1/convert", files=audio, data={"to": "text"})
    assert words(r.json()["text"]) == HELLO_TEXT


def test_bad_requests_get_one_clear_error(server, tmp_path):
    def err(r, status):
        assert r.status_code == status, r.text
        body = r.json()["error"]
        assert body["code"] == status and "Traceback" not in body["message"]
        return body["message"]

    assert "not a media file" in err(
        server.post("/v1/audio/transcriptions", files={"file": ("notes.m4a", b"plain words", "audio/mp4")}), 400
    )
    assert "notes.m4a" in err(
        server.post("/v1/audio/transcriptions", files={"file": ("notes.m4a", b"plain words", "audio/mp4")}), 400
    )
    assert "is empty" in err(server.post("/v1/audio/transcriptions", files={"file": ("e.m4a", b"", "audio/mp4")}), 400)
    audio = {"file": ("hello.m4a", HELLO.read_bytes(), "audio/mp4")}
    assert "does not know language 'hi'" in err(
        server.post("/v1/audio/transcriptions", files=audio, data={"language": "hi"}), 400
    )
    assert (
        "unknown language"
        in err(server.post("/v1/audio/transcriptions", files=audio, data={"language": "klingon"}), 400).lower()
    )
    assert "response_format" in err(
        server.post("/v1/audio/transcriptions", files=audio, data={"response_format": "xml"}), 400
    )
    assert "English-only" in err(server.post("/v1/audio/translations", files=audio), 400)
    assert "recipes/tts.toml" in err(server.post("/v1/convert", data={"to": "speech", "text": "Hello."}), 400)
    assert "needs lang" in err(server.post("/v1/convert", data={"to": "text", "text": "Hello."}), 400)
    assert server.post("/v1/audio/transcriptions").status_code == 422  # no file at all (FastAPI's validation)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # still serving
    assert not list(server.tmp.iterdir())  # nothing left in the temporary folder


def test_metrics_count_requests_latency_and_audio(server):
    audio = {"file": ("hello.m4a", HELLO.read_bytes(), "audio/mp4")}
    before = httpx.get(server.url + "/metrics").text
    assert server.post("/v1/audio/transcriptions", files=audio).status_code == 200
    text = httpx.get(server.url + "/metrics").text

    def value(body: str, name: str) -> float:
        rows = [line for line in body.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
        return float(rows[0].rsplit(" ", 1)[1]) if rows else 0.0

    key = 'gen_requests_total{endpoint="/v1/audio/transcriptions",status="200"}'
    assert value(text, key) == value(before, key) + 1
    assert value(text, "gen_audio_seconds_total") == pytest.approx(
        value(before, "gen_audio_seconds_total") + 7.1, abs=0.1
    )
    assert value(text, "gen_compute_seconds_total") > value(before, "gen_compute_seconds_total")
    assert 0 < value(text, "gen_real_time_factor") < 10
    assert 'gen_request_duration_seconds_bucket{endpoint="/v1/audio/transcriptions",le="+Inf"}' in text
    assert "# TYPE gen_request_duration_seconds histogram" in text


@pytest.mark.slow
def test_limits_and_a_full_queue(tiny_en, tmp_path):
    """413 over the upload limit, 400 over the length limit; a queue of one answers 503 with Retry-After to
    the requests it cannot hold, serves the rest, and keeps serving."""
    from generalist_cli.media.audio import encode_audio

    s = Server(
        "whisper-tiny.en",
        "--max-mb",
        "0.1",
        "--max-seconds",
        "20",
        "--queue-size",
        "1",
        "--max-batch",
        "1",
        tmp=tmp_path / "tmp",
    )
    try:
        big = {"file": ("big.m4a", os.urandom(200_000), "audio/mp4")}
        r = s.post("/v1/audio/transcriptions", files=big)
        assert r.status_code == 413 and "0.1 MB limit" in r.json()["error"]["message"]
        encode_audio(tmp_path / "long.flac", np.zeros(16000 * 30, np.float32))
        r = s.post("/v1/audio/transcriptions", files={"file": ("long.flac", (tmp_path / "long.flac").read_bytes())})
        assert r.status_code == 400 and "30 s, over the server's 20 s limit" in r.json()["error"]["message"]
        audio = {"file": ("hello.m4a", HELLO.read_bytes(), "audio/mp4")}
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(lambda _: s.post("/v1/audio/transcriptions", files=audio), range(12)))
        codes = sorted(r.status_code for r in replies)
        assert set(codes) == {200, 503}, codes
        busy = [r for r in replies if r.status_code == 503]
        assert all(r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "server_busy" for r in busy)
        assert all(words(r.json()["text"]) == HELLO_TEXT for r in replies if r.status_code == 200)
        assert s.post("/v1/audio/transcriptions", files=audio).status_code == 200  # still serving
        assert f"gen_rejected_total {len(busy)}" in httpx.get(s.url + "/metrics").text
    finally:
        assert "Traceback" not in s.stop()


@pytest.mark.slow
def test_workers_are_separate_processes_on_one_port(tiny_en, tmp_path):
    s = Server("whisper-tiny.en", "--workers", "2", tmp=tmp_path / "tmp")
    try:
        audio = {"file": ("hello.m4a", HELLO.read_bytes(), "audio/mp4")}
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: s.post("/v1/audio/transcriptions", files=audio), range(2)))
        assert [words(r.json()["text"]) for r in replies] == [HELLO_TEXT] * 2
    finally:
        s.stop()


def test_batcher_batches_waiting_requests_by_key_and_refuses_when_full():
    from generalist_cli.serve.batcher import Batcher, Busy

    seen = []
    lock = threading.Lock()

    def run(items, key):
        seen.append((key, list(items)))
        if key == "bad":
            raise ValueError("broken input")
        return [f"{key}:{x}" for x in items]

    b = Batcher(run, max_batch=3, max_wait=0.05, queue_size=6, lock=lock)
    try:
        with lock:  # the worker blocks on the model: requests pile up in the queue
            first = b.submit(0, "a")
            time.sleep(0.2)  # the worker has taken request 0 and waits for the lock
            futures = [b.submit(i, "a" if i % 2 else "b") for i in range(1, 6)] + [b.submit(9, "bad")]
            with pytest.raises(Busy):
                b.submit(99, "a")
        assert first.result(5) == "a:0"
        assert [f.result(5) for f in futures[:5]] == ["a:1", "b:2", "a:3", "b:4", "a:5"]
        with pytest.raises(ValueError, match="broken input"):
            futures[5].result(5)
        assert seen[0] == ("a", [0])
        assert all(len(items) <= 3 for _, items in seen)  # at most max_batch
        assert ("a", [1, 3]) in seen and ("b", [2]) in seen  # one batch of 3 taken, split by key
    finally:
        b.close()
