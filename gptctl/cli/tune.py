"""Search a recipe's options (its `search:` block) for the Pareto front under its gates, with Optuna.

Every trial is the recipe run with the sampled values (DIR/trials/NNNN/), steps shared between trials
by content (DIR/cache/); trial 0 is the recipe as written. The recipe's gates are the constraints; a
trial failing one by a clear margin stops early. Leaves DIR/report.html (offline), DIR/trials.jsonl,
DIR/front.json and DIR/front/NN.yaml, a pinned recipe per front point that `gptctl run` reproduces.
`optuna-dashboard DIR/study.journal` shows the study. At the end the front's artifacts are benchmarked
again, one at a time (--no-retime skips it). --backend ray runs the trials on Ray Tune (a local cluster,
or --ray-address), --cpus-per-trial CPUs each. Ctrl-C stops after the running trial (twice: at once)
and keeps everything; --resume continues the study. Exit codes: 0 a front was found; 1 no trial
passed every gate (the nearest misses are listed); 2 invalid recipe or search block; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.table import Table

from gptctl.cli.common import err, fail, handle_errors, out, print_json

SAMPLER_NAMES = ("tpe", "nsga2", "gp", "random", "grid")  # gptctl.tune.study.SAMPLERS (checked by a test)
BACKENDS = ("local", "ray")


@handle_errors
def tune_command(
    recipe: Path = typer.Argument(..., help="A recipe with a search: block, e.g. recipes/quickstart-tune.yaml."),
    trials: int = typer.Option(
        20, "--trials", min=1, help="Trials in the study in all (--resume counts earlier ones)."
    ),
    time_budget: str | None = typer.Option(
        None, "--time-budget", metavar="DURATION", help="Start no trial after this long, e.g. 30m, 1h, 90s."
    ),
    sampler: str = typer.Option("tpe", "--sampler", help=f"Optuna sampler: {', '.join(SAMPLER_NAMES)}."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        metavar="URL",
        help="Optuna storage (sqlite:///x.db, redis://..., a .journal file) \\[default: DIR/study.journal].",
    ),
    backend: str = typer.Option(
        "local",
        "--backend",
        help=f"Where trials run: {', '.join(BACKENDS)} (ray: Ray Tune, pip install gptctl\\[ray]).",
    ),
    cpus_per_trial: float = typer.Option(
        1.0, "--cpus-per-trial", min=0.01, help="Ray: CPUs each trial reserves (cluster CPUs / this run at once)."
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        metavar="ADDRESS",
        help="Ray: an existing cluster (auto, ray://host:10001) \\[default: a local one].",
    ),
    retime: bool = typer.Option(
        True, "--retime/--no-retime", help="Benchmark the front's artifacts again at the end, one at a time."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the study already in the storage."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the recipe and print the space and its size; run nothing."
    ),
    output: Path | None = typer.Option(None, "--output", help="Study folder \\[default: runs/<recipe name>/tune/]."),
    seed: int = typer.Option(0, "--seed", help="The sampler's seed."),
    json_out: bool = typer.Option(False, "--json", help="Print the study's result (trials, front) as JSON."),
) -> None:
    from gptctl.recipe import load_recipe
    from gptctl.tune import TuneOptions, parse_search, tune_recipe

    budget = _checked(sampler, backend, time_budget, ray_address, cpus_per_trial)
    plan = load_recipe(recipe)
    space = parse_search(plan)
    if dry_run:
        _print_space(plan, space, json_out)
        raise typer.Exit(0)
    out_dir = output or Path("runs") / plan.name / "tune"
    ray = {"backend": backend, "cpus_per_trial": cpus_per_trial, "ray_address": ray_address}
    opts = TuneOptions(out_dir, trials, budget, sampler, storage, resume, seed, retime=retime, **ray)
    run = tune_recipe
    err.print(
        f"[bold]{plan.name}[/]: up to {trials} trials, {sampler} sampler, {backend} backend; study in {opts.output}",
        highlight=False,
    )
    stop = threading.Event()
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    with quiet_stdout, _first_ctrl_c_stops(stop):
        result = run(plan, space, opts, on_trial=_print_trial, stop=stop)
    summary = result.to_dict()
    if json_out and result.error is None:
        print_json(summary)
    elif not json_out:
        _print_result(result, space)
    if result.error is not None:
        fail(result.error, json_out=json_out, partial=summary)
    err.print(f"report: {result.files['report']}; front: {result.files['front']}", highlight=False)


def _checked(sampler: str, backend: str, time_budget: str | None, ray_address: str | None, cpus: float):
    """The flags checked before the recipe is read; returns the time budget in seconds (or None)."""
    from gptctl.errors import BadInput
    from gptctl.tune import parse_duration

    if sampler not in SAMPLER_NAMES:
        raise BadInput(f"unknown sampler {sampler!r}", f"choose one of {', '.join(SAMPLER_NAMES)}")
    if backend not in BACKENDS:
        raise BadInput(f"unknown backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")
    if backend != "ray" and (ray_address or cpus != 1.0):
        raise BadInput("--ray-address and --cpus-per-trial are for --backend ray", "add --backend ray")
    try:
        return parse_duration(time_budget) if time_budget else None
    except ValueError as exc:
        raise BadInput(f"--time-budget: {exc}", "e.g. --time-budget 30m") from None


@contextlib.contextmanager
def _first_ctrl_c_stops(stop: threading.Event):
    """The first Ctrl-C lets the running trial finish; the second interrupts it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum, frame):
        stop.set()
        err.print("[yellow]stopping after the running trial[/] (Ctrl-C again to stop now)", highlight=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_trial(t) -> None:
    figures = ", ".join(f"{k} {v:.4g}" for k, v in t.objectives.items())
    state = {"complete": "[green]feasible[/]" if t.feasible else "[yellow]infeasible[/]"}.get(
        t.state, f"[red]{t.state}[/]"
    )
    reused = f"; reused {', '.join(t.cache_hits)}" if t.cache_hits else ""
    note = f" ({t.error})" if t.error and t.state != "complete" else ""
    text = " ".join(x for x in (state, figures) if x) + note
    err.print(f"trial {t.number}: {text} in {t.wall_s:.1f}s{reused}", highlight=False)


def _print_space(plan, space, json_out: bool) -> None:
    data = space.to_dict()
    data["constraints"] = list(plan.gates)
    if json_out:
        print_json(data)
        return
    table = Table(title=f"Search space of {plan.name}")
    for col in ("parameter", "domain", "recipe value"):
        table.add_column(col, overflow="fold")
    for p in space.params:
        table.add_row(p.path, p.describe(), str(p.baseline))
    out.print(table)
    out.print(f"size: {data['size_text']}", highlight=False)
    out.print("objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in space.objectives), highlight=False)
    for g in plan.gates:
        out.print(f"constraint: {g}", highlight=False, markup=False)


def _print_result(result, space) -> None:
    names = [o.name for o in space.objectives]
    if result.front:
        retimed = any("decode_tok_s" in (p.get("retimed") or {}) for p in result.front)
        table = Table(title=f"Pareto front: {len(result.front)} of {len(result.trials)} trials ({result.stop_reason})")
        for col in ("#", "trial", *names, *(["re-timed tok/s"] if retimed else []), "values", "recipe"):
            table.add_column(col, overflow="fold")
        for p in result.front:
            mark = (
                " (recipe as written)" if p["baseline"] else (" (beats the recipe)" if p["dominates_baseline"] else "")
            )
            values = ", ".join(f"{k.split('.')[0]}.{k.split('.')[-1]}={v}" for k, v in p["params"].items())
            again = (p.get("retimed") or {}).get("decode_tok_s")
            table.add_row(
                str(p["index"]),
                f"{p['trial']}{mark}",
                *(f"{p['objectives'][n]:.4g}" for n in names),
                *([f"{again:.4g}" if again else "-"] if retimed else []),
                values,
                p["recipe"],
            )
        out.print(table)
        return
    table = Table(title="No trial passed every gate: nearest misses")
    for col in ("trial", "failed gates (by how much)", "values"):
        table.add_column(col, overflow="fold")
    for m in result.nearest_misses:
        failed = "\n".join(f"{f['gate']}: {f['by']:+.1%} {f['detail'] or f['error'] or ''}" for f in m["failed"])
        table.add_row(str(m["trial"]), failed, ", ".join(f"{k}={v}" for k, v in m["params"].items()))
    out.print(table)
