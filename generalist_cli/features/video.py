"""Video features: RGB frames -> tubelet patches (ViViT "tubelet embedding" input), a pure function.

A clip (T, H, W, C) is cut into tubelets of (pt, ph, pw) frames x pixels: time is padded up by repeating
the last frame, height and width are cropped down to whole patches. Each tubelet is flattened
(pt * ph * pw * C values, time-major inside) and the tubelets come time-major over a (Nt, Nr, Nc) grid.
"""

from __future__ import annotations

import numpy as np

VIDEO_FPS = 8  # frames per second kept when preparing sign videos
VIDEO_SIZE = (112, 112)  # (height, width) frames are scaled to: a 7 x 7 grid of 16-pixel patches


def patchify(frames, patch: tuple[int, int, int] = (2, 16, 16)):
    """``frames`` (T, H, W, C) numpy or torch -> (patches (Nt*Nr*Nc, pt*ph*pw*C), grid (Nt, Nr, Nc)).

    Keeps the dtype (uint8 frames give uint8 patches: 1 byte per value in a prepared dataset)."""
    t, h, w, c = frames.shape
    pt, ph, pw = patch
    nt, nr, nc = -(-t // pt), h // ph, w // pw
    if nr == 0 or nc == 0 or t == 0:
        raise ValueError(f"a {t}x{h}x{w} clip holds no whole {pt}x{ph}x{pw} tubelet")
    numpy = isinstance(frames, np.ndarray)
    if nt * pt > t:  # repeat the last frame to fill the last tubelet
        if numpy:
            frames = np.concatenate([frames, np.repeat(frames[-1:], nt * pt - t, axis=0)])
        else:
            import torch

            frames = torch.cat([frames, frames[-1:].expand(nt * pt - t, h, w, c)])
    x = frames[:, : nr * ph, : nc * pw].reshape(nt, pt, nr, ph, nc, pw, c)
    x = x.transpose(0, 2, 4, 1, 3, 5, 6) if numpy else x.permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(nt * nr * nc, pt * ph * pw * c), (nt, nr, nc)
