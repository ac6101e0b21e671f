"""Evaluation helpers shared by training and ``gen eval``: greedy decoding of prepared examples and the
teacher-forced loss of a set of examples."""

from __future__ import annotations

import torch

from generalist_cli.infer.decoding import DecodeOptions, decode


@torch.inference_mode()
def greedy_texts(model, tokenizer, examples, *, max_new_tokens: int = 200) -> list[str]:
    """Greedy, timestamp-free decoding of each example (a :class:`~generalist_cli.train.batches.Example`)."""
    from generalist_cli.train.step import StepModule

    step = StepModule(model)
    device = next(model.parameters()).device
    out = []
    for e in examples:
        e.source = e.source.to(device)
        enc = model.encode(step.embed(e)[None])[0]
        cache = model.new_cache(enc)
        prompt = e.tokens[: e.prompt_len].tolist()
        opts = DecodeOptions(timestamps=False, max_new_tokens=max_new_tokens)
        [res] = decode(model, tokenizer, cache, [prompt], opts, list(model.config.suppress_tokens))
        out.append(tokenizer.decode(res.tokens).strip())
    return out


@torch.inference_mode()
def token_loss(model, examples, *, batch_size: int = 32, capacity: int = 2048) -> dict:
    """Teacher-forced, packed scores of ``examples``: ``loss`` (mean cross-entropy per target token),
    ``token_accuracy`` (argmax == target), ``accuracy`` (every target token of an example right: for
    one-word answers such as arithmetic results or sign labels, top-1 accuracy) and the counts."""
    from generalist_cli.train.batches import Batch, n_targets
    from generalist_cli.train.step import StepModule

    step = StepModule(model, capacity=capacity)
    total, count, correct, exact, n = 0.0, 0, 0, 0, 0
    for i in range(0, len(examples), batch_size):
        part = [e for e in examples[i : i + batch_size] if n_targets(e)]
        if part:
            out = step(Batch(part))
            total += float(out["ce_sum"])
            count += sum(n_targets(e) for e in part)
            correct += out["correct_tokens"]
            exact += out["exact_examples"]
            n += len(part)
    return {"loss": total / max(1, count), "tokens": count, "token_accuracy": correct / max(1, count),
            "accuracy": exact / max(1, n)}
