"""The docs stay true to the CLI: the per-command pages are generated from it and current, and every
``gen ...`` example in README.md and docs/ parses against the app (options exist, values are valid)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    """docs/commands/generate.py by path (completions/generate.py has the same module name)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_commands_generate", ROOT / "docs" / "commands" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load()


def test_command_pages_are_current():
    pages = generate.pages()
    for name, text in pages.items():
        path = ROOT / "docs" / "commands" / name
        assert path.exists() and path.read_text(encoding="utf-8") == text, (
            f"{path} is out of date: run python docs/commands/generate.py"
        )
    stale = {p.name for p in (ROOT / "docs" / "commands").glob("*.md")} - set(pages)
    assert not stale, f"pages of commands that no longer exist: {stale}"


def examples() -> list[tuple[str, str]]:
    """(file, line) of every gen command in a bash block of README.md and docs/**/*.md."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
        for block in blocks:
            for line in block.splitlines():
                for part in re.split(r"\s*(?:&&|;|\|)\s*", line.strip()):
                    if part.startswith("gen "):
                        found.append((doc.relative_to(ROOT).as_posix(), part))
    return found


@pytest.mark.parametrize("doc,line", examples())
def test_every_documented_example_parses(doc, line):
    generate.parse(line)
