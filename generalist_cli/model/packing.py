"""Patch n' Pack (NaViT, Dehghani et al. 2023): examples of any modality and length share encoder rows.

:func:`plan_rows` greedily assigns example lengths to rows of at most ``capacity`` positions (first-fit
decreasing); :func:`pack` lays the examples' embeddings into rows and returns a :class:`Packing` that says
where each example sits. Attention inside a row is block-diagonal by example (:meth:`Packing.blocks`, run
example by example), a decoder segment cross-attends only to its own encoder segment (:func:`cross_blocks`),
positions restart per example, and recurrent (TTT) layers scan each span separately, so a packed forward
equals the per-example forward. Shapes: B rows, S positions per row, D width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from generalist_cli.model.rows import plan_rows  # noqa: F401  (re-exported: the planner lives without torch)


@dataclass(frozen=True)
class Packing:
    segment_ids: Tensor  # (B, S) long: index of the example within its row, -1 = padding
    positions: Tensor  # (B, S) long: position inside the example (0 for padding)
    spans: tuple[tuple[int, int, int], ...]  # (row, start, end) of every example, in input order

    @property
    def valid(self) -> Tensor:
        return self.segment_ids >= 0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - float(self.valid.float().mean())

    def sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per row, the lengths of its examples in row order (:func:`pack` lays them contiguously from 0)."""
        return tuple(tuple(b - a for a, b in row) for row in per_row_spans(self))

    def blocks(self, *, causal: bool = False) -> "Blocks":
        """Self-attention within each example (and not into the future when ``causal``)."""
        sizes = self.sizes()
        return Blocks(sizes, sizes, causal)


@dataclass(frozen=True)
class Blocks:
    """Block-diagonal attention over packed rows, computed example by example instead of through an (S x S)
    mask: per row, the lengths of its examples' queries and of their keys, in row order (the k-th query
    segment of a row sees only the k-th key segment). Attention then costs sum L_i^2, not S^2 per row (9x
    less on a batch of real 2-11 s utterances packed two to a 2048-position row); padding queries give zeros."""

    queries: tuple[tuple[int, ...], ...]
    keys: tuple[tuple[int, ...], ...]
    causal: bool = False

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """``q`` (B, H, T, K), ``k, v`` (B, H, S, K) -> (B, H, T, K). Rows are unbound and split (not sliced),
        so the backward is one concatenation, not a full-size gradient per example."""
        rows = []
        for qr, kr, vr, qn, kn in zip(q.unbind(0), k.unbind(0), v.unbind(0), self.queries, self.keys):
            qs = qr.split([*qn, qr.shape[1] - sum(qn)], dim=1)
            ks, vs = (t.split([*kn, t.shape[1] - sum(kn)], dim=1) for t in (kr, vr))
            outs = [
                F.scaled_dot_product_attention(a, b, c, is_causal=self.causal)
                for a, b, c in zip(qs[:-1], ks[:-1], vs[:-1])
            ]
            rows.append(torch.cat([*outs, torch.zeros_like(qs[-1])], dim=1))
        return torch.stack(rows)


def cross_blocks(dec: Packing, enc: Packing) -> Blocks:
    """Decoder segment k of a row sees only encoder segment k of the same row."""
    return Blocks(dec.sizes(), enc.sizes())


def pack(seqs: list[Tensor], rows: list[list[int]], *, width: int | None = None) -> tuple[Tensor, Packing]:
    """Lay ``seqs`` (each (L_i, ...)) into rows as planned: ``(x (B, S, ...), Packing)``; S = ``width`` or the
    longest row. Examples keep the order given in each row; ``Packing.spans`` follows the order of ``seqs``.

    One scatter places every example (a per-example slice assignment would make autograd copy the whole
    packed tensor once per example: quadratic in the batch)."""
    s = width or max(sum(seqs[i].shape[0] for i in row) for row in rows)
    first = seqs[0]
    seg = torch.full((len(rows), s), -1, dtype=torch.long)
    pos = torch.zeros((len(rows), s), dtype=torch.long)
    spans: dict[int, tuple[int, int, int]] = {}
    for r, row in enumerate(rows):
        start = 0
        for k, i in enumerate(row):
            n = seqs[i].shape[0]
            if start + n > s:
                raise ValueError(f"row {r} needs {start + n} positions, more than {s}")
            seg[r, start : start + n] = k
            pos[r, start : start + n] = torch.arange(n)
            spans[i] = (r, start, start + n)
            start += n
    order = [spans[i] for i in range(len(seqs))]
    dest = torch.cat([torch.arange(r * s + a, r * s + b) for r, a, b in order]).to(first.device)
    flat = first.new_zeros((len(rows) * s,) + tuple(first.shape[1:]))
    flat = flat.index_put((dest,), torch.cat(seqs))
    x = flat.view((len(rows), s) + tuple(first.shape[1:]))
    return x, Packing(seg.to(first.device), pos.to(first.device), tuple(order))


def span_index(spans, row_width: int, *, n_rows: int, reverse: list[bool] | None = None) -> Tensor:
    """(n, longest) flat indices into a (``n_rows`` * ``row_width``) tensor, one row per ``(row, start, end)``
    span (its positions reversed where ``reverse``, one flag per span), padded with ``n_rows * row_width``: the
    index of an extra zero row the caller appends. Gathering with it lays every span at the start of its row."""
    longest = max(b - a for _, a, b in spans)
    idx = torch.full((len(spans), longest), n_rows * row_width, dtype=torch.long)
    for k, ((r, a, b), back) in enumerate(zip(spans, reverse or [False] * len(spans))):
        p = torch.arange(r * row_width + a, r * row_width + b)
        idx[k, : b - a] = p.flip(0) if back else p
    return idx


def gather_positions(x: Tensor, index: Tensor) -> Tensor:
    """``x`` (B, S, D) and flat ``index`` (any shape, values in [0, B*S]) -> x at those positions; index B*S
    reads zeros (see :func:`span_index`)."""
    flat = torch.cat([x.reshape(-1, x.shape[-1]), x.new_zeros(1, x.shape[-1])])
    return flat[index.to(x.device)]


def scatter_positions(values: Tensor, index: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of :func:`gather_positions`: a zero tensor of ``shape`` (B, S, D) with ``values`` (index.shape
    + (D,)) written at ``index``; writes to the padding index B*S are dropped."""
    b, s, d = shape
    flat = values.new_zeros(b * s + 1, d).index_put(
        (index.to(values.device).reshape(-1),), values.reshape(-1, d), accumulate=True
    )
    return flat[:-1].view(b, s, d)


def unpack(x: Tensor, packing: Packing) -> list[Tensor]:
    """The per-example slices of packed ``x`` (B, S, ...), in input order."""
    return [x[r, a:b] for r, a, b in packing.spans]


def per_row_spans(packing: Packing) -> list[list[tuple[int, int]]]:
    """Each row's (start, end) spans sorted by start (for per-example scans)."""
    rows: list[list[tuple[int, int]]] = [[] for _ in range(packing.segment_ids.shape[0])]
    for r, a, b in packing.spans:
        rows[r].append((a, b))
    return [sorted(r) for r in rows]
