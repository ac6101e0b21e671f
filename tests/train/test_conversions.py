"""Conversions trained end to end on tiny scratch generalists, then run through ``gen run``: sign video ->
text (synthetic INCLUDE-layout videos, label + probability in json), text -> text translation (a parallel
TSV, BLEU/chrF in the training evaluation, the translation written to a file) and text -> speech from
phonemes (the mel and the durations learned, the audio written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def test_synthetic_signs_are_deterministic_and_differ_by_sign_and_signer():
    from generalist_cli.data.synthetic_signs import make_signer, render

    people = [make_signer(np.random.default_rng(s)) for s in (1, 2)]
    a = render("Hello", people[0], np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.ndim == 4 and a.shape[1:] == (112, 112, 3) and len(a) >= 8
    assert np.array_equal(a, render("Hello", people[0], np.random.default_rng(5)))
    b = render("Big", people[0], np.random.default_rng(5))
    c = render("Hello", people[1], np.random.default_rng(5))
    n = min(len(a), len(b), len(c))
    assert np.abs(a[:n].astype(int) - b[:n]).mean() > 1.0 and np.abs(a[:n].astype(int) - c[:n]).mean() > 10.0
    # the hand moves: frames of one take differ by more than the sensor noise
    assert np.abs(a[0].astype(int) - a[len(a) // 2]).max() > 100


def test_release_splits_by_signer_and_bad_counts_fail(tmp_path):
    from generalist_cli.data import include
    from generalist_cli.data.synthetic_signs import write_release
    from generalist_cli.errors import GenError

    counts = write_release(tmp_path / "raw", signs=2, signers=4, takes=1, val_signers=1, test_signers=1)
    assert counts == {"train": 4, "val": 2, "test": 2}
    found = list(include.items(local=tmp_path / "raw"))
    assert sorted(i.text for i in found if i.split == "test") == ["hello", "thank you"]
    by_split = {}
    for i in found:
        by_split.setdefault(i.split, set()).add(Path(i.source).stem[:-1])
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"]
    with pytest.raises(GenError, match="leaves no training signer"):
        write_release(tmp_path / "x", signers=3, val_signers=1, test_signers=2)


@pytest.mark.slow
@pytest.mark.parametrize("tokens", ["tubelets", "motion-map"])
def test_a_scratch_model_learns_signs_and_gen_run_names_them(tmp_path, tokens):
    from generalist_cli.data import include
    from generalist_cli.data.prepare import prepare
    from generalist_cli.data.synthetic_signs import write_release
    from generalist_cli.recipe import load
    from generalist_cli.store.store import tokenizer_for
    from generalist_cli.train.loop import train

    write_release(tmp_path / "raw", signs=2, signers=2, takes=2, val_signers=0, test_signers=1)
    prepare(
        include.items(local=tmp_path / "raw"),
        out=tmp_path / "data",
        source="include",
        options={},
        tokenizer=tokenizer_for("whisper-base"),
    )
    recipe = _recipe(
        tmp_path, "signs", f'[[data.sources]]\npath = "{tmp_path / "data"}"\n', model=f'video_tokens = "{tokens}"'
    )
    result = train(load(recipe))
    assert result.loss < 0.1  # the label prior alone gives ~0.28 (hello vs thank you)
    ckpt = tmp_path / "runs" / "signs" / "checkpoints" / "last"
    # one training video of each sign (signer 0 trains; signer 1 is held out)
    picks = [sorted(d.glob("MVI_100*.MOV"))[0] for d in sorted((tmp_path / "raw").glob("*/*. *"))]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            *map(str, picks),
            "--to",
            "text",
            "--format",
            "json",
            "--model",
            str(ckpt),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["label"] for row in rows] == ["hello", "thank you"]
    assert all(0.5 < row["probability"] <= 1.0 for row in rows)
    # a .mov without a video track, and one cut short: one line each, exit 1, the good clip still named
    from generalist_cli.media.audio import encode_audio

    encode_audio(tmp_path / "sound-only.mp4", np.zeros(16000, np.float32))
    (tmp_path / "sound-only.mp4").rename(tmp_path / "sound-only.mov")
    (tmp_path / "cut.mov").write_bytes(picks[0].read_bytes()[:400])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(tmp_path / "sound-only.mov"),
            str(tmp_path / "cut.mov"),
            str(picks[0]),
            "--to",
            "text",
            "--from",
            "video",
            "--format",
            "json",
            "--model",
            str(ckpt),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = r.stderr.strip().splitlines()
    assert any("sound-only.mov" in e and "video" in e for e in errors) and any("cut.mov" in e for e in errors), errors
    assert [json.loads(x)["label"] for x in r.stdout.splitlines()] == ["hello"]


@pytest.mark.slow
def test_a_scratch_model_learns_to_speak_phonemes_and_gen_run_writes_the_audio(tmp_path):
    import av

    from generalist_cli.data import speak
    from generalist_cli.data.prepare import prepare
    from generalist_cli.evaluate.report import tts_scores
    from generalist_cli.media.espeak import synthesize
    from generalist_cli.recipe import load
    from generalist_cli.store.load import load_model
    from generalist_cli.store.store import tokenizer_for
    from generalist_cli.train.batches import collate, read_rows
    from generalist_cli.train.loop import train

    lines = ["Good morning.", "See you soon."]
    (tmp_path / "say.txt").write_text("\n".join(lines) + "\n")
    prepare(
        speak.items(
            text_file=tmp_path / "say.txt", lang="en", tasks=("tts",), rate=(160, 160), pitch=(50, 50), split="train"
        ),
        out=tmp_path / "data",
        source="speak",
        options={},
        tokenizer=tokenizer_for("whisper-base"),
    )
    recipe = _recipe(
        tmp_path,
        "tts",
        f'[[data.sources]]\npath = "{tmp_path / "data"}"\neval_split = ""\n',
        model='tts_input = "phonemes"',
        batch_size=2,
        max_steps=150,
        save_every=150,
    )
    train(load(recipe))
    ckpt = tmp_path / "runs" / "tts" / "checkpoints" / "last"
    loaded = load_model(ckpt)
    assert loaded.config.tts_input == "phonemes"
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "data"))["train"].with_format("numpy")
    rows = read_rows([ds], [(0, i) for i in range(len(ds))])
    examples = collate(rows, loaded.tokenizer, max_target_tokens=50, phonemes=True).examples
    assert tts_scores(loaded.model, examples, rows, False, asr_model=None)["mel_l1"] < 0.2  # step 0: ~0.9
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(tmp_path / "say.txt"),
            "--to",
            "speech",
            "--lang",
            "en",
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "say.wav"),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "say.wav")) as c:
        seconds = float(c.duration) / 1e6
    espeak = sum(len(synthesize(x, rate=160, pitch=50).audio) / 22050 for x in lines) + 0.3  # lines + the gap
    assert seconds == pytest.approx(espeak, rel=0.15)  # the predicted durations were learned


def _recipe(tmp_path: Path, name: str, sources: str, *, model: str = "", **train) -> Path:
    settings = {
        "lr": 3e-3,
        "batch_size": 4,
        "sampling": "epochs",
        "warmup_steps": 0,
        "max_steps": 60,
        "schedule": "constant",
        "mixed_precision": "no",
        "log_every": 10,
        "save_every": 60,
        **train,
    }
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""# test: gen train {name}.toml
[run]
name = "{name}"
out = "{tmp_path / "runs"}"
[model]
init = "scratch"
tokenizer = "whisper-base"
scratch_width = 64
scratch_heads = 2
experts = 2
top_k = 1
ttt = "none"
output_tokens = "targets"
{model}
{sources}
[train]
"""
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        + """
[eval]
every = 0
wer_examples = 4
max_new_tokens = 60
"""
    )
    return path


@pytest.mark.slow
def test_a_scratch_model_learns_to_translate_and_gen_run_writes_it(tmp_path):
    from generalist_cli.data import wiki_translate
    from generalist_cli.data.prepare import prepare
    from generalist_cli.recipe import load
    from generalist_cli.store.store import tokenizer_for
    from generalist_cli.train.loop import train

    pairs = [("Sita drinks tea.", "सीता चाय पीती है।"), ("Ram reads a book.", "राम किताब पढ़ता है।")]
    (tmp_path / "pairs.tsv").write_text(
        "eng_Latn\thin_Deva\n" + "".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8"
    )
    tok = tokenizer_for("whisper-base")
    for split in ("train", "valid"):
        prepare(
            wiki_translate.items(src_lang="en", tgt_lang="hi", local=tmp_path / "pairs.tsv", into=split),
            out=tmp_path / split,
            source="wiki-translate",
            options={},
            tokenizer=tok,
        )
    sources = (
        f'[[data.sources]]\npath = "{tmp_path / "train"}"\neval_split = ""\n'
        f'[[data.sources]]\npath = "{tmp_path / "valid"}"\nsplit = ""\neval_split = "valid"\n'
    )
    result = train(load(_recipe(tmp_path, "translate", sources, batch_size=2, max_steps=80, save_every=80)))
    scores = result.evals[-1]["valid"]
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0) and scores["wer"] == 0.0
    ckpt = tmp_path / "runs" / "translate" / "checkpoints" / "last"
    (tmp_path / "doc.txt").write_text("Ram reads a book.\nSita drinks tea.\n", encoding="utf-8")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "run",
            str(tmp_path / "doc.txt"),
            "--to",
            "text",
            "--lang",
            "hi",
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "doc.hi.txt"),
        ],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "doc.hi.txt").read_text(encoding="utf-8").split() == "राम किताब पढ़ता है। सीता चाय पीती है।".split()
