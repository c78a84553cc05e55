"""The `gptctl` typer app. Imports only typer/rich and the light CLI modules."""

from __future__ import annotations

from typing import Optional

import typer

from gptctl import __version__
from gptctl.cli import common

app = typer.Typer(
    name="gptctl",
    help="From 'which model?' to a fast, validated ONNX artifact in CI: select, optimize, export, run.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gptctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    common.DEBUG["on"] = debug


def _register() -> None:
    # Each command lives in its own light module; heavy libraries are imported inside the commands.
    from gptctl.cli import catalog, export, optimize, run, select

    app.command("select", help=select.__doc__)(select.select_command)
    app.add_typer(catalog.app, name="catalog")
    app.add_typer(optimize.app, name="optimize")
    app.command("export", help=export.__doc__)(export.export_command)
    app.command("bench", help=export.bench_command.__doc__)(export.bench_command)
    app.command("run", help=run.__doc__)(run.run_command)


_register()


def main() -> None:
    app()
