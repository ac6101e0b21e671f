"""Fuzz tests (hypothesis): random bytes and random structures given to the parsers of user input give a
GenError (one clear line) or a valid result, never another exception, a crash or a hang; and gen doctor."""

from __future__ import annotations

import io
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generalist_cli.errors import GenError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

toml_value = st.recursive(
    st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.booleans(),
        st.text(string.printable, max_size=12),
    ),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(
    [
        "lr",
        "batch_size",
        "max_steps",
        "init",
        "experts",
        "ttt",
        "path",
        "weight",
        "every",
        "sampling",
        "output_tokens",
        "name",
        "seed",
        "betas",
        "capacity",
        "bogus",
    ]
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["run", "model", "train", "eval", "data", "extra"]),
        st.dictionaries(keys, toml_value, max_size=5),
        max_size=5,
    )
)
def test_random_recipes_load_or_fail_cleanly(tmp_path_factory, table):
    from generalist_cli.recipe import load

    def value(v):
        return json.dumps(v) if not isinstance(v, list) else "[" + ", ".join(value(x) for x in v) + "]"

    text = "\n".join(
        f"[{section}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in body.items()) for section, body in table.items()
    )
    path = tmp_path_factory.mktemp("fuzz") / "r.toml"
    path.write_text(text)
    try:
        load(path)
    except GenError as exc:
        assert str(path) in exc.message and "\n" not in exc.message


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_are_not_media(data):
    from generalist_cli.media.audio import decode_audio

    try:
        audio = decode_audio(io.BytesIO(data))
    except GenError:
        return
    assert audio.ndim == 1  # some byte strings are valid (e.g. raw ADTS frames): then it must be audio


@FAST
@given(
    st.lists(
        st.lists(
            st.text(string.printable.replace("\t", "").replace("\n", "").replace("\r", "") + '"।॥\u200d', max_size=20),
            min_size=1,
            max_size=5,
        ),
        max_size=6,
    )
)
def test_random_tsv_tables_give_every_line_as_a_row_or_a_reason(tmp_path_factory, table):
    from generalist_cli.data.tables import read_table as rows

    path = tmp_path_factory.mktemp("fuzz") / "m.tsv"
    text = "\n".join("\t".join(r) for r in table)
    path.write_text(text, encoding="utf-8")
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")  # a last "\n" ends a line
    try:
        got = list(rows(path))
    except GenError as exc:
        assert "\n" not in exc.message
        return
    assert [r.line for r in got] == list(range(2, len(lines) + 1))  # every line after the header, in order
    for r, values in zip(got, table[1:]):
        assert bool(r.problem) != bool(r.fields)  # read, or rejected with a reason
        if r.fields:
            assert list(r.fields.values()) == values[: len(r.fields)]  # quotes and all, as written


def test_doctor_reports_versions_models_and_the_hub(monkeypatch):
    from generalist_cli.cli.doctor import collect

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = collect(hub=True)
    assert report["packages"]["torch"] and report["packages"]["av"] and report["packages"]["onnxruntime"]
    assert "CPUExecutionProvider" in report["onnxruntime_providers"]
    assert {"name": "whisper-base", "where": "package"} in report["models"]
    assert report["hub"].startswith("offline") and report["cuda"]["available"] in (True, False)


@pytest.mark.parametrize("args", [["doctor", "--json", "--no-hub"]])
def test_doctor_cli_json(args):
    from tests.conftest import gen

    r = gen(*args)
    assert r.returncode == 0, r.stderr
    assert {"gen", "python", "packages", "cuda", "models", "hub"} <= set(json.loads(r.stdout))
