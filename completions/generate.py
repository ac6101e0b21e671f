"""Write the bash, zsh and fish completion scripts for ``gen`` from the Typer app.

    python completions/generate.py          # rewrites completions/gen.{bash,zsh,fish}

The scripts call ``gen`` back for candidates (Typer/Click dynamic completion), so they follow the
commands as they change; tests/cli/test_completions.py fails when a committed script is out of date.
Install: ``gen --install-completion`` or source the file, e.g. ``source completions/gen.bash``.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SHELLS = {"bash": "gen.bash", "zsh": "gen.zsh", "fish": "gen.fish"}


def script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="gen", complete_var="_GEN_COMPLETE", shell=shell).strip() + "\n"


if __name__ == "__main__":
    for shell, name in SHELLS.items():
        (HERE / name).write_text(script(shell))
        print(HERE / name)
