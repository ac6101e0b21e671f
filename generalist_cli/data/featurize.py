"""RawItem -> prepared rows (see schema.py). Raises :class:`Reject` with a reason for bad rows."""

from __future__ import annotations

import io
import math

import numpy as np

from generalist_cli.data.schema import (
    MAX_AUDIO_SECONDS,
    MIN_AUDIO_SECONDS,
    AudioBytes,
    RawItem,
    Reject,
    Speak,
    empty_row,
)
from generalist_cli.data.tables import clean
from generalist_cli.errors import MediaError
from generalist_cli.features.video import VIDEO_FPS, VIDEO_SIZE, patchify
from generalist_cli.media.audio import SAMPLE_RATE, is_silent


class Featurizer:
    def __init__(self, tokenizer_path: str, *, n_mels: int = 80, video_features: str = "patches") -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.n_mels = n_mels
        self.video_features = video_features  # schema.VIDEO_FEATURES

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, item: RawItem) -> list[dict]:
        if item.problem:
            raise Reject(item.problem)
        if isinstance(item.source, Speak):
            return self._speak(item)
        text = clean(item.text)
        if not text:
            raise Reject("empty text")
        row = empty_row(self.n_mels) | {
            "id": item.id,
            "task": item.task,
            "modality": item.modality,
            "lang": item.lang,
            "src_lang": item.src_lang,
            "text": text,
            "label": item.label,
        }
        row["tgt_tokens"] = self.tokens(" " + text)
        if item.modality == "audio":
            audio = self._audio(item.source)
            row.update(self._mel(audio))
        elif item.modality == "video":
            row.update(self._video(item.source))
        elif item.modality == "text":
            src = clean(str(item.source))
            if not src:
                raise Reject("empty source text")
            row["src_text"] = src
            row["src_tokens"] = self.tokens(src)
            row["length"] = len(row["src_tokens"])
            if row["length"] > 1500:
                raise Reject(f"source text of {row['length']} tokens is longer than the encoder's 1500 positions")
        else:
            raise Reject(f"unknown modality {item.modality!r}")
        return [row]

    def _audio(self, source) -> np.ndarray:
        from generalist_cli.media.audio import decode_audio

        try:
            audio = decode_audio(io.BytesIO(source.data) if isinstance(source, AudioBytes) else source)
        except MediaError as exc:
            raise Reject(exc.problem) from exc
        seconds = len(audio) / SAMPLE_RATE
        if is_silent(audio):
            raise Reject(f"audio is silent ({seconds:.2f} s)")
        if not MIN_AUDIO_SECONDS <= seconds <= MAX_AUDIO_SECONDS:
            raise Reject(f"audio lasts {seconds:.2f} s, outside {MIN_AUDIO_SECONDS}-{MAX_AUDIO_SECONDS:.0f} s")
        return audio

    def _mel(self, audio: np.ndarray) -> dict:
        from generalist_cli.features.mel import log_mel_spectrogram

        mel = log_mel_spectrogram(audio, n_mels=self.n_mels).T.astype(np.float16)  # (frames, mels)
        return {"mel": mel, "duration": len(audio) / SAMPLE_RATE, "length": math.ceil(mel.shape[0] / 2)}

    def _video(self, path) -> dict:
        from generalist_cli.media.video import decode_video

        if self.video_features == "pose":
            return self._pose(path)
        if str(path).lower().endswith(".npy"):
            raise Reject("a landmark file (.npy): prepare it with --features pose")
        try:
            frames = decode_video(path, fps=VIDEO_FPS, size=VIDEO_SIZE, max_frames=128)
        except MediaError as exc:
            raise Reject(exc.problem) from exc
        patches, grid = patchify(frames)
        return {
            "patches": patches.astype(np.uint8),
            "grid": list(grid),
            "duration": len(frames) / VIDEO_FPS,
            "length": patches.shape[0],
        }

    def _pose(self, path) -> dict:
        """Body and hand landmarks per frame (features/pose.py; the ``[sign]`` extra for videos)."""
        from generalist_cli.features.pose import FPS, MAX_FRAMES, N_POINTS, clip_landmarks

        if str(path).lower().endswith(".npy"):  # landmarks already (synthetic signers), at their own rate
            landmarks = np.load(path)[:MAX_FRAMES]
            if landmarks.ndim != 3 or landmarks.shape[1:] != (N_POINTS, 3) or not len(landmarks):
                raise Reject(f"landmarks of shape {landmarks.shape}, not (frames, {N_POINTS}, 3)")
        else:
            try:
                landmarks = clip_landmarks(path)
            except MediaError as exc:
                raise Reject(exc.problem) from exc
        return {"pose": landmarks.astype(np.float16), "duration": len(landmarks) / FPS, "length": len(landmarks)}

    def _speak(self, item: RawItem) -> list[dict]:
        from generalist_cli.media.espeak import synthesize, to_16k

        text = clean(item.text)
        if not text:
            raise Reject("empty text")
        speech = synthesize(text, voice=item.source.voice, rate=item.source.rate, pitch=item.source.pitch)
        audio = to_16k(speech)
        seconds = len(audio) / SAMPLE_RATE
        if not MIN_AUDIO_SECONDS <= seconds <= MAX_AUDIO_SECONDS:
            raise Reject(f"speech lasts {seconds:.2f} s, outside {MIN_AUDIO_SECONDS}-{MAX_AUDIO_SECONDS:.0f} s")
        mel = self._mel(audio)
        base = empty_row(self.n_mels) | {"lang": item.lang, "text": text, "tgt_tokens": self.tokens(" " + text)}
        rows = []
        if "transcribe" in item.tasks:
            rows.append(base | {"id": item.id, "task": "transcribe", "modality": "audio", **mel})
        if "tts" in item.tasks:
            src = self.tokens(text)
            rows.append(
                base
                | {
                    "id": item.id + "-tts",
                    "task": "tts",
                    "modality": "text",
                    "src_text": text,
                    "src_tokens": src,
                    "tgt_mel": mel["mel"],
                    "duration": mel["duration"],
                    "word_starts": [w[0] for w in speech.words],
                    "phonemes": speech.phoneme_names,
                    "phoneme_starts": [p[0] for p in speech.phonemes],
                    "length": len(src),
                }
            )
        return rows
