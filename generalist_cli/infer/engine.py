"""The engine boundary: what decoding, transcription and evaluation ask of a model, whichever runtime runs it.

Two engines implement it: the PyTorch :class:`~generalist_cli.model.generalist.Generalist` (``kind =
"torch"``) and an ONNX export run by ONNX Runtime (:class:`~generalist_cli.infer.onnx_engine.OnnxModel`,
``kind = "onnx"``). Code above this line asks ``kind`` and ``can_pack`` (or ``Loaded.kind``), never
``hasattr`` or ``isinstance``; a third engine implements these members and nothing else changes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from generalist_cli.model.config import ModelConfig


@runtime_checkable
class Engine(Protocol):
    kind: str  # "torch" | "onnx": which runtime (the only place engines are told apart)
    can_pack: bool  # encodes unpadded windows packed several to a row (Patch n' Pack)
    config: ModelConfig

    @property
    def device(self) -> Any:
        """Where inputs go: a torch device, or "cpu" for engines that take numpy."""

    def encode_mels(self, mels: np.ndarray) -> Any:
        """(B, n_mels, 3000) log-mel windows -> the encoder features :meth:`new_cache` takes."""

    def encode_mels_packed(self, windows: list[np.ndarray]) -> tuple[Any, list[int]]:
        """Log-mel windows of any length (each (n_mels, frames)), unpadded and packed several to a row ->
        (features, lengths in encoder positions) for :meth:`new_cache`; only where ``can_pack``."""

    def new_cache(self, features: Any, lengths: list[int] | None = None) -> Any:
        """A decoding cache over encoder features (cross-attention keys/values, self-attention and TTT state);
        ``lengths``: row i's audio is its first lengths[i] positions (packed features)."""

    def decode_step(self, tokens: Any, cache: Any, offset: int) -> Any:
        """Logits of the last position of ``tokens`` (B, T) at positions ``offset..``, updating ``cache``."""

    def logits(self, hidden: Any) -> Any:
        """Vocabulary logits of decoder hidden states."""
