"""Compose the English -> Hindi parallel corpus for recipes/translate.toml (run once; the TSVs are committed).

    python examples/make_parallel.py

Sentences are built from aligned templates - [time] subject [place] activity, affirmative or negated -
with Hindi gender and number agreement (पढ़ता / पढ़ती / पढ़ते हैं) and English verb forms (reads / read,
does not / do not). Columns are the FLORES-200 codes the wiki-translate adapter reads (eng_Latn, hin_Deva).
The test pairs are sentences that never occur in training (every word of them does).
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).parent

TIMES = [
    ("", ""),
    ("Today", "आज"),
    ("Every day", "हर दिन"),
    ("In the morning", "सुबह"),
    ("In the evening", "शाम को"),
    ("On Sunday", "रविवार को"),
    ("At night", "रात को"),
]
# (English, Hindi, gender/number: m, f or p)
SUBJECTS = [
    ("Ram", "राम", "m"),
    ("Sita", "सीता", "f"),
    ("the farmer", "किसान", "m"),
    ("my sister", "मेरी बहन", "f"),
    ("my brother", "मेरा भाई", "m"),
    ("the boy", "लड़का", "m"),
    ("the girl", "लड़की", "f"),
    ("my mother", "मेरी माँ", "f"),
    ("the old man", "बूढ़ा आदमी", "m"),
    ("the woman", "औरत", "f"),
    ("the children", "बच्चे", "p"),
    ("my friends", "मेरे दोस्त", "p"),
]
PLACES = [
    ("", ""),
    ("in Delhi", "दिल्ली में"),
    ("in the village", "गाँव में"),
    ("in the city", "शहर में"),
    ("at home", "घर पर"),
    ("in Mumbai", "मुंबई में"),
    ("near the river", "नदी के पास"),
    ("at school", "स्कूल में"),
    ("in the market", "बाज़ार में"),
]
# (English third person singular, English base form, Hindi object, Hindi verb stem)
ACTIVITIES = [
    ("reads a book", "read a book", "किताब", "पढ़"),
    ("drinks tea", "drink tea", "चाय", "पी"),
    ("eats rice", "eat rice", "चावल", "खा"),
    ("writes a letter", "write a letter", "चिट्ठी", "लिख"),
    ("plays cricket", "play cricket", "क्रिकेट", "खेल"),
    ("sings a song", "sing a song", "गाना", "गा"),
    ("works", "work", "काम", "कर"),
    ("cooks food", "cook food", "खाना", "बना"),
    ("sleeps", "sleep", "", "सो"),
    ("buys vegetables", "buy vegetables", "सब्ज़ी", "खरीद"),
    ("drinks milk", "drink milk", "दूध", "पी"),
    ("learns English", "learn English", "अंग्रेज़ी", "सीख"),
]


def pair(time, subject, place, activity, negated: bool) -> tuple[str, str]:
    (t_en, t_hi), (s_en, s_hi, g), (p_en, p_hi), (v3, vbase, obj, stem) = time, subject, place, activity
    ending = {"m": "ता", "f": "ती", "p": "ते"}[g]
    if negated:  # the negated habitual drops the auxiliary: राम चाय नहीं पीता
        verb_en = ("do not " if g == "p" else "does not ") + vbase
        verb_hi = f"नहीं {stem}{ending}"
    else:
        verb_en = vbase if g == "p" else v3
        verb_hi = f"{stem}{ending} {'हैं' if g == 'p' else 'है'}"
    en = " ".join(w for w in (t_en, s_en, verb_en, p_en) if w)
    en = en[0].upper() + en[1:] + "."
    hi = " ".join(w for w in (t_hi, s_hi, p_hi, obj, verb_hi) if w) + "।"
    return en, hi


def corpus(n_train: int = 2000, n_test: int = 100, seed: int = 0) -> tuple[list, list]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out = []
    while len(out) < n_train + n_test:
        en, hi = pair(
            rng.choice(TIMES), rng.choice(SUBJECTS), rng.choice(PLACES), rng.choice(ACTIVITIES), rng.random() < 0.2
        )
        if en not in seen:
            seen.add(en)
            out.append((en, hi))
    return out[:n_train], out[n_train:]


def write(path: Path, pairs) -> None:
    path.write_text("eng_Latn\thin_Deva\n" + "".join(f"{en}\t{hi}\n" for en, hi in pairs), encoding="utf-8")


if __name__ == "__main__":
    train, test = corpus()
    write(HERE / "parallel_en_hi_train.tsv", train)
    write(HERE / "parallel_en_hi_test.tsv", test)
    print(len(train), "train and", len(test), "test pairs in", HERE)
