"""The `gptctl` typer app. Imports only typer/rich and the light CLI modules."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from gptctl import __version__
from gptctl.cli import common


class _LazyGroup(TyperGroup):
    """A command group whose real definition is imported only when it is used.

    `gptctl optimize`'s flags are generated from every method's option declarations; importing and
    building them costs ~35 ms, so the listing shows a static help line instead.
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

    def resolve_command(self, ctx, args):  # type: ignore[override]
        # The real group decides (`gptctl serve ARTIFACT` runs its default command `start`).
        return self._load().resolve_command(ctx, args)


# Commands whose modules are imported only when the command runs (or its own --help is asked for):
# name -> (module, function, whose docstring is the help: "module" or "function", the one-line help
# `gptctl --help` lists). Typer turns a function's signature into click parameters when the app is
# built, and importing and converting every command costs ~50 ms of each start-up. tests/test_cli_imports.py checks each line against the docstring.  # noqa: E501
LAZY_COMMANDS = {
    "select": (
        "gptctl.cli.select",
        "select_command",
        "module",
        "Rank the catalog's models for your constraints, and explain the ranking.",
    ),
    "export": (
        "gptctl.cli.export",
        "export_command",
        "module",
        "Export a model to a validated ONNX artifact (KV cache), optionally quantized and benchmarked.",
    ),
    "bench": (
        "gptctl.cli.export",
        "bench_command",
        "function",
        "Benchmark an existing export artifact per execution provider, with PyTorch eager as baseline.",
    ),
    "run": (
        "gptctl.cli.run",
        "run_command",
        "module",
        "Run a YAML recipe: select -> optimize -> export, cached, resumable, with gates for CI.",
    ),
    "tune": (
        "gptctl.cli.tune",
        "tune_command",
        "module",
        "Search a recipe's options (its `search:` block) for the Pareto front under its gates, with Optuna.",
    ),
}
LAZY_GROUPS = {
    "catalog": (
        "gptctl.cli.catalog",
        "Inspect and check model catalogs (the bundled one, --catalog FILE, or $GPTCTL_CATALOG).",
    ),
    "optimize": (
        "gptctl.cli.optimize",
        "Adapt (LoRA, prompt tuning) or shrink (pruning) a causal LM; perplexity before and after.",
    ),
    "serve": (
        "gptctl.cli.serve",
        "Serve an exported model as an OpenAI-compatible HTTP service; swap versions; drive load.",
    ),
}


# click's UsageError as typer uses it (typer 0.28 vendors click; BadParameter is public, its base is not).
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _RootGroup(TyperGroup):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, (module, help) in LAZY_GROUPS.items():
            self.add_command(_LazyGroup(name, module, help), name)
        self._loaded: dict[str, Any] = {}
        self._listing = False

    def list_commands(self, ctx):  # type: ignore[override]
        return list(LAZY_COMMANDS) + [n for n in super().list_commands(ctx) if n not in LAZY_COMMANDS]

    def get_command(self, ctx, cmd_name):  # type: ignore[override]
        if cmd_name not in LAZY_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, func, doc_from, help = LAZY_COMMANDS[cmd_name]
        if self._listing:  # the root help lists commands by their one-line help: no import needed
            from typer.core import TyperCommand

            return TyperCommand(cmd_name, help=help)
        if cmd_name not in self._loaded:
            import importlib

            mod = importlib.import_module(module)
            one = typer.Typer(
                add_completion=False, rich_markup_mode="rich", context_settings={"help_option_names": ["-h", "--help"]}
            )
            fn = getattr(mod, func)
            one.command(cmd_name, help=mod.__doc__ if doc_from == "module" else fn.__doc__)(fn)
            self._loaded[cmd_name] = typer.main.get_command(one)
        return self._loaded[cmd_name]

    def invoke(self, ctx):  # type: ignore[override]
        args = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # invoke() empties both
        try:
            return super().invoke(ctx)
        except _USAGE_ERROR as exc:  # a bad flag: click says why on stderr (exit 2); --json also gets JSON
            if "--json" in args:
                from gptctl.errors import BadInput

                common.print_json(BadInput(exc.format_message(), "see the command's --help").to_dict())
            raise

    def format_help(self, ctx, formatter):  # type: ignore[override]
        self._listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self._listing = False


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
    version: bool | None = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Also print the traceback of an error (the exit code stays the same)."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="More detail: gptctl's debug log, full tables (e.g. export's validation)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only on stderr."),
) -> None:
    from gptctl import logs

    common.DEBUG["on"] = debug
    common.VERBOSITY["level"] = -1 if quiet else int(verbose)
    # The one place logging is configured: records go to the stderr console, never stdout.
    logs.configure(common.VERBOSITY["level"], common.ConsoleLogHandler())


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
