"""Whisper's encoder and decoder (Radford et al. 2022), with the generalist's two additions in every block:
a TTT-MLP layer behind a zero-initialised gated residual and an optional Mixture-of-Experts FFN.

Reads top-down like openai/whisper's ``model.py``: attention, blocks, encoder, decoder, cache. Parameter
names are transformers' ``WhisperModel`` names (``encoder.layers.0.self_attn.q_proj.weight`` ...), so with
one expert and no TTT the weights are exactly a Whisper checkpoint's. Blocks return ``(x, router)`` where
``router`` is the MoE's :class:`~generalist_cli.model.moe.RouterOutput` (or None); nothing is stored on a
module during ``forward``. A block is (pre-LN everywhere):

    x = x + SelfAttn(LN(x))
    x = x + tanh(a) * TTT(LN(x))  [+ tanh(a_rev) * rev(TTT(rev(LN(x))))  in the encoder]
    x = x + CrossAttn(LN(x), audio)                                        (decoder)
    x = x + FFN(LN(x))   or   MoE(LN(x))

Shapes: B batch/rows, S encoder positions, T decoder tokens, D width, H heads, K head size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generalist_cli.model.adapters import BlockAdapters, project, route_of
from generalist_cli.model.moe import MoEFFN, RouterOutput
from generalist_cli.model.packing import Blocks, Packing, gather_positions, per_row_spans, scatter_positions, span_index
from generalist_cli.model.ttt import TTTMLP, TTTState


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

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | Blocks | None = None, causal: bool = False
    ) -> Tensor:
        """``q`` (B, T, D) already projected; ``k, v`` (B, H, S, K); ``mask`` (B|1, 1, T, S) bool or the
        packed rows' :class:`~generalist_cli.model.packing.Blocks` -> (B, T, D)."""
        q = self.heads(q)
        if isinstance(mask, Blocks):
            out = mask.attend(q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self._merge(out)

    def attend_with_scores(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`attend` without a mask, and the scaled query-key scores (B, H, T, S) it attended with
        (as openai/whisper's ``qkv_attention`` returns them): word timestamps read cross-attention so."""
        q = self.heads(q)
        qk = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return self._merge(F.scaled_dot_product_attention(q, k, v)), qk

    def _merge(self, out: Tensor) -> Tensor:
        b, h, t, kk = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * kk))

    def forward(self, x: Tensor, *, mask: Tensor | Blocks | None = None, causal: bool = False) -> Tensor:
        """Self-attention over ``x`` (B, T, D) without a cache."""
        k, v = self.project_kv(x)
        return self.attend(self.q_proj(x), k, v, mask=mask, causal=causal)


@dataclass(frozen=True)
class BlockOptions:
    """What a block carries besides Whisper's layers."""

    n_experts: int = 1
    top_k: int = 1
    moe_segments: int = 1
    moe_shared: int = 0
    conformer: bool = False  # encoder blocks get a gated conv module and macaron FFN (model/conformer.py)
    conformer_kernel: int = 15
    peer_experts: int = 0  # > 0: a PEER layer (model/peer.py) beside the FFN, with this many experts
    peer_heads: int = 8
    peer_top_k: int = 16
    ttt: bool = False
    ttt_mini_batch: int = 16
    ttt_base_lr: float = 0.1
    adapter_languages: tuple[str, ...] = ()  # decoder blocks: language adapters (model/adapters.py)
    adapter_tokens: tuple[int, ...] = ()
    adapter_rank: int = 0

    @classmethod
    def of(cls, config) -> "BlockOptions":
        """A :class:`~generalist_cli.model.config.ModelConfig`'s block settings (the same field names; ``ttt``
        there names the layer, here says whether there is one)."""
        from dataclasses import fields

        given = {f.name: getattr(config, f.name) for f in fields(cls)}
        return cls(**given | {"ttt": config.ttt == "mlp"})


class _Block(nn.Module):
    """Shared parts of encoder and decoder blocks: the gated TTT residual and the (MoE) feed-forward."""

    def _init_extras(self, n_state: int, n_head: int, n_hidden: int, opts: BlockOptions, *, reverse: bool) -> None:
        self.adapters: BlockAdapters | None = None  # language adapters: decoder blocks only (DecoderBlock)
        if opts.ttt:
            self.ttt = TTTMLP(n_state, n_head, mini_batch=opts.ttt_mini_batch, base_lr=opts.ttt_base_lr)
            self.ttt_layer_norm = nn.LayerNorm(n_state)
            self.ttt_gate = nn.Parameter(torch.zeros(n_state))  # tanh(0) = 0: the block is Whisper's at init
            if reverse:
                self.ttt_gate_reverse = nn.Parameter(torch.zeros(n_state))
        else:
            self.ttt = None
        if opts.n_experts > 1:
            seg = n_hidden // opts.moe_segments
            self.moe = MoEFFN(
                n_state,
                seg,
                opts.n_experts,
                opts.top_k,
                groups=opts.moe_segments - opts.moe_shared,
                shared_hidden=opts.moe_shared * seg,
            )
        else:
            self.moe = None
            self.fc1 = nn.Linear(n_state, n_hidden)  # Whisper's FFN, GELU between
            self.fc2 = nn.Linear(n_hidden, n_state)
        self.final_layer_norm = nn.LayerNorm(n_state)
        if opts.peer_experts:
            from generalist_cli.model.peer import PEER

            self.peer = PEER(n_state, opts.peer_experts, heads=opts.peer_heads, top_k=opts.peer_top_k)
        else:
            self.peer = None

    def ffn(self, x: Tensor, route: Tensor | None = None) -> tuple[Tensor, RouterOutput | None]:
        h = self.final_layer_norm(x)
        if self.moe is not None:
            y, router = self.moe(h)
        else:
            ad = self.adapters
            y, router = project(self.fc2, F.gelu(project(self.fc1, h, ad, "fc1", route)), ad, "fc2", route), None
        if self.peer is not None:
            y = y + self.peer(h)
        return x + y, router

    def ttt_scans(
        self, h: Tensor, spans: list[list[tuple[int, int]]] | None, directions: tuple[bool, ...] = (False,)
    ) -> list[Tensor]:
        """TTT over each example separately (state reset at every example), once per direction (``True``: the
        reversed scan, read back in forward order): ``h`` (B, S, D) -> one (B, S, D) output per direction.
        ``spans=None``: each row is one sequence.

        The layer's projections run on the packed rows; then every (example, direction) is laid at the start
        of its own scan row, longest first, so all scans of a block share one recurrence whose mini-batches
        drop the rows that have ended: no compute on padding, one sequential loop for both directions."""
        u = self.ttt.inputs(h)
        if spans is None:  # whole rows: flips and one concatenation (graph ops, so an ONNX export keeps them)
            z = self._ttt(torch.cat([u.flip(1) if back else u for back in directions]), None)
            return [
                self.ttt.output(zd.flip(1) if back else zd) for zd, back in zip(z.chunk(len(directions)), directions)
            ]
        segs = [(r, a, b) for r, row in enumerate(spans) for a, b in row]
        if not segs:
            return [torch.zeros_like(h) for _ in directions]
        runs = sorted(
            ((b - a, d, (r, a, b)) for d in range(len(directions)) for r, a, b in segs), key=lambda run: -run[0]
        )
        index = span_index(
            [run[2] for run in runs], h.shape[1], n_rows=h.shape[0], reverse=[directions[run[1]] for run in runs]
        )
        z = self._ttt(gather_positions(u, index), [run[0] for run in runs])
        outs = []
        for d in range(len(directions)):
            mine = torch.tensor([k for k, run in enumerate(runs) if run[1] == d])
            zd = scatter_positions(z.index_select(0, mine.to(z.device)), index[mine], h.shape[:2] + z.shape[-1:])
            outs.append(self.ttt.output(zd))
        return outs

    def _ttt_closed(self) -> bool:
        """Every TTT gate is exactly 0 and will stay so in this pass (no gradient reaches it: inference, or an
        encoder a recipe froze): the residual adds tanh(0) * scan = 0, so the scan is skipped, exactly. An ONNX
        export leaves it out of the graph too (the gates are constants there)."""
        gates = [self.ttt_gate] + ([self.ttt_gate_reverse] if hasattr(self, "ttt_gate_reverse") else [])
        if torch.is_grad_enabled() and any(g.requires_grad for g in gates):
            return False
        return not any(bool(g.detach().any()) for g in gates)

    def _ttt(self, u: Tensor, lengths: list[int] | None) -> Tensor:
        """The TTT recurrence over fresh rows ``u`` (see ``TTTMLP.scan``). Under autograd it is recomputed in
        backward (activation checkpointing): the dual form keeps a new fast-weight state per 16-token
        mini-batch, ~1 MB a row for whisper-base, which for a batch of real 2-22 s utterances passed 24 GB."""
        if not (torch.is_grad_enabled() and u.requires_grad):
            return self.ttt.scan(u, lengths=lengths)[0]
        from torch.utils.checkpoint import checkpoint

        return checkpoint(lambda t: self.ttt.scan(t, lengths=lengths)[0], u, use_reentrant=False)


class EncoderBlock(_Block):
    def __init__(self, n_state: int, n_head: int, n_hidden: int, opts: BlockOptions = BlockOptions()) -> None:
        super().__init__()
        self.self_attn = Attention(n_state, n_head)
        self.self_attn_layer_norm = nn.LayerNorm(n_state)
        self._init_extras(n_state, n_head, n_hidden, opts, reverse=True)
        if opts.conformer:
            from generalist_cli.model.conformer import ConvModule, MacaronFFN

            self.macaron = MacaronFFN(n_state, n_hidden)
            self.conv_module = ConvModule(n_state, opts.conformer_kernel)
            self.macaron_gate = nn.Parameter(torch.zeros(n_state))  # tanh(0) = 0: Whisper's block at init
            self.conv_gate = nn.Parameter(torch.zeros(n_state))
        else:
            self.macaron = self.conv_module = None

    def forward(
        self, x: Tensor, *, mask: Tensor | Blocks | None = None, spans=None, segments: Tensor | None = None
    ) -> tuple[Tensor, RouterOutput | None]:
        if self.macaron is not None:
            x = x + torch.tanh(self.macaron_gate) * self.macaron(x)
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask=mask)
        if self.ttt is not None and not self._ttt_closed():  # bidirectional: forward and reversed scans, own gates
            h = self.ttt_layer_norm(x)
            ahead, back = self.ttt_scans(h, spans, (False, True))
            x = x + torch.tanh(self.ttt_gate) * ahead + torch.tanh(self.ttt_gate_reverse) * back
        if self.conv_module is not None:
            x = x + torch.tanh(self.conv_gate) * self.conv_module(x, segments)
        return self.ffn(x)


class DecoderBlock(_Block):
    def __init__(self, n_state: int, n_head: int, n_hidden: int, opts: BlockOptions = BlockOptions()) -> None:
        super().__init__()
        self.self_attn = Attention(n_state, n_head)
        self.self_attn_layer_norm = nn.LayerNorm(n_state)
        self.encoder_attn = Attention(n_state, n_head)
        self.encoder_attn_layer_norm = nn.LayerNorm(n_state)
        self._init_extras(n_state, n_head, n_hidden, opts, reverse=False)
        self.adapters = (
            BlockAdapters(opts.adapter_languages, n_state, n_hidden, opts.adapter_rank)
            if opts.adapter_languages
            else None
        )

    def forward(
        self,
        x: Tensor,
        cross_kv: tuple[Tensor, Tensor],
        *,
        cache: "KVCache | None" = None,
        layer: int = 0,
        offset: int = 0,
        self_mask: Blocks | None = None,
        cross_mask: Tensor | Blocks | None = None,
        spans=None,
        cross_scores: bool = False,
        route: Tensor | None = None,
    ) -> tuple[Tensor, RouterOutput | None, Tensor | None]:
        """``x`` (B, T, D) at positions ``offset..``; with ``cache``, this layer's keys/values and TTT state
        are read and written there (generation). Without it, a causal pass (``self_mask`` for packed rows).
        ``route``: where the language adapters apply (model/adapters.py ``route_of``).
        Returns (x, router, the cross-attention scores when ``cross_scores`` (no ``cross_mask``), else None)."""
        h = self.self_attn_layer_norm(x)
        att, ad = self.self_attn, self.adapters
        q = project(att.q_proj, h, ad, "self_q", route)
        k = att.heads(project(att.k_proj, h, ad, "self_k", route))
        v = att.heads(project(att.v_proj, h, ad, "self_v", route))
        t = x.shape[1]
        if cache is None:
            x = x + self.self_attn.attend(q, k, v, mask=self_mask, causal=True)
        else:
            ck, cv = cache.self_kv[layer]
            ck[:, :, offset : offset + t] = k
            cv[:, :, offset : offset + t] = v
            k, v = ck[:, :, : offset + t], cv[:, :, : offset + t]
            mask = None
            if t > 1:  # prefill: token i sees the cache and tokens <= i
                mask = torch.ones(t, offset + t, dtype=torch.bool, device=x.device).tril(diagonal=offset)
            x = x + self.self_attn.attend(q, k, v, mask=mask)
        if self.ttt is not None:
            h = self.ttt_layer_norm(x)
            if cache is None:
                y = self.ttt_scans(h, spans)[0]
            else:  # offset 0 starts a sequence: a cache decoded before (a retry) must not lend its TTT state
                y, cache.ttt[layer] = self.ttt(h, cache.ttt[layer] if offset else None)
            x = x + torch.tanh(self.ttt_gate) * y
        q = project(self.encoder_attn.q_proj, self.encoder_attn_layer_norm(x), ad, "cross_q", route)
        qk = None
        if cross_scores:
            y, qk = self.encoder_attn.attend_with_scores(q, *cross_kv)
        else:
            y = self.encoder_attn.attend(q, *cross_kv, mask=cross_mask)
        return (*self.ffn(x + y, route), qk)


class AudioEncoder(nn.Module):
    """Whisper's conv stem (audio front-end), sinusoidal positions, blocks, final LayerNorm."""

    def __init__(
        self,
        n_mels: int,
        n_ctx: int,
        n_state: int,
        n_head: int,
        n_layer: int,
        n_hidden: int,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(n_ctx, n_state)
        with torch.no_grad():
            self.embed_positions.weight.copy_(sinusoids(n_ctx, n_state))
        self.layers = nn.ModuleList(EncoderBlock(n_state, n_head, n_hidden, opts) for _ in range(n_layer))
        self.layer_norm = nn.LayerNorm(n_state)

    def stem(self, mel: Tensor) -> Tensor:
        """``mel`` (B, n_mels, 2S) -> (B, S, D), without positions."""
        x = F.gelu(self.conv1(mel))
        return F.gelu(self.conv2(x)).transpose(1, 2)

    def blocks(self, x: Tensor, packing: Packing | None = None) -> tuple[Tensor, list[RouterOutput]]:
        """Embedded positions ``x`` (B, S, D) through every block; packed rows attend block-diagonally."""
        mask = packing.blocks() if packing is not None else None
        spans = per_row_spans(packing) if packing is not None else None
        segments = packing.segment_ids if packing is not None else None
        routers = []
        for block in self.layers:
            x, router = block(x, mask=mask, spans=spans, segments=segments)
            if router is not None:
                routers.append(router)
        return self.layer_norm(x), routers

    def forward(self, mel: Tensor) -> Tensor:
        """``mel`` (B, n_mels, 2S) -> (B, S, D); S <= n_ctx (a full window is 3,000 frames -> 1,500)."""
        x = self.stem(mel)
        return self.blocks(x + self.embed_positions.weight[: x.shape[1]])[0]


class TextDecoder(nn.Module):
    def __init__(
        self,
        n_vocab: int,
        n_ctx: int,
        n_state: int,
        n_head: int,
        n_layer: int,
        n_hidden: int,
        opts: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(n_vocab, n_state)
        self.embed_positions = nn.Embedding(n_ctx, n_state)
        self.layers = nn.ModuleList(DecoderBlock(n_state, n_head, n_hidden, opts) for _ in range(n_layer))
        self.layer_norm = nn.LayerNorm(n_state)
        self.adapter_tokens = opts.adapter_tokens  # the language tokens that route to the adapters

    def route(self, tokens: Tensor, cache: "KVCache | None", offset: int, packing: Packing | None) -> Tensor | None:
        """Where the language adapters apply: from the prompt's language token, per row (kept in the cache for
        the steps after the prompt) or per packed example."""
        if cache is not None and offset > 0:
            return cache.route
        route = route_of(tokens, self.adapter_tokens, packing.segment_ids if packing is not None else None)
        if cache is not None:
            cache.route = route
        return route

    def run(
        self,
        tokens: Tensor,
        cross: list[tuple[Tensor, Tensor]],
        *,
        cache: "KVCache | None" = None,
        offset: int = 0,
        positions: Tensor | None = None,
        packing: Packing | None = None,
        cross_mask: Tensor | Blocks | None = None,
        cross_scores: bool = False,
    ) -> tuple[Tensor, list[RouterOutput], list[Tensor]]:
        """``tokens`` (B, T) -> (hidden (B, T, D), routers, per layer the cross-attention scores (B, H, T, S)
        when ``cross_scores``, else []). Positions: ``offset..`` or per token (packed)."""
        pos = (
            self.embed_positions.weight[offset : offset + tokens.shape[1]]
            if positions is None
            else self.embed_positions(positions)
        )
        x = self.embed_tokens(tokens) + pos
        self_mask = packing.blocks(causal=True) if packing is not None else None
        spans = per_row_spans(packing) if packing is not None else None
        route = self.route(tokens, cache, offset, packing)
        routers, scores = [], []
        for i, block in enumerate(self.layers):
            x, router, qk = block(
                x,
                cross[i],
                cache=cache,
                layer=i,
                offset=offset,
                self_mask=self_mask,
                cross_mask=cross_mask,
                spans=spans,
                cross_scores=cross_scores,
                route=route,
            )
            routers += [router] if router is not None else []
            scores += [qk] if qk is not None else []
        return self.layer_norm(x), routers, scores

    def forward(
        self,
        tokens: Tensor,
        cross: list[tuple[Tensor, Tensor]],
        cache: "KVCache | None" = None,
        offset: int = 0,
        cross_mask: Tensor | None = None,
    ) -> Tensor:
        """Hidden states of ``tokens``; cross-attention masked by ``cross_mask`` or the cache's (packed audio
        of different lengths)."""
        if cross_mask is None and cache is not None:
            cross_mask = cache.cross_mask
        return self.run(tokens, cross, cache=cache, offset=offset, cross_mask=cross_mask)[0]


@dataclass
class KVCache:
    """Decoder state for generation: per layer, self-attention keys/values (preallocated to ``n_text_ctx``),
    the cross-attention keys/values of the encoder output, and the TTT state. Shapes ``(B, H, T|S, K)``.
    ``cross_mask`` (B, 1, 1, S) bool, True = a real encoder position: rows whose audio is shorter than S."""

    self_kv: list[tuple[Tensor, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]
    ttt: list[TTTState | None]
    cross_mask: Tensor | None = None
    route: Tensor | None = None  # (B, 1, L): which language adapters each row uses (set by the prompt)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search): self-attention and TTT state; rows keep their audio."""
        self.self_kv = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv]
        self.ttt = [None if s is None else s.select(index) for s in self.ttt]
        self.route = None if self.route is None else self.route.index_select(0, index)

    def select(self, index: Tensor) -> "KVCache":
        """A cache of rows ``index`` only (cross-attention included)."""
        return KVCache(
            [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.self_kv],
            [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.cross_kv],
            [None if s is None else s.select(index) for s in self.ttt],
            None if self.cross_mask is None else self.cross_mask.index_select(0, index),
            None if self.route is None else self.route.index_select(0, index),
        )
