"""Modality front-ends: each turns one example into fixed-size embeddings (L, D) for the shared encoder.

- audio: Whisper's conv stem over the log-mel (in :class:`~generalist_cli.model.whisper.AudioEncoder`),
  50 positions per second, sinusoidal positions;
- video: RGB frames (T, H, W, C) -> tubelets of (pt, ph, pw) -> one linear layer -> + factorised learned
  time/row/column position embeddings (ViViT tubelets, NaViT factorised positions); optionally a motion
  stream (``video_motion``): the clip minus its per-pixel temporal mean - the static background and body
  cancel, what moves (the hands) stays - through a second linear layer, zero at init (two-stream video
  input, as in Simonyan & Zisserman 2014, computed from the same tubelets);
- text: Whisper's token embeddings (shared with the decoder) + the encoder's sinusoidal positions.
A learned modality embedding (zero at init, so audio stays Whisper's) is added by the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from generalist_cli.features.video import patchify

MODALITIES = ("audio", "video", "text")


class VideoFrontend(nn.Module):
    def __init__(self, n_state: int, *, patch: tuple[int, int, int] = (2, 16, 16),
                 max_grid: tuple[int, int, int] = (64, 14, 14), channels: int = 3) -> None:
        super().__init__()
        self.patch, self.max_grid, self.channels = tuple(patch), tuple(max_grid), channels
        pt, ph, pw = self.patch
        self.proj = nn.Linear(pt * ph * pw * channels, n_state)
        self.pos_time = nn.Parameter(torch.randn(max_grid[0], n_state) * 0.02)
        self.pos_row = nn.Parameter(torch.randn(max_grid[1], n_state) * 0.02)
        self.pos_col = nn.Parameter(torch.randn(max_grid[2], n_state) * 0.02)
        self.motion: nn.Linear | None = None

    def add_motion(self) -> None:
        """Add the motion stream; its projection starts at zero, so the embeddings are unchanged until trained."""
        if self.motion is None:
            self.motion = nn.Linear(self.proj.in_features, self.proj.out_features).to(self.proj.weight)
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)

    def embed(self, patches: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Tubelet ``patches`` (N, pt*ph*pw*C) on a ``grid`` (Nt, Nr, Nc), uint8 or float in [0, 1] -> (N, D)."""
        nt, nr, nc = grid
        if nt > self.max_grid[0] or nr > self.max_grid[1] or nc > self.max_grid[2]:
            raise ValueError(f"a {nt}x{nr}x{nc} tubelet grid exceeds the maximum {self.max_grid}")
        x = patches.float() / 255.0 if patches.dtype == torch.uint8 else patches
        x = (x.to(self.proj.weight.dtype) - 0.5) / 0.5
        out = self.proj(x)
        if self.motion is not None:  # per-pixel temporal mean over every frame of the clip, subtracted
            pt = self.patch[0]
            g = x.view(nt, nr, nc, pt, -1)
            out = out + self.motion((g - g.mean(dim=(0, 3), keepdim=True)).reshape(x.shape))
        x = out.view(nt, nr, nc, -1)
        x = x + self.pos_time[:nt, None, None] + self.pos_row[None, :nr, None] + self.pos_col[None, None, :nc]
        return x.reshape(nt * nr * nc, -1)

    def forward(self, frames: Tensor) -> Tensor:
        """``frames`` (T, H, W, C), uint8 or float in [0, 1] -> (Nt * Nr * Nc, D), time-major."""
        patches, grid = patchify(frames, self.patch)
        return self.embed(patches, grid)
