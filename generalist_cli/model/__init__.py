"""The model: tensors and their config only (no file I/O, no printing)."""
