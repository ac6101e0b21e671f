"""gen prepare: every adapter on fixtures in its real layout, hub code paths mocked at load_dataset only,
rejection report, resume after interruption, multiprocess == single process, packing sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generalist_cli.data import include, kathbath, manifest, speak, wiki_translate
from generalist_cli.data.prepare import prepare
from generalist_cli.data.sampler import PackingSampler
from generalist_cli.media.audio import encode_audio
from generalist_cli.media.espeak import synthesize_16k

HINDI = ["नमस्ते, आप कैसे हैं", "आज मौसम अच्छा है", "मुझे किताबें पढ़ना पसंद है", "हम बाज़ार जा रहे हैं"]


@pytest.fixture(scope="module")
def tokenizer():
    from generalist_cli.store.sources import PACKAGES

    return PACKAGES["whisper-base"].folder_path() / "tokenizer.json"


def load(out: Path):
    import datasets

    return datasets.load_from_disk(str(out))


def rejected(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def kathbath_release(tmp_path_factory) -> Path:
    """hindi/{train,valid}/audio/<id>-<speaker>-<m|f>.m4a + a headerless transcription_n2w.txt, with bad rows."""
    root = tmp_path_factory.mktemp("kathbath")
    for split, texts in (("train", HINDI[:3]), ("valid", HINDI[3:])):
        folder = root / "hindi" / split / "audio"
        folder.mkdir(parents=True)
        lines = []
        for i, text in enumerate(texts):
            name = f"84446{i}-1072{i}-{'mf'[i % 2]}"
            encode_audio(folder / f"{name}.m4a", synthesize_16k(text, voice="hi", rate=150))
            lines.append(f"{name}\t{text}")
        if split == "train":
            lines.append("999999-1-m\tफ़ाइल नहीं है")  # missing audio
            encode_audio(folder / "777-2-f.m4a", np.zeros(16_000, np.float32))
            lines.append("777-2-f\tचुप")  # silent
            encode_audio(folder / "778-2-f.m4a", 0.1 * np.sin(np.arange(31 * 16_000) / 10).astype(np.float32))
            lines.append("778-2-f\tबहुत लंबा")  # 31 s: longer than a window
            encode_audio(folder / "779-2-f.m4a", synthesize_16k("खाली", voice="hi"))
            lines.append("779-2-f\t ")  # empty text
        (root / "hindi" / split / "transcription_n2w.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_kathbath_local_release(kathbath_release, tokenizer, tmp_path):
    items = kathbath.items(lang="hindi", splits=("train", "valid"), local=kathbath_release)
    report = prepare(items, out=tmp_path / "kb", source="kathbath", options={}, tokenizer=tokenizer)
    ds = load(tmp_path / "kb")
    assert report.counts == {"train": 3, "valid": 1} and set(ds) == {"train", "valid"}
    assert (report.read, report.taken, report.n_rejected) == (8, 4, 4)  # every transcript line accounted for
    row = ds["train"][0]
    assert row["task"] == "transcribe" and row["lang"] == "hi" and row["modality"] == "audio"
    assert np.asarray(row["mel"]).shape[1] == 80 and row["length"] == -(-len(row["mel"]) // 2)
    assert 0.5 < row["duration"] < 10 and row["tgt_tokens"]
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(tokenizer)).decode(row["tgt_tokens"]).strip() == HINDI[0]
    reasons = {r["id"].split("-")[-3] + "-" + r["id"].split("-")[-2]: r["reason"] for r in rejected(tmp_path / "kb")}
    assert len(reasons) == 4
    assert any("not found" in r for r in reasons.values())
    assert any("silent" in r for r in reasons.values())
    assert any(r.startswith("audio lasts 31.") and "outside" in r for r in reasons.values()), reasons
    assert any("empty text" in r for r in reasons.values())
    stamp = json.loads((tmp_path / "kb" / "prepare.json").read_text())
    assert stamp["status"] == "complete" and stamp["counts"] == {"train": 3, "valid": 1} and stamp["rejected"] == 4


def test_kathbath_language_names_and_errors():
    assert kathbath.language("hin") == "hi" and kathbath.language("Odia") == "or" and kathbath.language("ta") == "ta"
    from generalist_cli.errors import UsageError

    with pytest.raises(UsageError, match="Kathbath has no language 'french'"):
        kathbath.language("french")


def _fake_hub(monkeypatch, tables: dict, calls: list):
    """datasets.load_dataset replaced at the boundary: a streamed IterableDataset built from local rows."""
    import datasets

    def fake(path, name=None, *, split, streaming, token=None, **kw):
        calls.append((path, name, split, streaming))
        if (path, name, split) not in tables:
            raise FileNotFoundError(f"no split {split}")
        return tables[(path, name, split)].to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake)


def test_kathbath_hub_streaming(monkeypatch, tokenizer, tmp_path):
    import datasets

    audio = []
    for i, text in enumerate(HINDI[:2]):
        p = encode_audio(tmp_path / f"a{i}.m4a", synthesize_16k(text, voice="hi"))
        audio.append({"bytes": p.read_bytes(), "path": f"84446{i}-1-m.m4a"})
    table = datasets.Dataset.from_dict({"audio_filepath": audio, "text": HINDI[:2], "gender": ["male", "male"]})
    table = table.cast_column("audio_filepath", datasets.Audio(decode=False))
    calls = []
    _fake_hub(monkeypatch, {("ai4bharat/Kathbath", "hindi", "valid"): table}, calls)
    items = kathbath.items(lang="hi", splits=("valid",))
    report = prepare(items, out=tmp_path / "kb", source="kathbath", options={}, tokenizer=tokenizer)
    assert calls == [("ai4bharat/Kathbath", "hindi", "valid", True)]
    assert report.counts == {"valid": 2}
    assert load(tmp_path / "kb")["valid"][1]["id"] == "kathbath-hi-valid-844461-1-m"
    with pytest.raises(Exception, match="cannot load ai4bharat/Kathbath .hindi. split 'train'"):
        list(kathbath.items(lang="hi", splits=("train",)))


@pytest.fixture(scope="module")
def include_release(tmp_path_factory) -> Path:
    from generalist_cli.media.video import encode_video

    root = tmp_path_factory.mktemp("include")
    rng = np.random.default_rng(0)
    for category, signs in (("Greetings", ["1. Hello", "2. Good Morning"]), ("Colours", ["12. Red"])):
        for sign in signs:
            for k in range(2):
                frames = rng.integers(0, 255, (12, 60, 80, 3), dtype=np.uint8)
                (root / category / sign).mkdir(parents=True, exist_ok=True)
                encode_video(root / category / sign / f"MVI_{abs(hash((sign, k))) % 9000 + 1000}.MOV", frames, fps=10)
    videos = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.MOV"))
    (root / "include_train.csv").write_text("path,label\n" + "\n".join(f"{v},x" for v in videos[:4]) + "\n")
    (root / "include_test.csv").write_text("path,label\n" + "\n".join(f"{v},x" for v in videos[4:]) + "\n")
    hello = [v for v in videos if "Hello" in v]
    (root / "include50_train.csv").write_text("\n".join(hello[:1]) + "\n")
    (root / "include50_test.csv").write_text("\n".join(hello[1:]) + "\n")
    return root


def test_include_local_release(include_release, tokenizer, tmp_path):
    report = prepare(
        include.items(local=include_release), out=tmp_path / "inc", source="include", options={}, tokenizer=tokenizer
    )
    assert report.counts == {"train": 4, "test": 2}
    ds = load(tmp_path / "inc")
    row = ds["train"][0]
    assert row["task"] == "sign" and row["modality"] == "video" and row["text"] in ("red", "hello", "good morning")
    patches = np.asarray(row["patches"])
    assert ds["train"].features["patches"].dtype == "uint8" and ds["train"].features["mel"].dtype == "float16"
    assert patches.shape[1] == 2 * 16 * 16 * 3 and 0 <= patches.min() and patches.max() <= 255
    assert row["grid"][1:] == [7, 7] and len(patches) == row["length"] == np.prod(row["grid"])
    labels = {r["text"]: r["label"] for s in ds for r in ds[s]}
    assert labels == {"good morning": 0, "hello": 1, "red": 2}
    sub = prepare(
        include.items(local=include_release, subset="include50"),
        out=tmp_path / "inc50",
        source="include",
        options={"subset": "include50"},
        tokenizer=tokenizer,
    )
    assert sub.counts == {"train": 1, "test": 1}
    assert {r["text"] for s in load(tmp_path / "inc50") for r in load(tmp_path / "inc50")[s]} == {"hello"}


def test_include_videos_outside_the_layout_or_the_lists_are_rejected_not_dropped(include_release, tokenizer, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(include_release, copy)
    stray = next(copy.rglob("*.MOV"))
    shutil.copy(stray, copy / "MVI_0050_ (1).MOV")  # at the top: no category or sign
    shutil.copy(stray, stray.parent / "MVI_9999.MOV")  # in a sign folder, in no split list
    report = prepare(include.items(local=copy), out=tmp_path / "inc", source="include", options={}, tokenizer=tokenizer)
    assert report.counts == {"train": 4, "test": 2} and (report.read, report.taken, report.n_rejected) == (8, 6, 2)
    assert sorted(r["reason"] for r in rejected(tmp_path / "inc")) == [
        "in none of the split lists",
        "not in a <Category>/<N>. <Sign>/ or <gloss>/ folder",
    ]


def _clip(path: Path, seed: int, codec: str = "mpeg4") -> None:
    from generalist_cli.media.video import encode_video

    path.parent.mkdir(parents=True, exist_ok=True)
    encode_video(
        path, np.random.default_rng(seed).integers(0, 255, (12, 60, 80, 3), dtype=np.uint8), fps=10, codec=codec
    )


def test_wlasl_style_gloss_folders_split_folders_and_the_release_json(tmp_path, tokenizer):
    """ASL releases: ``<gloss>/<id>.mp4`` (hash split), ``train|val|test/<gloss>/<id>.mp4`` (the folder is the
    split), and WLASL's own ``WLASL_v0.3.json`` + ``videos/<video_id>.mp4`` (gloss and split from the JSON; a
    video it does not name is rejected, not dropped). WebM and GIF clips decode like MP4."""
    for i, (gloss, vid, codec) in enumerate([("book", "00335", "mpeg4"), ("book", "00336", "libvpx"),
                                             ("drink", "17710", "gif"), ("drink", "17711", "mpeg4")]):  # fmt: skip
        suffix = {"mpeg4": ".mp4", "libvpx": ".webm", "gif": ".gif"}[codec]
        _clip(tmp_path / "flat" / gloss / f"{vid}{suffix}", i, codec)
        _clip(tmp_path / "split" / ("train" if i % 2 == 0 else "test") / gloss / f"{vid}{suffix}", i, codec)
    flat = list(include.items(local=tmp_path / "flat"))
    assert sorted(i.text for i in flat) == ["book", "book", "drink", "drink"] and not any(i.problem for i in flat)
    assert {i.text: i.label for i in flat} == {"book": 0, "drink": 1} and len({i.id for i in flat}) == 4
    report = prepare(include.items(local=tmp_path / "flat"), out=tmp_path / "o1", source="include", options={},
                     tokenizer=tokenizer)  # fmt: skip
    assert report.examples == 4 and report.n_rejected == 0  # the WebM and the GIF clip decoded too
    split = {i.source.name: i.split for i in include.items(local=tmp_path / "split")}
    assert split == {"00335.mp4": "train", "00336.webm": "test", "17710.gif": "train", "17711.mp4": "test"}

    wlasl = tmp_path / "wlasl"
    for i, vid in enumerate(["00335", "00336", "17710", "99999"]):
        _clip(wlasl / "videos" / f"{vid}.mp4", i)
    index = [{"gloss": "book", "instances": [{"video_id": "00335", "split": "train"},
                                             {"video_id": "00336", "split": "val"}]},
             {"gloss": "drink", "instances": [{"video_id": "17710", "split": "test"}]}]  # fmt: skip
    (wlasl / "WLASL_v0.3.json").write_text(json.dumps(index))
    found = {i.source.name: (i.text, i.split, i.problem) for i in include.items(local=wlasl)}
    assert found == {"00335.mp4": ("book", "train", ""), "00336.mp4": ("book", "val", ""),
                     "17710.mp4": ("drink", "test", ""),
                     "99999.mp4": ("", "train", "not in the WLASL JSON")}  # fmt: skip
    (wlasl / "WLASL_v0.3.json").write_text('{"gloss": 1}')
    with pytest.raises(Exception, match="WLASL_v0.3.json: not a WLASL index"):
        list(include.items(local=wlasl))


def test_include_without_split_lists_uses_a_stable_hash(include_release, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(include_release, copy, ignore=shutil.ignore_patterns("*.csv"))
    first = [(i.id, i.split) for i in include.items(local=copy)]
    assert first == [(i.id, i.split) for i in include.items(local=copy)] and len(first) == 6
    assert include.sign_name("12. Good Morning") == "good morning"


def test_wiki_translate_local_parquet_tsv_and_hub(monkeypatch, tokenizer, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    en = [f"The river number {i} is long." for i in range(120)] + [""]
    hi = [f"नदी संख्या {i} लंबी है।" for i in range(120)] + ["खाली"]
    (tmp_path / "local").mkdir()
    pq.write_table(pa.table({"eng_Latn": en, "hin_Deva": hi}), tmp_path / "local" / "part-0.parquet")
    report = prepare(
        wiki_translate.items(src_lang="en", tgt_lang="hindi", local=tmp_path / "local"),
        out=tmp_path / "wt",
        source="wiki-translate",
        options={},
        tokenizer=tokenizer,
    )
    assert report.counts == {"train": 119, "valid": 1} and report.rejected == {"empty source text": 1}
    row = load(tmp_path / "wt")["train"][0]
    assert (row["task"], row["modality"], row["src_lang"], row["lang"]) == ("text_translate", "text", "en", "hi")
    assert row["src_text"] == en[0] and row["text"] == hi[0] and row["length"] == len(row["src_tokens"]) > 3

    (tmp_path / "tsv").mkdir()
    (tmp_path / "tsv" / "a.tsv").write_text("eng_Latn\ttam_Taml\nHello there\tவணக்கம்\n", encoding="utf-8")
    items = list(wiki_translate.items(src_lang="en", tgt_lang="ta", local=tmp_path / "tsv"))
    assert items[0].text == "வணக்கம்" and items[0].lang == "ta"
    held_out = list(wiki_translate.items(src_lang="en", tgt_lang="hi", local=tmp_path / "local", into="test"))
    assert {i.split for i in held_out} == {"test"} and len(held_out) == len(en)

    calls = []
    table = datasets.Dataset.from_dict({"eng_Latn": en[:3], "hin_Deva": hi[:3]})
    _fake_hub(monkeypatch, {("soketlabs/bhasha-wiki-translated", "wiki_translated", "train"): table}, calls)
    items = list(wiki_translate.items(src_lang="en", tgt_lang="hi", limit=2))
    assert calls == [("soketlabs/bhasha-wiki-translated", "wiki_translated", "train", True)] and len(items) == 2
    from generalist_cli.errors import GenError

    with pytest.raises(GenError, match="no column guj_Gujr"):
        list(wiki_translate.items(src_lang="en", tgt_lang="gu", local=tmp_path / "local"))


def test_speak_makes_asr_and_tts_pairs(tokenizer, tmp_path):
    text = tmp_path / "hi.txt"
    text.write_text("\n".join(HINDI) + "\n\n", encoding="utf-8")
    items = speak.items(text_file=text, lang="hi", voices=("hi",), rate=(140, 160), pitch=(40, 60))
    report = prepare(items, out=tmp_path / "sp", source="speak", options={}, tokenizer=tokenizer)
    assert report.counts == {"train": 8} and report.rejected == {"empty text": 1}
    assert (report.read, report.taken) == (5, 4)  # 4 lines + the blank one; each line made 2 examples
    ds = load(tmp_path / "sp")["train"]
    asr = [r for r in ds if r["task"] == "transcribe"]
    tts = [r for r in ds if r["task"] == "tts"]
    assert len(asr) == len(tts) == 4
    assert np.asarray(tts[0]["tgt_mel"]).shape == np.asarray(asr[0]["mel"]).shape
    assert tts[0]["src_tokens"] and len(tts[0]["word_starts"]) >= 3
    assert tts[0]["word_starts"] == sorted(tts[0]["word_starts"])


def test_manifest_tsv_csv_jsonl(tokenizer, tmp_path):
    clip = encode_audio(tmp_path / "clip.wav", synthesize_16k("good morning everyone"))
    (tmp_path / "m.tsv").write_text(
        "path\ttext\tlang\nclip.wav\tgood morning everyone\ten\nnope.wav\tmissing\ten\nclip.wav\t\ten\n"
    )
    (tmp_path / "m.csv").write_text(f"path,text\n{clip},good morning everyone\n")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "clip.wav", "text": "x", "target": "good morning", "task": "translate", "lang": "hi"})
        + "\n"
    )
    r = prepare(
        manifest.items(manifest=tmp_path / "m.tsv"),
        out=tmp_path / "a",
        source="manifest",
        options={},
        tokenizer=tokenizer,
    )
    assert r.counts == {"train": 1} and sum(r.rejected.values()) == 2
    assert prepare(
        manifest.items(manifest=tmp_path / "m.csv"),
        out=tmp_path / "b",
        source="manifest",
        options={},
        tokenizer=tokenizer,
    ).counts == {"train": 1}
    [item] = list(manifest.items(manifest=tmp_path / "m.jsonl"))
    assert (item.task, item.text, item.lang) == ("translate", "good morning", "hi")
    (tmp_path / "bad.tsv").write_text("file\ttext\nclip.wav\thello\n")
    from generalist_cli.errors import GenError

    with pytest.raises(GenError, match="no 'path' column"):
        list(manifest.items(manifest=tmp_path / "bad.tsv"))
    # a split is a folder below --out: a manifest cannot name one outside it
    (tmp_path / "evil.tsv").write_text("path\ttext\tsplit\nclip.wav\thello\ttrain\nclip.wav\thello\t../../escape\n")
    with pytest.raises(GenError, match="split '../../escape' is not a plain name"):
        prepare(
            manifest.items(manifest=tmp_path / "evil.tsv"),
            out=tmp_path / "o" / "p",
            source="manifest",
            options={},
            tokenizer=tokenizer,
            shard_size=1,
        )
    assert not (tmp_path / "escape").exists() and not (tmp_path / "o" / "escape").exists()


def test_resume_after_interruption_and_rerun_is_a_no_op(tokenizer, tmp_path):
    lines = (Path(__file__).resolve().parents[2] / "examples" / "sentences_en.txt").read_text().splitlines()
    text = tmp_path / "en.txt"
    text.write_text("\n".join(lines[:10]) + "\n")

    def interrupted():
        for i, item in enumerate(speak.items(text_file=text, lang="en", tasks=("transcribe",))):
            if i == 7:
                raise KeyboardInterrupt
            yield item

    out = tmp_path / "sp"
    with pytest.raises(KeyboardInterrupt):
        prepare(interrupted(), out=out, source="speak", options={}, tokenizer=tokenizer, shard_size=3)
    assert len(list((out / ".work" / "train").glob("shard-*/done"))) == 2  # 6 items were safely written
    done = []
    report = prepare(
        speak.items(text_file=text, lang="en", tasks=("transcribe",)),
        out=out,
        source="speak",
        options={},
        tokenizer=tokenizer,
        shard_size=3,
        on_progress=done.append,
    )
    assert report.reused_shards == 2 and report.counts == {"train": 10}
    fresh = prepare(
        speak.items(text_file=text, lang="en", tasks=("transcribe",)),
        out=tmp_path / "fresh",
        source="speak",
        options={},
        tokenizer=tokenizer,
        shard_size=3,
    )
    assert [r["id"] for r in load(out)["train"]] == [r["id"] for r in load(tmp_path / "fresh")["train"]]
    assert fresh.reused_shards == 0 and not (out / ".work").exists()
    again = prepare(
        speak.items(text_file=text, lang="en", tasks=("transcribe",)),
        out=out,
        source="speak",
        options={},
        tokenizer=tokenizer,
        shard_size=3,
    )
    assert again.already and again.counts == {"train": 10}
    from generalist_cli.errors import GenError

    with pytest.raises(GenError, match="other options"):
        prepare(iter([]), out=out, source="speak", options={"seed": 1}, tokenizer=tokenizer)


def test_multiprocess_equals_single_process(tokenizer, tmp_path):
    lines = (Path(__file__).resolve().parents[2] / "examples" / "sentences_en.txt").read_text().splitlines()
    text = tmp_path / "en.txt"
    text.write_text("\n".join(lines[:8]) + "\n")
    one = prepare(
        speak.items(text_file=text, lang="en"),
        out=tmp_path / "one",
        source="speak",
        options={},
        tokenizer=tokenizer,
        shard_size=2,
    )
    two = prepare(
        speak.items(text_file=text, lang="en"),
        out=tmp_path / "two",
        source="speak",
        options={},
        tokenizer=tokenizer,
        shard_size=2,
        num_proc=2,
    )
    assert one.counts == two.counts == {"train": 16}
    a, b = load(tmp_path / "one")["train"], load(tmp_path / "two")["train"]
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert np.array_equal(np.asarray(a[3]["mel"]), np.asarray(b[3]["mel"]))


def test_packing_sampler_fills_rows():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 750, 500).tolist()
    sampler = PackingSampler(lengths, capacity=2048, rows_per_batch=4)
    batches = list(sampler)
    seen = [i for batch in batches for row in batch for i in row]
    assert sorted(seen) == list(range(500))  # every example exactly once
    assert all(sum(lengths[i] for i in row) <= 2048 for batch in batches for row in batch)
    assert all(len(b) <= 4 for b in batches) and sampler.padding_fraction() < 0.05
    sampler.set_epoch(1)
    assert [r for b in sampler for r in b] != [r for b in batches for r in b]  # reshuffled per epoch
    with pytest.raises(ValueError, match="more than a row"):
        PackingSampler([3000])


def test_include_release_quirks_names_with_brackets_and_one_file_name_in_two_signs(tmp_path, tokenizer):
    """The real release: ``12. Second (Number)`` beside ``3. Second``, ``MVI_0050_ (1).MOV``, and the same file
    name in two sign folders: each video is its own example with its own sign."""
    from generalist_cli.media.video import encode_video

    rng = np.random.default_rng(1)
    for folder in ("Numbers/12. Second (Number)", "Days_and_Time/3. Second"):
        for name in ("MVI_0050_ (1).MOV", "MVI_0051.MOV"):
            (tmp_path / "rel" / folder).mkdir(parents=True, exist_ok=True)
            encode_video(
                tmp_path / "rel" / folder / name, rng.integers(0, 255, (12, 60, 80, 3), dtype=np.uint8), fps=10
            )
    found = list(include.items(local=tmp_path / "rel"))
    assert sorted({i.text for i in found}) == ["second", "second (number)"]
    assert len({i.id for i in found}) == 4 and len({i.source for i in found}) == 4
    assert {i.text: i.label for i in found} == {"second": 0, "second (number)": 1}
    report = prepare(include.items(local=tmp_path / "rel"), out=tmp_path / "inc", source="include", options={},
                     tokenizer=tokenizer)  # fmt: skip
    assert report.examples == 4 and report.n_rejected == 0
