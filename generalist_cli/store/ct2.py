"""Read a CTranslate2 (faster-whisper) ``model.bin`` directly, without the ctranslate2 package.

Binary layout (ctranslate2 ``specs/model_spec.py``, binary version 6): ``u32 version, str spec name,
u32 revision, u32 n_variables`` then per variable ``str name, u8 rank, u32 dims[rank], u8 dtype,
u32 n_bytes, bytes``; then ``u32 n_aliases`` and ``(str alias, str target)`` pairs. Strings are a
``u16`` length including a trailing NUL. dtypes: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16,
5 bfloat16. Quantised weights carry a ``<name>_scale`` variable: ``float = int / scale`` (per row for
int8, one scalar for int16).

:func:`whisper_from_ct2` maps the WhisperSpec variables to transformers' Whisper names, splitting the
fused q/k/v projections (CTranslate2 stores a zero key bias, which Whisper does not have).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from generalist_cli.errors import ModelError
from generalist_cli.model.config import ModelConfig

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_model_bin(data: bytes | memoryview, *, source: str = "model.bin") -> tuple[str, dict[str, np.ndarray]]:
    """Parse ``model.bin`` bytes into ``(spec_name, {name: array})``; aliases point at the same arrays."""
    buf = memoryview(data)
    off = 0

    def u(fmt: str) -> int:
        nonlocal off
        (value,) = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return value

    def s() -> str:
        nonlocal off
        n = u("H")
        text = bytes(buf[off : off + n - 1]).decode("utf-8")
        off += n
        return text

    try:
        version = u("I")
        if version < 5 or version > 6:
            raise ModelError(f"{source}: CTranslate2 binary version {version} is not supported (5 or 6 are)")
        spec = s()
        u("I")  # revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(u("I")):
            name = s()
            shape = tuple(u("I") for _ in range(u("B")))
            dtype_id = u("B")
            n_bytes = u("I")
            raw = buf[off : off + n_bytes]
            if len(raw) != n_bytes:
                raise ModelError(f"{source}: file ends inside variable {name!r} (truncated download?)")
            off += n_bytes
            dtype = _DTYPES.get(dtype_id)
            if dtype is None:
                raise ModelError(f"{source}: variable {name!r} has unknown dtype id {dtype_id}")
            if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32's high half
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype)
            variables[name] = arr.reshape(shape)
        for _ in range(u("I")):
            alias, target = s(), s()
            variables[alias] = variables[target]
    except struct.error as exc:
        raise ModelError(f"{source}: not a complete CTranslate2 model.bin ({exc})") from exc
    return spec, variables


def _float(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The variable as floats, dequantised with its ``_scale`` when it is int8/int16."""
    arr = variables[name]
    if arr.dtype in (np.int8, np.int16):
        scale = variables[name + "_scale"].astype(np.float32)
        if scale.ndim == 1 and arr.ndim >= 2:
            scale = scale.reshape((-1,) + (1,) * (arr.ndim - 1))
        return arr.astype(np.float32) / scale
    return arr


def whisper_from_ct2(
    spec: str, variables: dict[str, np.ndarray], ct2_config: dict, *, source: str = "model.bin"
) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Convert WhisperSpec variables to ``(ModelConfig, {transformers name without 'model.': array})``."""
    if spec != "WhisperSpec":
        raise ModelError(f"{source}: a CTranslate2 {spec}, not a Whisper model")
    out: dict[str, np.ndarray] = {}

    def copy(ct2: str, hf: str) -> None:
        out[hf] = _float(variables, ct2)

    def linear(ct2: str, hf: str) -> None:
        copy(ct2 + "/weight", hf + ".weight")
        if ct2 + "/bias" in variables:
            copy(ct2 + "/bias", hf + ".bias")

    def norm(ct2: str, hf: str) -> None:
        copy(ct2 + "/gamma", hf + ".weight")
        copy(ct2 + "/beta", hf + ".bias")

    def split(ct2: str, hf: str, names: tuple[str, ...]) -> None:
        w = _float(variables, ct2 + "/weight")
        b = _float(variables, ct2 + "/bias")
        for part, wp, bp in zip(names, np.split(w, len(names)), np.split(b, len(names))):
            out[f"{hf}.{part}.weight"] = wp
            if part != "k_proj":
                out[f"{hf}.{part}.bias"] = bp

    def layers(side: str) -> int:
        n = 0
        while f"{side}/layer_{n}/ffn/linear_0/weight" in variables:
            n += 1
        return n

    for i in ("1", "2"):
        linear(f"encoder/conv{i}", f"encoder.conv{i}")
    copy("encoder/position_encodings/encodings", "encoder.embed_positions.weight")
    n_enc, n_dec = layers("encoder"), layers("decoder")
    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"{side}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            split(f"{src}/self_attention/linear_0", f"{dst}.self_attn", ("q_proj", "k_proj", "v_proj"))
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split(f"{src}/attention/linear_1", f"{dst}.encoder_attn", ("k_proj", "v_proj"))
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
        norm(f"{side}/layer_norm", f"{side}.layer_norm")
    copy("decoder/embeddings/weight", "decoder.embed_tokens.weight")
    copy("decoder/position_encodings/encodings", "decoder.embed_positions.weight")

    conv1 = variables["encoder/conv1/weight"]
    width = conv1.shape[0]
    config = ModelConfig(
        n_mels=conv1.shape[1],
        n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=width,
        n_audio_head=int(variables["encoder/num_heads"]),
        n_audio_layer=n_enc,
        n_vocab=variables["decoder/embeddings/weight"].shape[0],
        n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
        n_text_state=width,
        n_text_head=int(variables["decoder/num_heads"]),
        n_text_layer=n_dec,
        n_audio_ffn=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        n_text_ffn=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        suppress_tokens=tuple(ct2_config.get("suppress_ids") or ()),
        begin_suppress_tokens=tuple(ct2_config.get("suppress_ids_begin") or ()),
        alignment_heads=tuple(tuple(p) for p in ct2_config.get("alignment_heads") or ()),
    )
    return config, out


def load_ct2_dir(files: list[Path], config_path: Path) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """Read a CTranslate2 Whisper from ``files`` (one ``model.bin`` or parts that concatenate to it)."""
    import json

    source = str(files[0].parent / "model.bin")
    try:
        data = files[0].read_bytes() if len(files) == 1 else b"".join(f.read_bytes() for f in files)
        ct2_config = json.loads(config_path.read_text()) if config_path.exists() else {}
    except OSError as exc:
        raise ModelError(f"{source}: cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise ModelError(f"{config_path}: not valid JSON ({exc})") from exc
    spec, variables = read_model_bin(data, source=source)
    try:
        return whisper_from_ct2(spec, variables, ct2_config, source=source)
    except KeyError as exc:
        raise ModelError(f"{source}: missing variable {exc.args[0]!r}; not a Whisper model.bin") from exc
