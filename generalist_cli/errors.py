"""The project's error types. Library code raises them; the CLI maps them to one line and an exit code.

Exit codes (see STYLE.md): 0 success, 1 a :class:`GenError`, 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import errno


class GenError(Exception):
    """A failure the user can act on: ``message`` says what failed, ``hint`` what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(GenError):
    """The command line itself is wrong (unknown option value, bad combination)."""

    exit_code = 2


class MediaError(GenError):
    """A media file cannot be used: missing, empty, not media, truncated, no audio, silent."""

    def __init__(self, path: object, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = str(path)
        self.problem = problem


class ModelError(GenError):
    """A model cannot be found, pulled, read or is incompatible."""


WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the file system refusing a write: full disk, file-size limit, read-only or
    unwritable folder, quota."""
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def write_failure(path: object, exc: OSError, *, hint: str) -> GenError:
    """One line for a write the file system refused: ``PATH: cannot write (No space left on device)``."""
    return GenError(f"{path}: cannot write ({exc.strerror or exc})", hint=hint)
