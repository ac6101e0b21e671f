"""gen: a toolkit for a multimodal generalist model built on Whisper.

Importing this package does nothing heavy: torch is imported inside the commands that need it,
so ``gen --help`` and shell completion stay instant.
"""

__version__ = "0.1.0"

import os as _os

# ONNX Runtime (1.32) otherwise starts a telemetry client that writes a session file (".ses") into $TMPDIR:
# gen serve's temporary folder would not stay empty, and nothing of the user's is sent anywhere by gen.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
