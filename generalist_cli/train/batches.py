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
    source: torch.Tensor  # mel (n_mels, frames) | patches (N, P) uint8 | tokens (L,)
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

    def __init__(self, sources, *, split_attr: str = "split", max_examples: int | None = None,
                 tokenizer: Path | None = None) -> None:
        import datasets

        from generalist_cli.data.prepare import STAMP, tokenizer_fingerprint

        datasets.disable_progress_bars()
        self.sources, self.sets, self.weights, self.names = [], [], [], []
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
                    raise GenError(f"{path}: its token ids come from another vocabulary than the model's",
                                   hint="prepare it again with --model set to the model you train")
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
        if not self.sets and split_attr == "split":
            raise GenError("the recipe's data sources hold no training examples")

    def draw(self, *, seed: int, step: int, n: int) -> list[tuple[int, int]]:
        """The global batch of optimizer step ``step``: ``n`` (source, index) pairs."""
        rng = random.Random(seed * 1_000_003 + step)
        picks = rng.choices(range(len(self.sets)), weights=self.weights, k=n)
        return [(s, rng.randrange(len(self.sets[s]))) for s in picks]

    def row(self, source: int, index: int) -> dict:
        return self.sets[source][int(index)]


def collate(rows: list[dict], tokenizer, *, max_target_tokens: int) -> Batch:
    examples = []
    for r in rows:
        task, modality = str(r["task"]), str(r["modality"])
        grid = None
        if modality == "audio":
            source = torch.from_numpy(np.asarray(r["mel"], dtype=np.float32).T.copy())  # (n_mels, frames)
        elif modality == "video":
            source = torch.from_numpy(np.asarray(r["patches"], dtype=np.uint8))
            grid = tuple(int(g) for g in r["grid"])
        else:
            source = torch.from_numpy(np.asarray(r["src_tokens"], dtype=np.int64))
        if task == "tts":
            tokens = torch.tensor([tokenizer.sot])
            prompt_len = 1
            mel = torch.from_numpy(np.asarray(r["tgt_mel"], dtype=np.float32))
            examples.append(Example(task, modality, source, grid, tokens, prompt_len, mel,
                                    durations_for(len(source), mel.shape[0])))
            continue
        prompt = tokenizer.task_prompt(task, lang=str(r["lang"]), src_lang=str(r["src_lang"]))
        target = [int(t) for t in r["tgt_tokens"]][:max_target_tokens] + [tokenizer.eot]
        examples.append(Example(task, modality, source, grid, torch.tensor(prompt + target), len(prompt), None, None))
    return Batch(examples)


def durations_for(n_tokens: int, n_frames: int) -> torch.Tensor:
    """Frames per source token, spread evenly (the remainder to the first tokens); sums to ``n_frames``."""
    base, extra = divmod(n_frames, max(1, n_tokens))
    d = torch.full((n_tokens,), base, dtype=torch.long)
    d[:extra] += 1
    return d
