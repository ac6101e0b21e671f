"""The model's dimensions and special tokens, read from and written to a Hugging Face ``config.json``.

The store keeps transformers' ``WhisperConfig`` keys so a stored model is also a valid HF Whisper
directory; :class:`ModelConfig` is the frozen view the code uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865

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
            "vocab_size": self.n_vocab,
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
            n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg.get("max_target_positions", 448),
            n_text_state=width,
            n_text_head=cfg["decoder_attention_heads"],
            n_text_layer=cfg["decoder_layers"],
            n_audio_ffn=cfg.get("encoder_ffn_dim", 4 * width),
            n_text_ffn=cfg.get("decoder_ffn_dim", 4 * width),
            suppress_tokens=tuple(cfg.get("suppress_tokens") or ()),
            begin_suppress_tokens=tuple(cfg.get("begin_suppress_tokens") or ()),
            alignment_heads=tuple(tuple(p) for p in cfg.get("alignment_heads") or ()),
        )

    def to_dict(self) -> dict:
        return asdict(self)
