"""A length-grouping packing sampler for training: batches of rows, each row a list of example indices
whose encoder lengths add up to at most ``capacity`` (2048 positions by default).

Each epoch shuffles the examples (seeded), cuts them into pools of ``pool`` examples, plans every pool's
rows with the greedy first-fit-decreasing packer (similar lengths end up together, so rows fill well), and
yields the rows ``rows_per_batch`` at a time in shuffled order. Every example appears exactly once per
epoch.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from generalist_cli.model.packing import plan_rows


class PackingSampler:
    def __init__(
        self,
        lengths: Sequence[int],
        *,
        capacity: int = 2048,
        rows_per_batch: int = 1,
        pool: int = 2048,
        shuffle: bool = True,
        seed: int = 42,
    ) -> None:
        too_long = [i for i, n in enumerate(lengths) if n > capacity]
        if too_long:
            raise ValueError(
                f"example {too_long[0]} has {lengths[too_long[0]]} positions, more than a row's {capacity}"
            )
        self.lengths, self.capacity, self.rows_per_batch = list(lengths), capacity, rows_per_batch
        self.pool, self.shuffle, self.seed, self.epoch = pool, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rows(self) -> list[list[int]]:
        """This epoch's rows of example indices."""
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        rows: list[list[int]] = []
        for start in range(0, len(order), self.pool):
            chunk = order[start : start + self.pool]
            rows += [[chunk[i] for i in row] for row in plan_rows([self.lengths[i] for i in chunk], self.capacity)]
        if self.shuffle:
            rng.shuffle(rows)
        return rows

    def __iter__(self) -> Iterator[list[list[int]]]:
        rows = self.rows()
        for i in range(0, len(rows), self.rows_per_batch):
            yield rows[i : i + self.rows_per_batch]

    def __len__(self) -> int:
        return -(-len(self.rows()) // self.rows_per_batch)

    def padding_fraction(self) -> float:
        rows = self.rows()
        return 1.0 - sum(self.lengths) / (len(rows) * self.capacity)
