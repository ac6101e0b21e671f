"""Inference: decoding (greedy/beam, KV cache), long-form windows, output writers."""
