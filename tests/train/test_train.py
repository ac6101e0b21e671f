"""gen train on a tiny random generalist: learning, exact resume, split batches, DDP on 2 CPU processes,
NaN stop, Ctrl-C, lifelong freezing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dense Whisper-shaped model (tiny.en vocabulary) and an English speak dataset (ASR + TTS)."""
    from generalist_cli.data import speak
    from generalist_cli.data.prepare import prepare
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.store.store import save_model

    root = tmp_path_factory.mktemp("train")
    tok = PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json"
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=1,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=1,
        n_audio_ffn=64,
        n_text_ffn=64,
        n_vocab=51864,
    )
    model = Generalist(cfg)
    with torch.no_grad():
        model.decoder.embed_tokens.weight.normal_(0, 0.02)  # GPT-2 style init for the tied embedding
    save_model(model, tok, root / "init", name="init", source="test", kind="test")
    lines = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()
    (root / "en.txt").write_text("\n".join(lines[:8]) + "\n")
    prepare(
        speak.items(text_file=root / "en.txt", lang="en", valid_every=4),
        out=root / "data",
        source="speak",
        options={},
        tokenizer=tok,
    )
    return root


def recipe_file(world: Path, name: str, ttt: str = "none", **train) -> Path:
    settings = {
        "lr": 3e-3,
        "batch_size": 4,
        "warmup_steps": 0,
        "max_steps": 6,
        "mixed_precision": "no",
        "log_every": 1,
        "save_every": 3,
        "schedule": "constant",
        **train,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    text = (
        f'[run]\nname = "{name}"\nout = "{world / "runs"}"\n\n[model]\ninit = "{world / "init"}"\nexperts = 2\n'
        f'top_k = 1\nttt = "{ttt}"\n\n[[data.sources]]\npath = "{world / "data"}"\n\n[train]\n{body}\n\n'
        f"[eval]\nevery = 0\nwer_examples = 2\nmax_examples = 4\nmax_new_tokens = 8\n"
    )
    path = world / f"{name}.toml"
    path.write_text("# test recipe: gen train recipes/" + name + ".toml\n" + text)
    return path


def metrics(world: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (world / "runs" / name / "metrics.jsonl").read_text().splitlines()]


def run_train(path: Path, *extra: str, **kw):
    from generalist_cli.recipe import load
    from generalist_cli.train.loop import train

    return train(load(path, list(extra)), **kw)


def test_overfits_one_batch(world):
    path = recipe_file(world, "overfit", max_steps=15, batch_size=4, lr=1e-2)
    # one source example set, the same 4 examples every step: the batch is drawn with a fixed step seed
    from generalist_cli.train import batches

    original = batches.TrainData.draw
    batches.TrainData.draw = lambda self, *, seed, step, n, **kw: original(self, seed=seed, step=0, n=n, **kw)
    try:
        run_train(path)
    finally:
        batches.TrainData.draw = original
    losses = [m["ce"] for m in metrics(world, "overfit")]
    assert losses[-1] < 0.6 * losses[0] and losses == sorted(losses, reverse=True), losses


@pytest.mark.slow
def test_outputs_resume_equality_and_checkpoints(world):
    full = recipe_file(world, "full", ttt="mlp", max_steps=6, keep_last=2)
    run_train(full)
    half = recipe_file(world, "half", ttt="mlp", max_steps=6, keep_last=2)
    run_train(half, "train.max_steps=3")
    result = run_train(half, resume=True)
    assert result.step == 6
    a, b = metrics(world, "full"), metrics(world, "half")
    assert [m["step"] for m in b] == list(range(1, 7))
    assert [m["loss"] for m in a] == [m["loss"] for m in b]  # bit-identical loss sequence
    run = world / "runs" / "full"
    assert (run / "recipe.resolved.toml").exists() and any((run / "tensorboard").iterdir())
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert (
        ckpts == ["last", "step_0000003", "step_0000006"]
        and os.readlink(run / "checkpoints" / "last") == "step_0000006"
    )
    row = a[-1]
    assert {
        "loss",
        "lr",
        "tasks",
        "tokens_per_s",
        "padding",
        "expert_util",
        "router_entropy",
        "ttt_gate",
        "ttt_inner_loss_ratio",
    } <= set(row)
    assert set().union(*(m["tasks"] for m in a)) == {"transcribe", "tts"}  # per-task losses over the run
    # a checkpoint is a model folder gen run can load
    from generalist_cli.store.load import load_model

    assert load_model(run / "checkpoints" / "last").config.n_experts == 2
    with pytest.raises(Exception, match="already holds checkpoints"):
        run_train(full)


def test_accumulation_gives_the_same_step(world):
    run_train(recipe_file(world, "acc1", max_steps=2))
    run_train(recipe_file(world, "acc2", max_steps=2, grad_accum=2))
    a, b = metrics(world, "acc1"), metrics(world, "acc2")
    # the first step sees identical weights: the same loss up to summation order; then the updates differ
    # only by rounding, so the second step stays close
    assert abs(a[0]["ce"] - b[0]["ce"]) < 1e-5 and abs(a[0]["mel_l1"] - b[0]["mel_l1"]) < 1e-5
    assert abs(a[1]["ce"] - b[1]["ce"]) < 2e-3


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_one(world):
    path = recipe_file(world, "ddp", max_steps=3, aux_loss_coef=0.0, z_loss_coef=0.0)
    run_train(recipe_file(world, "single", max_steps=3, aux_loss_coef=0.0, z_loss_coef=0.0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "2",
            "--cpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "generalist_cli",
            "train",
            str(path),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = metrics(world, "single"), metrics(world, "ddp")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-4, (x["loss"], y["loss"])


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message(world):
    path = recipe_file(world, "nan", max_steps=5, save_every=1, lr=1e30, clip=0.0)
    r = subprocess.run(
        [sys.executable, "-m", "generalist_cli", "train", str(path), "-q"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 1 and "the loss became" in r.stderr and "Traceback" not in r.stderr
    assert "last good checkpoint" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_saves_and_exits_130_then_resume_finishes(world, sig, code):
    name = f"interrupt{code}"
    path = recipe_file(world, name, max_steps=400, save_every=1000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "generalist_cli", "train", str(path), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = world / "runs" / name / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-1500:]
    assert "continue with --resume" in err
    from generalist_cli.train.checkpoint import latest, load_trainer

    ckpt = latest(world / "runs" / name)
    assert ckpt is not None and load_trainer(ckpt)["step"] >= 2
    done = run_train(path, "train.max_steps=" + str(load_trainer(ckpt)["step"] + 1), resume=True)
    assert done.step == load_trainer(ckpt)["step"] + 1


@pytest.mark.slow
def test_kill_9_then_resume_continues_from_the_last_complete_checkpoint(world):
    """SIGKILL gives no chance to save: the run resumes from the newest complete checkpoint (a half-written
    one is ignored), the metrics logged after it are replaced, and the losses equal an uninterrupted run."""
    from generalist_cli.train.checkpoint import latest, load_trainer

    steps = 24
    path = recipe_file(world, "killed", max_steps=steps, save_every=2, keep_last=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "generalist_cli", "train", str(path), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = world / "runs" / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 7):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    ckpt = latest(world / "runs" / "killed")
    killed_at = load_trainer(ckpt)["step"]
    assert 0 < killed_at < steps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed process: float sums in another thread count round differently
    try:
        done = run_train(path, resume=True)
        assert done.step == steps
        run_train(recipe_file(world, "unkilled", max_steps=steps, save_every=100))
    finally:
        torch.set_num_threads(threads)
    a, b = metrics(world, "killed"), metrics(world, "unkilled")
    assert [r["step"] for r in a] == list(range(1, steps + 1))  # no step twice, none missing
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) < 1e-5, (x["step"], x["loss"], y["loss"])


def test_lifelong_freezes_old_experts(world):
    from safetensors.torch import load_file

    base = recipe_file(world, "phase1", max_steps=2)
    run_train(base)
    phase2 = recipe_file(world, "phase2", max_steps=3)
    text = phase2.read_text().replace(
        f'init = "{world / "init"}"',
        f'init = "{world / "runs" / "phase1" / "checkpoints" / "last"}"\nadd_experts = 2\nfreeze_old_experts = true',
    )
    phase2.write_text(text)
    run_train(phase2)
    old = load_file(str(world / "runs" / "phase1" / "checkpoints" / "last" / "model.safetensors"))
    new = load_file(str(world / "runs" / "phase2" / "checkpoints" / "last" / "model.safetensors"))
    moe = [k for k in old if ".moe." in k and "logit_bias" not in k]
    assert moe
    for k in moe:
        assert torch.equal(new[k][:2], old[k]), k  # the two old experts (and router rows) are bit-identical
    assert any(not torch.equal(new[k][2:], new[k][:1].expand_as(new[k][2:])) for k in moe if "fc1_weight" in k)


@pytest.mark.slow
def test_loss_falls_on_the_tiny_recipe(tmp_path):
    """recipes/tiny.toml (whisper-tiny.en upcycled with TTT) on its data; fewer steps and experts keep it short."""
    from generalist_cli.data import speak
    from generalist_cli.data.prepare import prepare
    from generalist_cli.store.store import tokenizer_for

    prepare(
        speak.items(text_file=ROOT / "examples" / "sentences_en.txt", lang="en", voices=("en-us", "en")),
        out=tmp_path / "tiny-speak",
        source="speak",
        options={},
        tokenizer=tokenizer_for("whisper-tiny.en"),
    )
    text = (
        (ROOT / "recipes" / "tiny.toml")
        .read_text()
        .replace('path = "data/tiny-speak"', f'path = "{tmp_path / "tiny-speak"}"')
    )
    (tmp_path / "tiny.toml").write_text(text)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "generalist_cli",
            "train",
            str(tmp_path / "tiny.toml"),
            "-q",
            "--set",
            f"run.out={tmp_path / 'runs'}",
            "--set",
            "train.max_steps=3",
            "--set",
            "train.batch_size=4",
            "--set",
            "model.experts=2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"], [x["loss"] for x in rows]


def test_epoch_sampling_is_a_permutation_per_epoch_and_a_function_of_the_step(world):
    from generalist_cli.recipe import load
    from generalist_cli.train.batches import TrainData

    data = TrainData(load(recipe_file(world, "epochs")).data.sources)
    n = len(data.sets[0])
    full = data.draw(seed=1, step=0, n=n, sampling="epochs")  # a full batch: every example once
    assert sorted(i for _, i in full) == list(range(n))
    k = n // 2  # batches of k: steps 0 and 1 read positions 0 .. 2k-1 of epoch 0's permutation
    halves = data.draw(seed=1, step=0, n=k, sampling="epochs") + data.draw(seed=1, step=1, n=k, sampling="epochs")
    assert halves == full[: 2 * k]
    again = TrainData(load(recipe_file(world, "epochs")).data.sources)
    assert again.draw(seed=1, step=5, n=3, sampling="epochs") == data.draw(seed=1, step=5, n=3, sampling="epochs")
    assert data.draw(seed=1, step=1, n=n, sampling="epochs") != full  # the next epoch is reshuffled
    import numpy as np

    pairs = data.draw(seed=1, step=0, n=6)  # batched, cached reads equal row-by-row reads
    for a, b in zip(data.rows(pairs), [data.row(s, i) for s, i in pairs]):
        assert a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


def test_restricted_output_vocabulary(world):
    from dataclasses import replace

    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.load import load_model

    model: Generalist = load_model(world / "init").model
    ids = (11, 13, 50256)
    model.config = replace(model.config, output_tokens=ids)
    h = torch.randn(5, model.config.n_text_state)
    full = model.logits(h)
    assert torch.isinf(full).sum() == 5 * (full.shape[-1] - 3) and torch.isfinite(full[:, list(ids)]).all()
    sub, labels = model.target_logits(h, torch.tensor([13, 11, 50256, 13, 7]))
    assert sub.shape == (5, 3) and labels.tolist() == [1, 0, 2, 1, -100]  # unseen tokens are ignored
    assert torch.allclose(sub, full[:, list(ids)])
    from generalist_cli.recipe import RecipeError, load

    with pytest.raises(RecipeError, match="train.sampling"):
        load(recipe_file(world, "badsampling", sampling="shuffled"))


def test_packed_sampling_takes_rows_of_the_packing_sampler(world):
    from generalist_cli.model.packing import plan_rows
    from generalist_cli.recipe import load
    from generalist_cli.train.batches import TrainData

    data = TrainData(load(recipe_file(world, "packed")).data.sources)
    lengths = [int(x) for x in data.sets[0].with_format(None)["length"]]
    cap = max(lengths) + 10  # rows of one or two examples
    rows = data._epoch_rows(1, 0, cap)
    assert sorted(i for row in rows for _, i in row) == list(range(len(lengths)))  # an epoch: each once
    assert all(sum(lengths[i] for _, i in row) <= cap for row in rows)
    steps = [data.draw(seed=1, step=k, n=1, sampling="packed", capacity=cap) for k in range(len(rows))]
    assert steps == [row for row in rows]  # one row a step, in the sampler's order
    assert len(plan_rows([lengths[i] for _, i in steps[0]], cap)) == 1  # the step packs into its one row
    nxt = data.draw(seed=1, step=len(rows), n=1, sampling="packed", capacity=cap)  # epoch 1 begins
    assert nxt == data._epoch_rows(1, 1, cap)[0]
    result = run_train(recipe_file(world, "packedrun", max_steps=2, sampling="packed", batch_size=1))
    assert result.step == 2 and all(m["loss"] > 0 for m in metrics(world, "packedrun"))


@pytest.mark.slow
def test_checkpoints_record_their_tasks_and_gen_run_converts_with_them(world, tmp_path):
    """A checkpoint trained on transcribe + tts speaks text; conversions it was not trained for are refused."""
    import av

    run_train(recipe_file(world, "convert", max_steps=2))
    ckpt = world / "runs" / "convert" / "checkpoints" / "last"
    assert json.loads((ckpt / "meta.json").read_text())["tasks"] == ["transcribe", "tts"]
    env = {**os.environ, "GEN_HOME": os.environ["GEN_HOME"]}
    (tmp_path / "note.txt").write_text("Good morning.\nSee you soon.\n")

    def gen(*args):
        return subprocess.run(
            [sys.executable, "-m", "generalist_cli", "run", *args], capture_output=True, text=True, env=env, timeout=300
        )

    r = gen(str(tmp_path / "note.txt"), "--to", "speech", "--out", str(tmp_path / "note.wav"), "--model", str(ckpt))
    assert r.returncode == 0, r.stderr
    with av.open(str(tmp_path / "note.wav")) as c:
        assert c.streams.audio and c.streams.audio[0].sample_rate == 16000 and c.duration > 0
    # speech -> speech (through the model's own transcript); an empty text file fails alone, with one line
    from generalist_cli.media.audio import encode_audio
    from generalist_cli.media.espeak import synthesize_16k

    encode_audio(tmp_path / "said.m4a", synthesize_16k("Good morning."))
    (tmp_path / "empty.txt").write_text("  \n")
    r = gen(
        str(tmp_path / "said.m4a"),
        str(tmp_path / "empty.txt"),
        "--to",
        "speech",
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(ckpt),
    )
    assert r.returncode == 1 and "empty.txt: is empty" in r.stderr and "Traceback" not in r.stderr
    with av.open(str(tmp_path / "out" / "said.m4a")) as c:
        assert c.streams.audio and c.duration > 0
    assert not (tmp_path / "out" / "empty.m4a").exists()
    r = gen(str(tmp_path / "note.txt"), "--to", "text", "--lang", "en", "--model", str(ckpt))
    assert r.returncode == 2 and "cannot do text -> text translation (trained on transcribe, tts)" in r.stderr
    assert "Traceback" not in r.stderr
    r = gen(str(tmp_path / "note.txt"), "--to", "speech", "--model", str(ckpt))
    assert r.returncode == 2 and "--to speech writes audio" in r.stderr
    r = gen(str(tmp_path / "note.txt"), "--to", "speech", "--out", str(tmp_path / "x.wav"))  # plain Whisper
    assert r.returncode == 2 and "a plain Whisper" in r.stderr and "recipes/tts.toml" in r.stderr
    # speech -> text on a checkpoint trained on speech: packed by default (--no-pack gives padded windows)
    for flag in ([], ["--no-pack"]):
        r = gen(str(tmp_path / "said.m4a"), "--format", "json", "--model", str(ckpt), *flag)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert json.loads(r.stdout)["duration"] > 0


def test_tts_durations_follow_espeak_word_events():
    import numpy as np

    from generalist_cli.train.batches import durations_from_words

    # "Hello, world." : words start at 0.05 s and 0.6 s of a 1 s clip (100 frames)
    d = durations_from_words(["Hello", ",", " world", "."], np.array([0.05, 0.6]), 100)
    assert d.tolist() == [30, 30, 20, 20]  # word 1: frames 0-60 (leading silence included), word 2: 60-100
    d = durations_from_words(["A", " big", " dog"], np.array([0.0, 0.2, 0.5, 0.8]), 120)
    assert d.tolist() == [20, 30, 70] and int(d.sum()) == 120  # an extra event's frames join the last token


def test_tts_phoneme_inputs_last_from_each_phoneme_event_to_the_next(world):
    import numpy as np

    from generalist_cli.errors import GenError
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.media.espeak import phoneme_text
    from generalist_cli.recipe import load
    from generalist_cli.train.batches import TrainData, collate

    data = TrainData(load(recipe_file(world, "phonemes")).data.sources)
    tok = Tokenizer(world / "init" / "tokenizer.json", multilingual=False)
    rows = [r for r in data.rows([(0, i) for i in range(len(data.sets[0]))]) if r["task"] == "tts"]
    assert rows
    for row, e in zip(rows, collate(rows, tok, max_target_tokens=50, phonemes=True).examples):
        names = [str(n) for n in row["phonemes"]]
        assert tok.decode(e.source.tolist()) == phoneme_text(names)
        assert len(e.durations) == len(e.source) and int(e.durations.sum()) == e.tgt_mel.shape[0]
        pieces = [tok.decode([t]) for t in e.source.tolist()]
        firsts = [i for i, p in enumerate(pieces) if p.startswith(" ")]  # each phoneme's first token
        spans = np.add.reduceat(e.durations.numpy(), firsts)  # frames per phoneme
        bounds = np.round(np.asarray(row["phoneme_starts"][1:], dtype=np.float64) * 100)
        bounds = np.minimum(bounds, e.tgt_mel.shape[0])  # (a final pause event may fall past the last frame)
        assert np.array_equal(np.cumsum(spans)[:-1], bounds)  # phoneme k ends where phoneme k+1 starts
    old = dict(rows[0], phonemes=[], phoneme_starts=[])  # a row prepared before phonemes were recorded
    with pytest.raises(GenError, match="no phonemes"):
        collate([old], tok, max_target_tokens=50, phonemes=True)


def test_architecture_variants_train_from_recipe_keys(world):
    """model.segments / shared_experts (fine-grained), model.encoder = conformer and model.peer_experts build the
    variant from the recipe, train, and checkpoint with their config."""
    import math

    from generalist_cli.recipe import RecipeError, load
    from generalist_cli.store.load import load_model

    path = recipe_file(world, "variants", max_steps=3, save_every=3)
    text = path.read_text().replace(
        "experts = 2\n",
        'experts = 2\nsegments = 2\nshared_experts = 1\nencoder = "conformer"\npeer_experts = 64\npeer_top_k = 4\n',
    )
    path.write_text(text)
    result = run_train(path)
    assert result.step == 3 and math.isfinite(result.loss)
    c = load_model(world / "runs" / "variants" / "checkpoints" / "last").config
    assert (c.moe_segments, c.moe_shared, c.conformer, c.peer_experts, c.peer_top_k) == (2, 1, True, 64, 4)
    assert all(m["aux"] > 0 for m in metrics(world, "variants"))  # the DeepSeek balance loss is logged
    path.write_text(text.replace("peer_experts = 64", "peer_experts = 50"))
    with pytest.raises(RecipeError, match="model.peer_experts: must be a square number"):
        load(path)


def test_train_clock_leaves_out_paused_time_and_the_linear_decay_follows_the_budget():
    from generalist_cli.train.schedule import TrainClock, lr_factor

    now = [0.0]
    clock = TrainClock(5.0, clock=lambda: now[0])  # 5 s spent before a resume
    now[0] = 10.0
    with clock.paused():  # an evaluation: 100 s not counted
        now[0] = 110.0
    now[0] = 115.0
    assert clock.seconds() == 20.0
    assert clock.left(40.0) == 0.5 and clock.left(0.0) == 1.0 and clock.left(10.0) == 0.0
    # past warm-up the factor is the smaller of the step share left and the time share left
    assert lr_factor(50, warmup=10, total=110, time_left=0.25) == 0.25
    assert lr_factor(100, warmup=10, total=110, time_left=0.5) == 0.1
    assert lr_factor(50, warmup=10, total=110, schedule="constant", time_left=0.0) == 1.0
    assert lr_factor(5, warmup=10, total=110, time_left=0.0) == 0.5  # warm-up is by step


def test_a_wall_clock_budget_stops_the_run_saves_it_and_spaces_evaluations_by_minutes(world, monkeypatch):
    """Each optimizer step takes exactly 1 s of a fake clock; evaluations and saves take none of it."""
    from generalist_cli.train import loop
    from generalist_cli.train.schedule import TrainClock

    now = [0.0]
    monkeypatch.setattr(loop, "TrainClock", lambda spent=0.0: TrainClock(spent, clock=lambda: now[0]))
    step = loop.Trainer.step
    monkeypatch.setattr(loop.Trainer, "step", lambda self, **kw: (step(self, **kw), now.__setitem__(0, now[0] + 1))[0])
    path = recipe_file(world, "budget", max_steps=100_000, schedule="linear", save_every=100_000, log_every=100)
    result = run_train(path, "train.max_minutes=0.1", "eval.every_minutes=0.05", "eval.wer_examples=0")
    assert result.step == 6 and result.checkpoint.name == "step_0000006"  # 6 s budget, 1 s a step
    rows = metrics(world, "budget")
    assert [(r["step"], r["train_s"]) for r in rows] == [(6, 6.0)]  # the last step is logged
    assert rows[0]["lr"] == pytest.approx(3e-3 / 6)  # step 5 of 6 s: the linear decay follows the budget
    evals = [json.loads(x) for x in (world / "runs" / "budget" / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["train_s"]) for e in evals] == [(0, 0.0), (3, 3.0), (6, 6.0)]
    from generalist_cli.train import checkpoint as ckpt_io

    assert ckpt_io.load_trainer(result.checkpoint)["train_s"] == 6.0  # a resumed run continues the clock


def test_a_store_named_init_keeps_the_tasks_it_was_trained_on(world):
    """``model.init`` names a model in the store (not a folder): its recorded tasks still reach the checkpoint."""
    import shutil

    from generalist_cli.store.store import models_dir

    run_train(recipe_file(world, "tasks-src", max_steps=1))
    src = world / "runs" / "tasks-src" / "checkpoints" / "last"
    shutil.copytree(src, models_dir() / "tts-trained", dirs_exist_ok=True)
    meta = json.loads((models_dir() / "tts-trained" / "meta.json").read_text())
    meta["tasks"] = ["sign", "transcribe", "tts"]  # as if it had also been trained on sign videos
    (models_dir() / "tts-trained" / "meta.json").write_text(json.dumps(meta))
    path = recipe_file(world, "tasks-named", max_steps=1)
    path.write_text(path.read_text().replace(f'init = "{world / "init"}"', 'init = "tts-trained"'))
    result = run_train(path)
    assert json.loads((result.checkpoint / "meta.json").read_text())["tasks"] == ["sign", "transcribe", "tts"]


def test_models_are_built_from_their_final_config_keeping_every_old_weight():
    """The recipe's additions (motion stream, a deeper speech head) make a new model from the final config;
    the init's weights load into it, the motion stream starts at zero (same embeddings), and a mismatch fails."""
    import dataclasses

    from generalist_cli.recipe import ModelSection
    from generalist_cli.train.loop import _final_config, _with_config
    from tests.conftest import generalist

    g = generalist(live=False)
    final = _final_config(g.config, ModelSection(video_motion=True, speech_layers=g.config.speech_layers + 1))
    assert (final.video_motion, final.speech_layers) == (True, g.config.speech_layers + 1)
    new = _with_config(g, final)
    assert new is not g and new.config == final and new.video.motion is not None
    old = g.state_dict()
    for k, v in new.state_dict().items():
        if k in old and not k.startswith("speech_head."):
            assert torch.equal(v, old[k]), k
    patches = torch.rand(4 * 2 * 2, 2 * 8 * 8 * 3) * 2 - 1
    with torch.no_grad():
        assert torch.equal(new.embed_patches(patches, (4, 2, 2)), g.embed_patches(patches, (4, 2, 2)))
    assert _with_config(g, g.config) is g  # nothing asked: the same model
    with pytest.raises(ValueError, match="do not fit"):
        _with_config(g, dataclasses.replace(g.config, n_text_ffn=2 * g.config.n_text_ffn))


def test_missing_data_is_named_with_its_prepare_command_before_any_model_work(tmp_path):
    """``gen train recipes/multitask.toml`` on a fresh machine: one error naming each missing source and the
    ``gen prepare`` command of the recipe's header that makes it; exit 1, and no run folder (no model work)."""
    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "generalist_cli", "train", str(ROOT / "recipes" / "multitask.toml")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "make it with: gen prepare kathbath --lang hi --out data/kathbath-hi" in r.stderr
    assert "gen prepare wiki-translate --src-lang en --tgt-lang hi --out data/wiki-en-hi" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_gen_export_defaults_to_the_default_model_and_an_exports_folder():
    import inspect

    from generalist_cli.cli.export import default_out, export

    assert inspect.signature(export).parameters["model"].default == "whisper-base"
    assert default_out("whisper-base", "int8") == Path("exports/whisper-base-int8")
    assert default_out("runs/asr-hi/checkpoints/last", "none") == Path("exports/asr-hi-last-fp32")
