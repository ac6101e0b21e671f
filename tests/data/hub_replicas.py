"""Local folders in the Hugging Face Hub's own dataset layout (a README.md whose YAML names ``configs:``
with their ``data_files``, ``dataset_info`` features, and parquet files per config and split), built from
the dataset cards: ``datasets.load_dataset(folder, config, split=...)`` reads them by the same code path
as the Hub, so the adapters are tested on the real schema.

- ``ai4bharat/Kathbath``: the parquet release (https://huggingface.co/datasets/ai4bharat/Kathbath, one
  folder per language, CC-BY-4.0) has one config per language name and the splits ``train`` and ``valid``;
  the columns follow the release's loader (``fname``, ``text``, ``audio_filepath`` as ``Audio`` at 16 kHz,
  ``lang``, ``duration``, ``gender``, ``speaker_id``).
- ``soketlabs/bhasha-wiki-translated``, config ``wiki_translated``: one row per article; ``title`` and
  one column per FLORES-200 code (``eng_Latn``, ``hin_Deva``, ``ben_Beng`` ...) holding a *list* of the
  article's sentences, aligned by position.
"""

from __future__ import annotations

import json
from pathlib import Path


def _readme(folder: Path, configs: dict[str, dict[str, str]], features: dict[str, list[dict]]) -> None:
    """README.md with ``configs`` (config -> split -> parquet glob) and each config's features."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, glob in splits.items():
            lines += [f"  - split: {split}", f"    path: {glob}"]
    lines.append("dataset_info:")
    for name in configs:
        lines += [f"- config_name: {name}", "  features:"]
        for f in features[name]:
            lines.append(f"  - name: {f['name']}")
            if "sequence" in f:
                lines.append(f"    sequence: {f['sequence']}")
            else:
                lines.append(f"    dtype: {f['dtype']}")
            if "sampling_rate" in f:
                lines.append(f"    sampling_rate: {f['sampling_rate']}")
    lines += ["---", "", f"# replica of {folder.name} for tests (see tests/data/hub_replicas.py)", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


KATHBATH_FEATURES = [
    {"name": "fname", "dtype": "string"},
    {"name": "text", "dtype": "string"},
    {"name": "audio_filepath", "dtype": "audio", "sampling_rate": 16000},
    {"name": "lang", "dtype": "string"},
    {"name": "duration", "dtype": "float32"},
    {"name": "gender", "dtype": "string"},
    {"name": "speaker_id", "dtype": "string"},
]


def kathbath(folder: Path, rows: dict[str, list[tuple[str, bytes, str]]], *, language: str = "hindi") -> Path:
    """``rows``: split -> [(file name, m4a bytes, text)]; only the splits given exist (as on the Hub)."""
    for split, items in rows.items():
        _parquet(
            folder / language / f"{split}-00000-of-00001.parquet",
            [{"fname": name, "text": text, "audio_filepath": {"bytes": data, "path": name}, "lang": language,
              "duration": 1.0, "gender": "male", "speaker_id": "1"} for name, data, text in items],
        )  # fmt: skip
    _readme(folder, {language: {s: f"{language}/{s}-*.parquet" for s in rows}}, {language: KATHBATH_FEATURES})
    return folder


def wiki_translated(folder: Path, articles: list[dict[str, list[str]]]) -> Path:
    """``articles``: one dict per article, FLORES column -> list of sentences (config ``wiki_translated``)."""
    columns = sorted({c for a in articles for c in a})
    rows = [{"title": f"article {i}", **{c: a.get(c, []) for c in columns}} for i, a in enumerate(articles)]
    _parquet(folder / "wiki_translated" / "train-00000-of-00001.parquet", rows)
    features = [{"name": "title", "dtype": "string"}] + [{"name": c, "sequence": "string"} for c in columns]
    _readme(folder, {"wiki_translated": {"train": "wiki_translated/train-*.parquet"}}, {"wiki_translated": features})
    (folder / "replica.json").write_text(json.dumps({"articles": len(articles)}))
    return folder
