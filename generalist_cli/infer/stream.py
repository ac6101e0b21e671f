"""Live transcription with local agreement (Machacek et al. 2023, "Turning Whisper into Real-Time
Transcription System"): audio arrives in chunks; after each chunk the buffered audio (at most
``max_buffer`` seconds) is transcribed again with word timestamps; the words that two successive
hypotheses agree on, past what was already confirmed, are confirmed (final) and never change; the rest is
shown as partial text. When the buffer grows long it is cut after the last confirmed word, whose text then
becomes the prompt, so decoding stays bounded however long the stream runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

from generalist_cli.infer.timing import Word
from generalist_cli.infer.transcribe import TranscribeOptions, transcribe

RATE = 16000


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


@dataclass
class Update:
    final: list[Word] = field(default_factory=list)  # newly confirmed words (times in the stream)
    partial: str = ""  # the unconfirmed rest of the current hypothesis


class Streamer:
    def __init__(self, model, tokenizer, options: TranscribeOptions, *, max_buffer: float = 20.0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.options = replace(options, word_timestamps=True, vad="off")
        self.max_buffer = max_buffer
        self.buffer = np.zeros(0, np.float32)
        self.offset = 0.0  # stream time of buffer[0]
        self.confirmed: list[Word] = []
        self.in_buffer: list[Word] = []  # confirmed words whose audio is still in the buffer
        self.previous: list[Word] = []

    @property
    def confirmed_end(self) -> float:
        return self.confirmed[-1].end if self.confirmed else 0.0

    def _hypothesis(self) -> list[Word]:
        before = self.confirmed[: len(self.confirmed) - len(self.in_buffer)]  # said before the buffer starts
        prompt = " ".join(w.word.strip() for w in before[-30:])
        opts = replace(self.options, prompt=(self.options.prompt + " " + prompt).strip())
        [t] = transcribe(self.model, self.tokenizer, [self.buffer], opts)
        words = [
            replace(w, start=round(w.start + self.offset, 3), end=round(w.end + self.offset, 3))
            for s in t.segments
            for w in s.words
        ]
        if self.options.language is None and t.language:  # keep the first detected language
            self.options = replace(self.options, language=t.language)
        return self._unseen(words)

    def _unseen(self, words: list[Word]) -> list[Word]:
        """The part of a hypothesis past the confirmed words. The buffer holds exactly the words confirmed
        since it was last cut, so the hypothesis' first that-many words are skipped (by count: a word's
        time moves between hypotheses, so times cannot tell which words are new)."""
        return words[len(self.in_buffer) :]

    def feed(self, audio: np.ndarray) -> Update:
        """Add 16 kHz samples; returns the words confirmed by this chunk and the partial text."""
        self.buffer = np.concatenate([self.buffer, np.asarray(audio, np.float32)])
        if len(self.buffer) < RATE // 2:
            return Update()
        hyp = self._hypothesis()
        agreed = 0
        while agreed < min(len(hyp), len(self.previous)) and _key(hyp[agreed].word) == _key(self.previous[agreed].word):
            agreed += 1
        new = hyp[:agreed]
        self.confirmed += new
        self.in_buffer += new
        self.previous = hyp[agreed:]
        self._trim()
        return Update(new, "".join(w.word for w in self.previous).strip())

    def finish(self) -> Update:
        """End of the stream: the last hypothesis becomes final."""
        if len(self.buffer) == 0:
            return Update()
        hyp = self._hypothesis() if len(self.buffer) >= RATE // 10 else self.previous
        self.confirmed += hyp
        self.previous, self.in_buffer, self.buffer = [], [], np.zeros(0, np.float32)
        return Update(hyp, "")

    def _trim(self) -> None:
        if len(self.buffer) / RATE <= self.max_buffer or not self.confirmed:
            return
        if not self.in_buffer:  # nothing confirmed in the buffer: keep its last max_buffer seconds
            n = int((len(self.buffer) / RATE - self.max_buffer) * RATE)
            self.previous = []
        else:  # cut after the last confirmed word; what follows it is heard again from the start
            n = max(0, int((self.in_buffer[-1].end - self.offset) * RATE))
            self.in_buffer = []
        self.buffer = self.buffer[n:]
        self.offset += n / RATE


def pcm_chunks(stream, *, seconds: float = 1.0):
    """16 kHz mono audio from a binary stream, ``seconds`` at a time: raw signed 16-bit little-endian samples
    (``ffmpeg -i in.m4a -f s16le -ac 1 -ar 16000 -`` writes them) or a WAV of that format (its header is read
    chunk by chunk up to the samples)."""
    from generalist_cli.errors import GenError

    head = stream.read(12)
    if not head:
        return
    carry = head
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        carry = b""
        while True:
            chunk = stream.read(8)
            if len(chunk) < 8:
                return
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                break
            body = stream.read(size + (size & 1))
            if chunk[:4] == b"fmt ":
                fmt_tag, channels, rate = (
                    int.from_bytes(body[0:2], "little"),
                    int.from_bytes(body[2:4], "little"),
                    int.from_bytes(body[4:8], "little"),
                )
                bits = int.from_bytes(body[14:16], "little")
                if (fmt_tag, channels, rate, bits) != (1, 1, RATE, 16):
                    raise GenError(
                        f"the WAV stream is {rate} Hz, {channels} channel(s), {bits}-bit (format {fmt_tag})",
                        hint="--stream reads 16 kHz mono 16-bit PCM: ffmpeg -i IN -f s16le -ac 1 -ar 16000 -",
                    )
    size = int(seconds * RATE) * 2
    while True:
        block = stream.read(max(2, size - len(carry)))
        data = carry + (block or b"")
        carry = b""
        if len(data) % 2:
            data, carry = data[:-1], data[-1:]
        if data:
            yield np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if not block:
            return
