"""Recipes: every shipped one loads; bad keys and types name the file and key; overrides; round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from generalist_cli.recipe import RecipeError, dump, load

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_shows_its_command(path):
    recipe = load(path)
    assert recipe.data.sources
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any(f"gen train recipes/{path.name}" in line for line in header), "header must show the command"


def test_multitask_has_the_mission_hyper_parameters():
    r = load(Path(__file__).resolve().parents[1] / "recipes" / "multitask.toml")
    t = r.train
    assert (t.lr, t.batch_size, r.eval.batch_size, r.run.seed) == (1.7e-5, 32, 32, 42)
    assert (t.betas, t.eps, t.schedule, t.warmup_steps, t.max_steps) == ((0.9, 0.98), 1e-6, "linear", 10_000, 5_000)
    assert t.mixed_precision != "no"
    assert {Path(s.path).name.split("-")[0] for s in r.data.sources} >= {"kathbath", "include", "wiki"}


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "r.toml"
    p.write_text('[[data.sources]]\npath = "data/x"\n' + text)
    return p


def test_errors_name_the_file_and_key(tmp_path):
    with pytest.raises(RecipeError, match=r"r.toml: train: unknown key 'learning_rate'"):
        load(_write(tmp_path, "[train]\nlearning_rate = 1e-4\n"))
    with pytest.raises(RecipeError, match=r"r.toml: train.batch_size: expected an integer, got 'eight'"):
        load(_write(tmp_path, '[train]\nbatch_size = "eight"\n'))
    with pytest.raises(RecipeError, match=r"r.toml: train.betas: expected 2 values"):
        load(_write(tmp_path, "[train]\nbetas = [0.9]\n"))
    with pytest.raises(RecipeError, match=r"r.toml: model.ttt: must be 'mlp' or 'none'"):
        load(_write(tmp_path, '[model]\nttt = "lstm"\n'))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load(_write(tmp_path, "[train\n"))
    with pytest.raises(RecipeError, match="recipe not found"):
        load(tmp_path / "none.toml")


def test_overrides_and_round_trip(tmp_path):
    r = load(
        _write(tmp_path, "[train]\nlr = 1e-3\n"),
        ["train.lr=2e-4", "run.name=x", "model.ttt=none", "train.betas=[0.8, 0.9]"],
    )
    assert (r.train.lr, r.run.name, r.model.ttt, r.train.betas) == (2e-4, "x", "none", (0.8, 0.9))
    with pytest.raises(RecipeError, match="train.max_steps: expected an integer"):
        load(_write(tmp_path, ""), ["train.max_steps=lots"])
    (tmp_path / "dumped.toml").write_text(dump(r))
    again = load(tmp_path / "dumped.toml")
    assert again.train == r.train and again.model == r.model and again.data == r.data


def test_upcycling_keys_are_declared_once_for_recipe_and_command_line(tmp_path):
    """UpcycleOptions (model/config.py) is the recipe's upcycling keys, gen models init's help and the one check."""
    import dataclasses

    import typer

    from generalist_cli.cli import app
    from generalist_cli.model.config import FrontEndOptions, UpcycleOptions
    from generalist_cli.recipe import ModelSection

    keys = [f.name for f in dataclasses.fields(UpcycleOptions) + dataclasses.fields(FrontEndOptions)]
    assert set(keys) <= {f.name for f in dataclasses.fields(ModelSection)}
    assert FrontEndOptions(video_tokens="pixels", speech_layers=-1).problems() == [
        "video_tokens: must be one of tubelets, tubelets+motion-map, motion-map, pose",
        "speech_layers: must be 0 (the model's own) or more",
    ]
    with pytest.raises(RecipeError, match=r"r.toml: model.tts_input: must be 'text' or 'phonemes'"):
        load(_write(tmp_path, '[model]\ntts_input = "ipa"\n'))
    assert UpcycleOptions().problems() == []
    bad = UpcycleOptions(experts=4, top_k=5, segments=2, shared_experts=2, ttt_mini_batch=0)
    assert bad.problems(lambda k: f"model.{k}") == [
        "model.top_k 5 is more than model.experts 4 (or below 1)",
        "model.segments: must be >= 1, with 0 <= model.shared_experts < model.segments",
        "model.ttt_mini_batch: must be at least 1",
    ]
    with pytest.raises(RecipeError, match=r"r.toml: model.top_k 5 is more than model.experts 4"):
        load(_write(tmp_path, "[model]\nexperts = 4\ntop_k = 5\n"))
    r = load(_write(tmp_path, "[model]\nttt_mini_batch = 64\n"))
    assert r.model.upcycle_kwargs()["ttt_mini_batch"] == 64
    init = typer.main.get_command(app).commands["models"].commands["init"]
    helps = {p.name: p.help for p in init.params}
    for key in ("ttt", "encoder", "ttt_mini_batch"):
        assert helps[key] == UpcycleOptions.help(key), key


def test_upcycle_builds_the_declared_ttt_mini_batch():
    from generalist_cli.model.config import UpcycleOptions
    from generalist_cli.model.upcycle import upcycle
    from tests.conftest import dense

    model = upcycle(dense(), **UpcycleOptions(experts=2, top_k=1, ttt_mini_batch=8).upcycle_kwargs())
    assert model.config.ttt_mini_batch == 8 and model.config.n_experts == 2
    assert all(layer.ttt.mini_batch == 8 for layer in model.encoder.layers)
