"""Synthetic isolated-sign videos in the INCLUDE release layout, for training and testing the sign path
on a machine without the real dataset (INCLUDE is 50 GB behind Zenodo).

Each sign is, as in real sign languages, a handshape, a location and a movement: one or two hand-like
shapes (a palm with the sign's fingers: flat, spread, fist, pointing, V, Y) in front of a signer's body
(torso and head), moving along a path that belongs to the sign (a wave beside the head, a circle one way
or the other, a push toward the camera, two hands meeting or parting ...). Signs that share a handshape
differ in movement or in the number of hands. A *signer* is a
skin tone, a shirt and background colour, a hand size, a body position and a signing speed; every take
adds its own jitter (start delay, amplitude, position, speed). Signers are split, not takes: the held-out
videos come from signers the model never saw, as in INCLUDE's signer-independent setting.

    gen prepare synthetic-signs --out raw/signs       (this module)
    gen prepare include --local raw/signs --out data/signs
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (category, sign, hands, path): path(u) for u in [0, 1] gives, per hand, (x, y, scale, angle) in
# body-relative units (x right, y down, the head at (0, -1), the chest at (0, 0)).
SIGNS: list[tuple[str, str]] = [
    ("Greetings", "Hello"),
    ("Greetings", "Thank You"),
    ("Greetings", "Good Morning"),
    ("Colours", "Red"),
    ("Colours", "Blue"),
    ("Home", "House"),
    ("Home", "Bed"),
    ("Pronouns", "You"),
    ("Pronouns", "Me"),
    ("Adjectives", "Big"),
    ("Adjectives", "Small"),
    ("Actions", "Eat"),
]


# fingers of a handshape: (direction from the palm's up axis in radians, length in palm radii)
HANDSHAPES: dict[str, list[tuple[float, float]]] = {
    "flat": [(-0.12, 1.0), (-0.04, 1.1), (0.04, 1.1), (0.12, 1.0), (-0.9, 0.7)],
    "spread": [(-0.5, 1.0), (-0.17, 1.1), (0.17, 1.1), (0.5, 1.0), (-1.3, 0.8)],
    "fist": [],
    "point": [(0.0, 1.3)],
    "V": [(-0.3, 1.2), (0.3, 1.2)],
    "Y": [(-1.2, 0.9), (0.9, 0.9)],
}
HANDSHAPE = {
    "Hello": "spread",
    "Thank You": "flat",
    "Good Morning": "fist",
    "Red": "point",
    "Blue": "V",
    "House": "flat",
    "Bed": "Y",
    "You": "point",
    "Me": "fist",
    "Big": "spread",
    "Small": "V",
    "Eat": "Y",
}


def _paths(sign: str, u: float) -> list[tuple[float, float, float, float]]:
    """Hand poses of ``sign`` at phase ``u``."""
    tau = 2 * math.pi
    if sign == "Hello":  # a wave beside the head
        return [(0.55 + 0.25 * math.sin(2 * tau * u), -0.9, 1.0, 0.35 * math.sin(2 * tau * u))]
    if sign == "Thank You":  # from the chin forward and down
        return [(0.1 + 0.3 * u, -0.6 + 0.8 * u, 1.0 + 0.3 * u, -0.6 * u)]
    if sign == "Good Morning":  # rising from the waist to above the head
        return [(0.35, 0.8 - 2.0 * u, 1.0, 0.0)]
    if sign == "Red":  # a small circle, clockwise, at the mouth
        return [(0.15 + 0.22 * math.cos(tau * u), -0.55 + 0.22 * math.sin(tau * u), 0.9, 0.0)]
    if sign == "Blue":  # a large circle, anticlockwise, at the chest
        return [(0.2 + 0.4 * math.cos(-tau * u), 0.1 + 0.4 * math.sin(-tau * u), 1.0, 0.0)]
    if sign == "House":  # two hands rise diagonally and meet as a roof
        d = 0.6 * (1 - u)
        return [(-0.1 - d, 0.3 - 0.9 * u, 1.0, 0.6), (0.1 + d, 0.3 - 0.9 * u, 1.0, -0.6)]
    if sign == "Bed":  # the hand turns flat beside the head
        return [(0.45, -0.9, 1.0, -1.5 * u)]
    if sign == "You":  # a push toward the camera (the hand grows)
        return [(0.2, -0.1, 0.8 + 0.9 * u, 0.0)]
    if sign == "Me":  # back to the chest (the hand shrinks and goes left)
        return [(0.6 - 0.6 * u, 0.3 - 0.3 * u, 1.4 - 0.6 * u, 0.3 * u)]
    if sign == "Big":  # two hands part
        d = 0.15 + 0.6 * u
        return [(-d, 0.2, 1.0, 0.3), (d, 0.2, 1.0, -0.3)]
    if sign == "Small":  # two hands close in
        d = 0.75 - 0.6 * u
        return [(-d, 0.2, 1.0, 0.3), (d, 0.2, 1.0, -0.3)]
    if sign == "Eat":  # to the mouth and down, twice
        k = 0.5 - 0.5 * math.cos(2 * tau * u)
        return [(0.1 + 0.2 * (1 - k), -0.5 + 0.6 * (1 - k), 1.0, 0.2)]
    raise KeyError(sign)


@dataclass(frozen=True)
class Signer:
    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    background: tuple[int, int, int]
    hand: float  # palm radius, pixels
    centre: tuple[float, float]  # chest position in the frame, pixels
    unit: float  # body unit, pixels
    speed: float  # 1 = a sign lasts BASE_SECONDS


BASE_SECONDS = 2.0
FPS = 16
SIZE = (112, 112)  # (height, width): what `gen prepare include` scales frames to


def make_signer(rng: np.random.Generator) -> Signer:
    tone = rng.uniform(0.0, 1.0)
    skin = tuple(int(v) for v in (np.array([240, 200, 170]) * (1 - tone) + np.array([120, 80, 55]) * tone))
    shirt = tuple(int(v) for v in rng.integers(20, 235, 3))
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    return Signer(
        skin=skin,
        shirt=shirt,
        background=background,
        hand=float(rng.uniform(9.0, 12.0)),
        centre=(float(rng.uniform(48, 64)), float(rng.uniform(66, 76))),
        unit=float(rng.uniform(26, 32)),
        speed=float(rng.uniform(0.75, 1.3)),
    )


def _ellipse(yy, xx, cy, cx, ry, rx, angle):
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = xx - cx, yy - cy
    return ((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2 <= 1.0


def _take(signer: Signer, rng: np.random.Generator) -> tuple[int, int, int, float, float, float]:
    """One take's jitter: (lead frames, moving frames, tail frames, chest x, chest y, body unit) in pixels."""
    speed = signer.speed * rng.uniform(0.9, 1.1)
    moving = max(8, round(BASE_SECONDS * FPS / speed))
    lead, tail = int(rng.integers(0, 4)), int(rng.integers(0, 4))
    amp = rng.uniform(0.85, 1.15)
    cx, cy = signer.centre[0] + rng.normal(0, 2), signer.centre[1] + rng.normal(0, 2)
    return lead, moving, tail, cx, cy, signer.unit * amp


def render(sign: str, signer: Signer, rng: np.random.Generator) -> np.ndarray:
    """One take of ``sign`` by ``signer``: uint8 RGB frames (T, H, W, 3)."""
    h, w = SIZE
    lead, moving, tail, cx, cy, unit = _take(signer, rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = np.empty((h, w, 3), np.uint8)
    body[:] = signer.background
    torso = _ellipse(yy, xx, cy + 0.9 * unit, cx, 1.2 * unit, 0.9 * unit, 0.0)
    body[torso] = signer.shirt
    body[_ellipse(yy, xx, cy - unit, cx, 0.42 * unit, 0.34 * unit, 0.0)] = signer.skin
    skin = np.array(signer.skin, np.uint8)
    finger_tone = (skin.astype(np.int16) * 0.85).astype(np.uint8)
    fingers = HANDSHAPES[HANDSHAPE[sign]]
    frames = []
    for t in range(lead + moving + tail):
        u = min(1.0, max(0.0, (t - lead) / max(1, moving - 1)))
        img = body.copy()
        for hand, (x, y, scale, angle) in enumerate(_paths(sign, u)):
            mirror = -1.0 if hand else 1.0
            hx, hy = cx + x * unit, cy + y * unit
            r = signer.hand * scale
            img[_ellipse(yy, xx, hy, hx, 0.6 * r, 0.55 * r, angle)] = skin
            for direction, length in fingers:
                a = angle + mirror * direction
                fx = hx + math.sin(a) * (0.55 + 0.45 * length) * r
                fy = hy - math.cos(a) * (0.55 + 0.45 * length) * r
                img[_ellipse(yy, xx, fy, fx, 0.45 * length * r, 0.12 * r, a)] = finger_tone
        frames.append(img)
    video = np.stack(frames).astype(np.int16)
    video += rng.normal(0, 4, video.shape).astype(np.int16)  # sensor noise
    return np.clip(video, 0, 255).astype(np.uint8)


# MediaPipe's hand: 0 wrist, then 4 points per finger (thumb 1-4, index 5-8, middle 9-12, ring 13-16, pinky 17-20)
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
CURLED = {  # a finger not extended: (direction, length) of its curl
    "thumb": (-1.0, 0.3), "index": (-0.12, 0.3), "middle": (-0.04, 0.3), "ring": (0.04, 0.3), "pinky": (0.12, 0.3)
}  # fmt: skip
EXTENDED = {  # which finger each entry of HANDSHAPES is, in order
    "flat": ("index", "middle", "ring", "pinky", "thumb"),
    "spread": ("index", "middle", "ring", "pinky", "thumb"),
    "fist": (),
    "point": ("index",),
    "V": ("index", "middle"),
    "Y": ("thumb", "pinky"),
}
# body points in body units (x right in the image, y down; chest (0, 0), head (0, -1)): MediaPipe's 33, of
# which the face (0-10), shoulders (11, 12) and hips (23, 24) follow the body; arms follow the hands
FACE = [(0, -1.0), (0.08, -1.1), (0.12, -1.1), (0.16, -1.1), (-0.08, -1.1), (-0.12, -1.1), (-0.16, -1.1),
        (0.3, -1.0), (-0.3, -1.0), (0.07, -0.85), (-0.07, -0.85)]  # fmt: skip
SHOULDERS, HIPS = ((0.75, -0.35), (-0.75, -0.35)), ((0.45, 1.6), (-0.45, 1.6))
LEGS = [(0.45, 2.6), (-0.45, 2.6), (0.45, 3.6), (-0.45, 3.6), (0.45, 3.8), (-0.45, 3.8), (0.45, 3.9), (-0.45, 3.9)]
REST = (0.5, 2.2)  # a hand not signing rests below the frame
LEFT_HANDED = 0.15  # share of synthetic signers who sign with the left hand (their landmarks mirrored)


def _hand_points(hx: float, hy: float, r: float, angle: float, mirror: float, shape: str) -> np.ndarray:
    """The 21 points (pixels) of a hand drawn as :func:`render` draws it."""
    pts = np.zeros((21, 2), np.float32)
    pts[0] = (hx - math.sin(angle) * 0.6 * r, hy + math.cos(angle) * 0.6 * r)  # the wrist, below the palm
    extended = dict(zip(EXTENDED[shape], HANDSHAPES[shape]))
    for f, name in enumerate(FINGERS):
        direction, length = extended.get(name, CURLED[name])
        a = angle + mirror * direction
        for k in range(4):  # base, two joints, tip: from the palm's edge to (0.55 + 0.9 length) r
            d = (0.55 + 0.9 * length * k / 3) * r
            pts[1 + 4 * f + k] = (hx + math.sin(a) * d, hy - math.cos(a) * d)
    return pts


def landmarks(sign: str, signer: Signer, rng: np.random.Generator, *, left_handed: bool = False) -> np.ndarray:
    """One take of ``sign`` as pose landmarks ``(T, 75, 3)`` (features/pose.py's layout: 33 body points, left
    hand, right hand; x, y as fractions of the frame, visibility), the same take as :func:`render` draws from the
    same ``rng``; then what a landmark detector adds: jitter of about half a pixel, and a hand lost in 5 % of
    the frames (NaN). A left-handed signer's landmarks are the mirror image (hands swapped)."""
    from generalist_cli.features.pose import BODY, LEFT, N_POINTS, RIGHT, mirror

    h, w = SIZE
    lead, moving, tail, cx, cy, unit = _take(signer, rng)
    shape = HANDSHAPE[sign]

    def px(x: float, y: float) -> tuple[float, float]:
        return cx + x * unit, cy + y * unit

    frames = []
    for t in range(lead + moving + tail):
        u = min(1.0, max(0.0, (t - lead) / max(1, moving - 1)))
        lm = np.full((N_POINTS, 3), np.nan, np.float32)
        body = [px(*p) for p in FACE + list(SHOULDERS)] + [(0.0, 0.0)] * 10 + [px(*p) for p in HIPS + tuple(LEGS)]
        lm[:BODY, :2] = np.array(body, np.float32)
        lm[:BODY, 2] = [0.99] * 13 + [0.9] * 10 + [0.6] * 2 + [0.05] * 8
        hands = _paths(sign, u)
        for side in (0, 1):  # 0: the image-right hand (RIGHT slot), 1: the image-left one
            shoulder = np.array(px(*SHOULDERS[side]), np.float32)
            if side < len(hands):
                x, y, scale, angle = hands[side]
                pts = _hand_points(*px(x, y), signer.hand * scale, angle, -1.0 if side else 1.0, shape)
                lm[RIGHT if side == 0 else LEFT, :2], lm[RIGHT if side == 0 else LEFT, 2] = pts, 1.0
                wrist, seen = pts[0], 0.95
            else:
                wrist, seen = np.array(px(REST[0] * (1 if side == 0 else -1), REST[1]), np.float32), 0.1
            elbow = shoulder + 0.5 * (wrist - shoulder) + np.array((0.0, 0.35 * unit), np.float32)
            arm = [11 + side + 2 * k for k in range(6)]  # shoulders 11/12 set; elbows 13/14, wrists 15/16, 17-22
            lm[arm[1], :2], lm[arm[2], :2] = elbow, wrist
            lm[arm[3:], :2] = wrist
            lm[arm[1:], 2] = seen
        frames.append(lm)
    out = np.stack(frames)
    out[..., 0] /= w
    out[..., 1] /= h
    out[..., :2] += rng.normal(0, 0.004, out[..., :2].shape).astype(np.float32)
    lost = rng.random((len(out), 2)) < 0.05
    out[lost[:, 0], RIGHT] = np.nan
    out[lost[:, 1], LEFT] = np.nan
    return mirror(out) if left_handed else out


def write_release(
    root: Path,
    *,
    signs: int = len(SIGNS),
    signers: int = 40,
    takes: int = 3,
    val_signers: int = 2,
    test_signers: int = 4,
    seed: int = 0,
    on_video=None,
    pose: bool = False,
) -> dict[str, int]:
    """Write ``signs`` x ``signers`` x ``takes`` MOV files as ``<Category>/<N>. <Sign>/MVI_<signer><take>.MOV``
    with ``include_{train,val,test}.csv`` lists (the last signers are held out). Returns videos per split.
    ``pose``: the takes' landmarks instead (:func:`landmarks`, ``MVI_<signer><take>.npy``; one signer in
    :data:`LEFT_HANDED` signs with the left hand), which ``gen prepare include --features pose`` reads as they are."""
    from generalist_cli.errors import GenError
    from generalist_cli.media.video import encode_video

    if not 1 <= signs <= len(SIGNS):
        raise GenError(f"--signs must be between 1 and {len(SIGNS)}")
    if signers <= val_signers + test_signers:
        raise GenError(
            f"--signers {signers} leaves no training signer after {val_signers} validation and "
            f"{test_signers} test signers"
        )
    rng = np.random.default_rng(seed)
    people = [make_signer(rng) for _ in range(signers)]
    split_of = {
        s: ("test" if s >= signers - test_signers else "val" if s >= signers - test_signers - val_signers else "train")
        for s in range(signers)
    }
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for n, (category, sign) in enumerate(SIGNS[:signs], start=1):
        folder = root / category / f"{n}. {sign}"
        folder.mkdir(parents=True, exist_ok=True)
        for s, person in enumerate(people):
            for k in range(takes):
                path = folder / f"MVI_{1000 + s * 10 + k}.{'npy' if pose else 'MOV'}"
                take_rng = np.random.default_rng([seed, n, s, k])
                if path.exists():  # rerunning after an interruption keeps finished takes
                    pass
                elif pose:
                    left = np.random.default_rng([seed, s, 7]).random() < LEFT_HANDED
                    np.save(path, landmarks(sign, person, take_rng, left_handed=left))
                else:
                    encode_video(path, render(sign, person, take_rng), fps=FPS)
                lists[split_of[s]].append(path.relative_to(root).as_posix())
                if on_video:
                    on_video()
    for split, paths in lists.items():
        (root / f"include_{split}.csv").write_text("path\n" + "".join(p + "\n" for p in paths), encoding="utf-8")
    return {k: len(v) for k, v in lists.items()}
