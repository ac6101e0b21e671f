"""Output heads besides the tied text logits: a non-autoregressive speech head (FastSpeech 2-style,
Ren et al. 2021). A duration predictor says how many mel frames each encoder position lasts; the length
regulator repeats each position's hidden state that many times; a small convolutional decoder with frame
positions turns the expanded sequence into mel frames. Durations for training come free from eSpeak NG's
phoneme events, so it trains in minutes on a CPU.

With ``progress`` every expanded frame also learns where it sits inside its position's span (the fraction
elapsed, the fraction left, and the span's log length): repeated copies of one state otherwise look alike to
the convolutions, which then predict a phoneme's average frame instead of its trajectory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpeechHead(nn.Module):
    def __init__(
        self,
        n_state: int,
        n_mels: int = 80,
        *,
        hidden: int = 256,
        kernel: int = 5,
        max_frames: int = 3000,
        progress: bool = False,
        layers: int = 3,
    ) -> None:
        super().__init__()
        self.n_mels, self.max_frames = n_mels, max_frames
        pad = kernel // 2
        self.duration = nn.Sequential(
            nn.Conv1d(n_state, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel, padding=pad),
            nn.ReLU(),
            nn.Conv1d(hidden, 1, 1),
        )
        self.inp = nn.Linear(n_state, hidden)
        self.frame_pos = nn.Embedding(max_frames, hidden)
        nn.init.normal_(self.frame_pos.weight, std=0.02)
        self.progress = nn.Linear(3, hidden) if progress else None
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=pad) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, n_mels)

    def log_durations(self, h: Tensor) -> Tensor:
        """Predicted ``log(1 + frames)`` per position: ``h`` (B, L, D) -> (B, L)."""
        return self.duration(h.transpose(1, 2))[:, 0]

    def frames(self, log_durations: Tensor) -> Tensor:
        """Whole frames per position from predicted log-durations (at least 0)."""
        return torch.clamp(torch.round(torch.expm1(log_durations)), min=0).long()

    def generate(self, h: Tensor) -> Tensor:
        """Inference for one example: ``h`` (L, D) -> mel frames (F, n_mels) with the predicted durations
        (F = 0 when every predicted duration rounds to zero)."""
        frames = self.frames(self.log_durations(h[None])[0])
        if int(frames.sum()) == 0:
            return h.new_zeros(0, self.n_mels)
        return self(h, frames)

    def forward(self, h: Tensor, durations: Tensor) -> Tensor:
        """One example: ``h`` (L, D), ``durations`` (L,) frames each -> mel frames (F, n_mels), F = sum."""
        x = self.inp(h).repeat_interleave(durations, dim=0)  # (F, hidden): the length regulator
        n = min(x.shape[0], self.max_frames)
        x = x[:n] + self.frame_pos.weight[:n]
        if self.progress is not None:
            x = x + self.progress(span_progress(durations)[:n].to(x.dtype))
        for conv, norm in zip(self.convs, self.norms):
            x = x + F.relu(norm(conv(x.T[None])[0].T))
        return self.out(x)


def span_progress(durations: Tensor) -> Tensor:
    """Per expanded frame: (fraction of its span elapsed, fraction left, log(1 + span length) / 4), (F, 3)."""
    owner = torch.repeat_interleave(torch.arange(len(durations), device=durations.device), durations)
    starts = torch.cumsum(durations, 0) - durations
    length = durations[owner].float()
    elapsed = (torch.arange(len(owner), device=durations.device) - starts[owner]).float() + 0.5
    return torch.stack([elapsed / length, 1 - elapsed / length, torch.log1p(length) / 4], dim=-1)
