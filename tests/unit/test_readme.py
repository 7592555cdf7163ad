"""The README's examples use the options the commands have (visible in --help, not hidden old spellings)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from sgtool.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
GLOBAL = {"--offline", "--version", "--help", "-h"}


def _example_commands() -> list[list[str]]:
    """Every `sgtool ...` command line in the README's bash blocks (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("sgtool "):
                commands.append(shlex.split(line.replace("$", "")))
    return commands


def _command(words: list[str]):
    words = [w for w in words if w not in GLOBAL or w in ("--help", "-h")]
    node, used = typer.main.get_command(app), 0
    while hasattr(node, "commands") and used + 1 < len(words) and words[used + 1] in node.commands:
        used += 1
        node = node.commands[words[used]]
    return node, words[:used + 1]


def test_readme_examples_use_visible_options_of_their_command():
    problems = []
    examples = _example_commands()
    assert len(examples) > 60
    for words in examples:
        words = [w for w in words if w not in GLOBAL - {"--help", "-h"}]  # sgtool --offline CMD ...
        command, path = _command(words)
        if hasattr(command, "commands"):
            if words[len(path):] not in ([], ["--help"], ["-h"]):
                problems.append(f"{' '.join(words)}: no subcommand")
            continue
        visible = {opt for p in command.params if not getattr(p, "hidden", False) for opt in p.opts + p.secondary_opts}
        for word in words[len(path):]:
            flag = word.split("=")[0]
            if flag.startswith("-") and not re.fullmatch(r"-\d.*", flag) and flag not in visible | GLOBAL:
                problems.append(f"{' '.join(path)}: {flag}")
    assert not problems, problems
