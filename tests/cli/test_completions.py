"""The committed completion scripts are what the current Typer app generates, and completion answers fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scripts_are_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("completions_generate", ROOT / "completions" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for shell, name in generate.SHELLS.items():
        assert (ROOT / "completions" / name).read_text() == generate.script(shell), (
            f"completions/{name} is out of date: run python completions/generate.py"
        )


def test_bash_completion_lists_commands_without_torch():
    env = {**os.environ, "_GEN_COMPLETE": "complete_bash", "COMP_WORDS": "gen ", "COMP_CWORD": "1"}
    code = (
        "import sys\nfrom generalist_cli.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "run" in r.stdout.split() and "models" in r.stdout.split()
