"""The two Rich consoles: results go to stdout, logs and progress bars go to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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
        disable=disable or not err.is_terminal,
    )
