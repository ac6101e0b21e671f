"""Body and hand landmarks per video frame: the field's front-end for real signers (the INCLUDE baseline,
OpenHands and HWGAT all read pose, not pixels).

MediaPipe Holistic (the legacy ``mp.solutions`` API of ``mediapipe==0.10.21``, the last wheel that ships its
landmark models inside: nothing is downloaded at run time) tracks one person through a clip: 33 body points
(``pose_landmark_full``; ``model_complexity`` at most 1, the "heavy" pose model is a download) and 21 points per
hand (palm detection + ``hand_landmark_full``). A frame becomes a (75, 3) array: body 0-32, left hand 33-53,
right hand 54-74, each point ``(x, y, visibility)`` with x and y as fractions of the frame's width and height
(MediaPipe's own normalisation; a point may lie slightly outside [0, 1]) and NaN where the part was not found.
A hand point's visibility is 1 when its hand was found (MediaPipe gives none for hands). Body points outside
the frame (the legs of a signer filmed to the waist) are MediaPipe's guesses, with low visibility: a front-end
should weigh points by it.

MediaPipe is the optional ``[sign]`` extra (``pip install -e '.[sign]'``): it pins numpy < 2 and protobuf < 5 and
pulls jax and OpenCV, which speech users should not pay for. Without it, :func:`extract` fails with one line
naming the extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generalist_cli.errors import GenError

BODY, HAND = 33, 21
N_POINTS = BODY + 2 * HAND  # 75
LEFT = slice(BODY, BODY + HAND)
RIGHT = slice(BODY + HAND, N_POINTS)
SHOULDERS = (11, 12)  # MediaPipe's left and right shoulder
FPS = 25.0  # frames per second a clip's landmarks are taken at
MAX_FRAMES = 256  # about 10 s of them
CONFIDENCE = 0.5  # MediaPipe's detection and tracking thresholds
EXTRA = "pip install -e '.[sign]'"


class PoseError(GenError):
    pass


@dataclass(frozen=True)
class PoseReport:
    frames: int
    hands_found: float  # share of frames where at least one hand was found
    body_found: float  # share of frames with the body
    seconds: float  # extraction time


def require():
    """MediaPipe's Holistic module, or one line naming the ``[sign]`` extra."""
    try:
        from mediapipe.python.solutions import holistic as mp_holistic
    except ImportError:
        raise PoseError("pose landmarks need MediaPipe, which is not installed", hint=EXTRA) from None
    return mp_holistic


def holistic(*, complexity: int = 1):
    """A MediaPipe Holistic tracker (video mode: it follows the person from frame to frame)."""
    if complexity not in (0, 1):
        raise PoseError(f"model complexity must be 0 or 1, not {complexity} (2 needs a model download)")
    return require().Holistic(
        static_image_mode=False,
        model_complexity=complexity,
        smooth_landmarks=True,
        refine_face_landmarks=False,
        min_detection_confidence=CONFIDENCE,
        min_tracking_confidence=CONFIDENCE,
    )


def extract(frames: np.ndarray, *, complexity: int = 1) -> np.ndarray:
    """Landmarks ``(T, 75, 3)`` float32 of RGB ``frames`` ``(T, H, W, 3)`` uint8, NaN where not found."""
    out = np.full((len(frames), N_POINTS, 3), np.nan, dtype=np.float32)
    with holistic(complexity=complexity) as tracker:
        for t, frame in enumerate(frames):
            found = tracker.process(np.ascontiguousarray(frame))
            if found.pose_landmarks:
                out[t, :BODY] = [(p.x, p.y, p.visibility) for p in found.pose_landmarks.landmark]
            for part, where in ((found.left_hand_landmarks, LEFT), (found.right_hand_landmarks, RIGHT)):
                if part:
                    out[t, where] = [(p.x, p.y, 1.0) for p in part.landmark]
    return out


def clip_landmarks(path) -> np.ndarray:
    """Landmarks of a video file at :data:`FPS`, at most :data:`MAX_FRAMES` (``gen prepare --features pose``
    and ``gen run`` of a pose checkpoint read clips the same way); a bad file raises its MediaError."""
    from generalist_cli.media.video import decode_video

    return extract(decode_video(path, fps=FPS, max_frames=MAX_FRAMES))


def dataset_report(folder) -> PoseReport:
    """:func:`report` over every clip of a prepared dataset (``gen prepare ... --features pose``)."""
    import datasets

    dd = datasets.load_from_disk(str(folder))
    parts = [np.asarray(p, dtype=np.float32) for split in dd.values() for p in split.with_format("numpy")["pose"]]
    return report(np.concatenate(parts) if parts else np.zeros((0, N_POINTS, 3), np.float32))


def report(landmarks: np.ndarray, seconds: float = 0.0) -> PoseReport:
    """How much of a clip's landmarks were found."""
    n = max(1, len(landmarks))
    hands = ~np.isnan(landmarks[:, BODY:, 0]).all(axis=1)
    body = ~np.isnan(landmarks[:, :BODY, 0]).all(axis=1)
    return PoseReport(len(landmarks), float(hands.sum() / n), float(body.sum() / n), seconds)


def mirror(lm: np.ndarray) -> np.ndarray:
    """Landmarks of the mirror image: x -> 1 - x, the left and right body points and the hands swapped."""
    out = lm.copy()
    out[..., 0] = 1.0 - out[..., 0]
    pairs = [(1, 4), (2, 5), (3, 6), (7, 8), (9, 10)] + [(a, a + 1) for a in range(11, 33, 2)]
    for a, b in pairs:
        out[:, [a, b]] = out[:, [b, a]]
    out[:, LEFT], out[:, RIGHT] = out[:, RIGHT].copy(), out[:, LEFT].copy()
    return out


def augment(lm: np.ndarray, rng: np.random.Generator, *, min_frames: int = 8) -> np.ndarray:
    """A training variant of a clip's landmarks, as sign-language pose models are trained: mirrored (the
    other hand signing) half the time; rotated (+-15 degrees), scaled (0.8-1.2) and sheared (+-0.2) about the
    frame's centre; and up to a fifth of the frames dropped (the order kept, at least ``min_frames``)."""
    out = mirror(lm) if rng.random() < 0.5 else lm.copy()
    a, k, sh = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(0.8, 1.2), rng.uniform(-0.2, 0.2)
    m = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array([[1.0, sh], [0.0, 1.0]])
    out[..., :2] = (out[..., :2] - 0.5) @ m.T.astype(np.float32) + 0.5
    n = len(out)
    drop = int(rng.integers(0, max(1, n // 5) + 1)) if n > min_frames else 0
    drop = min(drop, max(0, n - min_frames))
    keep = np.sort(rng.choice(n, n - drop, replace=False)) if drop else np.arange(n)
    return out[keep]
