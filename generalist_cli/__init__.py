"""gen: a toolkit for a multimodal generalist model built on Whisper.

Importing this package does nothing heavy: torch is imported inside the commands that need it,
so ``gen --help`` and shell completion stay instant.
"""

__version__ = "0.1.0"
