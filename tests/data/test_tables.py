"""Every input row accounted for: rows read = examples taken + rows rejected, with the text kept byte for
byte (after NFC and trimmed ends), on inputs built to break parsers and on real human translations."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from generalist_cli.data import manifest, wiki_translate
from generalist_cli.data.prepare import prepare
from generalist_cli.data.tables import read_table
from generalist_cli.errors import GenError

ROOT = Path(__file__).resolve().parents[2]
FLORES_DEV = ROOT / "tests" / "real" / "text" / "flores200_dev_en_hi.tsv"
SHARED_TRAIN = ROOT.parent / "shared" / "data" / "parallel-en-hi" / "train.tsv"


@pytest.fixture(scope="module")
def tokenizer():
    from generalist_cli.store.sources import PACKAGES

    return PACKAGES["whisper-base"].folder_path() / "tokenizer.json"


def plain_pairs(path: Path) -> list[tuple[int, str, str]]:
    """(line, source, target) by the plainest reading of a two-column TSV: split lines on LF, fields on tab."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")[1:]
    return [(n, *line.rstrip("\r").split("\t")) for n, line in enumerate(lines, 2) if line.strip()]


def prepared(out: Path) -> dict[str, dict]:
    import datasets

    ds = datasets.load_from_disk(str(out))
    return {row["id"]: row for split in ds for row in ds[split].select_columns(["id", "text", "src_text"])}


def rejected(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]


HOSTILE = [  # (line as written, why it breaks a parser)
    ('"Quoted at the start" she said.\t"उद्धरण" से शुरू', "a quote opens the field"),
    ('ends with a quote"\tअंत में "', "a quote closes the field"),
    ('a "middle" quote\tबीच में "उद्धरण" है', "quotes inside"),
    ('"unbalanced\tआधा "', "one quote, never closed"),
    ("zero width joiner\tक्‍ष और र्‍ य", "ZWJ in Devanagari"),
    ("danda and double danda\tयह वाक्य है। और यह भी॥", "। and ॥"),
    ("decomposed nukta\tक़लम", "NFC composes nothing here, decomposes the nukta letter"),
    ("a trailing tab\tपीछे टैब\t", "a trailing tab"),
    ("\t", "empty fields"),
    ("only a source", "a missing column"),
    ("one\ttwo\tthree", "an embedded tab: three fields"),
    ("", "a blank line"),
    ("long " * 2000 + "\tलंबा", "a very long line"),
    ("  spaces around  \t  चारों ओर  ", "surrounding white space"),
]


def hostile_tsv(path: Path) -> Path:
    body = "eng_Latn\thin_Deva\r\n" + "\r\n".join(line for line, _ in HOSTILE) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))  # BOM and CRLF, as Windows tools write
    return path


def test_tsv_is_read_as_tsv_every_line_a_row_or_a_reason(tmp_path):
    rows = list(read_table(hostile_tsv(tmp_path / "h.tsv")))
    assert [r.line for r in rows] == list(range(2, len(HOSTILE) + 2))
    by_line = {r.line: r for r in rows}
    assert by_line[2].fields == {"eng_Latn": '"Quoted at the start" she said.', "hin_Deva": '"उद्धरण" से शुरू'}
    assert by_line[5].fields["hin_Deva"] == 'आधा "'  # the open quote did not swallow the following lines
    assert by_line[6].fields["hin_Deva"] == "क्\u200dष और र्\u200d य"
    assert by_line[9].fields == {"eng_Latn": "a trailing tab", "hin_Deva": "पीछे टैब"}
    assert by_line[10].fields == {"eng_Latn": "", "hin_Deva": ""}
    assert by_line[11].problem == "1 field(s), the header has 2"
    assert by_line[12].problem == "3 field(s), the header has 2"
    assert by_line[13].problem == "blank line"


def test_csv_keeps_standard_quoting_and_counts_lines_from_where_a_row_starts(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('path,text\na.wav,"hello, ""world""\nsecond line"\nb.wav,plain\n\nc.wav\n', encoding="utf-8")
    rows = list(read_table(path))
    assert rows[0].line == 2 and rows[0].fields["text"] == 'hello, "world"\nsecond line'
    assert (rows[1].line, rows[1].fields["text"]) == (4, "plain")
    assert (rows[2].line, rows[2].problem) == (5, "blank line")
    assert (rows[3].line, rows[3].problem) == (6, "1 field(s), the header has 2")


def test_jsonl_bad_lines_are_rows_with_reasons_and_bad_files_are_one_clear_error(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.wav", "text": "x"}\n{not json\n[1, 2]\n\n', encoding="utf-8")
    rows = list(read_table(path))
    assert rows[0].fields == {"path": "a.wav", "text": "x"}
    assert rows[1].problem.startswith("not JSON") and rows[2].problem == "not a JSON object"
    assert rows[3].problem == "blank line"
    latin1 = tmp_path / "l.tsv"
    latin1.write_bytes("path\ttext\nä.wav\tcafé\n".encode("latin-1"))
    with pytest.raises(GenError, match=r"l\.tsv:2: not UTF-8"):
        list(read_table(latin1))
    twice = tmp_path / "t.tsv"
    twice.write_text("path\tpath\n", encoding="utf-8")
    with pytest.raises(GenError, match="more than once"):
        list(read_table(twice))


def test_wiki_translate_accounts_for_every_hostile_row(tmp_path, tokenizer):
    src = hostile_tsv(tmp_path / "h.tsv")
    items = wiki_translate.items(src_lang="en", tgt_lang="hi", local=src, into="test")
    report = prepare(items, out=tmp_path / "out", source="wiki", options={}, tokenizer=tokenizer)
    bad = {r["line"]: r["reason"] for r in rejected(tmp_path / "out")}
    assert (
        bad
        == {
            10: "empty text",
            11: "1 field(s), the header has 2",
            12: "3 field(s), the header has 2",
            13: "blank line",
            14: bad[14],
        }
        and "longer than the encoder" in bad[14]
    )
    assert report.read == len(HOSTILE) == report.taken + report.n_rejected and report.taken == len(HOSTILE) - 5
    stamp = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert (stamp["read"], stamp["taken"], stamp["rejected"]) == (len(HOSTILE), len(HOSTILE) - 5, 5)
    texts = {row["src_text"]: row["text"] for row in prepared(tmp_path / "out").values()}
    assert texts['"Quoted at the start" she said.'] == '"उद्धरण" से शुरू'
    assert texts["zero width joiner"] == "क्\u200dष और र्\u200d य"  # joiners kept
    assert texts["decomposed nukta"] == unicodedata.normalize("NFC", "क़लम") == "क\u093cलम"
    assert texts["spaces around"] == "चारों ओर"


def test_manifest_rows_are_taken_or_rejected_with_their_line(tmp_path, tokenizer):
    from generalist_cli.media.audio import encode_audio
    from generalist_cli.media.espeak import synthesize_16k

    encode_audio(tmp_path / "a.m4a", synthesize_16k("hello there", voice="en", rate=160))
    (tmp_path / "m.tsv").write_text(
        'path\ttext\na.m4a\t"hello" there\n\tno path\nmissing.m4a\tgone\nx.m4a\n', encoding="utf-8"
    )
    report = prepare(
        manifest.items(manifest=tmp_path / "m.tsv", lang="en"),
        out=tmp_path / "out",
        source="manifest",
        options={},
        tokenizer=tokenizer,
    )
    assert (report.read, report.taken, report.n_rejected) == (4, 1, 3)
    bad = {r["line"]: r["reason"] for r in rejected(tmp_path / "out")}
    assert bad[3] == "no path" and "not found" in bad[4] and bad[5] == "1 field(s), the header has 2"
    assert [row["text"] for row in prepared(tmp_path / "out").values()] == ['"hello" there']


@pytest.mark.parametrize("path", [FLORES_DEV, SHARED_TRAIN], ids=["flores-dev-997", "shared-train-7507"])
def test_real_translations_every_pair_prepared_byte_for_byte_after_nfc(path, tmp_path, tokenizer):
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (not redistributable; FLORES dev is bundled)")
    pairs = plain_pairs(path)
    items = wiki_translate.items(src_lang="en", tgt_lang="hi", local=path, into="test")
    report = prepare(items, out=tmp_path / "out", source="wiki", options={}, tokenizer=tokenizer)
    assert report.read == report.taken == report.examples == len(pairs) and report.n_rejected == 0
    rows = sorted(prepared(tmp_path / "out").values(), key=lambda r: r["id"])
    nfc = lambda s: unicodedata.normalize("NFC", s).strip()  # noqa: E731  the documented normalisation
    assert [(r["src_text"], r["text"]) for r in rows] == [(nfc(s), nfc(t)) for _, s, t in pairs]
    if path == FLORES_DEV:
        assert len(pairs) == 997 and sum('"' in s + t for _, s, t in pairs) == 77


@pytest.mark.slow
def test_gen_prepare_prints_the_accounting(tmp_path):
    from tests.conftest import gen

    r = gen("prepare", "wiki-translate", "--local", str(FLORES_DEV), "--split", "test", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "997 examples (test 997); items 997 read = 997 taken + 0 rejected" in r.stdout


def test_gen_run_reads_text_as_prepare_does(tmp_path):
    from generalist_cli.data.tables import text_lines
    from generalist_cli.infer.convert import read_text

    path = tmp_path / "doc.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "  क़लम\u2028 कागज़\r\n\r\nदूसरी पंक्ति\n".encode("utf-8"))
    text = read_text(path)
    assert text == unicodedata.normalize("NFC", "क़लम\u2028 कागज़\r\n\r\nदूसरी पंक्ति")
    # LF ends a line, U+2028 does not; the same NFC as prepared examples
    assert text_lines(text) == [unicodedata.normalize("NFC", "क़लम\u2028 कागज़"), "दूसरी पंक्ति"]
