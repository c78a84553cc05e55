"""Every command's --help shows every help text whole: rich markup eats an unescaped `[word ...]` (it reads
it as a style tag), as it once ate run's `[default: runs/<recipe name>/]`."""

import re

import pytest
import typer
from rich.errors import StyleSyntaxError
from rich.style import Style
from typer.testing import CliRunner

from gptctl.cli.app import app

# A markup tag as rich reads it (rich.markup's own pattern, less its escape handling).
_TAG = re.compile(r"(?<!\\)\[([a-z#/@][^[]*?)]")


def _commands(cmd, path=()):
    yield path, cmd
    if hasattr(cmd, "list_commands"):
        ctx = typer.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*path, name))


def _is_style(tag: str) -> bool:
    if tag.startswith("/"):  # a closing tag: "[/]" or "[/bold]"
        return True
    try:
        Style.parse(tag)
    except StyleSyntaxError:
        return False
    return True


def _visible(help_text: str) -> str:
    """What the help should show: deliberate style tags removed, escaped brackets unescaped."""
    shown = _TAG.sub(lambda m: "" if _is_style(m.group(1)) else m.group(0), help_text.split("\f")[0])
    return _normal(shown.replace("\\[", "["))


def _normal(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_walked():
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert {"", "select", "export", "bench", "run", "optimize", "optimize lora", "serve", "catalog"} <= paths


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "gptctl" for p, _ in COMMANDS])
def test_help_shows_every_help_text_whole(path, cmd):
    # Wide enough that nothing wraps or is cut, so each help text appears in one piece.
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "3000", "TERMINAL_WIDTH": "3000"})
    assert res.exit_code == 0, res.output
    shown = _normal(res.stdout)
    texts = {"the command's help": cmd.help or ""} | {
        p.name: getattr(p, "help", None) or "" for p in cmd.params if not getattr(p, "hidden", False)
    }
    lost = {name: _visible(text) for name, text in texts.items() if _visible(text) not in shown}
    assert not lost, f"help text not shown whole (unescaped '[' eaten by rich markup?): {lost}"


def test_the_check_sees_a_swallowed_bracket():
    assert _visible("Run folder [default: runs/<recipe name>/].") == "Run folder [default: runs/<recipe name>/]."
    assert _visible("[bold]Examples[/bold] here") == "Examples here"
    assert _visible("escaped \\[default: 1]") == "escaped [default: 1]"
