"""The model's dimensions and special tokens, read from and written to a Hugging Face ``config.json``.

The store keeps transformers' ``WhisperConfig`` keys so a stored model is also a valid HF Whisper
directory; :class:`ModelConfig` is the frozen view the code uses.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

VIDEO_TOKENS = ("tubelets", "tubelets+motion-map", "motion-map", "pose")  # what a clip becomes in the encoder
TTT_KINDS = ("mlp", "none")
TTS_INPUTS = ("text", "phonemes")  # what text -> speech reads
ENCODERS = ("whisper", "conformer")
MAX_EXPERTS = 256  # routed experts per MoE layer (a PEER layer holds more)


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class UpcycleOptions:
    """What upcycling (``model/upcycle.py``) makes of a dense Whisper, declared once: the recipe's ``[model]``
    section has these keys (``recipe.ModelSection`` extends this class), ``gen models init`` takes them as
    options with this help, and :meth:`problems` is the one check of them."""

    experts: int = _opt(8, "Experts per MoE layer (per routed group with segments > 1).")
    top_k: int = _opt(2, "Experts per token (per routed group with segments > 1).")
    segments: int = _opt(1, "> 1: fine-grained experts (DeepSeekMoE): the FFN cut into this many segments.")
    shared_experts: int = _opt(0, "Segments that form the always-on shared expert (fine-grained only).")
    encoder: str = _opt("whisper", "whisper, or conformer: + a gated conv module and macaron FFN per encoder block.")
    peer_experts: int = _opt(0, "> 0: a PEER layer of this many (a square number) single-neuron experts per block.")
    peer_top_k: int = _opt(16, "PEER experts per head (8 heads).")
    ttt: str = _opt("mlp", "mlp: a TTT-MLP layer behind a zero gate in every block; none: no TTT.")
    ttt_mini_batch: int = _opt(16, "Tokens per TTT inner mini-batch (one fast-weight step each).")

    @classmethod
    def help(cls, name: str) -> str:
        return next(f.metadata["help"] for f in fields(cls) if f.name == name)

    def problems(self, name=lambda key: key) -> list[str]:
        """One line per setting that cannot be built (empty when all can), each key written as ``name(key)``
        (``model.top_k`` in a recipe, ``--top-k`` on the command line)."""
        n = name
        out = []
        if self.ttt not in TTT_KINDS:
            out.append(f"{n('ttt')}: must be 'mlp' or 'none', not {self.ttt!r}")
        if self.encoder not in ENCODERS:
            out.append(f"{n('encoder')}: must be 'whisper' or 'conformer', not {self.encoder!r}")
        if not 1 <= self.experts <= MAX_EXPERTS:
            out.append(f"{n('experts')} {self.experts}: at most {MAX_EXPERTS} routed experts per layer "
                       f"(a PEER layer, {n('peer_experts')}, holds more)")  # fmt: skip
        if not 1 <= self.top_k <= self.experts:
            out.append(f"{n('top_k')} {self.top_k} is more than {n('experts')} {self.experts} (or below 1)")
        if self.segments < 1 or not 0 <= self.shared_experts < self.segments:
            out.append(f"{n('segments')}: must be >= 1, with 0 <= {n('shared_experts')} < {n('segments')}")
        if self.peer_experts and math.isqrt(self.peer_experts) ** 2 != self.peer_experts:
            out.append(f"{n('peer_experts')}: must be a square number (n^2 product keys)")
        if self.ttt_mini_batch < 1:
            out.append(f"{n('ttt_mini_batch')}: must be at least 1")
        return out

    def upcycle_kwargs(self) -> dict:
        """These settings as :func:`generalist_cli.model.upcycle.upcycle`'s keyword arguments."""
        return {
            "n_experts": self.experts,
            "top_k": self.top_k,
            "segments": self.segments,
            "shared": self.shared_experts,
            "conformer": self.encoder == "conformer",
            "peer_experts": self.peer_experts,
            "peer_top_k": self.peer_top_k,
            "ttt": self.ttt,
            "ttt_mini_batch": self.ttt_mini_batch,
        }


@dataclass(frozen=True)
class FrontEndOptions:
    """The front-ends and heads a training recipe asks for on top of its init model (``train/loop.py``
    ``_final_config``), declared once: the recipe's ``[model]`` section extends this class; :meth:`problems`
    is their one check."""

    video_motion: bool = _opt(False, "Add the video motion stream (clip minus its temporal mean), zero at init.")
    video_tokens: str = _opt("tubelets", "What a clip becomes in the encoder: " + ", ".join(VIDEO_TOKENS) + ".")
    tts_input: str = _opt("text", "What text -> speech reads: text tokens or eSpeak NG's phonemes (a new model only).")
    speech_layers: int = _opt(0, "Convolution layers of a new speech head (0: the model's own, 3 by default).")

    def problems(self, name=lambda key: key) -> list[str]:
        """As :meth:`UpcycleOptions.problems`."""
        out = []
        if self.video_tokens not in VIDEO_TOKENS:
            out.append(f"{name('video_tokens')}: must be one of " + ", ".join(VIDEO_TOKENS))
        if self.tts_input not in TTS_INPUTS:
            out.append(f"{name('tts_input')}: must be 'text' or 'phonemes'")
        if self.speech_layers < 0:
            out.append(f"{name('speech_layers')}: must be 0 (the model's own) or more")
        return out


@dataclass(frozen=True)
class ModelConfig:
    n_mels: int = 80  # mel bins of the input (80; 128 for large-v3)
    n_audio_ctx: int = 1500  # encoder positions (30 s at 50 Hz)
    n_audio_state: int = 512  # encoder width
    n_audio_head: int = 8  # encoder attention heads
    n_audio_layer: int = 6  # encoder blocks
    n_vocab: int = 51865  # text vocabulary (51864 for .en models)
    n_text_ctx: int = 448  # decoder positions
    n_text_state: int = 512  # decoder width
    n_text_head: int = 8  # decoder attention heads
    n_text_layer: int = 6  # decoder blocks
    n_audio_ffn: int = 2048  # encoder MLP hidden size
    n_text_ffn: int = 2048  # decoder MLP hidden size
    # Tokens steering generation; ``suppress`` and ``suppress_begin`` come from the source checkpoint.
    suppress_tokens: tuple[int, ...] = ()  # never generated (non-speech symbols)
    begin_suppress_tokens: tuple[int, ...] = ()  # not generated as the first token (blank, end of text)
    alignment_heads: tuple[tuple[int, int], ...] = field(default=())  # (layer, head) pairs for word timing
    # --- the generalist's additions (defaults = plain Whisper) ---
    n_experts: int = 1  # FFN experts per block; 1 = Whisper's dense FFN
    top_k: int = 1  # experts per token (per group for fine-grained MoE)
    moe_segments: int = 1  # fine-grained MoE (DeepSeekMoE): the FFN split into this many segments
    moe_shared: int = 0  # of which this many form the always-on shared expert; the rest are routed groups
    conformer: bool = False  # encoder blocks with a gated conformer conv module and macaron FFN
    conformer_kernel: int = 15  # depthwise convolution width (positions, 20 ms each)
    peer_experts: int = 0  # > 0: a PEER layer (a square number of single-neuron experts) beside every FFN
    peer_heads: int = 8  # PEER retrieval heads
    peer_top_k: int = 16  # experts per head
    ttt: str = "none"  # "none" | "mlp": a TTT-MLP layer behind a zero-initialised gate in every block
    ttt_mini_batch: int = 16  # TTT inner mini-batch size b
    ttt_base_lr: float = 0.1  # TTT-MLP base inner learning rate (Sun et al. 2024)
    generalist: bool = False  # video/text front-ends, modality embeddings and the speech head are present
    extra_tokens: tuple[str, ...] = ()  # task/modality tokens appended after Whisper's vocabulary (ids n_vocab..)
    video_patch: tuple[int, int, int] = (2, 16, 16)  # video tubelet (frames, height, width)
    video_max: tuple[int, int, int] = (64, 14, 14)  # max tubelets along (time, rows, cols)
    video_motion: bool = False  # a second video stream: the clip minus its temporal mean (what moves)
    video_tokens: str = "tubelets"  # what a clip becomes in the encoder: one of VIDEO_TOKENS (model/frontends.py)
    text_scale: float = 1.0  # token embeddings entering the encoder are multiplied by this (upcycling: sqrt(D))
    n_speech_mels: int = 80  # mel bins the speech head predicts (text -> speech)
    tts_input: str = "text"  # what text -> speech reads: "text" tokens, or eSpeak NG's "phonemes" of the text
    speech_progress: bool = False  # speech-head frames know their place inside their phoneme (new models: on)
    speech_layers: int = 3  # convolution layers of the speech head's frame decoder
    output_tokens: tuple[int, ...] = ()  # a restricted output vocabulary (empty: every token may be generated)
    adapter_languages: tuple[str, ...] = ()  # decoder language adapters (model/adapters.py), routed by language
    adapter_tokens: tuple[int, ...] = ()  # their language token ids, in the same order
    adapter_rank: int = 0  # their rank r

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865

    @property
    def n_total_vocab(self) -> int:
        """Whisper's vocabulary plus the appended task/modality tokens."""
        return self.n_vocab + len(self.extra_tokens)

    def generalist_dict(self) -> dict:
        """The generalist's additions (:data:`GENERALIST_KEYS`) as ``config.json``'s ``generalist`` block."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if k in GENERALIST_KEYS}

    @property
    def num_languages(self) -> int:
        return self.n_vocab - 51765 - int(self.multilingual)

    def to_hf(self) -> dict:
        """The transformers ``WhisperConfig`` dictionary for these dimensions."""
        eot = 50257 if self.multilingual else 50256
        return {
            "architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper",
            "num_mel_bins": self.n_mels,
            "max_source_positions": self.n_audio_ctx,
            "d_model": self.n_audio_state,
            "encoder_attention_heads": self.n_audio_head,
            "encoder_layers": self.n_audio_layer,
            "encoder_ffn_dim": self.n_audio_ffn,
            "vocab_size": self.n_total_vocab,
            "max_target_positions": self.n_text_ctx,
            "decoder_attention_heads": self.n_text_head,
            "decoder_layers": self.n_text_layer,
            "decoder_ffn_dim": self.n_text_ffn,
            "activation_function": "gelu",
            "scale_embedding": False,
            "tie_word_embeddings": True,
            "bos_token_id": eot,
            "eos_token_id": eot,
            "pad_token_id": eot,
            "decoder_start_token_id": eot + 1,
            "suppress_tokens": list(self.suppress_tokens),
            "begin_suppress_tokens": list(self.begin_suppress_tokens),
            "alignment_heads": [list(p) for p in self.alignment_heads],
            "torch_dtype": "float32",
            "generalist": self.generalist_dict(),  # ignored by transformers
        }

    @classmethod
    def from_hf(cls, cfg: dict) -> "ModelConfig":
        """Read a transformers ``WhisperConfig`` dictionary (unknown keys are ignored)."""
        if "d_model" not in cfg or "encoder_layers" not in cfg:
            raise ValueError("not a Whisper config: it has no d_model/encoder_layers")
        width = cfg["d_model"]
        return cls(
            n_mels=cfg.get("num_mel_bins", 80),
            n_audio_ctx=cfg.get("max_source_positions", 1500),
            n_audio_state=width,
            n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"],
            n_vocab=cfg["vocab_size"] - len((cfg.get("generalist") or {}).get("extra_tokens") or ()),
            n_text_ctx=cfg.get("max_target_positions", 448),
            n_text_state=width,
            n_text_head=cfg["decoder_attention_heads"],
            n_text_layer=cfg["decoder_layers"],
            n_audio_ffn=cfg.get("encoder_ffn_dim", 4 * width),
            n_text_ffn=cfg.get("decoder_ffn_dim", 4 * width),
            suppress_tokens=tuple(cfg.get("suppress_tokens") or ()),
            begin_suppress_tokens=tuple(cfg.get("begin_suppress_tokens") or ()),
            alignment_heads=tuple(tuple(p) for p in cfg.get("alignment_heads") or ()),
            **_generalist_from(cfg.get("generalist") or {}),
        )

    def to_dict(self) -> dict:
        return asdict(self)


# every field from ``n_experts`` on, in declaration order: what config.json's ``generalist`` block holds
_NAMES = [f.name for f in fields(ModelConfig)]
GENERALIST_KEYS = tuple(_NAMES[_NAMES.index("n_experts") :])


def _generalist_from(g: dict) -> dict:
    known = set(GENERALIST_KEYS)
    unknown = set(g) - known
    if unknown:
        raise ValueError(f"unknown generalist keys {sorted(unknown)}")
    out = dict(g)
    for key in ("video_patch", "video_max", "extra_tokens", "output_tokens", "adapter_languages", "adapter_tokens"):
        if key in out:
            out[key] = tuple(out[key])
    if out.get("video_tokens", "tubelets") not in VIDEO_TOKENS:
        raise ValueError(f"video_tokens must be one of {', '.join(VIDEO_TOKENS)}, not {out['video_tokens']!r}")
    if out.get("tts_input", "text") not in TTS_INPUTS:
        raise ValueError(f"tts_input must be 'text' or 'phonemes', not {out['tts_input']!r}")
    segments, shared = out.get("moe_segments", 1), out.get("moe_shared", 0)
    if segments < 1 or not 0 <= shared < segments:
        raise ValueError(f"moe_segments must be >= 1 and moe_shared in 0..segments-1, not {segments}, {shared}")
    if out.get("ttt", "none") not in TTT_KINDS:
        raise ValueError(f"ttt must be 'none' or 'mlp', not {out['ttt']!r}")
    return out
