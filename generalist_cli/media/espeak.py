"""Real synthetic speech from eSpeak NG (the library and voices of the ``espeakng-loader`` wheel), via ctypes.

eSpeak NG's C API (speak_lib.h): ``espeak_Initialize`` in synchronous mode, a synthesis callback
that receives 16-bit samples and events (word starts with their audio position), ``espeak_Synth``.
The library keeps global state, so calls are serialised with a lock.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from generalist_cli.errors import GenError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_INITIALIZE_PHONEME_EVENTS = 0x0001  # espeak_Initialize option: also report each phoneme
_RATE, _PITCH = 1, 3  # espeak_PARAMETER values


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Speech:
    """Synthesised speech: mono float32 ``audio`` at ``sample_rate``, per-word ``(start_s, char_offset, n_chars)``
    and per-phoneme ``(start_s, mnemonic)`` (eSpeak's phoneme names: ``'oU`` is a stressed oU, ``_:`` a pause)."""

    audio: np.ndarray
    sample_rate: int
    words: tuple[tuple[float, int, int], ...]
    phonemes: tuple[tuple[float, str], ...] = ()

    @property
    def phoneme_names(self) -> list[str]:
        return [name for _, name in self.phonemes]


class _Engine:
    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise GenError("eSpeak NG is not installed", hint="pip install espeakng-loader") from exc
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        data = espeakng_loader.get_data_path().encode()
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_PHONEME_EVENTS)
        if self.rate <= 0:
            raise GenError("eSpeak NG failed to initialise", hint=f"check its data folder {data.decode()}")
        self.lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[float, int, int]] = []
        self._phonemes: list[tuple[float, str]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0)
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type == _EVENT_WORD:
                self._words.append((e.audio_position / 1000.0, e.text_position - 1, e.length))
            elif e.type == _EVENT_PHONEME:  # the name sits in the event's 8-byte ``id`` union (char string[8])
                raw = ctypes.string_at(ctypes.addressof(e) + _Event.id.offset, 8).split(b"\0")[0]
                if raw:
                    self._phonemes.append((e.audio_position / 1000.0, raw.decode("ascii", "replace")))
            i += 1
        return 0

    def synth(self, text: str, *, voice: str, rate: int, pitch: int) -> Speech:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise GenError(f"eSpeak NG has no voice {voice!r}", hint="use a language code such as en, hi, ta")
            self.lib.espeak_SetParameter(_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._chunks, self._words, self._phonemes = [], [], []
            raw = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(raw, len(raw), 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            return Speech(audio=audio, sample_rate=self.rate, words=tuple(self._words), phonemes=tuple(self._phonemes))


_engine: _Engine | None = None


def synthesize(text: str, *, voice: str = "en", rate: int = 160, pitch: int = 50) -> Speech:
    """Speak ``text`` with eSpeak NG voice ``voice`` (a language code), ``rate`` in words/minute, ``pitch`` 0-99."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine.synth(text, voice=voice, rate=rate, pitch=pitch)


def phonemize(text: str, *, voice: str = "en") -> list[str]:
    """eSpeak NG's phonemes for ``text`` in language/voice ``voice`` (the names a phoneme-input speech head
    was trained on; see :func:`phoneme_text`)."""
    return synthesize(text, voice=voice).phoneme_names


def phoneme_text(names) -> str:
    """Phoneme names as the text a phoneme-input model's encoder reads: each name led by a space, so the
    byte-level BPE starts a new token at every phoneme (``[h, @, l, 'oU]`` -> ``" h @ l 'oU"``)."""
    return "".join(" " + n for n in names)


def synthesize_16k(text: str, **kwargs) -> np.ndarray:
    """:func:`synthesize`, resampled to 16 kHz mono float32 (what the model hears)."""
    return to_16k(synthesize(text, **kwargs))


def to_16k(speech: Speech) -> np.ndarray:
    """``speech`` resampled to 16 kHz mono float32."""
    import av

    if speech.audio.size == 0:
        return np.zeros(0, np.float32)
    frame = av.AudioFrame.from_ndarray(speech.audio.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = speech.sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)
