"""Rank the catalog's models for your constraints, and explain the ranking.

Hard constraints filter the catalog; a documented weighted score (quality, size, context, recency, license openness) ranks what is left. Exit 1 when nothing matches, with the number of models each constraint removed and the nearest misses.

[bold]Examples[/bold]

  gptctl select --domain medical --max-params 1b

  gptctl select --license apache-2.0 --license mit --instruct --top 5 --json

  gptctl select --metric 'mmlu>=40' --weight quality=0.7 --output selection.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from gptctl.cli.common import err, handle_errors, out, print_json

# Option factories, shared with `gptctl catalog list` (a fresh OptionInfo per command).
_C = "Constraints"


def opt_domain():
    return typer.Option(None, "--domain", "-d", metavar="DOMAIN", help="Keep models in this domain (repeatable: any of). E.g. medical, code, general.", rich_help_panel=_C)


def opt_max_params():
    return typer.Option(None, "--max-params", metavar="N", help="At most N parameters: 135m, 1.5b, 7B, 7e9.", rich_help_panel=_C)


def opt_min_params():
    return typer.Option(None, "--min-params", metavar="N", help="At least N parameters (units as --max-params).", rich_help_panel=_C)


def opt_license():
    return typer.Option(None, "--license", "-l", metavar="LICENSE", help="Allow this license id (repeatable allow-list), e.g. apache-2.0, mit.", rich_help_panel=_C)


def opt_task():
    return typer.Option(None, "--task", metavar="TASK", help="A task the model must list, e.g. text-generation.", rich_help_panel=_C)


def opt_language():
    return typer.Option(None, "--language", metavar="LANG", help="A language the model must list (ISO 639 code, e.g. en, zh).", rich_help_panel=_C)


def opt_min_context():
    return typer.Option(None, "--min-context", metavar="TOKENS", help="At least this context length: 4096, 8k (k = 1024).", rich_help_panel=_C)


def opt_instruct():
    return typer.Option(None, "--instruct/--base", help="Only instruction-tuned models, or only base models.", show_default=False, rich_help_panel=_C)


def opt_metric():
    return typer.Option(None, "--metric", "-m", metavar="EXPR", help="Metric floor, e.g. 'mmlu>=40' (repeatable). Models without that metric are excluded.", rich_help_panel=_C)


def opt_architecture():
    return typer.Option(None, "--architecture", "-a", metavar="ARCH", help="Keep this transformers model_type (repeatable), e.g. llama, qwen2.", rich_help_panel=_C)


def opt_exportable():
    return typer.Option(False, "--exportable", help="Only architectures optimum's ONNX exporter supports (text generation with KV cache).", rich_help_panel=_C)


def opt_catalog():
    return typer.Option(None, "--catalog", "-c", metavar="FILE", help="Catalog file (repeatable; later files override the same ids). Replaces the bundled catalog; 'builtin' names it. Default: $GPTCTL_CATALOG, else the bundled catalog.", rich_help_panel="Catalog")


def opt_json():
    return typer.Option(False, "--json", help="Print one JSON object to stdout instead of a table.", rich_help_panel="Output")


def filter_values(**kw: Any) -> dict[str, Any]:
    """CLI values -> SelectOptions input (None / empty left out so defaults apply)."""
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in kw.items() if v not in (None, [], ())}


@handle_errors
def select_command(
    domain: Optional[List[str]] = opt_domain(),
    max_params: Optional[str] = opt_max_params(),
    min_params: Optional[str] = opt_min_params(),
    license: Optional[List[str]] = opt_license(),
    task: Optional[str] = opt_task(),
    language: Optional[str] = opt_language(),
    min_context: Optional[str] = opt_min_context(),
    instruct: Optional[bool] = opt_instruct(),
    metric: Optional[List[str]] = opt_metric(),
    architecture: Optional[List[str]] = opt_architecture(),
    exportable: bool = opt_exportable(),
    weight: Optional[List[str]] = typer.Option(None, "--weight", "-w", metavar="NAME=W", help="Scoring weight, e.g. quality=0.7 (repeatable). Criteria: quality, size, context, recency, license. Weights are normalised to sum 1.", rich_help_panel="Scoring"),
    top: Optional[int] = typer.Option(None, "--top", "-n", metavar="N", help="Show only the best N.", rich_help_panel="Output"),
    explain: bool = typer.Option(False, "--explain", help="Also list every excluded model with the first constraint it failed.", rich_help_panel="Output"),
    json_out: bool = opt_json(),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write the selection (chosen model, ranking, constraints, catalog hash) as JSON; optimize and run accept it as --model.", rich_help_panel="Output"),
    catalog: Optional[List[str]] = opt_catalog(),
) -> None:
    from gptctl.options import parse_options
    from gptctl.selection import SelectOptions, select_models, write_selection

    values = filter_values(
        domain=domain, max_params=max_params, min_params=min_params, license=license, task=task,
        language=language, min_context=min_context, instruct=instruct, metric=metric,
        architecture=architecture, exportable=exportable or None, weight=weight, top=top,
        explain=explain or None, catalog=catalog,
    )
    options = parse_options(SelectOptions, values, what="select options")
    if output is not None and output.is_dir():  # fail before any output is printed
        from gptctl.errors import BadInput

        raise BadInput(f"--output {output} is a directory", "give a file name, e.g. selection.json")
    result = select_models(options)
    if result.matched:
        for w in result.warnings:  # when nothing matched they are part of the error's details
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if json_out:
        print_json(result.to_dict())
    else:
        render_selection(result)
    result.require_match()  # exit 1 with the funnel and nearest misses
    if output is not None:
        path = write_selection(result, output)
        err.print(f"wrote {path} (selected {result.models[0].id})", highlight=False)


# ------------------------------------------------------------------------------------------ rendering

TABLE_MAX_ROWS = 100  # without --top, a huge ranking is cut in the table (never in --json / --output)
_PART_HEADERS = {"quality": "qual", "size": "size", "context": "ctx", "recency": "new", "license": "open"}


def render_selection(result: Any) -> None:
    from rich import box
    from rich.table import Table

    from gptctl.catalog.units import format_params

    weights = result.scoring["weights"]
    funnel = f"{result.total} in catalog" + "".join(f" → {f['label']}: {f['after']}" for f in result.funnel)
    shown = f"top {len(result.models)} of {result.matched}" if result.top and result.matched > len(result.models) else str(result.matched)
    table = Table(
        title=f"{shown} model{'s' if result.matched != 1 else ''} ({funnel})",
        caption=(
            "score = sum of parts: " + " + ".join(f"{_PART_HEADERS[k]}×{w:.2f}" for k, w in weights.items())
            + f"  · * = missing data, imputed ({result.scoring['missing']} policy)"
        ),
        title_justify="left", caption_justify="left", highlight=False, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
    )
    # Numbers never wrap or truncate; long ids and domain lists fold onto more lines instead.
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("id", overflow="fold", style="bold", min_width=16)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("domains", overflow="fold")
    table.add_column("license", overflow="fold")
    table.add_column("score", justify="right", style="bold", no_wrap=True)
    for k in weights:
        table.add_column(_PART_HEADERS[k], justify="right", no_wrap=True)
    rows = result.models if result.top else result.models[:TABLE_MAX_ROWS]
    for m in rows:
        e = m.entry
        parts = m.scored.parts
        cells = [f"{parts[k]:.1f}{'*' if k in m.scored.imputed else ''}" if k in parts else "—*" for k in weights]
        table.add_row(str(m.rank), e.id, format_params(e.params), ",".join(e.domains), e.license or "?", f"{m.score:.1f}", *cells)
    if result.models:
        out.print(table)
    if len(rows) < len(result.models):
        out.print(f"… {len(result.models) - len(rows)} more below rank {len(rows)} (use --top N, or --json for all)", highlight=False)
    if result.explain and result.exclusions:
        ex = Table(title=f"{len(result.exclusions)} excluded (first constraint failed)", title_justify="left",
                   highlight=False, box=box.SIMPLE_HEAD, pad_edge=False)
        ex.add_column("id", overflow="fold", ratio=2)
        ex.add_column("constraint", overflow="fold", ratio=1)
        ex.add_column("why", overflow="fold", ratio=3)
        for x in result.exclusions:
            ex.add_row(x.id, x.label, x.reason)
        out.print(ex)
