"""A Whisper-compatible encoder-decoder (Radford et al. 2022), the core the generalist is built on.

Reads top-down like openai/whisper's ``model.py``: attention, block, encoder, decoder, model. Parameter
names are transformers' ``WhisperModel`` names (``encoder.layers.0.self_attn.q_proj.weight`` ...), so
any Whisper checkpoint loads by stripping ``model.``; with the same weights the logits equal
``transformers.WhisperForConditionalGeneration`` (tests/model/test_whisper.py).

Shapes: B batch, S encoder positions, T decoder tokens, D width, H heads, K head size, V vocabulary.
Generation uses a preallocated :class:`KVCache` passed in explicitly; nothing is stored on a module
during ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generalist_cli.model.config import ModelConfig


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> Tensor:
    """Whisper's fixed encoder position embeddings, shape ``(length, channels)``."""
    log_inc = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-log_inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class Attention(nn.Module):
    """Multi-head attention; keys have no bias, as in Whisper."""

    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(n_state, n_state)
        self.k_proj = nn.Linear(n_state, n_state, bias=False)
        self.v_proj = nn.Linear(n_state, n_state)
        self.out_proj = nn.Linear(n_state, n_state)

    def heads(self, x: Tensor) -> Tensor:
        """``(B, T, D) -> (B, H, T, K)``."""
        b, t, d = x.shape
        return x.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x`` (B, S, D), each ``(B, H, S, K)``."""
        return self.heads(self.k_proj(x)), self.heads(self.v_proj(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, causal: bool = False) -> Tensor:
        """``q`` (B, T, D) already projected; ``k, v`` (B, H, S, K) -> (B, T, D)."""
        q = self.heads(q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        b, h, t, kk = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * kk))

    def forward(self, x: Tensor, *, causal: bool = False) -> Tensor:
        """Self-attention over ``x`` (B, T, D) without a cache."""
        k, v = self.project_kv(x)
        return self.attend(self.q_proj(x), k, v, causal=causal)


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, n_hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(n_state, n_head)
        self.self_attn_layer_norm = nn.LayerNorm(n_state)
        self.fc1 = nn.Linear(n_state, n_hidden)  # the feed-forward network, GELU between
        self.fc2 = nn.Linear(n_hidden, n_state)
        self.final_layer_norm = nn.LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, n_hidden: int) -> None:
        super().__init__()
        self.self_attn = Attention(n_state, n_head)
        self.self_attn_layer_norm = nn.LayerNorm(n_state)
        self.encoder_attn = Attention(n_state, n_head)
        self.encoder_attn_layer_norm = nn.LayerNorm(n_state)
        self.fc1 = nn.Linear(n_state, n_hidden)  # the feed-forward network, GELU between
        self.fc2 = nn.Linear(n_hidden, n_state)
        self.final_layer_norm = nn.LayerNorm(n_state)

    def forward(self, x: Tensor, cross_kv: tuple[Tensor, Tensor], self_kv: tuple[Tensor, Tensor] | None,
                offset: int) -> Tensor:
        """``x`` (B, T, D) at positions ``offset..offset+T``; ``self_kv`` is this layer's cache (written in place)."""
        h = self.self_attn_layer_norm(x)
        q = self.self_attn.q_proj(h)
        k, v = self.self_attn.project_kv(h)
        t = x.shape[1]
        if self_kv is None:
            x = x + self.self_attn.attend(q, k, v, causal=True)
        else:
            ck, cv = self_kv
            ck[:, :, offset : offset + t] = k
            cv[:, :, offset : offset + t] = v
            k, v = ck[:, :, : offset + t], cv[:, :, : offset + t]
            mask = None
            if t > 1:  # prefill: token i sees the cache and tokens <= i
                mask = torch.ones(t, offset + t, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            x = x + self.self_attn.attend(q, k, v, mask=mask)
        x = x + self.encoder_attn.attend(self.encoder_attn.q_proj(self.encoder_attn_layer_norm(x)), *cross_kv)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, n_hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(n_ctx, n_state)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(n_ctx, n_state))
        self.layers = nn.ModuleList(EncoderBlock(n_state, n_head, n_hidden) for _ in range(n_layer))
        self.layer_norm = nn.LayerNorm(n_state)

    def forward(self, mel: Tensor) -> Tensor:
        """``mel`` (B, n_mels, 2S) -> (B, S, D); S <= n_ctx (a full window is 3,000 frames -> 1,500)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # (B, S, D)
        x = x + self.embed_positions.weight[: x.shape[1]]
        for block in self.layers:
            x = block(x)
        return self.layer_norm(x)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int, n_hidden: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(n_vocab, n_state)
        self.embed_positions = nn.Embedding(n_ctx, n_state)
        self.layers = nn.ModuleList(DecoderBlock(n_state, n_head, n_hidden) for _ in range(n_layer))
        self.layer_norm = nn.LayerNorm(n_state)

    def forward(self, tokens: Tensor, cross: list[tuple[Tensor, Tensor]], cache: "KVCache | None" = None,
                offset: int = 0) -> Tensor:
        """``tokens`` (B, T) at positions ``offset..`` -> hidden states (B, T, D)."""
        x = self.embed_tokens(tokens) + self.embed_positions.weight[offset : offset + tokens.shape[1]]
        for i, block in enumerate(self.layers):
            x = block(x, cross[i], None if cache is None else cache.self_kv[i], offset)
        return self.layer_norm(x)


@dataclass
class KVCache:
    """Decoder state for generation: per layer, self-attention keys/values (preallocated to ``n_text_ctx``)
    and the cross-attention keys/values of the encoder output. Shapes ``(B, H, T|S, K)``."""

    self_kv: list[tuple[Tensor, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search): self-attention only, as rows keep their audio."""
        self.self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv]


class Whisper(nn.Module):
    """Encoder-decoder with tied output embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.encoder = AudioEncoder(c.n_mels, c.n_audio_ctx, c.n_audio_state, c.n_audio_head, c.n_audio_layer,
                                    c.n_audio_ffn)
        self.decoder = TextDecoder(c.n_vocab, c.n_text_ctx, c.n_text_state, c.n_text_head, c.n_text_layer,
                                   c.n_text_ffn)

    def logits(self, hidden: Tensor) -> Tensor:
        """Tied projection to the vocabulary: (B, T, D) -> (B, T, V)."""
        return hidden @ self.decoder.embed_tokens.weight.T

    def cross_kv(self, audio_features: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [block.encoder_attn.project_kv(audio_features) for block in self.decoder.layers]

    def new_cache(self, audio_features: Tensor) -> KVCache:
        """A cache for ``audio_features`` (B, S, D): cross keys/values computed once, empty self keys/values."""
        c = self.config
        b = audio_features.shape[0]
        shape = (b, c.n_text_head, c.n_text_ctx, c.n_text_state // c.n_text_head)
        empty = [(audio_features.new_zeros(shape), audio_features.new_zeros(shape)) for _ in range(c.n_text_layer)]
        return KVCache(self_kv=empty, cross_kv=self.cross_kv(audio_features))

    def decode_step(self, tokens: Tensor, cache: KVCache, offset: int) -> Tensor:
        """Feed ``tokens`` (B, T) at ``offset`` through the cached decoder; logits of the last one, (B, V)."""
        hidden = self.decoder(tokens, cache.cross_kv, cache, offset)
        return self.logits(hidden[:, -1:])[:, 0]

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced logits: ``mel`` (B, n_mels, 2S), ``tokens`` (B, T) -> (B, T, V)."""
        audio = self.encoder(mel)
        return self.logits(self.decoder(tokens, self.cross_kv(audio)))
