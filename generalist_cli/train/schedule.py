"""Learning-rate schedules as pure functions of the optimizer step (transformers' conventions), and the
training clock a wall-clock budget reads."""

from __future__ import annotations

import contextlib
import time


def lr_factor(step: int, *, warmup: int, total: int, schedule: str = "linear", time_left: float = 1.0) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    linear: ``step / warmup`` during warm-up, then a linear decay to 0 at ``total``
    (``get_linear_schedule_with_warmup``); constant: the same warm-up, then 1. ``time_left``: the share of
    a wall-clock budget still unspent (``train.max_minutes``); a linear decay also reaches 0 when it does."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, min((total - step) / max(1, total - warmup), time_left))


class TrainClock:
    """Seconds spent training, evaluation and checkpoint writes excluded (:meth:`paused`): what
    ``train.max_minutes`` budgets, ``eval.every_minutes`` spaces, and the logs report as ``train_s``."""

    def __init__(self, spent: float = 0.0, *, clock=time.perf_counter) -> None:
        self._clock = clock
        self._spent = spent
        self._since = clock()

    def seconds(self) -> float:
        return self._spent + self._clock() - self._since

    def left(self, budget_s: float) -> float:
        """Share of ``budget_s`` still unspent (1 when there is no budget)."""
        return 1.0 if budget_s <= 0 else max(0.0, 1.0 - self.seconds() / budget_s)

    @contextlib.contextmanager
    def paused(self):
        spent = self.seconds()
        try:
            yield
        finally:
            self._spent, self._since = spent, self._clock()
