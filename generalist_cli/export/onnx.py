"""ONNX graphs of a model for speech -> text, runnable without any Python class of this package.

Two graphs (the layout of whisper.cpp / sherpa-onnx exports, with one decoder graph for every step):

``encoder.onnx``
    in   ``mel``      float32 (batch, n_mels, 3000)       log-mel of 30-second windows
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
blocks run every expert and weight them by the router's renormalised top-k gates (zero for the others):
the same function as the sorted dispatch, in plain MatMul nodes that ONNX Runtime can quantise.
A restricted output vocabulary (``output_tokens``) gives -inf logits elsewhere, as in PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from generalist_cli.errors import ModelError

OPSET = 17


def moe_dense(moe, x: Tensor) -> Tensor:
    """``moe`` (a MoEFFN) on ``x`` (B, T, D) with every expert computed and gated: export-friendly."""
    logits = moe.router(x).float() + moe.logit_bias
    probs = torch.softmax(logits, dim=-1)
    weights, indices = probs.topk(moe.top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    gates = torch.zeros_like(probs).scatter(-1, indices, weights).to(x.dtype)  # (B, T, E)
    y = torch.zeros_like(x)
    for e in range(moe.n_experts):
        h = F.gelu(F.linear(x, moe.fc1_weight[e], moe.fc1_bias[e]))
        y = y + gates[..., e : e + 1] * F.linear(h, moe.fc2_weight[e], moe.fc2_bias[e])
    return y


def _ffn(block, x: Tensor) -> Tensor:
    h = block.final_layer_norm(x)
    if block.moe is not None:
        return x + moe_dense(block.moe, h)
    return x + block.fc2(F.gelu(block.fc1(h)))


class EncoderGraph(nn.Module):
    """mel -> cross-attention keys and values of every decoder layer."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        x = m.embed_audio(mel)
        enc = m.encoder
        for block in enc.layers:
            x = x + block.self_attn(block.self_attn_layer_norm(x))
            if block.ttt is not None:
                h = block.ttt_layer_norm(x)
                x = x + torch.tanh(block.ttt_gate) * block.ttt(h)[0] \
                      + torch.tanh(block.ttt_gate_reverse) * block.ttt(h.flip(1))[0].flip(1)
            x = _ffn(block, x)
        x = enc.layer_norm(x)
        kv = [layer.encoder_attn.project_kv(x) for layer in m.decoder.layers]
        return torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])


class DecoderGraph(nn.Module):
    """(tokens, past keys/values, cross keys/values) -> (logits, present keys/values)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor):
        dec = self.model.decoder
        n_past, t = past_k.shape[3], tokens.shape[1]
        pos = torch.arange(t, device=tokens.device) + n_past
        # the token table, transposed once: the embedding lookup and the output projection share this one
        # tensor, so the exported graph holds the table once (constant folding of a second use would copy it)
        table = dec.embed_tokens.weight.t()  # (D, V)
        x = table[:, tokens].permute(1, 2, 0) + dec.embed_positions(pos)
        keys = torch.arange(t, device=tokens.device)[None, :] + torch.zeros_like(pos)[:, None]
        # query i (absolute n_past + i) sees keys 0 .. n_past + i
        mask = torch.cat([torch.ones(t, n_past, dtype=torch.bool, device=tokens.device),
                          keys <= torch.arange(t, device=tokens.device)[:, None]], dim=1)
        new_k, new_v = [], []
        for i, block in enumerate(dec.layers):
            h = block.self_attn_layer_norm(x)
            q = block.self_attn.q_proj(h)
            k, v = block.self_attn.project_kv(h)
            k, v = torch.cat([past_k[i], k], dim=2), torch.cat([past_v[i], v], dim=2)
            new_k.append(k)
            new_v.append(v)
            x = x + block.self_attn.attend(q, k, v, mask=mask)
            q = block.encoder_attn.q_proj(block.encoder_attn_layer_norm(x))
            x = x + block.encoder_attn.attend(q, cross_k[i], cross_v[i])
            x = _ffn(block, x)
        hidden = dec.layer_norm(x)
        ids = self.model.config.output_tokens
        if not ids:
            logits = hidden @ table
        else:  # a restricted output vocabulary: -inf elsewhere, as Generalist.logits
            index = torch.tensor(ids)
            logits = torch.full(hidden.shape[:-1] + (table.shape[1],), float("-inf"))
            logits = logits.index_copy(-1, index, hidden @ table[:, index])
        return logits, torch.stack(new_k), torch.stack(new_v)


def check_exportable(model) -> None:
    if any(getattr(b, "ttt", None) is not None for b in model.decoder.layers):
        raise ModelError("this model has TTT layers in its decoder, which the ONNX decoder graph does not carry "
                         "(their state would be extra inputs/outputs)",
                         hint="export a model initialised with ttt = \"none\", or run it with the torch engine")


def export_graphs(model, out_dir, *, n_frames: int = 3000) -> dict:
    """Write ``encoder.onnx`` and ``decoder.onnx`` for ``model`` (eval mode, fp32, CPU) into ``out_dir``."""
    from pathlib import Path

    check_exportable(model)
    out = Path(out_dir)
    c = model.config
    model = model.float().cpu().eval()
    mel = torch.randn(1, c.n_mels, n_frames)
    enc = EncoderGraph(model)
    with torch.no_grad():
        cross_k, cross_v = enc(mel)
    _export(enc, (mel,), out / "encoder.onnx", ["mel"], ["cross_k", "cross_v"],
            {"mel": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}})
    heads, hd = c.n_text_head, c.n_text_state // c.n_text_head
    past = torch.zeros(c.n_text_layer, 1, heads, 3, hd)
    tokens = torch.tensor([[50258, 50259, 50359]])
    _export(DecoderGraph(model), (tokens, past, past, cross_k, cross_v), out / "decoder.onnx",
            ["tokens", "past_k", "past_v", "cross_k", "cross_v"], ["logits", "present_k", "present_v"],
            {"tokens": {0: "batch", 1: "n_tokens"}, "past_k": {1: "batch", 3: "n_past"},
             "past_v": {1: "batch", 3: "n_past"}, "cross_k": {1: "batch", 3: "n_audio"},
             "cross_v": {1: "batch", 3: "n_audio"}, "logits": {0: "batch", 1: "n_tokens"},
             "present_k": {1: "batch", 3: "n_total"}, "present_v": {1: "batch", 3: "n_total"}})
    return {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "opset": OPSET}


def _export(module, args, path, inputs, outputs, axes) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
