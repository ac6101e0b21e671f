"""ONNX graphs of a model for speech -> text, runnable without any Python class of this package.

Two graphs (the layout of whisper.cpp / sherpa-onnx exports, with one decoder graph for every step):

``encoder.onnx``
    in   ``mel``      float32 (batch, n_mels, 3000)       log-mel of 30-second windows (a packed encoder:
                      any length, with the row layout as inputs; see :class:`PackedEncoderGraph`)
    out  ``cross_k``  float32 (n_layers, batch, heads, 1500, head_dim)   cross-attention keys per decoder layer
         ``cross_v``  float32 (same)                                      and values
``decoder.onnx``
    in   ``tokens``   int64   (batch, n_tokens)           the new tokens (the whole prompt on the first step)
         ``past_k``   float32 (n_layers, batch, heads, n_past, head_dim)  self-attention keys so far
         ``past_v``   float32 (same)                      (n_past = 0 on the first step)
         ``cross_k``, ``cross_v``                         the encoder's outputs
    out  ``logits``   float32 (batch, n_tokens, vocab)
         ``present_k``, ``present_v``  (n_layers, batch, heads, n_past + n_tokens, head_dim): next step's past

The new tokens sit at positions ``n_past ..`` and attend causally to the past and to each other, so the
first step (the prompt) and every cached step run through the same graph and the same weights. MoE
blocks export with ``dispatch="index"`` (each expert on the tokens that chose it, weighted by the router's
renormalised top-k gates) or ``"dense"`` (every expert, zero-weighted where not chosen): the same function as
the sorted dispatch, in MatMul nodes ONNX Runtime can quantise. The encoder graph is the model's own
encoder; the decoder graph reuses its blocks' layers.
A restricted output vocabulary (``output_tokens``) gives -inf logits elsewhere, as in PyTorch.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from generalist_cli.model.adapters import project
from generalist_cli.model.packing import gather_positions

OPSET = 17


@contextmanager
def graph_experts(model, dispatch: str = "index"):
    """Every MoE layer of ``model`` in a dispatch with a graph form while exporting: ``"index"`` (top-k: each
    expert on the tokens that chose it) or ``"dense"`` (every expert on every token, no data-dependent shapes)."""
    from generalist_cli.model.upcycle import moe_layers

    layers = moe_layers(model)
    saved = [m.dispatch for m in layers]
    for m in layers:
        m.dispatch = dispatch
    try:
        yield model
    finally:
        for m, d in zip(layers, saved):
            m.dispatch = d


def why_not_packed(model) -> str | None:
    """Why ``model``'s encoder cannot be exported packed (None: it can). The packed graph attends through
    segment masks; an encoder TTT scan or conformer convolution would run across the examples of a row."""
    layers = model.encoder.layers
    if any(b.conv_module is not None for b in layers):
        return "its encoder has conformer convolutions"
    gates = [g for b in layers if b.ttt is not None for g in (b.ttt_gate, b.ttt_gate_reverse)]
    if any(bool(g.detach().any()) for g in gates):
        return "its encoder's TTT layers are trained (their gates are not 0)"
    return None


TTT_STATE = ("w1", "b1", "w2", "b2", "s1", "sb1", "s2", "sb2")


def ttt_step(ttt, x: Tensor, state: list[Tensor], i: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """One token of a TTT-MLP layer as graph ops: ``x`` (B, 1, D), the state tensors of
    :class:`~generalist_cli.model.ttt.TTTState` (a fresh sequence: the layer's learned W0, from
    :func:`ttt_initial_state`, and zero sums) and ``i`` (int64 (1,), tokens into the mini-batch) -> (y, new
    state, new i). The primal form of ``TTTMLP.forward``; its boundary branch (fold the sums into W, restart
    them) is arithmetic on a 0/1 flag, so per token the graph writes each full-size tensor once or twice."""
    from generalist_cli.model.ttt import TTTState, _primal, _rope, fold

    b, _, d = x.shape
    q, k, v, eta = ttt.heads(ttt.inputs(x))
    q, k = _rope(q, i), _rope(k, i)
    tau = torch.clamp(1.0 / (i + 1).to(x.dtype) + ttt.token_idx_offset[i], min=0.0)
    out, sums = _primal(q, k, v, eta, tau, TTTState(*state, 0), ttt.ttt_norm_weight, ttt.ttt_norm_bias)
    boundary = ((i + 1) >= ttt.mini_batch).to(x.dtype)  # the mini-batch is complete: W - tau S, sums restart
    w = list(fold(state[:4], sums, tau * boundary))
    sums = [s * (1 - boundary) for s in sums]
    y = ttt.output(out.transpose(1, 2).reshape(b, 1, d))
    return y, w + sums, torch.where(boundary > 0, torch.zeros_like(i), i + 1)


def ttt_initial_state(model) -> dict:
    """The decoder graph's TTT state for a fresh sequence, one row: ``ttt_w1_<layer>`` ... (1, ...) the layer's
    learned W0, ``ttt_s*_<layer>`` zeros (numpy; ``decoder_ttt.npz`` in an export folder)."""
    out = {}
    for j, t in enumerate(decoder_ttt_layers(model)):
        for n, s in zip(TTT_STATE[:4], TTT_STATE[4:]):
            w = getattr(t, n).detach().float()[None].numpy()
            out[f"ttt_{n}_{j}"], out[f"ttt_{s}_{j}"] = w, np.zeros_like(w)
    return out


class EncoderGraph(nn.Module):
    """mel -> cross-attention keys and values of every decoder layer."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        kv = self.model.cross_kv(self.model.encode_audio(mel))
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class PackedEncoderGraph(nn.Module):
    """Utterances of any length packed several to a row -> their cross-attention keys and values.

    ``mel`` (B, n_mels, 2S) zero-padded after each utterance (the stem then gives each its own unpadded
    embeddings: the convolutions' reach past the end reads the zeros their padding would), and the row layout
    of :func:`generalist_cli.model.rows.row_layout`: ``pack_index`` (R, W), ``segments`` (R, W),
    ``unpack_index`` (B, S). Attention is block-diagonal by ``segments`` (padding attends to padding only);
    the outputs are (n_layers, B, heads, S, head_dim), zero past each utterance's end (mask them)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor, pack_index: Tensor, segments: Tensor, unpack_index: Tensor):
        enc = self.model.encoder
        rows = gather_positions(self.model.embed_audio(mel), pack_index)
        mask = segments[:, None, :, None] == segments[:, None, None, :]
        for block in enc.layers:
            rows = block(rows, mask=mask)[0]
        kv = self.model.cross_kv(gather_positions(enc.layer_norm(rows), unpack_index))
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class DecoderGraph(nn.Module):
    """(tokens, past keys/values, cross keys/values[, audio_mask]) -> (logits, present keys/values)."""

    def __init__(self, model, *, masked: bool = False) -> None:
        super().__init__()
        self.model = model
        self.masked = masked  # an ``audio_mask`` (B, n_audio) bool input: which cross positions are audio

    def forward(self, tokens: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor, *rest):
        """With TTT layers in the decoder, ``rest`` ends with their state, layer by layer (the :data:`TTT_STATE`
        tensors of each, (B, ...): one input per tensor, so no step copies a stack of them) and ``ttt_i``;
        ``tokens`` is then one token per call."""
        audio_mask, ttt = (rest[0][:, None, None, :], rest[1:]) if self.masked else (None, rest)
        route, ttt = (ttt[0], ttt[1:]) if self.model.config.adapter_languages else (None, ttt)
        dec = self.model.decoder
        n = len(TTT_STATE)
        ttt_state, ttt_i = [list(ttt[j : j + n]) for j in range(0, len(ttt) - 1, n)], ttt[-1] if ttt else None
        new_state: list[Tensor] = []
        new_i = ttt_i
        j = 0
        n_past, t = past_k.shape[3], tokens.shape[1]
        pos = torch.arange(t, device=tokens.device) + n_past
        # the token table, transposed once: the embedding lookup and the output projection share this one
        # tensor, so the exported graph holds the table once (constant folding of a second use would copy it)
        table = dec.embed_tokens.weight.t()  # (D, V)
        x = table[:, tokens].permute(1, 2, 0) + dec.embed_positions(pos)
        keys = torch.arange(t, device=tokens.device)[None, :] + torch.zeros_like(pos)[:, None]
        # query i (absolute n_past + i) sees keys 0 .. n_past + i
        mask = torch.cat(
            [
                torch.ones(t, n_past, dtype=torch.bool, device=tokens.device),
                keys <= torch.arange(t, device=tokens.device)[:, None],
            ],
            dim=1,
        )
        new_k, new_v = [], []
        for i, block in enumerate(dec.layers):
            h, att, ad = block.self_attn_layer_norm(x), block.self_attn, block.adapters
            q = project(att.q_proj, h, ad, "self_q", route)
            k = att.heads(project(att.k_proj, h, ad, "self_k", route))
            v = att.heads(project(att.v_proj, h, ad, "self_v", route))
            k, v = torch.cat([past_k[i], k], dim=2), torch.cat([past_v[i], v], dim=2)
            new_k.append(k)
            new_v.append(v)
            x = x + block.self_attn.attend(q, k, v, mask=mask)
            if block.ttt is not None:
                y, state, new_i = ttt_step(block.ttt, block.ttt_layer_norm(x), ttt_state[j], ttt_i)
                x = x + torch.tanh(block.ttt_gate) * y
                new_state += state
                j += 1
            q = project(block.encoder_attn.q_proj, block.encoder_attn_layer_norm(x), ad, "cross_q", route)
            x = x + block.encoder_attn.attend(q, cross_k[i], cross_v[i], mask=audio_mask)
            x = block.ffn(x, route)[0]
        hidden = dec.layer_norm(x)
        ids = self.model.config.output_tokens
        if not ids:
            logits = hidden @ table
        else:  # a restricted output vocabulary: -inf elsewhere, as Generalist.logits
            index = torch.tensor(ids)
            logits = torch.full(hidden.shape[:-1] + (table.shape[1],), float("-inf"))
            logits = logits.index_copy(-1, index, hidden @ table[:, index])
        if ttt:
            return (logits, torch.stack(new_k), torch.stack(new_v), *new_state, new_i)
        return logits, torch.stack(new_k), torch.stack(new_v)


TTT_INIT = "decoder_ttt.npz"  # beside the graphs: the decoder TTT state a fresh sequence starts from


def decoder_ttt_layers(model) -> list:
    return [b.ttt for b in model.decoder.layers if getattr(b, "ttt", None) is not None]


def ttt_state_shapes(model, batch: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the decoder graph's TTT state inputs for ``batch`` rows: ``ttt_<name>_<layer>`` (in graph
    order: layer by layer, :data:`TTT_STATE` within each)."""
    layers = decoder_ttt_layers(model)
    if not layers:
        return {}
    t = layers[0]
    h, f = t.n_head, t.head_dim
    one = {"w1": (h, f, 4 * f), "b1": (h, 1, 4 * f), "w2": (h, 4 * f, f), "b2": (h, 1, f)}
    one |= {"s1": one["w1"], "sb1": one["b1"], "s2": one["w2"], "sb2": one["b2"]}
    return {f"ttt_{n}_{j}": (batch,) + one[n] for j in range(len(layers)) for n in TTT_STATE}


def export_graphs(
    model,
    out_dir,
    *,
    n_frames: int = 3000,
    external: bool | None = None,
    packed: bool = False,
    experts: str = "index",
) -> dict:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for ``model`` (eval mode, fp32, CPU) into ``out_dir``.
    ``external``: weights in ``<graph>.onnx.data`` beside each graph (ONNX's external data, needed past
    protobuf's 2 GB: large-v3's encoder); None: when a graph's weights pass :data:`EXTERNAL_BYTES`.
    ``packed``: the :class:`PackedEncoderGraph` (any length, several utterances a row) and a decoder with
    ``audio_mask``, instead of fixed 30-s windows. ``experts``: MoE dispatch in the graphs, ``"index"`` (top-k)
    or ``"dense"`` (every expert)."""
    from pathlib import Path

    if packed and (reason := why_not_packed(model)):
        raise ValueError(f"the encoder cannot be exported packed: {reason}")
    model = model.float().cpu().eval()
    with graph_experts(model, experts):
        info = _export_graphs(model, Path(out_dir), n_frames, packed)
    info["external_data"] = [n for n in ("encoder.onnx", "decoder.onnx") if _externalize(Path(out_dir) / n, external)]
    return info


EXTERNAL_BYTES = 1_800_000_000  # a graph with more weight bytes keeps them outside the protobuf (2 GB limit)


def _externalize(path, external: bool | None) -> bool:
    """Rewrite ``path`` with its weights in one ``<name>.data`` file beside it when asked or when they pass
    :data:`EXTERNAL_BYTES` (torch's exporter may have spread a large graph's weights over many files: those
    this graph names are removed once rewritten)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    header = onnx.load(str(path), load_external_data=False)
    before = {
        entry.value
        for t in header.graph.initializer
        if uses_external_data(t)
        for entry in t.external_data
        if entry.key == "location"
    }
    size = path.stat().st_size + sum((path.parent / name).stat().st_size for name in before)
    if not (external or (external is None and (size > EXTERNAL_BYTES or before))):
        return False
    model = onnx.load(str(path))  # with the external tensors: only when it is rewritten
    location = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=1024)  # fmt: skip
    for name in before - {location}:
        (path.parent / name).unlink(missing_ok=True)
    return True


def has_external_data(path) -> bool:
    """Whether the graph at ``path`` keeps tensors outside its protobuf."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return any(uses_external_data(t) for t in model.graph.initializer)


EXAMPLE_LENGTHS = (40, 24, 16)  # the packed graphs' example utterances: two rows, one with two segments


def _export_encoder(model, out, n_frames: int, packed: bool) -> tuple[Tensor, Tensor]:
    """``encoder.onnx``; returns its outputs on the example input (the decoder's example cross keys/values)."""
    c = model.config
    if not packed:
        mel = torch.randn(1, c.n_mels, n_frames)
        cross = EncoderGraph(model)(mel)
        axes = {"mel": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}}
        _export(EncoderGraph(model), (mel,), out / "encoder.onnx", ["mel"], ["cross_k", "cross_v"], axes)
        return cross
    from generalist_cli.model.rows import row_layout

    lengths = list(EXAMPLE_LENGTHS)
    layout = row_layout(lengths, 48)
    mel = torch.randn(len(lengths), c.n_mels, 2 * max(lengths))
    for i, n in enumerate(lengths):
        mel[i, :, 2 * n :] = 0
    args = (mel, *(torch.from_numpy(a) for a in (layout.pack_index, layout.segments, layout.unpack_index)))
    names = ["mel", "pack_index", "segments", "unpack_index"]
    axes = {
        "mel": {0: "batch", 2: "n_frames"},
        "pack_index": {0: "rows", 1: "width"},
        "segments": {0: "rows", 1: "width"},
        "unpack_index": {0: "batch", 1: "n_audio"},
        "cross_k": {1: "batch", 3: "n_audio"},
        "cross_v": {1: "batch", 3: "n_audio"},
    }
    graph = PackedEncoderGraph(model)
    cross = graph(*args)
    _export(graph, args, out / "encoder.onnx", names, ["cross_k", "cross_v"], axes)
    return cross


def _export_graphs(model, out, n_frames: int, packed: bool) -> dict:
    c = model.config
    with torch.no_grad():
        cross_k, cross_v = _export_encoder(model, out, n_frames, packed)
    batch = cross_k.shape[1]
    heads, hd = c.n_text_head, c.n_text_state // c.n_text_head
    past = torch.zeros(c.n_text_layer, batch, heads, 3, hd)
    shapes = ttt_state_shapes(model, batch)
    tokens = torch.tensor([[50258]] * batch) if shapes else torch.tensor([[50258, 50259, 50359]] * batch)
    args = [tokens, past, past, cross_k, cross_v]
    inputs, outputs = ["tokens", "past_k", "past_v", "cross_k", "cross_v"], ["logits", "present_k", "present_v"]
    axes = {
        "tokens": {0: "batch", 1: "n_tokens"},
        "past_k": {1: "batch", 3: "n_past"},
        "past_v": {1: "batch", 3: "n_past"},
        "cross_k": {1: "batch", 3: "n_audio"},
        "cross_v": {1: "batch", 3: "n_audio"},
        "logits": {0: "batch", 1: "n_tokens"},
        "present_k": {1: "batch", 3: "n_total"},
        "present_v": {1: "batch", 3: "n_total"},
    }
    if packed:  # which cross positions are audio (the packed encoder's outputs are zero past each end)
        audio = torch.arange(cross_k.shape[3])[None] < torch.tensor(EXAMPLE_LENGTHS)[:, None]
        args.append(audio)
        inputs.append("audio_mask")
        axes["audio_mask"] = {0: "batch", 1: "n_audio"}
    if c.adapter_languages:  # language adapters: which rows use each (infer/onnx_engine.py row_route)
        args.append(torch.ones(batch, 1, len(c.adapter_languages)))
        inputs.append("route")
        axes["route"] = {0: "batch"}
    if shapes:  # TTT in the decoder: its state in and out, one token per call
        for name, shape in shapes.items():
            args.append(torch.randn(shape) * 0.01)
            inputs.append(name)
            outputs.append(name.replace("ttt_", "next_ttt_"))
            axes[name] = axes[outputs[-1]] = {0: "batch"}
        args.append(torch.tensor([3]))
        inputs.append("ttt_i")
        outputs.append("next_ttt_i")
        np.savez(out / TTT_INIT, **ttt_initial_state(model))
    _export(DecoderGraph(model, masked=packed), tuple(args), out / "decoder.onnx", inputs, outputs, axes)
    return {
        "encoder": "encoder.onnx",
        "decoder": "decoder.onnx",
        "opset": OPSET,
        "ttt_decoder": bool(shapes),
        "packed": packed,
    }


def _export(module, args, path, inputs, outputs, axes) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
