"""Row planning for Patch n' Pack, without torch: which examples share an encoder row (:func:`plan_rows`), and
the flat indices that lay them there and read them back (:func:`row_layout`), for graphs that take the
layout as inputs (the packed ONNX encoder run by ONNX Runtime, infer/onnx_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def plan_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows whose total length is at most ``capacity`` (first-fit decreasing)."""
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"example {too_long[0]} has {lengths[too_long[0]]} positions, more than a row's {capacity}")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return [sorted(r) for r in rows]


@dataclass(frozen=True)
class RowLayout:
    """B examples of lengths L_i, zero-padded to S = max L_i, laid into R rows of W positions.

    ``pack_index`` (R, W): flat index into the (B * S + 1) padded positions (B * S: a zero row) of what sits
    at each row position; ``segments`` (R, W): the example's place within its row, -1 on padding;
    ``unpack_index`` (B, S): flat index into the (R * W + 1) row positions (R * W: zeros) of each example's
    positions, so reading back gives the examples zero-padded again."""

    pack_index: np.ndarray
    segments: np.ndarray
    unpack_index: np.ndarray


def row_layout(lengths: list[int], capacity: int) -> RowLayout:
    rows = plan_rows(lengths, capacity)
    longest = max(lengths)
    width = max(sum(lengths[i] for i in row) for row in rows)
    pack_index = np.full((len(rows), width), len(lengths) * longest, dtype=np.int64)
    segments = np.full((len(rows), width), -1, dtype=np.int64)
    unpack_index = np.full((len(lengths), longest), len(rows) * width, dtype=np.int64)
    for r, row in enumerate(rows):
        start = 0
        for k, i in enumerate(row):
            n = lengths[i]
            pack_index[r, start : start + n] = i * longest + np.arange(n)
            segments[r, start : start + n] = k
            unpack_index[i, :n] = r * width + start + np.arange(n)
            start += n
    return RowLayout(pack_index, segments, unpack_index)
