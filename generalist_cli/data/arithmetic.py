"""Modular arithmetic tables for grokking (Power et al. 2022): every equation ``a op b = c (mod p)`` as a
text -> text example (``"a + b ="`` -> ``"c"``); a seeded random ``train_fraction`` of the p^2 (or, for
division, p(p-1)) equations trains and the rest validates."""

from __future__ import annotations

import random
from typing import Iterator

from generalist_cli.data.schema import RawItem
from generalist_cli.errors import GenError

OPS = {
    "add": ("+", lambda a, b, p: (a + b) % p),
    "sub": ("-", lambda a, b, p: (a - b) % p),
    "div": ("/", lambda a, b, p: (a * pow(b, p - 2, p)) % p),  # p prime: b^(p-2) is b's inverse
    "x2y2": ("x2y2", lambda a, b, p: (a * a + b * b) % p),
}


def items(*, p: int = 97, op: str = "add", train_fraction: float = 0.5, seed: int = 0) -> Iterator[RawItem]:
    if op not in OPS:
        raise GenError(f"unknown operation {op!r}", hint="use " + ", ".join(OPS))
    if not 0 < train_fraction < 1:
        raise GenError("--train-fraction must be between 0 and 1")
    symbol, fn = OPS[op]
    pairs = [(a, b) for a in range(p) for b in range(p) if not (op == "div" and b == 0)]
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_train = round(train_fraction * len(pairs))
    train = set(order[:n_train])
    for i, (a, b) in enumerate(pairs):
        yield RawItem(
            id=f"{op}{p}-{a}-{b}",
            split="train" if i in train else "valid",
            task="text_translate",
            modality="text",
            source=f"{a} {symbol} {b} =",
            text=str(fn(a, b, p)),
            lang="en",
            src_lang="en",
        )
