"""Conformer additions for encoder blocks (Gulati et al. 2020): a convolution module (LayerNorm, pointwise
conv to 2D + GLU, depthwise conv, LayerNorm, Swish, pointwise conv) and a macaron half-step FFN before
attention. In a Whisper encoder block both sit behind zero-initialised gates (``tanh(g) * module(x)``), so
an upcycled model computes Whisper's function at init and learns how much of each to use; Whisper's own
FFN stays the block's second (full-step) FFN.

Packed rows: the depthwise convolution reads only its own example's positions (a position's window is
masked where the segment id differs), so a packed forward equals the per-example forward, as for attention.
The conformer paper's BatchNorm is a LayerNorm here: batch statistics would mix packed examples and padding.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def segment_depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor, segments: Tensor | None) -> Tensor:
    """Depthwise 1-D convolution over positions of ``x`` (B, S, C) with ``weight`` (C, 1, K) ('same' padding);
    with ``segments`` (B, S) each output position sees only inputs of its own segment (-1 = padding: none)."""
    k = weight.shape[-1]
    if segments is None:
        return F.conv1d(x.transpose(1, 2), weight, bias, padding=k // 2, groups=x.shape[-1]).transpose(1, 2)
    pad = k // 2
    windows = F.pad(x, (0, 0, pad, pad)).unfold(1, k, 1)  # (B, S, C, K)
    seg_windows = F.pad(segments, (pad, pad), value=-2).unfold(1, k, 1)  # (B, S, K)
    keep = (seg_windows == segments[..., None]) & (segments[..., None] >= 0)
    return (windows * keep[:, :, None, :].to(x.dtype) * weight[:, 0]).sum(-1) + bias


class ConvModule(nn.Module):
    def __init__(self, n_state: int, kernel: int = 15) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError("the conformer kernel must be odd")
        self.layer_norm = nn.LayerNorm(n_state)
        self.pointwise_in = nn.Linear(n_state, 2 * n_state)
        self.depthwise = nn.Conv1d(n_state, n_state, kernel, padding=kernel // 2, groups=n_state)
        self.norm = nn.LayerNorm(n_state)
        self.pointwise_out = nn.Linear(n_state, n_state)

    def forward(self, x: Tensor, segments: Tensor | None = None) -> Tensor:
        h = F.glu(self.pointwise_in(self.layer_norm(x)), dim=-1)
        h = segment_depthwise_conv(h, self.depthwise.weight, self.depthwise.bias, segments)
        return self.pointwise_out(F.silu(self.norm(h)))


class MacaronFFN(nn.Module):
    """The conformer's first, half-step feed-forward module (LayerNorm, Linear, Swish, Linear)."""

    def __init__(self, n_state: int, n_hidden: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(n_state)
        self.fc1 = nn.Linear(n_state, n_hidden)
        self.fc2 = nn.Linear(n_hidden, n_state)

    def forward(self, x: Tensor) -> Tensor:
        return 0.5 * self.fc2(F.silu(self.fc1(self.layer_norm(x))))
