"""Video in with PyAV: RGB frames of any container (MOV from a phone camera, MP4 ...), optionally resampled
in time and scaled, as a uint8 array (T, H, W, 3)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from generalist_cli.errors import MediaError


def decode_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> np.ndarray:
    """Frames of the first video track as uint8 RGB ``(T, H, W, 3)``.

    ``fps``: keep frames at this rate (nearest earlier frame), ``size``: (height, width) to scale to,
    ``max_frames``: stop after that many frames.
    """
    import av

    from generalist_cli.media.audio import check_file

    path = check_file(path)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise MediaError(path, f"is not a media file FFmpeg can read ({exc})") from exc
    frames: list[np.ndarray] = []
    try:
        if not container.streams.video:
            raise MediaError(path, "has no video track")
        stream = container.streams.video[0]
        next_time = 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(frames) / float(stream.average_rate or 25)
                if fps is not None and t + 1e-6 < next_time:
                    continue
                next_time = next_time if fps is None else next_time + 1.0 / fps
                if size is not None:
                    frame = frame.reformat(width=size[1], height=size[0])
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(path, f"is truncated or corrupt: decoding failed after {len(frames)} frames") from exc
    finally:
        container.close()
    if not frames:
        raise MediaError(path, "has a video track with no frames")
    return np.stack(frames)


def encode_video(path: str | os.PathLike, frames: np.ndarray, *, fps: int = 25, codec: str = "mpeg4") -> Path:
    """Write uint8 RGB ``frames`` (T, H, W, 3) as a video (container from the suffix: .mov, .mp4, .webm with
    ``codec="libvpx"``, .gif with ``codec="gif"``)."""
    import av

    from generalist_cli.media.audio import atomic_output

    path = Path(path)
    with atomic_output(path) as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=fps)
            stream.height, stream.width = frames.shape[1], frames.shape[2]
            stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"  # GIF: a 256-colour palette
            for img in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    return path
