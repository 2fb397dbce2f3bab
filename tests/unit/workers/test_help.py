"""Every command's help reads well at 80 columns: nothing cut, no placeholder on a flag, no
raw markup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from workers.cli import app


def _commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in group.commands.items():
        if isinstance(command, typer.core.TyperGroup):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(_commands(typer.main.get_group(app)))


def test_every_command_is_checked() -> None:
    assert {("run",), ("worker",), ("simulator",), ("db", "upgrade"), ("pipelines", "show")
            } <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "docpipe")
def test_help_at_80_columns(path: tuple[str, ...]) -> None:
    shown = CliRunner().invoke(app, [*path, "--help"], prog_name="docpipe", terminal_width=80)
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines and lines[0].startswith("Usage: docpipe")
    for number, line in enumerate(lines):
        assert len(line) <= 80, line
        assert "<bool>" not in line and "``" not in line, line
        # Click ends a cut summary with "..." (the usage line's are repeats); rich, with "…".
        assert "…" not in line and (number == 0 or not line.endswith("...")), line
        assert not line.rstrip().endswith("-"), f"a word broken at its hyphen: {line}"
