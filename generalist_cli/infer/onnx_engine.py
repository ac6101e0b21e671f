"""The ONNX Runtime engine: an export folder (``gen export``) behind the same interface the decoding code
uses for a PyTorch model (``encode_audio``, ``new_cache``, ``decoder``, ``logits``, ``decode_step``).

The decoder graph returns logits directly, so here ``decoder(...)`` gives logits and ``logits`` is the
identity. The cache holds the self-attention keys/values as the graph's ``present_*`` outputs (grown by
one position a step) and the encoder's cross keys/values. Everything here is numpy: running an export needs
ONNX Runtime, not torch (``decoding.py`` works on either kind of array). Sessions turn thread spinning off: on small
shared CPUs spinning threads made ONNX Runtime ~15x slower (measured, see docs/export.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from generalist_cli.errors import ModelError

EXPORT_FILES = ("encoder.onnx", "decoder.onnx", "config.json", "tokenizer.json")


def is_export(path: Path) -> bool:
    return path.is_dir() and (path / "encoder.onnx").exists() and (path / "decoder.onnx").exists()


def default_threads() -> int:
    """torch's intra-op thread count when torch is loaded (``gen run --threads`` sets it), else the CPUs this
    process may use."""
    import os
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def providers(device: str = "auto") -> list[str]:
    import onnxruntime as ort

    have = ort.get_available_providers()
    if (device == "auto" or device.startswith("cuda")) and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device.startswith("cuda"):
        raise ModelError(
            "the CUDA provider of ONNX Runtime is not installed",
            hint="pip install 'generalist-cli[gpu]' (onnxruntime-gpu)",
        )
    return ["CPUExecutionProvider"]


def session(path: Path, *, threads: int | None = None, device: str = "auto"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    chosen = providers(device)
    try:
        return ort.InferenceSession(str(path), so, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{path}: cannot be loaded by ONNX Runtime ({str(exc).splitlines()[0]})") from exc


class OnnxCache:
    def __init__(
        self,
        cross_k: np.ndarray,
        cross_v: np.ndarray,
        past_k: np.ndarray,
        past_v: np.ndarray,
        ttt: dict[str, np.ndarray] | None = None,
        cross_mask: np.ndarray | None = None,
    ) -> None:
        self.cross_k, self.cross_v, self.past_k, self.past_v = cross_k, cross_v, past_k, past_v
        self.ttt = ttt or {}  # decoder TTT state: "ttt_w1_0" ... (B, ...) per layer, and "ttt_i" (1,)
        self.cross_mask = cross_mask  # (B, n_audio) bool, True = audio (packed utterances of different lengths)
        self.route: np.ndarray | None = None  # (B, 1, L) float32: the language adapters each row uses

    @property
    def cross_kv(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per layer (keys, values) views (B, H, S, K), as in the PyTorch cache."""
        return [(self.cross_k[i], self.cross_v[i]) for i in range(self.cross_k.shape[0])]

    def _rows(self, i: np.ndarray) -> dict[str, np.ndarray]:
        return {n: a if n == "ttt_i" else a[i] for n, a in self.ttt.items()}

    def select(self, index) -> "OnnxCache":
        i = np.asarray(index)
        mask = None if self.cross_mask is None else self.cross_mask[i]
        out = OnnxCache(
            self.cross_k[:, i], self.cross_v[:, i], self.past_k[:, i], self.past_v[:, i], self._rows(i), mask
        )
        out.route = None if self.route is None else self.route[i]
        return out

    def reorder(self, index) -> None:
        i = np.asarray(index)
        self.past_k, self.past_v, self.ttt = self.past_k[:, i], self.past_v[:, i], self._rows(i)
        self.route = None if self.route is None else self.route[i]


def row_route(tokens: np.ndarray, ids: tuple[int, ...]) -> np.ndarray:
    """(B, 1, L) float32: 1 where row b's prompt holds adapter language l's token (model/adapters.py route_of,
    per row, without torch)."""
    hit = np.asarray(tokens)[..., None] == np.asarray(ids, dtype=np.int64)
    return np.ascontiguousarray(hit.any(axis=1, keepdims=True), dtype=np.float32)


class OnnxModel:
    """A ``gen export`` folder run with ONNX Runtime (the engine interface, infer/engine.py: numpy in and out).
    Its encoder takes fixed 30-s windows, or, exported packed (``gen export --encoder packed``), utterances of
    any length several to a row (``can_pack``)."""

    kind = "onnx"
    device = "cpu"  # where inputs are prepared (ONNX Runtime copies them to its provider)

    def __init__(self, path: Path, *, threads: int | None = None, device: str = "auto") -> None:
        from generalist_cli.model.config import ModelConfig

        missing = [f for f in EXPORT_FILES if not (path / f).exists()]
        if missing:
            raise ModelError(
                f"{path}: not a complete export (missing {', '.join(missing)})",
                hint="make one with gen export MODEL --out DIR",
            )
        try:
            self.config = ModelConfig.from_hf(json.loads((path / "config.json").read_text()))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path / 'config.json'}: cannot be read as a Whisper config ({exc})") from exc
        self.path = path
        self.encoder_session = session(path / "encoder.onnx", threads=threads, device=device)
        self.decoder_session = session(path / "decoder.onnx", threads=threads, device=device)
        c = self.config
        self._empty = (c.n_text_layer, c.n_text_head, c.n_text_state // c.n_text_head)
        # a decoder with TTT layers carries their state as inputs/outputs and takes one token per call
        self._ttt = {i.name: i.shape for i in self.decoder_session.get_inputs() if i.name.startswith("ttt_")}
        self._ttt_init = self._read_ttt_init() if self._ttt else {}
        self._outputs = [o.name for o in self.decoder_session.get_outputs()]
        self.can_pack = "pack_index" in {i.name for i in self.encoder_session.get_inputs()}

    # --- the interface of the PyTorch model that decoding uses ---
    def eval(self) -> "OnnxModel":
        return self

    def encode_audio(self, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``mel`` (B, n_mels, 3000) (numpy, or a CPU torch tensor) -> the decoder layers' cross keys and values."""
        mel = np.ascontiguousarray(np.asarray(mel), dtype=np.float32)
        if self.can_pack:  # a packed encoder: each window an utterance of its full length
            return self.encode_mels_packed(list(mel))[0]
        cross_k, cross_v = self.encoder_session.run(None, {"mel": mel})
        return cross_k, cross_v

    def encode_mels(self, mels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_audio(mels)

    def encode_mels_packed(self, windows: list[np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], list[int]]:
        """Log-mel windows of any length (each (n_mels, frames)) through the packed encoder -> (cross keys and
        values (n_layers, B, heads, max S_i, head_dim), S_i), as ``Generalist.encode_mels_packed``."""
        from generalist_cli.model.rows import row_layout

        frames = [max(2, w.shape[-1] + w.shape[-1] % 2) for w in windows]  # even: the stem halves it
        mel = np.zeros((len(windows), windows[0].shape[0], max(frames)), dtype=np.float32)
        for i, w in enumerate(windows):
            mel[i, :, : w.shape[-1]] = w
        lengths = [f // 2 for f in frames]
        # rows as wide as the longest utterance: the graph's masked attention costs width^2 per row (PyTorch
        # attends segment by segment); measured on 40 real 3-7 s files: 3.4 s against 5.7 s at 1,500 wide
        layout = row_layout(lengths, max(lengths))
        feeds = {"mel": mel, "pack_index": layout.pack_index, "segments": layout.segments}
        cross_k, cross_v = self.encoder_session.run(None, feeds | {"unpack_index": layout.unpack_index})
        return (cross_k, cross_v), lengths

    def new_cache(self, features: tuple[np.ndarray, np.ndarray], lengths: list[int] | None = None) -> OnnxCache:
        cross_k, cross_v = features
        b = cross_k.shape[1]
        mask = None
        if self.can_pack:  # the packed decoder masks cross positions past each utterance's end
            n = cross_k.shape[3]
            mask = np.arange(n)[None] < np.asarray(lengths if lengths is not None else [n] * b)[:, None]
        return OnnxCache(cross_k, cross_v, *self._past(b), self._fresh_ttt(b), mask)

    def _read_ttt_init(self) -> dict[str, np.ndarray]:
        path = self.path / "decoder_ttt.npz"
        if not path.exists():
            raise ModelError(
                f"{self.path}: its decoder has TTT layers but no decoder_ttt.npz (their starting state)",
                hint="export the checkpoint again with this gen: gen export CKPT --out DIR",
            )
        with np.load(path) as f:
            return {n: f[n] for n in f.files}

    def _fresh_ttt(self, batch: int) -> dict[str, np.ndarray]:
        """A fresh sequence's decoder TTT state for ``batch`` rows: the layers' learned W0, zero sums, ``ttt_i`` 0."""
        if not self._ttt:
            return {}
        out = {n: np.ascontiguousarray(np.repeat(a, batch, axis=0)) for n, a in self._ttt_init.items()}
        return out | {"ttt_i": np.array([0], dtype=np.int64)}

    def _past(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        layers, heads, hd = self._empty
        empty = np.zeros((layers, batch, heads, 0, hd), dtype=np.float32)
        return empty, empty

    def _run(
        self, tokens: np.ndarray, past_k, past_v, cross_k, cross_v, ttt: dict | None = None, mask=None, route=None
    ):
        """-> (logits, present_k, present_v, next TTT state). With TTT the tokens go one call each. ``route``:
        the rows' adapter languages (an export with language adapters; all zero when None)."""
        toks = np.ascontiguousarray(np.asarray(tokens), dtype=np.int64)
        audio = {} if not self.can_pack else {"audio_mask": _audio_mask(mask, cross_k)}
        if self.config.adapter_languages:
            n = len(self.config.adapter_languages)
            audio["route"] = route if route is not None else np.zeros((toks.shape[0], 1, n), dtype=np.float32)
        if not self._ttt:
            feeds = {"tokens": toks, "past_k": past_k, "past_v": past_v, "cross_k": cross_k, "cross_v": cross_v}
            logits, pk, pv = self.decoder_session.run(None, feeds | audio)
            return logits, pk, pv, {}
        parts = []
        for t in range(toks.shape[1]):
            feeds = {
                "tokens": toks[:, t : t + 1],
                "past_k": past_k,
                "past_v": past_v,
                "cross_k": cross_k,
                "cross_v": cross_v,
                **audio,
                **ttt,
            }
            res = dict(zip(self._outputs, self.decoder_session.run(None, feeds)))
            parts.append(res["logits"])
            past_k, past_v = res["present_k"], res["present_v"]
            ttt = {n.removeprefix("next_"): a for n, a in res.items() if n.startswith("next_ttt_")}
        return np.concatenate(parts, axis=1), past_k, past_v, ttt

    def decoder(
        self, tokens: np.ndarray, cross_kv, cache: OnnxCache | None = None, offset: int = 0, cross_mask=None
    ) -> np.ndarray:
        """Logits (B, T, V) of ``tokens`` from an empty past (the prompt); with ``cache`` its past (and its
        cross mask) is used; ``cross_mask`` (B, n_audio) bool: audio positions, without a cache."""
        if cache is not None:
            cross_k, cross_v, cross_mask = cache.cross_k, cache.cross_v, cache.cross_mask
        else:
            cross_k = np.ascontiguousarray(np.stack([k for k, _ in cross_kv]))
            cross_v = np.ascontiguousarray(np.stack([v for _, v in cross_kv]))
        b = tokens.shape[0]
        route = row_route(tokens, self.config.adapter_tokens) if self.config.adapter_tokens else None
        logits, pk, pv, ttt = self._run(tokens, *self._past(b), cross_k, cross_v, self._fresh_ttt(b), cross_mask, route)
        if cache is not None:
            cache.past_k, cache.past_v, cache.ttt, cache.route = pk, pv, ttt, route
        return logits

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return hidden  # the decoder graph's output already is logits

    def decode_step(self, tokens: np.ndarray, cache: OnnxCache, offset: int) -> np.ndarray:
        if offset == 0 and self.config.adapter_tokens:  # the prompt: its language token routes the row
            cache.route = row_route(tokens, self.config.adapter_tokens)
        logits, cache.past_k, cache.past_v, cache.ttt = self._run(
            tokens, cache.past_k, cache.past_v, cache.cross_k, cache.cross_v, cache.ttt, cache.cross_mask, cache.route
        )
        return logits[:, -1]


def _audio_mask(mask, cross_k: np.ndarray) -> np.ndarray:
    """The packed decoder's ``audio_mask``: ``mask`` (B, n_audio) bool, or every position when None."""
    if mask is None:
        return np.ones((cross_k.shape[1], cross_k.shape[3]), dtype=bool)
    return np.ascontiguousarray(mask, dtype=bool)
