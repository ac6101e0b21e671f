"""Reading a dataset from the Hugging Face Hub with ``datasets`` (streaming), errors made clear."""

from __future__ import annotations

import os

from generalist_cli.errors import GenError


def load_hub(hub_id: str, *, config: str | None = None, split: str, streaming: bool = True):
    """``datasets.load_dataset(hub_id, config, split=..., streaming=...)`` with the user's token (HF_TOKEN).

    Gated datasets (Kathbath) need a token of an account that accepted their terms."""
    import datasets

    try:
        return datasets.load_dataset(
            hub_id, config, split=split, streaming=streaming, token=os.environ.get("HF_TOKEN") or None
        )
    except Exception as exc:  # offline, gated (401/403), missing config/split, ...
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise GenError(
            f"cannot load {hub_id}" + (f" ({config})" if config else "") + f" split {split!r} from the "
            f"Hugging Face Hub: {reason}",
            hint="check HF_TOKEN and the network, or read a local copy with --local DIR",
        ) from exc


def first_column(columns, candidates: tuple[str, ...], *, what: str, hub_id: str) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise GenError(
        f"{hub_id} has no {what} column (looked for {', '.join(candidates)}; it has {', '.join(columns)})",
        hint="name it with --text-column",
    )
