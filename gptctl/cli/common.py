"""What every command shares: error rendering, exit codes, JSON output, log output, table fitting.

The library raises `GptctlError`; only this module turns it into a message (or, under `--json`, one JSON
object on stdout) and an exit code (`gptctl.errors.exit_code_for`, the one mapping).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from gptctl.errors import GptctlError, Interrupted, Unexpected, exit_code_for

# Tables go to stdout; messages, logs and progress go to stderr so `--json` output stays parseable.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Set by the app callback (`gptctl --debug ...`): also print the traceback; the exit code stays the same.
DEBUG = {"on": False}
# Set by the app callback: -1 `--quiet`, 0 default, 1 `--verbose` (e.g. export's full validation table).
VERBOSITY = {"level": 0}

_JSON_FLAG = "json_out"  # the parameter name every command gives its `--json` flag


def print_json(obj: Any) -> None:
    """Print one JSON document to stdout: the `--json` path of every command, results and errors alike."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def render_error(exc: GptctlError, *, json_out: bool = False, partial: dict[str, Any] | None = None) -> int:
    """Show an error and return its exit code: one sentence (plus details and hint) on stderr, and
    under `--json` also one JSON object on stdout, `{"error", "hint", "exit_code"}` plus `partial`
    (what the command had produced, e.g. a recipe summary) or the partial result the error carries."""
    from rich.markup import escape

    # Messages and hints are text, not markup: `gptctl[ray]` or a path with brackets must print as written.
    err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, markup=True)
    for line in exc.details:
        err.print(f"  {line}", highlight=False, markup=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
    if json_out:
        print_json({**(partial or {}), **exc.to_dict()})
    return exit_code_for(exc)


def fail(exc: GptctlError, *, json_out: bool = False, partial: dict[str, Any] | None = None) -> None:
    """Render an error (see `render_error`) and exit with its code. Commands that hold an error instead
    of raising it (a recipe report) call this: `fail(report.error, json_out=json_out, partial=summary)`."""
    raise typer.Exit(render_error(exc, json_out=json_out, partial=partial))


def _traceback() -> None:
    import traceback

    traceback.print_exc(file=sys.stderr)


def handle_errors(fn: Callable) -> Callable:
    """Decorate a command: an error becomes one sentence (one JSON object under `--json`) and its exit code,
    never a traceback; `gptctl --debug` adds the traceback but never changes the exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        json_out = bool(kwargs.get(_JSON_FLAG))
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except GptctlError as exc:
            if DEBUG["on"]:
                _traceback()
            fail(exc, json_out=json_out)
        except KeyboardInterrupt:
            fail(Interrupted("interrupted", "nothing half-written was left as a finished output"), json_out=json_out)
        except Exception as exc:  # a bug or an unexpected library failure
            if DEBUG["on"]:
                _traceback()
            fail(Unexpected(exc), json_out=json_out)

    return wrapper


# ------------------------------------------------------------------------------------------ logging

_LEVEL_STYLE = {
    logging.WARNING: "[yellow]warning:[/] ",
    logging.ERROR: "[bold red]error:[/] ",
    logging.CRITICAL: "[bold red]error:[/] ",
}


class ConsoleLogHandler(logging.Handler):
    """Log records through the rich stderr console (never stdout), one line each, e.g. `warning: ...`.

    rich.logging.RichHandler would import rich.traceback (pygments): ~90 ms of every start-up.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = _LEVEL_STYLE.get(record.levelno, "")
            if record.levelno < logging.INFO:
                prefix = f"[dim]{record.name}:[/] "
            err.print(prefix, end="", highlight=False)
            err.print(self.format(record), highlight=False, markup=False)
        except Exception:  # noqa: BLE001 - logging must never take a command down
            self.handleError(record)


# ------------------------------------------------------------------------------------------ tables


def fits(table: Any, console: Console | None = None) -> bool:
    """Whether a table's natural width (no cell wrapped or cut) fits the console."""
    console = console or out
    unbounded = console.options.update_width(1_000_000)  # measure() clamps to the width it is given
    return console.measure(table, options=unbounded).maximum <= console.width


def print_fitting(*tables: Any, console: Console | None = None) -> None:
    """Print the first layout that fits the console's width, else the last (the narrowest).

    Logs and pipes are 80 columns to rich: a wide layout there would wrap model ids mid-word and cut
    headers, so commands offer a narrower layout (ids whole on their own line) for such output.
    """
    console = console or out
    for table in tables[:-1]:
        if fits(table, console):
            console.print(table)
            return
    console.print(tables[-1])
