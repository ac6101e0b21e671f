"""The ``gen`` command line. One module per verb; this file wires them and maps errors to exit codes.

Nothing here imports torch: commands import what they need when they run, so ``gen --help`` and shell
completion stay instant.
"""

from __future__ import annotations

import os
import sys

import typer

from generalist_cli import __version__

app = typer.Typer(
    name="gen",
    help="Convert speech, text and sign video with one multimodal generalist model.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Pull, list and inspect models in the local store.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        print(f"gen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or notes (errors still show)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Details on stderr: what was loaded, timings."),
) -> None:
    """Convert speech, text and sign video with one multimodal generalist model.

    -q / -v work before or after the command: [bold]gen run talk.m4a -q[/] = [bold]gen -q run talk.m4a[/]."""
    from generalist_cli.console import set_verbosity

    set_verbosity(-1 if quiet else 1 if verbose else 0)


VERBOSITY_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def _hoist_verbosity(argv: list[str]) -> list[str]:
    """Move -q/-v given after the command to the front, where the root options are parsed. Tokens after
    ``--`` stay (file names)."""
    if "--" in argv:
        cut = argv.index("--")
        head, tail = argv[:cut], argv[cut:]
    else:
        head, tail = argv, []
    flags = [a for a in head if a in VERBOSITY_FLAGS]
    return flags + [a for a in head if a not in VERBOSITY_FLAGS] + tail


# register the verbs (their modules import nothing heavy)
from generalist_cli.cli import doctor as _doctor  # noqa: E402,F401
from generalist_cli.cli import eval as _eval  # noqa: E402,F401
from generalist_cli.cli import export as _export  # noqa: E402,F401
from generalist_cli.cli import models as _models  # noqa: E402,F401
from generalist_cli.cli import prepare as _prepare  # noqa: E402,F401
from generalist_cli.cli import run as _run  # noqa: E402,F401
from generalist_cli.cli import serve as _serve  # noqa: E402,F401
from generalist_cli.cli import train as _train  # noqa: E402,F401


def main() -> None:
    """Entry point: run the app; a GenError becomes one line on stderr and its exit code."""
    from generalist_cli.errors import GenError

    try:
        app(args=_hoist_verbosity(sys.argv[1:]), prog_name="gen")
    except GenError as exc:
        if os.environ.get("GEN_DEBUG"):
            raise
        from generalist_cli.cli.common import print_error

        print_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if os.environ.get("GEN_DEBUG"):
            raise
        print("gen: interrupted", file=sys.stderr)
        sys.exit(130)
