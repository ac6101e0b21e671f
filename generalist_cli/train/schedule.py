"""Learning-rate schedules as pure functions of the optimizer step (transformers' conventions)."""

from __future__ import annotations


def lr_factor(step: int, *, warmup: int, total: int, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    linear: ``step / warmup`` during warm-up, then a linear decay to 0 at ``total``
    (``get_linear_schedule_with_warmup``); constant: the same warm-up, then 1."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))
