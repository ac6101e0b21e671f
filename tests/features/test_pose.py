"""Body and hand landmarks (features/pose.py): the clear error without the [sign] extra, the found-share report,
and MediaPipe on real signers (when the extra is installed)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from generalist_cli.features import pose

SIGN = Path(__file__).resolve().parents[1] / "real" / "media" / "sign"


def test_without_the_sign_extra_one_line_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    with pytest.raises(pose.PoseError) as info:
        pose.extract(np.zeros((2, 64, 64, 3), np.uint8))
    assert "MediaPipe" in info.value.message and info.value.hint == "pip install -e '.[sign]'"
    with pytest.raises(pose.PoseError, match="complexity must be 0 or 1"):
        pose.holistic(complexity=2)


def test_report_counts_frames_with_hands_and_body():
    lm = np.full((4, pose.N_POINTS, 3), np.nan, np.float32)
    lm[:, : pose.BODY] = 0.5  # body in every frame
    lm[1, pose.LEFT] = 0.4
    lm[3, pose.RIGHT] = 0.6
    r = pose.report(lm, seconds=2.0)
    assert (r.frames, r.hands_found, r.body_found, r.seconds) == (4, 0.5, 1.0, 2.0)


def test_landmarks_of_real_signers_follow_the_hands():
    pytest.importorskip("mediapipe", reason="needs the [sign] extra: pip install -e '.[sign]'")
    from generalist_cli.media.video import decode_video

    for clip in sorted(SIGN.glob("*.mp4")):
        frames = decode_video(clip)
        lm = pose.extract(frames)
        assert lm.shape == (len(frames), pose.N_POINTS, 3) and lm.dtype == np.float32
        r = pose.report(lm)
        assert r.body_found == 1.0 and r.hands_found >= 0.4, (clip.name, r)
        # fractions of the frame: the face and shoulders inside it, seen (legs off-frame are guessed, unseen)
        head = lm[:, :13]
        assert np.nanmin(head[..., :2]) > 0 and np.nanmax(head[..., :2]) < 1 and np.nanmedian(head[..., 2]) > 0.9
        assert np.nanmedian(lm[:, 27:33, 2]) < 0.5
        # the signing hand moves: its wrist travels over a tenth of the frame's height, the nose stays put
        wrists = np.concatenate([lm[:, pose.LEFT][:, 0, 1], lm[:, pose.RIGHT][:, 0, 1]])
        assert np.nanmax(wrists) - np.nanmin(wrists) > 0.1
        assert np.nanstd(lm[:, 0, 1]) < np.nanstd(wrists)


def _include_layout(root: Path) -> Path:
    """The real ASL clips as an INCLUDE-layout release: <Category>/<N>. <Sign>/MVI_*.MOV."""
    import shutil

    for i, clip in enumerate(sorted(SIGN.glob("*.mp4"))):
        sign = root / "Adjectives" / f"{i + 1}. {clip.with_suffix('.txt').read_text().strip()}"
        sign.mkdir(parents=True)
        shutil.copy(clip, sign / f"MVI_00{i}0.MOV")
    return root


def test_prepare_pose_without_the_extra_fails_before_any_work(tmp_path):
    import importlib.util

    from tests.conftest import gen

    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("the [sign] extra is installed here: the next test prepares landmarks instead")
    out = tmp_path / "out"
    r = gen("prepare", "include", "--local", str(_include_layout(tmp_path / "rel")), "--features", "pose",
            "--out", str(out))  # fmt: skip
    assert r.returncode == 1 and "pip install -e '.[sign]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_prepare_include_with_pose_features_writes_landmarks(tmp_path):
    pytest.importorskip("mediapipe", reason="needs the [sign] extra: pip install -e '.[sign]'")
    import datasets

    from tests.conftest import gen

    out = tmp_path / "out"
    r = gen("prepare", "include", "--local", str(_include_layout(tmp_path / "rel")), "--features", "pose",
            "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "hands found in" in r.stderr
    rows = [row for split in datasets.load_from_disk(str(out)).values() for row in split.with_format("numpy")]
    assert len(rows) == 2 and {row["task"] for row in rows} == {"sign"}
    for row in rows:
        lm = row["pose"]
        assert lm.ndim == 3 and lm.shape[1:] == (pose.N_POINTS, 3) and row["length"] == len(lm)
        assert len(row["patches"]) == 0 and np.isnan(lm[..., 0]).any() and not np.isnan(lm[:, 0, 0]).any()
