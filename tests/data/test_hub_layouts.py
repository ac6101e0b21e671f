"""The Hub adapters on local replicas of the real Hub datasets (tests/data/hub_replicas.py, built from the
dataset cards), read by the real ``datasets.load_dataset`` through ``--repo PATH``: the Hub's code path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generalist_cli.data import kathbath, wiki_translate
from generalist_cli.data.prepare import prepare
from generalist_cli.errors import GenError
from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k
from tests.data import hub_replicas

HINDI = ["नमस्ते दुनिया", "आज मौसम अच्छा है", "यह एक परीक्षा है"]


@pytest.fixture(scope="module")
def tokenizer():
    from generalist_cli.store.sources import PACKAGES

    return PACKAGES["whisper-base"].folder_path() / "tokenizer.json"


@pytest.fixture(scope="module")
def kathbath_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kathbath-hub")
    data = []
    for i, text in enumerate(HINDI):
        p = encode_audio(root / f"{i}.m4a", synthesize_16k(text, voice="hi", rate=150))
        data.append((f"84446{i}-1072-m.m4a", p.read_bytes(), text))
    return hub_replicas.kathbath(root / "Kathbath", {"train": data[:2], "valid": data[2:]})


def test_kathbath_hub_layout_with_only_train_and_valid_skips_the_test_splits_saying_so(kathbath_repo, tokenizer,
                                                                                         tmp_path):  # fmt: skip
    said = []
    items = kathbath.items(lang="hindi", repo=str(kathbath_repo), on_skip=said.append)  # every split, the default
    report = prepare(items, out=tmp_path / "kb", source="kathbath", options={}, tokenizer=tokenizer)
    assert report.counts == {"train": 2, "valid": 1} and (report.read, report.taken) == (3, 3)
    assert len(said) == 2 and all("skipped" in s for s in said)
    assert "'test_known'" in said[0] and "'test_unknown'" in said[1]
    import datasets

    row = datasets.load_from_disk(str(tmp_path / "kb"))["valid"][0]
    assert row["id"] == "kathbath-hi-valid-844462-1072-m" and row["text"] == HINDI[2]
    with pytest.raises(GenError, match="has none of the Kathbath hindi splits test_known"):
        list(kathbath.items(lang="hi", repo=str(kathbath_repo), splits=("test_known",)))


@pytest.mark.slow
def test_gen_prepare_kathbath_repo_path_prints_one_line_per_missing_split(kathbath_repo, tmp_path):
    from tests.conftest import gen

    r = gen("prepare", "kathbath", "--repo", str(kathbath_repo), "--out", str(tmp_path / "o"))  # no --lang
    assert r.returncode == 0, r.stderr
    assert "no --lang given; preparing Hindi (hi)" in r.stderr
    assert r.stderr.count("skipped") == 2 and "Traceback" not in r.stderr
    assert "3 examples (train 2, valid 1); items 3 read = 3 taken + 0 rejected" in r.stdout


def test_wiki_translated_articles_become_aligned_sentence_pairs(tmp_path, tokenizer):
    articles = [
        {"eng_Latn": ["The river is long.", "It flows east."], "hin_Deva": ["नदी लंबी है।", "यह पूर्व में बहती है।"],
         "ben_Beng": ["নদীটি দীর্ঘ।", "এটি পূর্বে প্রবাহিত হয়।"]},
        {"eng_Latn": ["One.", "Two.", "Three."], "hin_Deva": ["एक।", "दो।"], "ben_Beng": []},  # unequal lists
        {"eng_Latn": [], "hin_Deva": [], "ben_Beng": []},  # an empty article
        {"eng_Latn": ["Kept.", ""], "hin_Deva": ["रखा।", "खाली नहीं"], "ben_Beng": ["", ""]},
    ]  # fmt: skip
    repo = hub_replicas.wiki_translated(tmp_path / "bhasha-wiki-translated", articles)
    items = wiki_translate.items(src_lang="en", tgt_lang="hi", hub_id=str(repo), into="train")
    report = prepare(items, out=tmp_path / "wt", source="wiki", options={}, tokenizer=tokenizer)
    import datasets

    ds = datasets.load_from_disk(str(tmp_path / "wt"))["train"]
    pairs = {(r["src_text"], r["text"]) for r in ds}
    assert pairs == {("The river is long.", "नदी लंबी है।"), ("It flows east.", "यह पूर्व में बहती है।"),
                     ("Kept.", "रखा।")}  # fmt: skip
    reasons = sorted(json.loads(x)["reason"] for x in (tmp_path / "wt" / "rejected.jsonl").read_text().splitlines())
    assert reasons == ["3 eng_Latn sentences, 2 hin_Deva: not aligned", "an article with no sentences",
                       "empty source text"]  # fmt: skip
    assert report.read == report.taken + report.n_rejected == 6
