"""gen eval: metrics on known strings, speed statistics, and the CLI on a real model, an ONNX export and
a small speak dataset (JSON schema, table, plots, bad inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generalist_cli.evaluate.report import speed, text_scores
from tests.conftest import gen

ROOT = Path(__file__).resolve().parents[2]


def test_english_uses_whispers_normaliser():
    s = text_scores(
        ["Hello, Mr. Smith! It's twenty dollars."], ["hello mister smith it is $20"], lang="en", task="transcribe"
    )
    assert s["wer"] == 0.0 and s["cer"] == 0.0
    s = text_scores(["the cat sat on the mat"], ["the cat sat on a mat"], lang="en", task="transcribe")
    assert s["wer"] == pytest.approx(1 / 6)


def test_indic_normaliser_keeps_combining_marks():
    # किसान (kisaan) vs किसन (kisan): the dropped matra is one word error of 2 and one character edit of 9
    # (jiwer counts code points, the space included; the danda is punctuation and goes)
    s = text_scores(["किसान आया।"], ["किसन आया"], lang="hi", task="transcribe")
    assert s["wer"] == pytest.approx(0.5)
    assert s["cer"] == pytest.approx(1 / 9)
    assert text_scores(["किसान आया।"], ["किसान आया"], lang="hi", task="transcribe")["wer"] == 0.0


def test_translation_and_sign_scores():
    same = text_scores(["The house is blue."], ["The house is blue."], lang="en", task="translate")
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    worse = text_scores(["The house is blue."], ["A car was red"], lang="en", task="translate")
    assert worse["bleu"] == 0.0 and worse["chrf"] < 30  # no shared word n-gram
    # chrF++ (word bigrams added to chrF's character n-grams): the same words in another order score lower
    ref = ["मैं कल बाज़ार जाऊँगा।"]
    kept, swapped = (
        text_scores(ref, [h], lang="hi", task="text_translate") for h in ("मैं कल बाज़ार जाऊँगा।", "कल मैं जाऊँगा बाज़ार।")
    )
    assert kept["chrf++"] == pytest.approx(100.0) and swapped["chrf++"] < swapped["chrf"] < 100
    import sacrebleu

    hyp = ["मैं कल बाजार जाऊंगा"]
    assert text_scores(ref, hyp, lang="hi", task="text_translate")["chrf++"] == pytest.approx(
        sacrebleu.corpus_chrf(hyp, [ref], word_order=2).score
    )
    sign = text_scores(["hello", "thank you", "water"], ["Hello", "thank you", "food"], lang="en", task="sign")
    assert sign["top1"] == pytest.approx(2 / 3)


def test_speed_statistics():
    s = speed([0.1, 0.2, 0.3, 0.4, 1.0], tokens=40, audio_seconds=20.0)
    assert s["latency_p50_s"] == pytest.approx(0.3)
    assert s["latency_p95_s"] == pytest.approx(0.88)
    assert s["examples_per_s"] == pytest.approx(5 / 2.0) and s["tokens_per_s"] == pytest.approx(20.0)
    assert s["rtf"] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def speak_en(tmp_path_factory):
    from generalist_cli.data import speak
    from generalist_cli.data.prepare import prepare
    from generalist_cli.store.sources import PACKAGES

    root = tmp_path_factory.mktemp("eval")
    lines = (ROOT / "examples" / "sentences_en.txt").read_text().splitlines()
    (root / "en.txt").write_text("\n".join(lines[:6]) + "\n")
    tok = PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json"
    prepare(
        speak.items(text_file=root / "en.txt", lang="en", valid_every=2),
        out=root / "data",
        source="speak",
        options={},
        tokenizer=tok,
    )
    return root / "data"


@pytest.mark.slow
def test_cli_json_report_and_plots(speak_en, tmp_path):
    r = gen(
        "eval",
        "whisper-tiny.en",
        "--data",
        str(speak_en),
        "--split",
        "valid",
        "--json",
        "-",
        "--plots",
        str(tmp_path / "plots"),
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert {"model", "engine", "data", "split", "examples", "tasks", "model_info"} <= set(report)
    asr = report["tasks"]["transcribe"]
    for key in (
        "loss",
        "token_accuracy",
        "wer",
        "cer",
        "latency_p50_s",
        "latency_p95_s",
        "examples_per_s",
        "tokens_per_s",
        "rtf",
    ):
        assert isinstance(asr[key], float), key
    assert asr["wer"] <= 0.2  # tiny.en on clear eSpeak English
    assert report["tasks"]["tts"]["examples"] >= 1 and "no speech head" in report["tasks"]["tts"]["skipped"]
    info = report["model_info"]
    assert info["parameters"] == info["active_parameters_per_token"] > 30e6 and info["bytes_on_disk"] > 0
    assert info["flops_per_audio_second"] > 1e9


@pytest.mark.slow
def test_cli_on_an_export_and_bad_inputs(speak_en, tmp_path):
    out = tmp_path / "export"
    assert gen("export", "whisper-tiny.en", "--out", str(out), "--quantize", "none").returncode == 0
    r = gen("eval", str(out), "--data", str(speak_en), "--split", "valid", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "transcribe" in r.stdout  # the table
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["engine"] == "onnx" and report["tasks"]["transcribe"]["wer"] <= 0.2
    assert "loss" not in report["tasks"]["transcribe"]  # no teacher-forcing graph in an export
    bad = gen("eval", "whisper-tiny.en", "--data", str(speak_en), "--split", "nope")
    assert bad.returncode == 2 and "has no split 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    missing = gen("eval", "whisper-tiny.en", "--data", str(tmp_path / "none"))
    assert missing.returncode == 1 and "no prepared dataset" in missing.stderr


def test_plots_of_a_run_and_of_expert_use(tmp_path):
    from generalist_cli.evaluate.report import write_plots

    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 / s}) + "\n" for s in range(1, 40)))
    (run / "eval.jsonl").write_text(
        "".join(json.dumps({"step": s, "dev": {"loss": 2.0 / s, "accuracy": s / 40}}) + "\n" for s in (0 + 1, 20, 39))
        + '{"step": 4'
    )  # a line cut by a crash
    report = {"expert_utilisation": {"transcribe/hi": [0.5, 0.25, 0.25, 0.0], "transcribe/en": [0.25] * 4}}
    written = write_plots(report, tmp_path / "plots", run=run)
    assert [p.name for p in written] == ["expert_utilisation.png", "demo_curves.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_vocoder_round_trip_is_intelligible(speech, tiny_en):
    from generalist_cli.features.mel import log_mel_spectrogram
    from generalist_cli.features.vocoder import mel_to_audio
    from generalist_cli.infer.transcribe import TranscribeOptions, transcribe
    from tests.conftest import SENTENCES, wer

    audio = speech(1)
    back = mel_to_audio(log_mel_spectrogram(audio))
    assert abs(len(back) - len(audio)) < 160 and float(abs(back).max()) <= 0.91
    text = transcribe(tiny_en.model, tiny_en.tokenizer, [back], TranscribeOptions(language="en"))[0].text
    assert wer(SENTENCES[1], text) <= 0.25, text  # measured: one word of 14 wrong ("a pen" -> "append")


def test_speech_output_scores(speak_en):
    """A (random) generalist with a speech head: mel L1 and the round-trip WER keys, through whisper-tiny.en."""
    import datasets
    import torch

    from generalist_cli.evaluate.report import tts_scores
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.config import ModelConfig
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.train.batches import collate, read_rows
    from tests.conftest import SMALL

    torch.manual_seed(0)
    model = Generalist(ModelConfig(**{**SMALL, "n_vocab": 51864, "n_speech_mels": 80, "generalist": True})).eval()
    tok = Tokenizer(PACKAGES["whisper-tiny.en"].folder_path() / "tokenizer.json", multilingual=False)
    ds = datasets.load_from_disk(str(speak_en))["valid"].with_format("numpy")
    rows = [r for r in read_rows([ds], [(0, i) for i in range(len(ds))]) if r["task"] == "tts"][:2]
    scores = tts_scores(
        model, collate(rows, tok, max_target_tokens=50).examples, rows, False, asr_model="whisper-tiny.en"
    )
    assert scores["mel_l1"] > 0 and isinstance(scores["round_trip_wer"], float)
    assert scores["asr_model"] == "whisper-tiny.en" and scores["latency_p50_s"] > 0


def test_text_batches_decode_as_each_example_alone(base):
    """Evaluation decodes text sources in packed batches grouped by prompt and language: the same tokens as
    one example at a time, in the examples' order, with an audio example left alone between them."""
    import torch

    from generalist_cli.evaluate.decode import greedy_text_tokens, greedy_texts, greedy_tokens, text_batches
    from generalist_cli.train.batches import Example
    from tests.conftest import generalist

    model = generalist().eval()
    tok = base.tokenizer
    torch.manual_seed(0)

    def text(n, prompt):
        src = torch.randint(300, 9000, (n,))
        return Example("text_translate", "text", src, None, torch.tensor([*prompt, 400, 401, 50257]),
                       len(prompt), None, None)  # fmt: skip

    en, hi = [50258, 50259, 50359, 50363], [50258, 50276, 50359, 50363]
    audio = Example("transcribe", "audio", torch.randn(80, 300), None, torch.tensor([*en, 50257]), 4, None, None)
    examples = [text(7, en), text(12, en), audio, text(3, hi), text(20, en), text(5, hi)]
    langs = ["en", "en", "en", "hi", "en", "hi"]
    assert text_batches(examples, langs, size=2) == [[0, 1], [2], [3, 5], [4]]
    group = [examples[i] for i in (0, 1, 4)]
    batched = greedy_text_tokens(model, tok, group, lang="en", max_new_tokens=12)
    alone = [greedy_tokens(model, tok, e, lang="en", max_new_tokens=12) for e in group]
    assert batched == alone and all(batched)
    texts = greedy_texts(model, tok, examples, langs=langs, max_new_tokens=12)
    assert texts == [tok.decode(greedy_tokens(model, tok, e, lang=g, max_new_tokens=12)).strip()
                     for e, g in zip(examples, langs)]  # fmt: skip


def test_translations_are_scored_as_gen_run_writes_them(base):
    """Evaluations decode text -> text by gen run's rules (infer.convert.translation_options): Devanagari only
    for Hindi, no 4-gram twice, at most 8 target tokens per source token; beam search when asked."""
    import torch

    from generalist_cli.evaluate.decode import greedy_text_tokens, greedy_tokens
    from generalist_cli.features.script import script_of
    from generalist_cli.infer.convert import MAX_TARGET_RATIO, translation_options
    from generalist_cli.train.batches import Example
    from tests.conftest import generalist

    options = translation_options("hi", 10)
    assert (options.no_repeat_ngram, options.max_new_tokens, options.script) == (4, 88, script_of("hi") or ())
    assert translation_options("hi", 10, max_new_tokens=50, beam_size=3).max_new_tokens == 50
    model, tok = generalist().eval(), base.tokenizer  # random weights: greedy decoding loops
    torch.manual_seed(1)
    prompt = [50258, 50276, 50359, 50363]
    examples = [
        Example(
            "text_translate",
            "text",
            torch.randint(300, 9000, (n,)),
            None,
            torch.tensor([*prompt, 50257]),
            len(prompt),
            None,
            None,
        )  # fmt: skip
        for n in (3, 5)
    ]
    for beam in (1, 2):
        out = greedy_text_tokens(model, tok, examples, lang="hi", max_new_tokens=400, beam_size=beam)
        for tokens in out:
            assert len(tokens) <= MAX_TARGET_RATIO * 5 + 8
            grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
            assert len(grams) == len(set(grams)), tokens
    alone = [greedy_tokens(model, tok, e, lang="hi", max_new_tokens=400) for e in examples]
    assert alone[0] == greedy_text_tokens(model, tok, examples[:1], lang="hi", max_new_tokens=400)[0]
    assert all(len(t) <= MAX_TARGET_RATIO * len(e.source) + 8 for t, e in zip(alone, examples))
