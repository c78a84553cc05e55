"""`gptctl optimize METHOD`: flags -> options -> `gptctl.optimize.optimize` -> summary.

One subcommand per method of `gptctl.optimize.registry.REGISTRY`, its flags generated from the method's
option declarations (one definition; recipes use the same field names) and its help from the registry
line, so adding a method touches nothing here. No torch here, nothing printed by the library.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import typer

from gptctl.cli import common
from gptctl.cli.flags import json_flag, options_command
from gptctl.optimize.registry import REGISTRY, options_class

HELP = "Adapt (LoRA, prompt tuning) or shrink (pruning) a causal LM; perplexity before and after."


def _runner(method: str):
    def run(values: dict[str, Any], json_out: bool) -> None:
        from gptctl.cli.progress import RichProgress
        from gptctl.optimize import optimize
        from gptctl.options import parse_options

        opts = parse_options(options_class(method), values, what=f"{method} options")
        main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, only rank 0 reports
        with RichProgress(enabled=main) as progress, _quiet_libraries():
            manifest = optimize(method, opts, progress=progress)
        if not main:
            return
        if json_out:
            common.print_json(manifest)
        else:
            _summary(method, opts, manifest)

    return run


def build_app() -> typer.Typer:
    """The `gptctl optimize` group: one subcommand per registered method."""
    group = typer.Typer(help=HELP, no_args_is_help=True)
    for method, entry in REGISTRY.items():
        command = options_command(
            options_class(method),
            _runner(method),
            name=method,
            doc=entry.help,
            extra=[json_flag("Print the manifest as JSON to stdout.")],
        )
        group.command(method, help=entry.help)(command)
    return group


# Libraries whose advisory warnings and info chatter would drown the progress bars during a run.
_NOISY = ("transformers", "peft", "accelerate")


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence library chatter (advisory warnings, info logs) for the optimize call only; on exit every
    environment variable, warnings filter and logger level is as it was, so the caller (a test, a recipe
    run in the same process) still sees the warnings it should. Model-load progress bars are silenced
    further down, in scope, by gptctl.logs.quiet (model_source)."""
    from gptctl import logs

    # transformers reads TRANSFORMERS_VERBOSITY when it configures its logger (its first import may happen
    # inside this block) and TRANSFORMERS_NO_ADVISORY_WARNINGS at each advisory warning.
    env = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    with _environ(env), logs.quiet(*_NOISY, progress_bars=True), warnings.catch_warnings():
        for module in _NOISY:
            warnings.filterwarnings("ignore", module=module)
        yield


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set the variables not already set (a user's own setting wins), and unset them again on exit."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _summary(method: str, opts: Any, manifest: dict[str, Any]) -> None:
    from rich.table import Table

    m = manifest.get("metrics", {})
    table = Table(title=f"optimize {method} -> {opts.output}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    if m.get("ppl_before") is not None:
        change = m["ppl_change_pct"]
        colour = "green" if change <= 0 else ("yellow" if change < 10 else "red")
        table.add_row("perplexity", f"{_fmt(m['ppl_before'])} -> {_fmt(m['ppl_after'])}  [{colour}]({change:+.2f}%)[/]")
    else:
        table.add_row("perplexity", "not measured (pass --eval-data or --eval-split)")
    for label, text in _SUMMARY_ROWS[REGISTRY[method].summary](m):
        table.add_row(label, text)
    table.add_row("wall time", f"{_fmt(m.get('wall_s'))} s (model load {_fmt(m.get('load_s'))} s)")
    table.add_row("manifest", f"{opts.output}/gptctl.json")
    common.out.print(table)


def _sparsity_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [
        (
            "sparsity",
            f"requested {_fmt(m.get('sparsity_requested'))}, realised {_fmt(m.get('sparsity_realised'))} "
            f"over {_fmt(m.get('pruned_params'))} weights ({_fmt(m.get('sparsity_model'))} of the model)",
        )
    ]
    layers = list(m.get("per_layer", {}).values())
    if layers:
        lo, hi = min(x["sparsity"] for x in layers), max(x["sparsity"] for x in layers)
        rows.append(("per layer", f"{len(layers)} layers, sparsity {lo:.4f} .. {hi:.4f}"))
    calibration = f" (+ {_fmt(m['calibration_s'])} s calibration)" if m.get("calibration_s") else ""
    rows.append(("prune time", f"{_fmt(m.get('prune_s'))} s{calibration}"))
    return rows


def _training_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            "trainable",
            f"{_fmt(m.get('trainable_params'))} of {_fmt(m.get('total_params'))} ({_fmt(m.get('trainable_pct'))}%)",
        ),
        ("loss", f"{_fmt(m.get('loss_first'))} -> {_fmt(m.get('loss_last'))} over {_fmt(m.get('steps'))} steps"),
        (
            "throughput",
            f"{_fmt(m.get('train_tokens_per_s'))} tokens/s ({_fmt(m.get('train_tokens'))} tokens, "
            f"{_fmt(m.get('train_s'))} s)",
        ),
    ]


# The summaries a registry line can name (`Method.summary`): by what a method reports, not by method.
_SUMMARY_ROWS = {"training": _training_rows, "sparsity": _sparsity_rows}

app = build_app()
