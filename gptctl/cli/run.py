"""Run a YAML recipe: select -> optimize -> export, cached, resumable, with gates for CI.

Each step writes to WORKDIR/NAME/ and is skipped while its inputs, options and gptctl version are unchanged;
an interrupted training step continues from its checkpoint. One run per workdir at a time (`--wait`).
Every run keeps its summary in WORKDIR/summaries/RUN.json; WORKDIR/summary.json is the latest.
Exit codes: 0 every step finished and every gate passed; 1 a gate or a step failed; 2 the recipe (an
option, an input) is invalid or the workdir is in use; 130 interrupted. `--dry-run` prints the plan, exits 0.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer
from rich.table import Table

from gptctl.cli.common import err, fail, handle_errors, out, print_json

_MARK = {
    "ran": "[green]ran[/]",
    "cached": "[cyan]cached[/]",
    "failed": "[red]failed[/]",
    "interrupted": "[red]interrupted[/]",
    "not-run": "[dim]not run[/]",
    "would-run": "[yellow]would run[/]",
}


@handle_errors
def run_command(
    recipe: Path = typer.Argument(..., help="The recipe file, e.g. recipes/quickstart.yaml."),
    set_: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="KEY.PATH=VALUE",
        help="Override any recipe value (read as YAML), e.g. --set steps.tune.options.rank=16. Repeatable.",
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Run folder, one sub-folder per step \\[default: runs/<recipe name>/]."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the resolved plan (what is cached, what would run); run nothing."
    ),
    force: bool = typer.Option(False, "--force", help="Rerun every step even when its cached result is still valid."),
    resume: bool = typer.Option(
        True,
        "--resume/--no-resume",
        help="Continue an interrupted training step from its checkpoint when its inputs and options are unchanged "
        "(on by default, so a plain rerun resumes); --no-resume starts it over.",
    ),
    wait: float = typer.Option(
        0.0,
        "--wait",
        metavar="SECONDS",
        min=0,
        help="When another run holds the workdir, wait up to SECONDS for it to finish (then exit 2); 0: exit 2 at once.",  # noqa: E501
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print a JSON summary (steps, status, durations, metrics, gates) to stdout."
    ),
    show_progress: bool = typer.Option(True, "--progress/--no-progress", help="Draw progress bars on stderr."),
) -> None:
    from gptctl.cli.progress import RichProgress
    from gptctl.recipe import load_recipe, run_recipe

    plan = load_recipe(recipe, set_ or [])
    where = workdir or Path("runs") / plan.name
    if plan.search is not None:
        err.print(
            "note: the recipe's search: block is for `gptctl tune`; running the recipe as written", highlight=False
        )
    if not dry_run:
        err.print(
            f"[bold]{plan.name}[/]: {len(plan.steps)} steps, {len(plan.gates)} gates; workdir {where}", highlight=False
        )
    # With --json, stdout carries only the JSON: whatever a library prints goes to stderr instead.
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    with quiet_stdout, RichProgress(enabled=show_progress and not dry_run) as progress:
        report = run_recipe(
            plan,
            where,
            force=force,
            dry_run=dry_run,
            resume=resume,
            wait_s=wait,
            progress=progress,
            on_event=None if dry_run else lambda event, step: _event(progress, event, step),
        )
    summary = report.to_dict()
    if dry_run:
        for entry, step in zip(summary["steps"], report.steps, strict=False):
            entry["options"] = step.options
    if report.busy:
        err.print(
            f"[yellow]note:[/] workdir {where} is in use by run PID {report.busy.get('pid', '?')} since "
            f"{report.busy.get('started', '?')}: its step in progress shows as interrupted",
            highlight=False,
        )
    if json_out and report.error is None:
        print_json(summary)
    elif dry_run:
        _print_plan(plan, report)
    elif not json_out:
        _print_results(report)
    if report.error is not None:
        fail(report.error, json_out=json_out, partial=summary)
    if not dry_run:
        failed = sum(not g.passed for g in report.gates)
        verdict = "[green]passed[/]" if report.passed else f"[red]failed[/] ({failed} of {len(report.gates)} gates)"
        err.print(f"[bold]{plan.name}[/] {verdict}; summary: {report.summary_path}", highlight=False)
    raise typer.Exit(report.exit_code)


def _event(progress, event: str, step) -> None:
    label = f"[bold]{step.name}[/] ({step.kind}{' ' + step.method if step.method else ''})"
    if event == "start":
        progress.rich.console.print(f"▶ {label}: running ({step.reason})", highlight=False)
    elif event == "cached":
        progress.rich.console.print(f"↷ {label}: cached, {step.reason}", highlight=False)
    elif event == "done":
        progress.rich.console.print(f"✓ {label}: done in {step.duration_s:.1f}s", highlight=False)
    elif event == "failed":
        progress.rich.console.print(f"✗ {label}: [red]failed[/]: {step.error}", highlight=False)
    elif event == "interrupted":
        progress.rich.console.print(f"✗ {label}: [red]interrupted[/] after {step.duration_s:.1f}s", highlight=False)


def _print_plan(plan, report) -> None:
    table = Table(title=f"Plan: {plan.name} (workdir {report.workdir})", show_lines=True)
    for col in ("#", "step", "kind", "status", "inputs and options"):
        table.add_column(col, overflow="fold")
    for i, step in enumerate(report.steps, 1):
        lines = [f"output: {step.output}"]
        lines += [f"{k}: {_value(v)}" for k, v in step.options.items()]
        sources = plan.step(step.name).sources
        lines += [f"source {k}: {v}" for k, v in sources.items()]
        status = f"{_MARK.get(step.status, step.status)}\n[dim]{step.reason}[/]"
        table.add_row(str(i), step.name, f"{step.kind} {step.method or ''}".strip(), status, "\n".join(lines))
    _show(table)
    if plan.gates:
        out.print("[bold]Gates[/] (evaluated after the run):")
        for g in plan.gates:
            out.print(f"  {g}", highlight=False, markup=False)


def _print_results(report) -> None:
    from gptctl.recipe.summary import stages

    steps = Table(title="Steps")
    for col in ("step", "kind", "status", "time", "output"):
        steps.add_column(col, overflow="fold")
    for s in report.steps:
        steps.add_row(s.name, f"{s.kind} {s.method or ''}".strip(), _MARK.get(s.status, s.status), _time(s), s.output)
    _show(steps)
    if report.gates:
        gates = Table(title="Gates")
        for col in ("gate", "values", "result"):
            gates.add_column(col, overflow="fold")
        for g in report.gates:
            # A comparison shows its two sides; anything else the values it read.
            values = g.detail or "\n".join(f"{k} = {_value(v)}" for k, v in g.values.items())
            result = "[green]pass[/]" if g.passed else "[red]FAIL[/]" + (f"\n{g.error}" if g.error else "")
            gates.add_row(g.expr, values, result)
        _show(gates)
    rows = stages(report)
    if rows:
        # optimize and export score perplexity the same way (token-weighted over the held-out
        # samples, each from its start), so the column compares down the whole pipeline.
        table = Table(
            title="Summary",
            caption="perplexity: token-weighted over each step's held-out samples, "
            "each scored from its start (optimize and export alike)",
        )
        for col in ("stage", "perplexity", "sparsity", "size", "decode tok/s", "vs PyTorch"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for r in rows:
            table.add_row(
                r.stage,
                f"{r.perplexity:.2f}" if r.perplexity is not None else "",
                f"{r.sparsity:.1%}" if r.sparsity is not None else "",
                _size(r.size_bytes),
                ", ".join(f"{p} {v:.1f}" for p, v in r.tokens_per_s.items()),
                ", ".join(f"{p} {v:.2f}x" for p, v in r.speedup.items()),
            )
        _show(table)


def _show(table: Table) -> None:
    # Logs (CI) are not terminals: give tables room instead of wrapping every cell at 80 columns.
    if out.is_terminal:
        out.print(table)
    else:
        from rich.console import Console

        Console(file=out.file, width=max(out.width, 120)).print(table)


def _time(step) -> str:
    """A step's time: this run's, or for a cached step the run that made its result (in brackets)."""
    if step.status in ("ran", "interrupted", "failed") and step.duration_s:
        return f"{step.duration_s:.1f}s"
    if step.status == "cached" and step.produced_by and step.produced_by.get("duration_s"):
        return f"({step.produced_by['duration_s']:.1f}s, run {step.produced_by.get('run') or '?'})"
    return ""


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _size(n) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""
