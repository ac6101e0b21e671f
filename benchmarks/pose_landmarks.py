"""MediaPipe landmarks on real signers: speed (frames/s) and how often the hands are found, per clip.

Reads the real ASL clips in ../shared/media/real/sign (or the folder given) with ``features/pose.py``: 33 body
and 2 x 21 hand points per frame. Needs the sign extra.

    pip install -e '.[sign]' && python benchmarks/pose_landmarks.py [FOLDER] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT.parent / "shared" / "media" / "real" / "sign")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from generalist_cli.features import pose
    from generalist_cli.media.video import decode_video

    rows = []
    print("| clip | frames | frames/s | hands found | hands found while a wrist is in view | body found |")
    print("|---|---|---|---|---|---|")
    for clip in sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".webm")):
        frames = decode_video(clip)
        t = time.perf_counter()
        lm = pose.extract(frames)
        r = pose.report(lm, time.perf_counter() - t)
        hands = ~np.isnan(lm[:, pose.BODY :, 0]).all(axis=1)
        in_view = (lm[:, 15, 2] > 0.5) | (lm[:, 16, 2] > 0.5)  # a body wrist seen in the frame
        seen = float(hands[in_view].mean()) if in_view.any() else float("nan")
        rows.append({"clip": clip.name, "frames": r.frames, "fps": r.frames / r.seconds, "hands": r.hands_found,
                     "hands_in_view": seen, "body": r.body_found})  # fmt: skip
        print(f"| {clip.name} | {r.frames} | {r.frames / r.seconds:.1f} | {r.hands_found:.0%} | {seen:.0%} | "
              f"{r.body_found:.0%} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
