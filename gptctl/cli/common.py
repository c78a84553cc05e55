"""What every command shares: error rendering, exit codes, JSON output.

The library raises `GptctlError`; only this module turns it into a message and an exit code.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console

from gptctl.errors import EXIT_BAD_INPUT, GptctlError

# Tables go to stdout; messages and progress go to stderr so `--json` output stays parseable.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# Set by the app callback (`gptctl --debug ...`): show tracebacks instead of one sentence.
DEBUG = {"on": False}


def fail(exc: GptctlError) -> None:
    """Print an error as one sentence (plus hint and details) and exit with its code."""
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False, markup=True)
    for line in exc.details:
        err.print(f"  {line}", highlight=False, markup=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
    raise typer.Exit(exc.exit_code)


def handle_errors(fn: Callable) -> Callable:
    """Decorate a command so a GptctlError becomes one sentence and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GptctlError as exc:
            if DEBUG["on"]:
                raise
            fail(exc)
        except KeyboardInterrupt:
            err.print("interrupted; nothing half-written was left as a finished output")
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug or an unexpected library failure
            if DEBUG["on"]:
                raise
            err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False, markup=True)
            err.print("[yellow]hint:[/] run again with `gptctl --debug ...` for the traceback")
            raise typer.Exit(EXIT_BAD_INPUT if isinstance(exc, (OSError, ValueError)) else 1)

    return wrapper


def print_json(obj: Any) -> None:
    """Print one JSON document to stdout (the `--json` path of every command)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()
