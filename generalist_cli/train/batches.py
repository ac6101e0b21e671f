"""Training batches. A step's global batch is a pure function of (seed, step): every process draws the
same ``batch_size`` examples (source by the recipe's weights, example uniformly within it), so resuming
needs only the step, and a batch split over processes / accumulation steps is the same batch.

:func:`collate` turns a part of the batch into a :class:`Batch` of tensors: each example's source
(mel, tubelet patches or tokens) and its decoder sequence (task prompt + target + end of text).
Text -> speech examples carry the target mel and per-token durations instead (their decoder segment is
a lone start token that takes no loss, so encoder and decoder segments stay paired in packed rows).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generalist_cli.errors import GenError


@dataclass
class Example:
    task: str
    modality: str
    source: torch.Tensor  # mel (n_mels, frames) | patches (N, P) uint8 | landmarks (T, 75, 3) | tokens (L,)
    grid: tuple[int, int, int] | None
    tokens: torch.Tensor  # decoder sequence (T,)
    prompt_len: int  # tokens before the first target token
    tgt_mel: torch.Tensor | None  # (frames, n_mels) for tts
    durations: torch.Tensor | None  # frames per source token for tts


@dataclass
class Batch:
    examples: list[Example]

    @property
    def n_target_tokens(self) -> int:
        return sum(n_targets(e) for e in self.examples)


def n_targets(e: Example) -> int:
    """Predicted tokens of an example: the target text and end of text (none for tts)."""
    return 0 if e.task == "tts" else len(e.tokens) - e.prompt_len


class TrainData:
    """The recipe's sources, opened with ``datasets.load_from_disk``."""

    def __init__(
        self, sources, *, split_attr: str = "split", max_examples: int | None = None, tokenizer: Path | None = None
    ) -> None:
        import datasets

        from generalist_cli.data.prepare import STAMP, tokenizer_fingerprint

        datasets.disable_progress_bars()
        self.sources, self.sets, self.weights, self.names = [], [], [], []
        self._pool: list[tuple[int, int]] | None = None  # "epochs" sampling: every (source, index), weighted
        self._order: tuple | None = None  # ((seed, epoch), that epoch's permutation of the pool)
        self._cache: dict[tuple[int, int], dict] = {}  # decoded rows of small sources
        self._lengths: list[int] | None = None  # "packed" sampling: encoder positions of every pool entry
        self._rows_cache: dict = {}  # "packed" sampling: the current epoch's rows
        self._row_counts: dict[tuple[int, int, int], int] = {}  # "packed" sampling: rows of each epoch seen
        for s in sources:
            split = getattr(s, split_attr)
            if not split:
                continue
            path = Path(s.path)
            try:
                dd = datasets.load_from_disk(str(path))
            except FileNotFoundError:
                raise GenError(f"{path}: no prepared dataset there", hint="make it with gen prepare ...") from None
            stamp = path / STAMP
            if tokenizer is not None and stamp.exists():
                made_with = json.loads(stamp.read_text()).get("tokenizer_sha256")
                if made_with and made_with != tokenizer_fingerprint(tokenizer):
                    raise GenError(
                        f"{path}: its token ids come from another vocabulary than the model's",
                        hint="prepare it again with --model set to the model you train",
                    )
            if split not in dd:
                if split_attr == "eval_split":
                    continue
                raise GenError(f"{path}: has no split {split!r} (it has {', '.join(dd)})")
            ds = dd[split]
            if s.tasks:
                keep = [i for i, t in enumerate(ds["task"]) if t in s.tasks]
                ds = ds.select(keep)
            if max_examples is not None:
                ds = ds.select(range(min(max_examples, len(ds))))
            if len(ds) == 0:
                continue
            self.sources.append(s)
            self.sets.append(ds.with_format("numpy"))
            self.weights.append(s.weight)
            self.names.append(path.name)
        self._small = [ds.data.nbytes <= CACHE_BYTES for ds in self.sets]
        if not self.sets and split_attr == "split":
            raise GenError("the recipe's data sources hold no training examples")

    def draw(
        self, *, seed: int, step: int, n: int, sampling: str = "random", capacity: int = 2048
    ) -> list[tuple[int, int]]:
        """The global batch of optimizer step ``step``: ``n`` (source, index) pairs, a pure function of
        (seed, step) so that a resumed run sees the same batches.

        ``random``: each example's source is drawn by weight, then an example of it (with replacement).
        ``epochs``: the sources' examples, repeated in proportion to their weights, are shuffled once per
        epoch and read in order, so an epoch shows each example (weight times) exactly once; a batch as large
        as the data is the full batch.
        ``packed``: ``n`` is a number of *rows*: each epoch's examples (weighted as for ``epochs``) are packed
        into rows of ``capacity`` encoder positions by the :class:`~generalist_cli.data.sampler.PackingSampler`
        (shuffled, similar lengths together) and each step takes the next ``n`` rows: a token budget per step
        (NaViT), so the number of examples varies with their lengths."""
        if sampling == "packed":
            return self._packed(seed, step, n, capacity)
        if sampling == "random":
            rng = random.Random(seed * 1_000_003 + step)
            picks = rng.choices(range(len(self.sets)), weights=self.weights, k=n)
            return [(s, rng.randrange(len(self.sets[s]))) for s in picks]
        pool = self._epoch_pool()
        out = []
        for k in range(step * n, step * n + n):
            epoch, at = divmod(k, len(pool))
            out.append(pool[self._epoch_order(seed, epoch, len(pool))[at]])
        return out

    def tasks(self) -> set[str]:
        """The tasks of every source's examples."""
        return {str(t) for ds in self.sets for t in set(ds.with_format(None)["task"])}

    def target_vocabulary(self, eot: int) -> tuple[int, ...]:
        """Every token id that occurs in the sources' text targets, and end of text, sorted."""
        ids = {eot}
        for ds in self.sets:
            if "tgt_tokens" in ds.column_names:
                for row in ds.with_format(None)["tgt_tokens"]:
                    ids.update(row or ())
        return tuple(sorted(int(i) for i in ids))

    def _packed(self, seed: int, step: int, n: int, capacity: int) -> list[tuple[int, int]]:
        first, epoch = step * n, 0
        while first >= self._row_count(seed, epoch, capacity):  # the epoch holding row `first`
            first -= self._row_count(seed, epoch, capacity)
            epoch += 1
        out: list[tuple[int, int]] = []
        while n > 0:
            take = self._epoch_rows(seed, epoch, capacity)[first : first + n]
            for row in take:
                out += row
            n -= len(take)
            first, epoch = 0, epoch + 1
        return out

    def _row_count(self, seed: int, epoch: int, capacity: int) -> int:
        key = (seed, epoch, capacity)
        if key not in self._row_counts:
            self._row_counts[key] = len(self._epoch_rows(seed, epoch, capacity))
        return self._row_counts[key]

    def _epoch_rows(self, seed: int, epoch: int, capacity: int) -> list[list[tuple[int, int]]]:
        key = (seed, epoch, capacity)
        if key not in self._rows_cache:
            from generalist_cli.data.sampler import PackingSampler

            pool = self._epoch_pool()
            if self._lengths is None:
                per_source = [np.asarray(ds.with_format(None)["length"]) for ds in self.sets]
                self._lengths = [max(1, int(per_source[s][i])) for s, i in pool]
            sampler = PackingSampler(self._lengths, capacity=capacity, seed=seed)
            sampler.set_epoch(epoch)
            self._rows_cache = {key: [[pool[i] for i in row] for row in sampler.rows()]}  # keep one epoch
        return self._rows_cache[key]

    def _epoch_pool(self) -> list[tuple[int, int]]:
        if self._pool is None:
            low = min(self.weights)
            self._pool = [
                (s, i)
                for s, (ds, w) in enumerate(zip(self.sets, self.weights))
                for _ in range(max(1, round(w / low)))
                for i in range(len(ds))
            ]
        return self._pool

    def _epoch_order(self, seed: int, epoch: int, size: int) -> list[int]:
        """The permutation of epoch ``epoch`` (cached: consecutive steps mostly share an epoch)."""
        if self._order is None or self._order[0] != (seed, epoch):
            order = list(range(size))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            self._order = ((seed, epoch), order)
        return self._order[1]

    def row(self, source: int, index: int) -> dict:
        return self.sets[source][int(index)]

    def rows(self, pairs: list[tuple[int, int]]) -> list[dict]:
        """:meth:`row` for many (source, index) pairs, in order, with one batched read per source (a
        row-by-row read costs ~2 ms in ``datasets``' formatting; a batched one a few microseconds a row)."""
        missing = [p for p in dict.fromkeys(pairs) if p not in self._cache]
        got = dict(zip(missing, read_rows(self.sets, missing))) if missing else {}
        for p, row in got.items():
            if self._small[p[0]]:  # small sources stay decoded in memory
                self._cache[p] = row
        return [self._cache.get(p) or got[p] for p in pairs]


CACHE_BYTES = 256 * 2**20  # sources up to this size (Arrow bytes) are decoded once and kept


def read_rows(sets, pairs: list[tuple[int, int]]) -> list[dict]:
    """Rows ``sets[s][i]`` for (s, i) in ``pairs``, read with one batched query per dataset."""
    out: list[dict | None] = [None] * len(pairs)
    by_source: dict[int, list[int]] = {}
    for k, (s, _) in enumerate(pairs):
        by_source.setdefault(s, []).append(k)
    for s, ks in by_source.items():
        cols = sets[s][[int(pairs[k][1]) for k in ks]]
        for j, k in enumerate(ks):
            out[k] = {name: values[j] for name, values in cols.items()}
    return out


def collate(rows: list[dict], tokenizer, *, max_target_tokens: int, phonemes: bool = False) -> Batch:
    """``phonemes``: text -> speech examples read eSpeak's phonemes (:func:`~generalist_cli.media.espeak.phoneme_text`)
    instead of the text, each phoneme lasting from its start to the next one's (a model with
    ``config.tts_input == "phonemes"``)."""
    examples = []
    for r in rows:
        task, modality = str(r["task"]), str(r["modality"])
        grid = None
        if modality == "audio":
            source = torch.from_numpy(np.asarray(r["mel"], dtype=np.float32).T.copy())  # (n_mels, frames)
        elif modality == "video" and len(r.get("pose", ())):  # landmarks (T, 75, 3), NaN where not found
            source = torch.from_numpy(np.asarray(r["pose"], dtype=np.float32))
        elif modality == "video":
            source = torch.from_numpy(np.asarray(r["patches"], dtype=np.uint8))
            grid = tuple(int(g) for g in r["grid"])
        else:
            source = torch.from_numpy(np.asarray(r["src_tokens"], dtype=np.int64))
        if task == "tts":
            tokens = torch.tensor([tokenizer.sot])
            prompt_len = 1
            mel = torch.from_numpy(np.asarray(r["tgt_mel"], dtype=np.float32))
            starts = np.asarray(r.get("word_starts", ()), dtype=np.float64)
            if phonemes:  # the phonemes as text, and their start times in place of the words'
                source, starts = _phoneme_source(r, tokenizer)
            if len(starts):  # eSpeak's word (or phoneme) events: each one's frames go to its tokens
                pieces = [tokenizer.decode([int(t)]) for t in source.tolist()]
                durations = durations_from_words(pieces, starts, mel.shape[0])
            else:
                durations = durations_for(len(source), mel.shape[0])
            examples.append(Example(task, modality, source, grid, tokens, prompt_len, mel, durations))
            continue
        prompt = tokenizer.task_prompt(task, lang=str(r["lang"]), src_lang=str(r["src_lang"]))
        target = [int(t) for t in r["tgt_tokens"]][:max_target_tokens] + [tokenizer.eot]
        examples.append(Example(task, modality, source, grid, torch.tensor(prompt + target), len(prompt), None, None))
    return Batch(examples)


def _phoneme_source(row: dict, tokenizer) -> tuple[torch.Tensor, np.ndarray]:
    """Token ids of a tts row's phonemes and the phonemes' start times."""
    from generalist_cli.media.espeak import phoneme_text

    raw = row.get("phonemes")
    names = [] if raw is None else [str(n) for n in raw]
    if not names:
        raise GenError(
            f"text -> speech example {row.get('id', '')!s} has no phonemes: it was prepared by an older gen",
            hint="prepare the speak corpus again (gen prepare speak ...), or train with model.tts_input = 'text'",
        )
    ids = tokenizer.encode(phoneme_text(names))
    return torch.tensor(ids, dtype=torch.long), np.asarray(row["phoneme_starts"], dtype=np.float64)


def durations_for(n_tokens: int, n_frames: int) -> torch.Tensor:
    """Frames per source token, spread evenly (the remainder to the first tokens); sums to ``n_frames``."""
    base, extra = divmod(n_frames, max(1, n_tokens))
    d = torch.full((n_tokens,), base, dtype=torch.long)
    d[:extra] += 1
    return d


def durations_from_words(
    pieces: list[str], word_starts, n_frames: int, *, frames_per_second: int = 100
) -> torch.Tensor:
    """Frames per source token from word start times (seconds): token ``i`` belongs to the word counted by
    the space-led tokens before it; a word's frames (its start to the next word's start; the first word also
    takes the leading silence, the last the rest) are spread evenly over its tokens. Sums to ``n_frames``."""
    word_of, w = [], -1
    for i, piece in enumerate(pieces):
        if i == 0 or piece.startswith(" "):
            w += 1
        word_of.append(min(w, len(word_starts) - 1))
    bounds = [0] + [min(n_frames, max(0, round(float(t) * frames_per_second))) for t in word_starts[1:]] + [n_frames]
    bounds = np.maximum.accumulate(np.asarray(bounds))
    d = torch.zeros(len(pieces), dtype=torch.long)
    for word in range(len(word_starts)):
        members = [i for i, x in enumerate(word_of) if x == word]
        if members:
            d[members] = durations_for(len(members), int(bounds[word + 1] - bounds[word]))
        elif word > 0:  # a word with no token of its own: its frames go to the previous word's last token
            prev = [i for i, x in enumerate(word_of) if x < word]
            if prev:
                d[prev[-1]] += int(bounds[word + 1] - bounds[word])
    d[-1] += n_frames - int(d.sum())
    return d
