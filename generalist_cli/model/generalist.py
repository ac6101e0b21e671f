"""The generalist: Whisper's encoder-decoder with TTT-MLP and MoE in every block, modality front-ends whose
embeddings are packed (Patch n' Pack) into shared encoder rows, tied text logits and a speech head.

With ``ModelConfig()`` defaults (one expert, no TTT, no front-ends) this *is* Whisper: the same parameter
names and logits as ``transformers.WhisperForConditionalGeneration``. Upcycled from Whisper
(:mod:`generalist_cli.model.upcycle`) it still computes Whisper's function at step 0.
Shapes: B batch/rows, S encoder positions, T decoder tokens, D width, V vocabulary.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from generalist_cli.model.config import ModelConfig
from generalist_cli.model.frontends import MODALITIES, PoseFrontend, VideoFrontend
from generalist_cli.model.heads import SpeechHead
from generalist_cli.model.moe import RouterOutput
from generalist_cli.model.packing import Packing, cross_blocks
from generalist_cli.model.whisper import AudioEncoder, BlockOptions, KVCache, TextDecoder


class Generalist(nn.Module):
    kind = "torch"  # the engine interface (infer/engine.py)
    can_pack = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        opts = BlockOptions.of(c)
        self.encoder = AudioEncoder(
            c.n_mels, c.n_audio_ctx, c.n_audio_state, c.n_audio_head, c.n_audio_layer, c.n_audio_ffn, opts
        )
        self.decoder = TextDecoder(
            c.n_total_vocab, c.n_text_ctx, c.n_text_state, c.n_text_head, c.n_text_layer, c.n_text_ffn, opts
        )
        if c.generalist:
            self.video = VideoFrontend(c.n_audio_state, patch=c.video_patch, max_grid=c.video_max)
            if c.video_motion:
                self.video.add_motion()
            self.video.set_tokens(c.video_tokens)
            if c.video_tokens == "pose":
                self.pose = PoseFrontend(c.n_audio_state)
            self.modality_embedding = nn.Embedding(len(MODALITIES), c.n_audio_state)
            nn.init.zeros_(self.modality_embedding.weight)
            self.speech_head = SpeechHead(
                c.n_audio_state, c.n_speech_mels, progress=c.speech_progress, layers=c.speech_layers
            )

    # ---- front-ends: one example or a batch -> embeddings with positions and modality ----
    def _modality(self, name: str) -> Tensor | float:
        return self.modality_embedding.weight[MODALITIES.index(name)] if self.config.generalist else 0.0

    def embed_audio(self, mel: Tensor) -> Tensor:
        """``mel`` (B, n_mels, 2S) -> (B, S, D)."""
        x = self.encoder.stem(mel)
        return x + self.encoder.embed_positions.weight[: x.shape[1]] + self._modality("audio")

    def embed_video(self, frames: Tensor) -> Tensor:
        """``frames`` (T, H, W, C) -> (N, D) tubelet embeddings."""
        if not self.config.generalist:
            raise ValueError("this checkpoint has no video front-end")
        return self.video(frames) + self._modality("video")

    def embed_patches(self, patches: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """Prepared tubelet ``patches`` (N, P) on ``grid`` -> (N, D)."""
        if not self.config.generalist:
            raise ValueError("this checkpoint has no video front-end")
        return self.video.embed(patches, grid) + self._modality("video")

    def embed_pose(self, landmarks: Tensor) -> Tensor:
        """Landmarks (T, 75, 3) of a clip (features/pose.py) -> (T, D): a model with ``video_tokens = "pose"``."""
        if not hasattr(self, "pose"):
            raise ValueError("this checkpoint reads video as pixels, not landmarks (video_tokens is not 'pose')")
        return self.pose(landmarks) + self._modality("video")

    def embed_text(self, tokens: Tensor) -> Tensor:
        """``tokens`` (L,) -> (L, D) for the encoder (translation, text -> speech): the shared token embeddings
        times ``config.text_scale`` (upcycled models: sqrt(D), so Whisper's small token embeddings - RMS 0.03
        in whisper-base - are not drowned by the encoder's sinusoidal positions, RMS 0.71), plus positions."""
        x = self.decoder.embed_tokens(tokens) * self.config.text_scale
        return x + self.encoder.embed_positions.weight[: tokens.shape[0]] + self._modality("text")

    def embed_texts(self, tokens: list[Tensor]) -> list[Tensor]:
        """:meth:`embed_text` for many sequences with one embedding lookup (a lookup per sequence would
        build a dense vocabulary-sized gradient per sequence)."""
        lengths = [t.shape[0] for t in tokens]
        positions = torch.cat([torch.arange(n) for n in lengths]).to(tokens[0].device)
        x = self.decoder.embed_tokens(torch.cat(tokens)) * self.config.text_scale
        x = x + self.encoder.embed_positions.weight[positions]
        return list((x + self._modality("text")).split(lengths))

    # ---- encoder / decoder ----
    def encode(self, x: Tensor, packing: Packing | None = None) -> tuple[Tensor, list[RouterOutput]]:
        """Embeddings ``x`` (B, S, D) -> encoder states and the MoE routers of every layer."""
        return self.encoder.blocks(x, packing)

    def encode_audio(self, mel: Tensor) -> Tensor:
        """Whisper's encoder on ``mel`` (B, n_mels, 2S) -> (B, S, D)."""
        return self.encode(self.embed_audio(mel))[0]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_mels(self, mels) -> Tensor:
        """Numpy log-mel windows (B, n_mels, 3000) -> encoder states, on the model's device and dtype."""
        p = next(self.parameters())
        return self.encode_audio(torch.from_numpy(np.ascontiguousarray(mels)).to(device=p.device, dtype=p.dtype))

    def logits(self, hidden: Tensor) -> Tensor:
        """Tied projection to the vocabulary: (B, T, D) -> (B, T, V). With a restricted output vocabulary
        (``config.output_tokens``) every other token's logit is -inf."""
        ids = self.config.output_tokens
        if not ids:
            return hidden @ self.decoder.embed_tokens.weight.T
        index = torch.tensor(ids, device=hidden.device)
        out = hidden.new_full(hidden.shape[:-1] + (self.decoder.embed_tokens.weight.shape[0],), float("-inf"))
        return out.index_copy(-1, index, hidden @ self.decoder.embed_tokens.weight[index].T)

    def target_logits(self, hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and labels for a loss: (N, D), (N,) -> (N, V') logits over the output vocabulary (V' = V, or
        the restricted ``config.output_tokens``, computed without the full projection) and labels indexing it."""
        ids = self.config.output_tokens
        if not ids:
            return hidden @ self.decoder.embed_tokens.weight.T, labels
        index = torch.tensor(ids, device=hidden.device)
        lookup = torch.full((self.decoder.embed_tokens.weight.shape[0],), -100, dtype=torch.long, device=hidden.device)
        lookup[index] = torch.arange(len(ids), device=hidden.device)
        return hidden @ self.decoder.embed_tokens.weight[index].T, lookup[labels]

    def cross_kv(self, audio_features: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [block.encoder_attn.project_kv(audio_features) for block in self.decoder.layers]

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced logits: ``mel`` (B, n_mels, 2S), ``tokens`` (B, T) -> (B, T, V)."""
        return self.logits(self.decoder(tokens, self.cross_kv(self.encode_audio(mel))))

    def forward_packed(
        self, enc_x: Tensor, enc_packing: Packing, tokens: Tensor, dec_packing: Packing
    ) -> tuple[Tensor, list[RouterOutput], list[RouterOutput]]:
        """Packed teacher forcing: encoder rows of embedded examples and decoder rows of their targets, the
        k-th target of a row belonging to the k-th encoder example of that row. -> (logits (B, T, V),
        encoder routers, decoder routers)."""
        hidden, _, enc_routers, dec_routers = self.forward_packed_full(enc_x, enc_packing, tokens, dec_packing)
        return self.logits(hidden), enc_routers, dec_routers

    def forward_packed_full(self, enc_x: Tensor, enc_packing: Packing, tokens: Tensor, dec_packing: Packing):
        """:meth:`forward_packed` returning decoder *hidden states* (project the positions you need with
        :meth:`logits`) and the encoder states: (hidden, encoder, enc routers, dec routers)."""
        enc, enc_routers = self.encode(enc_x, enc_packing)
        hidden, dec_routers, _ = self.decoder.run(
            tokens,
            self.cross_kv(enc),
            positions=dec_packing.positions,
            packing=dec_packing,
            cross_mask=cross_blocks(dec_packing, enc_packing),
        )
        return hidden, enc, enc_routers, dec_routers

    # ---- generation ----
    def new_cache(self, audio_features: Tensor, lengths: list[int] | None = None) -> KVCache:
        """A cache for ``audio_features`` (B, S, D): cross keys/values computed once, empty self keys/values.
        ``lengths``: row i's audio is its first lengths[i] positions (packed audio of different lengths)."""
        c = self.config
        b = audio_features.shape[0]
        shape = (b, c.n_text_head, c.n_text_ctx, c.n_text_state // c.n_text_head)
        empty = [(audio_features.new_zeros(shape), audio_features.new_zeros(shape)) for _ in range(c.n_text_layer)]
        mask = None
        if lengths is not None:
            mask = (
                torch.arange(audio_features.shape[1], device=audio_features.device)
                < torch.tensor(lengths, device=audio_features.device)[:, None]
            )
            mask = mask[:, None, None]
        return KVCache(
            self_kv=empty, cross_kv=self.cross_kv(audio_features), ttt=[None] * c.n_text_layer, cross_mask=mask
        )

    def encode_mels_packed(self, windows: list[np.ndarray]) -> tuple[Tensor, list[int]]:
        """Numpy log-mel windows of any length (each (n_mels, frames)) -> :meth:`encode_audio_packed`'s
        (features, lengths) on the model's device and dtype; an odd frame count gains a zero frame."""
        from generalist_cli.features.mel import pad_or_trim

        p = next(self.parameters())
        mels = [
            torch.from_numpy(pad_or_trim(w, max(2, w.shape[-1] + w.shape[-1] % 2))).to(device=p.device, dtype=p.dtype)
            for w in windows
        ]  # an even number of frames: the stem halves it
        return self.encode_audio_packed(mels)

    def encode_audio_packed(self, mels: list[Tensor], capacity: int | None = None) -> tuple[Tensor, list[int]]:
        """Audio of different lengths, each ``(n_mels, 2 S_i)``, encoded unpadded and packed several to an
        encoder row (Patch n' Pack: block-diagonal attention, positions restarting per example, so each equals
        its own unpadded forward) -> (features (B, max S_i, D) zero-padded, lengths S_i) for :meth:`new_cache`."""
        return self.encode_packed([self.embed_audio(m[None])[0] for m in mels], capacity)

    def encode_texts_packed(self, tokens: list[Tensor], capacity: int | None = None) -> tuple[Tensor, list[int]]:
        """Texts of different lengths (token ids) encoded packed as :meth:`encode_audio_packed` encodes audio:
        a batch of sentences to translate, each equal to its own unpadded forward."""
        return self.encode_packed(self.embed_texts(tokens), capacity)

    def encode_packed(self, embedded: list[Tensor], capacity: int | None = None) -> tuple[Tensor, list[int]]:
        """Embedded examples (S_i, D) packed into encoder rows -> (states (B, max S_i, D) zero-padded, S_i)."""
        from generalist_cli.model.packing import pack, plan_rows

        lengths = [len(e) for e in embedded]
        rows = plan_rows(lengths, capacity or self.config.n_audio_ctx)
        x, packing = pack(embedded, rows)
        enc = self.encode(x, packing)[0]
        out = enc.new_zeros(len(embedded), max(lengths), enc.shape[-1])
        for i, (r, a, b) in enumerate(packing.spans):
            out[i, : b - a] = enc[r, a:b]
        return out, lengths

    def decode_step(self, tokens: Tensor, cache: KVCache, offset: int) -> Tensor:
        """Feed ``tokens`` (B, T) at ``offset`` through the cached decoder; logits of the last one, (B, V)."""
        hidden = self.decoder(tokens, cache.cross_kv, cache, offset)
        return self.logits(hidden[:, -1:])[:, 0]
