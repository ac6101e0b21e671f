"""The two Rich consoles: results go to stdout, logs and progress bars go to stderr.

Verbosity (``gen -q ...`` / ``gen -v ...``, anywhere on the command line): -1 quiet (no progress bars, no
notes; errors and warnings still show), 0 normal, 1 verbose (:func:`debug` lines: what was loaded, where,
how long it took)."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
verbosity = 0


def set_verbosity(level: int) -> None:
    global verbosity
    verbosity = level


def note(message: str) -> None:
    """A dim progress note on stderr (hidden by -q); ``message`` is Rich markup."""
    if verbosity >= 0:
        err.print(f"[dim]{message}[/]", soft_wrap=True)


def debug(message: str) -> None:
    """A detail for -v on stderr (plain text)."""
    if verbosity > 0:
        from rich.markup import escape

        err.print(f"[dim]debug: {escape(message)}[/]", soft_wrap=True)


def progress(*, transient: bool = True, disable: bool = False):
    """A Rich progress bar on stderr (hidden when stderr is not a terminal or ``disable``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
        disable=disable or verbosity < 0 or not err.is_terminal,
    )
