"""The bundled English -> Hindi corpus (examples/make_parallel.py): agreement, disjoint held-out pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("make_parallel", ROOT / "examples" / "make_parallel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pairs_agree_in_gender_number_and_negation():
    m = _module()
    sita, kids = m.SUBJECTS[1], m.SUBJECTS[10]
    tea, at_home, today = m.ACTIVITIES[1], m.PLACES[4], m.TIMES[1]
    assert m.pair(today, sita, at_home, tea, False) == ("Today Sita drinks tea at home.", "आज सीता घर पर चाय पीती है।")
    assert m.pair(m.TIMES[0], kids, m.PLACES[0], tea, True) == ("The children do not drink tea.", "बच्चे चाय नहीं पीते।")


def test_bundled_tsvs_are_current_and_the_test_pairs_are_held_out():
    m = _module()
    train, test = m.corpus()

    def rows(name):
        return [tuple(x.split("\t")) for x in (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines()[1:]]

    assert rows("parallel_en_hi_train.tsv") == train and rows("parallel_en_hi_test.tsv") == test
    assert len(train) == 2000 and len(test) == 100 and not {en for en, _ in train} & {en for en, _ in test}
