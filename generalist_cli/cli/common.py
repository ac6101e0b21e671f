"""Pieces shared by the verbs: error lines, option aliases, atomic output writes."""

from __future__ import annotations

import os
from pathlib import Path

from generalist_cli.errors import GenError


def print_error(exc: GenError) -> None:
    """One line on stderr: what failed, on which file, and what to do next."""
    from rich.markup import escape

    from generalist_cli.console import err

    line = f"[bold red]error:[/] {escape(exc.message)}"
    if exc.hint:
        line += f" [dim]({escape(exc.hint)})[/]"
    err.print(line, soft_wrap=True)


def warn(message: str) -> None:
    from rich.markup import escape

    from generalist_cli.console import err

    err.print(f"[yellow]{escape(message)}[/]", soft_wrap=True)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file + fsync + rename: never half-written."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise GenError(
            f"{path}: cannot write ({exc.strerror})", hint="check the folder exists and is writable"
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
