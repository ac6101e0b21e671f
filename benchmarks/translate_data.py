"""What the real en-hi data allows: how much there is, how much of FLORES dev it covers, and what Whisper's
tokenizer makes of Hindi (issue 24's "show what limits it").

    python benchmarks/translate_data.py    # reads ../shared/data/parallel-en-hi, writes results/translate_data.json

Per language: running words in train.tsv and their distinct forms; the share of FLORES dev's running words never
seen in train.tsv and seen under 5 times; words per sentence (train vs dev); Whisper tokens per word and per
sentence (median, p95, max). And what a model scores on FLORES dev without translating: chrF++/chrF/BLEU of
each reference scored against the next sentence's reference (fluent Hindi of the same domain and length, the
wrong content) and against a random train.tsv target. Words are whitespace-split, lower-cased, with Latin and
Devanagari punctuation stripped from their ends. No model is loaded: the tokenizer is whisper-base's ``tokenizer.json``.
"""

from __future__ import annotations

import json
import random
import statistics
import string
from collections import Counter
from pathlib import Path

from generalist_cli.data.tables import read_table
from generalist_cli.evaluate.metrics import text_scores
from generalist_cli.features.tokenizer import Tokenizer
from generalist_cli.store.store import tokenizer_for

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "parallel-en-hi"
PUNCT = string.punctuation + "।॥“”‘’—–"


def pairs(path: Path) -> list[tuple[str, str]]:
    """The ``eng_Latn<TAB>hin_Deva`` table, read as ``gen prepare wiki-translate --local`` reads it."""
    rows = read_table(path, required=("eng_Latn", "hin_Deva"))
    return [(r.fields["eng_Latn"], r.fields["hin_Deva"]) for r in rows if not r.problem]


def words(text: str) -> list[str]:
    return [w for w in (x.strip(PUNCT).lower() for x in text.split()) if w]


def quantiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"median": xs[len(xs) // 2], "p95": xs[int(0.95 * (len(xs) - 1))], "max": xs[-1]}


def side(train: list[str], dev: list[str], tok: Tokenizer) -> dict:
    seen = Counter(w for s in train for w in words(s))
    dev_words = [w for s in dev for w in words(s)]
    tokens = [len(tok.encode(" " + s.strip())) for s in dev]
    return {
        "train_words": sum(seen.values()),
        "train_distinct": len(seen),
        "dev_words": len(dev_words),
        "dev_words_unseen_in_train": round(sum(w not in seen for w in dev_words) / len(dev_words), 3),
        "dev_words_seen_under_5_times": round(sum(seen[w] < 5 for w in dev_words) / len(dev_words), 3),
        "words_per_sentence": {
            "train": round(statistics.mean(len(words(s)) for s in train), 1),
            "dev": round(statistics.mean(len(words(s)) for s in dev), 1),
        },
        "tokens_per_word_dev": round(sum(tokens) / len(dev_words), 2),
        "tokens_per_sentence_dev": quantiles(tokens),
    }


def without_translating(train: list[str], refs: list[str]) -> dict:
    """BLEU/chrF/chrF++ as ``gen eval`` scores text translation, for hypotheses that are not translations."""

    def scores(hyps: list[str]) -> dict:
        found = text_scores(refs, hyps, lang="hi", task="text_translate")
        return {k: round(found[k], 2) for k in ("chrf++", "chrf", "bleu")}

    rng = random.Random(0)
    return {
        "next_dev_reference": scores(refs[1:] + refs[:1]),
        "random_train_target": scores([rng.choice(train) for _ in refs]),
    }


def main() -> None:
    tok = Tokenizer(tokenizer_for("whisper-base"), multilingual=True)
    train, dev = pairs(DATA / "train.tsv"), pairs(DATA / "dev.tsv")
    result = {
        "pairs": {"train": len(train), "dev": len(dev)},
        "en": side([e for e, _ in train], [e for e, _ in dev], tok),
        "hi": side([h for _, h in train], [h for _, h in dev], tok),
        "scores_without_translating": without_translating([h for _, h in train], [h for _, h in dev]),
    }
    (ROOT / "benchmarks" / "results" / "translate_data.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
