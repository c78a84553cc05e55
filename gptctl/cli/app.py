"""The `gptctl` typer app. Imports only typer/rich and the light CLI modules."""

from __future__ import annotations

from typing import Optional

import typer

from typer.core import TyperGroup

from gptctl import __version__
from gptctl.cli import common


class _LazyGroup(TyperGroup):
    """A command group whose real definition is imported only when it is used.

    `gptctl optimize`'s flags are generated from pydantic option models; building them costs more
    than the rest of `gptctl --help` together, so the listing shows a static help line instead.
    """

    def __init__(self, name: str, module: str, help: str):
        super().__init__(name=name, help=help, no_args_is_help=True)
        self._module = module
        self._real: TyperGroup | None = None

    def _load(self) -> TyperGroup:
        if self._real is None:
            import importlib

            self._real = typer.main.get_command(importlib.import_module(self._module).app)
        return self._real

    def list_commands(self, ctx):  # type: ignore[override]
        return self._load().list_commands(ctx)

    def get_command(self, ctx, cmd_name):  # type: ignore[override]
        return self._load().get_command(ctx, cmd_name)


class _RootGroup(TyperGroup):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_command(
            _LazyGroup("optimize", "gptctl.cli.optimize",
                       "Adapt (LoRA, prompt tuning) or shrink (pruning) a causal LM; perplexity before and after."),
            "optimize",
        )


app = typer.Typer(
    cls=_RootGroup,
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
    from gptctl.cli import catalog, export, run, select

    app.command("select", help=select.__doc__)(select.select_command)
    app.add_typer(catalog.app, name="catalog")
    # `optimize` is added lazily by _RootGroup.
    app.command("export", help=export.__doc__)(export.export_command)
    app.command("bench", help=export.bench_command.__doc__)(export.bench_command)
    app.command("run", help=run.__doc__)(run.run_command)


_register()


def _real(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


class _Markdown:  # stands in for rich.markdown.Markdown inside typer.rich_utils
    def __new__(cls, *args, **kwargs):
        return _real("rich.markdown", "Markdown")(*args, **kwargs)


class _Traceback:  # stands in for rich.traceback.Traceback inside typer.rich_utils
    def __new__(cls, *args, **kwargs):
        return _real("rich.traceback", "Traceback")(*args, **kwargs)

    @classmethod
    def from_exception(cls, *args, **kwargs):
        return _real("rich.traceback", "Traceback").from_exception(*args, **kwargs)


def _import_typer_rich_utils() -> None:
    """Import typer's help renderer without `rich.markdown` and `rich.traceback`.

    typer.rich_utils imports both at module level, but uses Markdown only under
    rich_markup_mode="markdown" (gptctl uses "rich") and Traceback only for pretty exceptions
    (disabled here); importing them (markdown_it, pygments) is ~90 ms of the 0.3 s `gptctl --help`
    budget. Placeholder modules stand in while typer.rich_utils is imported and are removed right
    after, so anyone else importing rich.markdown or rich.traceback gets the real module; the
    placeholder classes build the real objects on first use, so behaviour is unchanged either way.
    """
    import sys
    import types

    stand_ins = {"rich.markdown": ("Markdown", _Markdown), "rich.traceback": ("Traceback", _Traceback)}
    if "typer.rich_utils" in sys.modules:
        return
    placed = {}
    for module, (name, cls) in stand_ins.items():
        if module not in sys.modules:
            placed[module] = sys.modules[module] = types.ModuleType(module)
            setattr(placed[module], name, cls)
    try:
        import typer.rich_utils  # noqa: F401
    finally:
        for module, placeholder in placed.items():
            if sys.modules.get(module) is placeholder:
                del sys.modules[module]


def main() -> None:
    _import_typer_rich_utils()
    app()
