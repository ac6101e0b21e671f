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


def test_synthetic_signers_landmarks_follow_their_video_takes():
    """gen prepare synthetic-signs --pose: the same takes as the videos (frame for frame), in the landmark
    layout, hands where the drawn hands are, a lost hand now and then; a left-handed signer is the mirror."""
    from generalist_cli.data import synthetic_signs as S

    person = S.make_signer(np.random.default_rng(0))
    lm = S.landmarks("House", person, np.random.default_rng([0, 6, 1, 0]))
    video = S.render("House", person, np.random.default_rng([0, 6, 1, 0]))
    assert lm.shape == (len(video), pose.N_POINTS, 3)
    # the drawn right-slot hand's palm sits where the landmarks put the hand (skin-coloured pixels there)
    t = len(video) // 2
    if not np.isnan(lm[t, pose.RIGHT, 0]).any():
        x, y = (lm[t, pose.RIGHT][[0, 5, 9, 13, 17], :2].mean(0) * np.array([112, 112])).round().astype(int)
        assert np.abs(video[t, y, x].astype(int) - np.array(person.skin)).max() < 40
    one_hand = S.landmarks("Hello", person, np.random.default_rng(1))
    assert np.isnan(one_hand[:, pose.LEFT, 0]).all() and pose.report(one_hand).hands_found > 0.8
    mirrored = pose.mirror(lm)
    assert np.allclose(np.nan_to_num(pose.mirror(mirrored)), np.nan_to_num(lm))
    assert np.allclose(np.nan_to_num(mirrored[:, pose.LEFT, 0]), np.nan_to_num(1 - lm[:, pose.RIGHT, 0]))
    assert np.allclose(mirrored[:, 11, :2], np.stack([1 - lm[:, 12, 0], lm[:, 12, 1]], -1))


def test_pose_tokens_do_not_see_where_the_signer_stands_or_how_big():
    """PoseFrontend: landmarks centred on the shoulders and in shoulder widths, so a signer moved or scaled in
    the frame gives the same tokens; unseen points are zeroed and flagged."""
    import torch

    from generalist_cli.data import synthetic_signs as S
    from generalist_cli.model.frontends import PoseFrontend

    lm = torch.from_numpy(S.landmarks("Blue", S.make_signer(np.random.default_rng(3)), np.random.default_rng(4)))
    moved = lm.clone()
    moved[..., :2] = moved[..., :2] * 0.7 + 0.1
    a, b = PoseFrontend.normalise(lm), PoseFrontend.normalise(moved)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.isnan(a).any() and a[..., 2].sum() > 0
    lost = torch.isnan(lm[..., 0]) | (lm[..., 2] <= 0.5)
    assert (a[..., :2][lost] == 0).all() and (a[..., 2][lost] == 0).all()
    front = PoseFrontend(32)
    assert front(lm).shape == (len(lm), 32)
    with pytest.raises(ValueError, match="at most 256 frames"):
        front(torch.zeros(300, pose.N_POINTS, 3))


def test_a_pose_generalist_trains_on_landmark_rows(tmp_path):
    """Landmark rows collate to (T, 75, 3) sources, a generalist with video_tokens = "pose" embeds them (one
    token per frame) and its loss has gradients into the pose front-end."""
    import dataclasses

    from generalist_cli.data import synthetic_signs as S
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.train.batches import collate
    from generalist_cli.train.step import StepModule
    from tests.conftest import generalist

    g = generalist()
    model = Generalist(dataclasses.replace(g.config, video_tokens="pose"))
    lm = S.landmarks("Red", S.make_signer(np.random.default_rng(5)), np.random.default_rng(6)).astype(np.float16)
    row = {"task": "sign", "modality": "video", "lang": "en", "src_lang": "", "pose": lm, "patches": [],
           "grid": [], "tgt_tokens": [1000, 1001]}  # fmt: skip
    c = model.config
    tok = Tokenizer(PACKAGES["whisper-base"].folder_path() / "tokenizer.json", multilingual=c.multilingual,
                    extra_tokens=c.extra_tokens, n_vocab=c.n_vocab)  # fmt: skip
    batch = collate([row], tok, max_target_tokens=8)
    e = batch.examples[0]
    assert e.grid is None and e.source.shape == (len(lm), pose.N_POINTS, 3)
    step = StepModule(model)
    assert step.embed(e).shape == (len(lm), c.n_audio_state)
    out = step(batch)
    out["ce_sum"].backward()
    assert model.pose.proj.weight.grad is not None and model.pose.proj.weight.grad.abs().sum() > 0


def test_gen_run_reads_a_real_sign_clip_through_landmarks_for_a_pose_checkpoint(tmp_path):
    """gen run clip.mp4 --to text with a video_tokens = "pose" checkpoint: MediaPipe's landmarks go into the
    model (a label and its probability); without the [sign] extra, one line naming it."""
    import dataclasses
    import importlib.util
    import json

    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.store.store import save_model
    from tests.conftest import gen, generalist

    model = Generalist(dataclasses.replace(generalist().config, video_tokens="pose"))
    tok = PACKAGES["whisper-base"].folder_path() / "tokenizer.json"
    entry = save_model(model, tok, tmp_path / "pose-model", name="pose-model", source="test", kind="test",
                       extra_meta={"tasks": ["sign"]})  # fmt: skip
    r = gen("run", str(SIGN / "asl_house.mp4"), "--to", "text", "--format", "json", "--model", str(entry.path))
    if importlib.util.find_spec("mediapipe") is None:
        assert r.returncode == 1 and "pip install -e '.[sign]'" in r.stderr and "Traceback" not in r.stderr
        return
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert row["file"].endswith("asl_house.mp4") and 0 <= row["probability"] <= 1


def test_label_ranking_for_top5_equals_the_teacher_forced_loss_of_each_label():
    """rank_labels (gen eval's top-5 for signs) orders labels as the training loss of each label would."""
    import dataclasses

    import torch

    from generalist_cli.data import synthetic_signs as S
    from generalist_cli.evaluate.decode import rank_labels
    from generalist_cli.features.tokenizer import Tokenizer
    from generalist_cli.model.generalist import Generalist
    from generalist_cli.store.sources import PACKAGES
    from generalist_cli.train.batches import Batch, Example
    from generalist_cli.train.step import StepModule
    from tests.conftest import generalist

    torch.manual_seed(0)
    model = Generalist(dataclasses.replace(generalist().config, video_tokens="pose")).eval()
    c = model.config
    tok = Tokenizer(PACKAGES["whisper-base"].folder_path() / "tokenizer.json", multilingual=c.multilingual,
                    extra_tokens=c.extra_tokens, n_vocab=c.n_vocab)  # fmt: skip
    lm = torch.from_numpy(S.landmarks("Eat", S.make_signer(np.random.default_rng(2)), np.random.default_rng(3)))
    prompt = tok.task_prompt("sign", lang="en", src_lang="")
    labels = [tok.encode(" " + w) for w in ("hello", "thank you", "bed", "eat", "good morning")]

    def example(label):
        return Example("sign", "video", lm.clone(), None, torch.tensor(prompt + label + [tok.eot]), len(prompt),
                       None, None)  # fmt: skip

    ranked = rank_labels(model, tok, example(labels[0]), labels)
    with torch.inference_mode():
        losses = [float(StepModule(model)(Batch([example(label)]))["ce_sum"]) for label in labels]
    assert ranked == sorted(range(len(labels)), key=lambda k: losses[k])


def test_augmented_clips_stay_clips_of_the_same_sign():
    """augment: a fifth of the frames at most dropped (order kept), points moved by one affine map about the
    frame's centre (distances between points scale together), hands swapped when mirrored; reproducible."""
    from generalist_cli.data import synthetic_signs as S

    lm = S.landmarks("Big", S.make_signer(np.random.default_rng(7)), np.random.default_rng(8))
    seen_both = ~np.isnan(lm[:, pose.LEFT, 0]).any(1) & ~np.isnan(lm[:, pose.RIGHT, 0]).any(1)
    for seed in range(6):
        out = pose.augment(lm, np.random.default_rng(seed))
        assert len(lm) - len(lm) // 5 <= len(out) <= len(lm) and out.shape[1:] == lm.shape[1:]
        assert np.array_equal(np.nan_to_num(out), np.nan_to_num(pose.augment(lm, np.random.default_rng(seed))))
    one_hand = S.landmarks("Hello", S.make_signer(np.random.default_rng(7)), np.random.default_rng(9))
    slots = set()
    for seed in range(8):  # mirrored about half the time: the signing hand moves to the other slot
        out = pose.augment(one_hand, np.random.default_rng(seed))
        left, right = (~np.isnan(out[:, part, 0]).all(1) for part in (pose.LEFT, pose.RIGHT))
        assert not (left & right).any()
        slots.add("left" if left.any() else "right")
    assert slots == {"left", "right"}
    # without drops the shoulder width over the wrist distance is kept (an affine map of the frame)
    rng = np.random.default_rng(0)
    out = pose.augment(lm[:8], rng)  # 8 frames: none dropped
    t = int(np.argmax(seen_both[:8]))
    ratio = lambda x: np.linalg.norm(x[t, 11, :2] - x[t, 12, :2]) / np.linalg.norm(x[t, 15, :2] - x[t, 16, :2])  # noqa: E731
    assert abs(ratio(out) - ratio(lm)) < 0.35 * ratio(lm)


def test_prepare_manifest_rows_of_video_with_pose_features(tmp_path):
    """gen prepare manifest --features pose: video rows become landmark rows (with the [sign] extra); without
    it, one line naming the extra and nothing written."""
    import importlib.util

    import datasets

    from tests.conftest import gen

    table = tmp_path / "signs.tsv"
    table.write_text(f"path\ttext\n{SIGN / 'asl_house.mp4'}\thouse\n{SIGN / 'asl_different.mp4'}\tdifferent\n")
    out = tmp_path / "out"
    r = gen("prepare", "manifest", str(table), "--lang", "en", "--features", "pose", "--out", str(out))
    if importlib.util.find_spec("mediapipe") is None:
        assert r.returncode == 1 and "pip install -e '.[sign]'" in r.stderr and not out.exists()
        return
    assert r.returncode == 0, r.stderr
    assert "hands found in" in r.stderr
    rows = [row for split in datasets.load_from_disk(str(out)).values() for row in split.with_format("numpy")]
    assert sorted(str(row["text"]) for row in rows) == ["different", "house"]
    assert all(row["pose"].shape[1:] == (pose.N_POINTS, 3) and len(row["pose"]) > 30 for row in rows)
