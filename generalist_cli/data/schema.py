"""What a prepared example holds, and what an adapter hands to featurisation.

One schema for every task, so one Arrow dataset can mix them; columns a task does not use stay empty.
Audio is stored as its log-mel (frames, 80) in float16, video as uint8 tubelet patches (or, with
``--features pose``, body and hand landmarks (frames, 75, 3) in float16, NaN where not found), text as Whisper
token ids (no special tokens: prompts are built by the training collator from ``task`` and ``lang``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from generalist_cli.features.pose import N_POINTS

TASKS = ("transcribe", "translate", "sign", "text_translate", "tts")
PATCH_VALUES = 2 * 16 * 16 * 3  # one (2, 16, 16) RGB tubelet
VIDEO_FEATURES = ("patches", "pose")  # what gen prepare makes of a video
MAX_AUDIO_SECONDS = 30.0  # one encoder window
MIN_AUDIO_SECONDS = 0.1


def features(n_mels: int = 80):
    from datasets import Array2D, Array3D, Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "task": Value("string"),
            "modality": Value("string"),  # of the source: audio | video | text
            "lang": Value("string"),  # of the target text (or of the speech for tts)
            "src_lang": Value("string"),
            "text": Value("string"),  # target text, human readable
            "src_text": Value("string"),
            "mel": Array2D(shape=(None, n_mels), dtype="float16"),  # source audio log-mel (frames, mels)
            "patches": Array2D(shape=(None, PATCH_VALUES), dtype="uint8"),  # source video tubelets
            "grid": List(Value("int32")),  # (Nt, Nr, Nc) of the patches
            "pose": Array3D(shape=(None, N_POINTS, 3), dtype="float16"),  # landmarks per frame (features/pose.py)
            "src_tokens": List(Value("int32")),  # source text tokens
            "tgt_tokens": List(Value("int32")),  # target text tokens
            "tgt_mel": Array2D(shape=(None, n_mels), dtype="float16"),  # target speech (tts)
            "word_starts": List(Value("float32")),  # seconds, per word of the spoken text (tts durations)
            "phonemes": List(Value("string")),  # eSpeak NG's phonemes of the spoken text (tts with phoneme inputs)
            "phoneme_starts": List(Value("float32")),  # seconds, per phoneme (their durations)
            "label": Value("int32"),  # sign class, -1 otherwise
            "duration": Value("float32"),  # seconds of source (audio/video); 0 for text
            "length": Value("int32"),  # encoder positions the source takes (for packing)
        }
    )


def empty_row(n_mels: int = 80) -> dict:
    return {
        "id": "",
        "task": "",
        "modality": "",
        "lang": "",
        "src_lang": "",
        "text": "",
        "src_text": "",
        "mel": np.zeros((0, n_mels), np.float16),
        "patches": np.zeros((0, PATCH_VALUES), np.uint8),
        "grid": [],
        "pose": np.zeros((0, N_POINTS, 3), np.float16),
        "src_tokens": [],
        "tgt_tokens": [],
        "tgt_mel": np.zeros((0, n_mels), np.float16),
        "word_starts": [],
        "phonemes": [],
        "phoneme_starts": [],
        "label": -1,
        "duration": 0.0,
        "length": 0,
    }


@dataclass(frozen=True)
class AudioBytes:
    """An encoded audio file held in memory (a hub row's audio bytes)."""

    data: bytes
    name: str


@dataclass(frozen=True)
class Speak:
    """Speech to synthesise with eSpeak NG."""

    voice: str
    rate: int
    pitch: int


@dataclass(frozen=True)
class RawItem:
    """One example as an adapter sees it, before featurisation."""

    id: str
    split: str
    task: str
    modality: str  # audio | video | text
    source: Path | AudioBytes | Speak | str  # a media file, audio bytes, a synthesis request, or source text
    text: str  # target text (the text to speak for Speak sources)
    lang: str = ""
    src_lang: str = ""
    label: int = -1
    tasks: tuple[str, ...] = field(default=())  # Speak: which rows to make (transcribe, tts)
    line: int = 0  # the line of the user's table it came from (0: not from a table)
    problem: str = ""  # why the adapter could not read it (rejected with this reason, line and id)


class Reject(Exception):
    """An item that cannot become an example; the reason goes to rejected.jsonl."""
