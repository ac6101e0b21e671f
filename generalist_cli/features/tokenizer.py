"""Whisper's tokenizer: a byte-level BPE ``tokenizer.json`` (the ``tokenizers`` library) plus the special tokens.

Special tokens follow openai/whisper ``tokenizer.py``: ``<|endoftext|>``, ``<|startoftranscript|>``, one
token per language, ``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``,
``<|nospeech|>`` (``<|nocaptions|>`` in older vocabularies), ``<|notimestamps|>``, then 1,501 timestamp
tokens ``<|0.00|> .. <|30.00|>`` which need not be in ``tokenizer.json`` (their ids follow arithmetically).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from generalist_cli.errors import ModelError
from generalist_cli.languages import CODES


class Tokenizer:
    def __init__(
        self, path: str | Path, *, multilingual: bool, extra_tokens: tuple[str, ...] = (), n_vocab: int | None = None
    ) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        try:
            self._tk = _Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exceptions
            raise ModelError(f"{path}: not a readable tokenizer.json ({exc})") from exc
        self.multilingual = multilingual

        def special(*names: str) -> int:
            for name in names:
                idx = self._tk.token_to_id(name)
                if idx is not None:
                    return idx
            raise ModelError(f"{path}: has no {names[0]} token; not a Whisper tokenizer")

        self.eot = special("<|endoftext|>")
        self.sot = special("<|startoftranscript|>")
        self.translate = special("<|translate|>")
        self.transcribe = special("<|transcribe|>")
        self.sot_lm = special("<|startoflm|>")
        self.sot_prev = special("<|startofprev|>")
        self.no_speech = special("<|nospeech|>", "<|nocaptions|>")
        self.no_timestamps = special("<|notimestamps|>")
        self.timestamp_begin = self.no_timestamps + 1
        # task/modality tokens appended after Whisper's vocabulary (timestamps included): ids n_vocab, n_vocab+1..
        base = n_vocab if n_vocab is not None else self.timestamp_begin + 1501
        self.extra: dict[str, int] = {name: base + i for i, name in enumerate(extra_tokens)}
        # language tokens sit between <|startoftranscript|> and <|translate|>, in Whisper's order
        self.language_codes: tuple[str, ...] = (
            tuple(
                code
                for code in CODES[: self.translate - self.sot - 1]
                if self._tk.token_to_id(f"<|{code}|>") is not None
            )
            if multilingual
            else ("en",)
        )

    def language_token(self, code: str) -> int:
        return self.sot + 1 + CODES.index(code)

    @cached_property
    def language_tokens(self) -> list[int]:
        return [self.language_token(code) for code in self.language_codes]

    def sot_sequence(self, *, language: str | None, task: str = "transcribe", timestamps: bool = True) -> list[int]:
        """The prompt that starts decoding: ``<|sot|> <|lang|> <|task|> [<|notimestamps|>]``."""
        seq = [self.sot]
        if self.multilingual:
            seq.append(self.language_token(language or "en"))
            seq.append(self.translate if task == "translate" else self.transcribe)
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    def task_prompt(self, task: str, *, lang: str = "en", src_lang: str = "") -> list[int]:
        """The decoder prompt for a training task (no timestamps):

        transcribe ``<|sot|> <|lang|> <|transcribe|> <|notimestamps|>``; translate (speech -> English)
        ``<|sot|> <|src|> <|translate|> <|notimestamps|>``; sign ``<|sot|> <|sign|> <|en|> <|transcribe|> ...``;
        text_translate ``<|sot|> <|text|> <|tgt|> <|transcribe|> ...``. English-only vocabularies drop the
        language and task tokens."""
        key = (task, lang, src_lang)
        memo = self.__dict__.setdefault("_prompts", {})
        if key not in memo:  # a training step asks for thousands of prompts
            memo[key] = self._task_prompt(task, lang=lang, src_lang=src_lang)
        return list(memo[key])

    def _task_prompt(self, task: str, *, lang: str, src_lang: str) -> list[int]:
        seq = [self.sot]
        if task == "sign" and "<|sign|>" in self.extra:
            seq.append(self.extra["<|sign|>"])
        if task == "text_translate" and "<|text|>" in self.extra:
            seq.append(self.extra["<|text|>"])
        if self.multilingual:
            code = (src_lang or lang) if task == "translate" else lang
            seq.append(self.language_token(code if code in self.language_codes else "en"))
            seq.append(self.translate if task == "translate" else self.transcribe)
        seq.append(self.no_timestamps)
        return seq

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Text of ``ids``, ignoring special and timestamp tokens."""
        return self._tk.decode([int(i) for i in ids if int(i) < self.eot])

    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each text token (id below end of text) writes; a token may hold part of a character."""
        if "_token_bytes" not in self.__dict__:
            decoder = _byte_decoder()
            self._token_bytes = [
                bytes(decoder.get(c, 0) for c in (self._tk.id_to_token(i) or "")) for i in range(self.eot)
            ]
        return self._token_bytes

    def non_speech_begin(self) -> list[int]:
        """Tokens not to start a transcript with: a lone space and end of text."""
        return [*self.encode(" "), self.eot]


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet back to bytes: printable bytes stand for themselves, the rest for 256 + n."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), 256)]
    extra = [b for b in range(256) if b not in keep]
    return {**{chr(b): b for b in keep}, **{chr(256 + i): b for i, b in enumerate(extra)}}
