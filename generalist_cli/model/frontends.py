"""Modality front-ends: each turns one example into fixed-size embeddings (L, D) for the shared encoder.

- audio: Whisper's conv stem over the log-mel (in :class:`~generalist_cli.model.whisper.AudioEncoder`),
  50 positions per second, sinusoidal positions;
- video: RGB frames (T, H, W, C) -> tubelets of (pt, ph, pw) -> one linear layer -> + factorised learned
  time/row/column position embeddings (ViViT tubelets, NaViT factorised positions); optionally a motion
  stream (``video_motion``): the clip minus its per-pixel temporal mean - the static background and body
  cancel, what moves (the hands) stays - through a second linear layer, zero at init (two-stream video
  input, as in Simonyan & Zisserman 2014, computed from the same tubelets); and/or (``video_tokens``) one
  *motion-map* token per tubelet time step: how much each pixel moves (|clip - temporal mean|, averaged over
  colour channels, so skin, clothes and room colours drop out) pooled to a 14 x 14 map, scaled by the clip's
  own spread, through a linear layer. Nine tokens carry where the hands move when; on signer-independent
  synthetic signs they generalise where 467 tubelet tokens over-fit the signers' looks (docs/training.md);
- pose (``video_tokens = "pose"``): body and hand landmarks per frame (features/pose.py, (T, 75, 3)) ->
  one token per frame: the points centred on the shoulders' midpoint and divided by the shoulder width (the
  signer's own size and place drop out), a point not found or unseen (visibility <= 0.5) zeroed and flagged,
  through one linear layer, plus a learned time position (:class:`PoseFrontend`);
- text: Whisper's token embeddings (shared with the decoder) + the encoder's sinusoidal positions.
A learned modality embedding (zero at init, so audio stays Whisper's) is added by the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generalist_cli.features.pose import MAX_FRAMES, N_POINTS, SHOULDERS
from generalist_cli.features.video import patchify
from generalist_cli.model.config import VIDEO_TOKENS

MODALITIES = ("audio", "video", "text")
MAP_CELLS = (14, 14)  # the motion map's rows x columns (8-pixel cells of a 112 x 112 clip)


class PoseFrontend(nn.Module):
    def __init__(self, n_state: int, *, max_frames: int = MAX_FRAMES) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.proj = nn.Linear(N_POINTS * 3, n_state)
        self.pos_time = nn.Parameter(torch.randn(max_frames, n_state) * 0.02)

    @staticmethod
    def normalise(lm: Tensor) -> Tensor:
        """Landmarks (T, 75, 3) (x, y, visibility; NaN where not found) -> (T, 75, 3): x and y relative to the
        clip's mean shoulder midpoint in shoulder widths (the median over frames), and 1 where the point was
        seen (0, and x = y = 0, where not)."""
        seen = ~torch.isnan(lm[..., 0]) & (torch.nan_to_num(lm[..., 2]) > 0.5)
        xy = torch.where(seen[..., None], lm[..., :2], torch.zeros((), dtype=lm.dtype))
        both = seen[:, SHOULDERS[0]] & seen[:, SHOULDERS[1]]
        if both.any():
            left, right = xy[both, SHOULDERS[0]], xy[both, SHOULDERS[1]]
            centre = ((left + right) / 2).mean(0)
            width = (left - right).norm(dim=-1).median().clamp_min(1e-3)
        else:  # no shoulders: the frame's centre, a quarter of it wide
            centre, width = torch.full((2,), 0.5, dtype=lm.dtype), torch.tensor(0.25, dtype=lm.dtype)
        rel = torch.where(seen[..., None], (xy - centre.to(xy)) / width.to(xy), torch.zeros((), dtype=xy.dtype))
        return torch.cat([rel, seen[..., None].to(rel.dtype)], dim=-1)

    def forward(self, landmarks: Tensor) -> Tensor:
        """``landmarks`` (T, 75, 3) -> (T, D)."""
        t = landmarks.shape[0]
        if t > self.max_frames or landmarks.shape[1:] != (N_POINTS, 3):
            shape = tuple(landmarks.shape)
            raise ValueError(f"landmarks of shape {shape}: at most {self.max_frames} frames of (75, 3)")
        x = self.normalise(landmarks.float()).reshape(t, -1)
        return self.proj(x.to(self.proj.weight.dtype)) + self.pos_time[:t]


class VideoFrontend(nn.Module):
    def __init__(
        self,
        n_state: int,
        *,
        patch: tuple[int, int, int] = (2, 16, 16),
        max_grid: tuple[int, int, int] = (64, 14, 14),
        channels: int = 3,
    ) -> None:
        super().__init__()
        self.patch, self.max_grid, self.channels = tuple(patch), tuple(max_grid), channels
        pt, ph, pw = self.patch
        self.proj = nn.Linear(pt * ph * pw * channels, n_state)
        self.pos_time = nn.Parameter(torch.randn(max_grid[0], n_state) * 0.02)
        self.pos_row = nn.Parameter(torch.randn(max_grid[1], n_state) * 0.02)
        self.pos_col = nn.Parameter(torch.randn(max_grid[2], n_state) * 0.02)
        self.motion: nn.Linear | None = None
        self.tokens = "tubelets"
        self.motion_map: nn.Linear | None = None
        self.map_embedding: nn.Parameter | None = None  # tells map tokens from tubelet tokens

    def add_motion(self) -> None:
        """Add the motion stream; its projection starts at zero, so the embeddings are unchanged until trained."""
        if self.motion is None:
            self.motion = nn.Linear(self.proj.in_features, self.proj.out_features).to(self.proj.weight)
            nn.init.zeros_(self.motion.weight)
            nn.init.zeros_(self.motion.bias)

    def set_tokens(self, tokens: str) -> None:
        """Which tokens a clip gives (:data:`VIDEO_TOKENS`); the motion-map layer is made on first use."""
        if tokens not in VIDEO_TOKENS:
            raise ValueError(f"video tokens must be one of {', '.join(VIDEO_TOKENS)}, not {tokens!r}")
        self.tokens = tokens  # "pose": the model's PoseFrontend reads landmarks instead
        if "motion-map" in tokens and self.motion_map is None:
            n = self.proj.out_features
            self.motion_map = nn.Linear(MAP_CELLS[0] * MAP_CELLS[1], n).to(self.proj.weight)
            self.map_embedding = nn.Parameter(
                torch.randn(n, dtype=self.proj.weight.dtype, device=self.proj.weight.device) * 0.02
            )

    def motion_maps(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Tubelets ``x`` (N, pt*ph*pw*C) in [-1, 1] -> (Nt, 14 * 14): per time step, the mean absolute change
        from the clip's per-pixel temporal mean, over colour channels and each cell, over the clip's spread
        (at least 1e-3, so a still clip is not blown up from rounding noise)."""
        nt, nr, nc = grid
        pt, ph, pw = self.patch
        g = x.view(nt, nr, nc, pt, ph, pw, self.channels)
        moved = (g - g.mean(dim=(0, 3), keepdim=True)).abs().mean(dim=(3, 6))  # (Nt, Nr, Nc, ph, pw)
        frames = moved.permute(0, 1, 3, 2, 4).reshape(nt, 1, nr * ph, nc * pw)
        maps = F.adaptive_avg_pool2d(frames, MAP_CELLS).reshape(nt, -1)
        return maps / maps.std().clamp_min(1e-3) if maps.numel() > 1 else maps  # (still clips stay ~0)

    def embed(self, patches: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Tubelet ``patches`` (N, pt*ph*pw*C) on a ``grid`` (Nt, Nr, Nc), uint8 or float in [0, 1] -> (N, D)."""
        nt, nr, nc = grid
        if nt > self.max_grid[0] or nr > self.max_grid[1] or nc > self.max_grid[2]:
            raise ValueError(f"a {nt}x{nr}x{nc} tubelet grid exceeds the maximum {self.max_grid}")
        x = patches.float() / 255.0 if patches.dtype == torch.uint8 else patches
        x = (x.to(self.proj.weight.dtype) - 0.5) / 0.5
        parts = []
        if "motion-map" in self.tokens:
            parts.append(self.motion_map(self.motion_maps(x, grid)) + self.pos_time[:nt] + self.map_embedding)
        if "tubelets" not in self.tokens:
            return parts[0]
        out = self.proj(x)
        if self.motion is not None:  # per-pixel temporal mean over every frame of the clip, subtracted
            pt = self.patch[0]
            g = x.view(nt, nr, nc, pt, -1)
            out = out + self.motion((g - g.mean(dim=(0, 3), keepdim=True)).reshape(x.shape))
        x = out.view(nt, nr, nc, -1)
        x = x + self.pos_time[:nt, None, None] + self.pos_row[None, :nr, None] + self.pos_col[None, None, :nc]
        return torch.cat([x.reshape(nt * nr * nc, -1), *parts])

    def forward(self, frames: Tensor) -> Tensor:
        """``frames`` (T, H, W, C), uint8 or float in [0, 1] -> (tokens, D): Nt * Nr * Nc tubelets, time-major,
        then Nt motion-map tokens (as ``tokens`` says)."""
        patches, grid = patchify(frames, self.patch)
        return self.embed(patches, grid)
