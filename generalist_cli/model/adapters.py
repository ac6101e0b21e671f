"""Language adapters: low-rank additions to the decoder that only rows in their language use.

Lifelong learning without forgetting: a language is added to a trained Whisper as a low-rank update
(LoRA, Hu et al. 2021) of each decoder block's self-attention query/key/value, cross-attention query and MLP,
``W x + s * B (A x)`` with ``A`` (r, d_in), ``B`` (d_out, r) zero at init and ``s = alpha / r``. The update is
*routed by the language token*: a decoder row (or a packed example) whose prompt holds the adapter's language
token (``<|hi|>``) gets it, every other row computes exactly the base model's function (the adapter is not
even evaluated for them). So transcripts in every other language are bit-identical, and one batch may mix
languages. The encoder is the base model's, which keeps language detection the base model's too.

``config.adapter_languages`` names the languages, ``config.adapter_tokens`` their token ids and
``config.adapter_rank`` the rank r; the weights are ``decoder.layers.N.adapters.by_lang.<lang>.<projection>.{down,up}``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROJECTIONS = ("self_q", "self_k", "self_v", "cross_q", "fc1", "fc2")
ALPHA = 32.0  # s = ALPHA / rank
FORMAT = "gen-adapter/1"


class LowRank(nn.Module):
    """``x -> s * up(down(x))``: A (``down``) Kaiming-uniform as LoRA's, B (``up``) zero, so it starts at 0."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, d_in))
        self.up = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scale = ALPHA / rank

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.down), self.up) * self.scale


class BlockAdapters(nn.Module):
    """One decoder block's adapters, one :class:`LowRank` per language and projection."""

    def __init__(self, languages: tuple[str, ...], n_state: int, n_hidden: int, rank: int) -> None:
        super().__init__()
        shapes = {"fc1": (n_state, n_hidden), "fc2": (n_hidden, n_state)}
        self.languages = languages
        self.by_lang = nn.ModuleDict(
            {
                lang: nn.ModuleDict({p: LowRank(*shapes.get(p, (n_state, n_state)), rank) for p in PROJECTIONS})
                for lang in languages
            }
        )

    def delta(self, name: str, x: Tensor, route: Tensor) -> Tensor | float:
        """The routed update of projection ``name`` for input ``x`` (B, T, d_in); ``route`` (B|1, T|1, L) float,
        1 where a position is in language L, 0 elsewhere (adding ``0 * update`` leaves a value bit-identical).
        No data-dependent branch: the exported ONNX decoder traces this same code."""
        out: Tensor | float = 0.0
        for i, lang in enumerate(self.languages):
            out = out + route[..., i : i + 1].to(x.dtype) * self.by_lang[lang][name](x)
        return out


def project(layer: nn.Linear, x: Tensor, adapters: BlockAdapters | None, name: str, route: Tensor | None) -> Tensor:
    """``layer(x)`` plus the adapters' routed update (none without adapters or a route)."""
    y = layer(x)
    if adapters is None or route is None:
        return y
    return y + adapters.delta(name, x, route)


def route_of(tokens: Tensor, ids: tuple[int, ...], segment_ids: Tensor | None = None) -> Tensor | None:
    """Which positions each adapter language applies to, from the language tokens in ``tokens`` (B, T):
    per row (B, 1, L), or with ``segment_ids`` (B, T; -1 = padding) per packed example (B, T, L): an example
    gets a language when its own prompt holds that language's token. None when no position is routed (then
    the adapters are not evaluated at all). The ONNX engine's twin is ``infer/onnx_engine.py`` ``row_route``."""
    if not ids:
        return None
    hit = tokens[..., None] == torch.tensor(ids, device=tokens.device)  # (B, T, L)
    if segment_ids is None:
        route = hit.any(dim=1, keepdim=True)
    else:
        seg = segment_ids.clamp(min=-1) + 1  # 0 = padding
        n = int(seg.max()) + 1
        per_example = torch.zeros(tokens.shape[0], n, len(ids), dtype=torch.bool, device=tokens.device)
        per_example.scatter_reduce_(1, seg[..., None].expand_as(hit), hit, reduce="amax")
        per_example[:, 0] = False
        route = per_example.gather(1, seg[..., None].expand_as(hit))
    return route.float() if bool(route.any()) else None


def add_adapters(model, language: str, rank: int, token: int):
    """Give ``model`` (a dense :class:`~generalist_cli.model.generalist.Generalist`) a zero-initialised adapter
    for ``language`` (language token id ``token``) in place; returns it. Its function is unchanged until the
    adapter trains (the ``up`` halves start at zero)."""
    c = model.config
    if c.n_experts > 1:
        raise ValueError("language adapters are for a dense Whisper (n_experts = 1)")
    if c.adapter_languages and rank != c.adapter_rank:
        raise ValueError(f"the model's adapters have rank {c.adapter_rank}, not {rank}")
    if language in c.adapter_languages:
        return model
    langs = (*c.adapter_languages, language)
    p = next(model.parameters())
    for block in model.decoder.layers:
        new = BlockAdapters(langs, c.n_text_state, c.n_text_ffn, rank).to(device=p.device, dtype=p.dtype)
        if block.adapters is not None:
            new.load_state_dict(block.adapters.state_dict(), strict=False)
        block.adapters = new
    model.config = dataclasses.replace(
        c, adapter_languages=langs, adapter_tokens=(*c.adapter_tokens, token), adapter_rank=rank
    )
    model.decoder.adapter_tokens = model.config.adapter_tokens
    return model


def adapter_state(model, language: str) -> dict[str, Tensor]:
    """The weights of ``language``'s adapter, by their names in the model."""
    key = f".adapters.by_lang.{language}."
    return {k: v.detach() for k, v in model.state_dict().items() if key in k}


def save(model, language: str, path: Path, *, meta: dict) -> Path:
    """``language``'s adapter as a float16 safetensors file (``meta``: a flat str -> str card)."""
    from safetensors.torch import save_file

    state = {k: v.to(torch.float16).contiguous() for k, v in adapter_state(model, language).items()}
    if not state:
        raise ValueError(f"the model has no {language!r} adapter")
    c = model.config
    header = {"format": FORMAT, "language": language, "rank": str(c.adapter_rank)}
    header["token"] = str(c.adapter_tokens[c.adapter_languages.index(language)])
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=header | {k: str(v) for k, v in meta.items()})
    return path


def read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load(model, path: Path):
    """Attach the adapter saved in ``path`` to ``model`` in place (returns it)."""
    from safetensors.torch import load_file

    head = read_header(path)
    if head.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gen adapter (format {head.get('format')!r})")
    add_adapters(model, head["language"], int(head["rank"]), int(head["token"]))
    p = next(model.parameters())
    state = {k: v.to(dtype=p.dtype) for k, v in load_file(str(path), device=str(p.device)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if f".by_lang.{head['language']}." in k]
    if unexpected or missing:
        raise ValueError(f"{path}: does not fit this model ({(unexpected or missing)[:2]})")
    return model
