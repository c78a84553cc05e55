"""Rank the catalog's models for your constraints, and explain the ranking.

Hard constraints filter the catalog; a documented weighted score (quality, size, context, recency, license openness) ranks what is left. Exit 1 when nothing matches, with the number of models each constraint removed and the nearest misses.

[bold]Examples[/bold]

  gptctl select --domain medical --max-params 1b

  gptctl select --license apache-2.0 --license mit --instruct --top 5 --json

  gptctl select --metric 'mmlu>=40' --weight quality=0.7 --output selection.json
"""  # noqa: E501

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from gptctl.cli.common import err, out, print_fitting, print_json
from gptctl.cli.flags import extra_option, json_flag, options_command
from gptctl.selection.options import SelectOptions


def _select(values: dict[str, Any], json_out: bool, output: Path | None) -> None:
    from gptctl.options import parse_options
    from gptctl.selection import select_models, write_selection

    options = parse_options(SelectOptions, values, what="select options")
    if output is not None and output.is_dir():  # fail before any output is printed
        from gptctl.errors import BadInput

        raise BadInput(f"--output {output} is a directory", "give a file name, e.g. selection.json")
    result = select_models(options)
    if result.matched:
        for w in result.warnings:  # when nothing matched they are part of the error's details
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if json_out:  # nothing matched: the error path prints one object, the funnel and nearest misses included
        print_json(result.require_match().to_dict())
    else:
        render_selection(result)
    result.require_match()  # exit 1 with the funnel and nearest misses
    if output is not None:
        path = write_selection(result, output)
        err.print(f"wrote {path} (selected {result.models[0].id})", highlight=False)


# The flags are SelectOptions' declarations (gptctl/selection/options.py); `--json` and `--output`
# belong to the command, not to the selection.
select_command = options_command(
    SelectOptions,
    _select,
    name="select",
    doc=__doc__,
    extra=[
        json_flag(),
        extra_option(
            "output",
            Optional[Path],  # noqa: UP045
            typer.Option(
                None,
                "--output",
                "-o",
                metavar="FILE",
                rich_help_panel="Output",
                help="Write the selection (chosen model, ranking, constraints, catalog hash) as JSON; optimize and run "
                "accept it as --model.",
            ),
        ),
    ],
)


# ------------------------------------------------------------------------------------------ rendering

TABLE_MAX_ROWS = 100  # without --top, a huge ranking is cut in the table (never in --json / --output)
_PART_HEADERS = {"quality": "qual", "size": "size", "context": "ctx", "recency": "new", "license": "open"}


def render_selection(result: Any) -> None:
    """The ranking as a table: one row per model when the console is wide enough, else (pipes and CI
    logs are 80 columns) one block per model with the id whole on its first line."""
    from rich import box
    from rich.table import Table

    weights = result.scoring["weights"]
    funnel = f"{result.total} in catalog" + "".join(f" → {f['label']}: {f['after']}" for f in result.funnel)
    shown = (
        f"top {len(result.models)} of {result.matched}"
        if result.top and result.matched > len(result.models)
        else str(result.matched)
    )
    rows = result.models if result.top else result.models[:TABLE_MAX_ROWS]
    style = dict(
        title=f"{shown} model{'s' if result.matched != 1 else ''} ({funnel})",
        caption=(
            "score = sum of parts: "
            + " + ".join(f"{_PART_HEADERS[k]}×{w:.2f}" for k, w in weights.items())
            + f"  · * = missing data, imputed ({result.scoring['missing']} policy)"
        ),
        title_justify="left",
        caption_justify="left",
        highlight=False,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    if result.models:
        print_fitting(_wide_selection(Table(**style), rows, weights), _narrow_selection(Table(**style), rows, weights))
    if len(rows) < len(result.models):
        out.print(
            f"… {len(result.models) - len(rows)} more below rank {len(rows)} (use --top N, or --json for all)",
            highlight=False,
        )
    if result.explain and result.exclusions:
        print_fitting(*_exclusion_tables(result.exclusions))


def _exclusion_tables(exclusions: list) -> tuple[Any, Any]:
    """Excluded models: id | constraint | why, or (narrow) the id on a line, the reason indented below."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    tables = []
    for narrow in (False, True):
        t = Table(
            title=f"{len(exclusions)} excluded (first constraint failed)",
            title_justify="left",
            highlight=False,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        if narrow:
            t.add_column("id: constraint, why")
            for x in exclusions:
                t.add_row(Text(x.id, style="bold") + Text(f"\n  {x.label}: {x.reason}"))
        else:
            for col in ("id", "constraint", "why"):
                t.add_column(col, no_wrap=col == "id")
            for x in exclusions:
                t.add_row(x.id, x.label, x.reason)
        tables.append(t)
    return tables[0], tables[1]


def _part_cells(m: Any, weights: dict) -> list[str]:
    parts = m.scored.parts
    return [f"{parts[k]:.1f}{'*' if k in m.scored.imputed else ''}" if k in parts else "—*" for k in weights]


def _wide_selection(table: Any, rows: list, weights: dict) -> Any:
    from gptctl.catalog.units import format_params

    # Ids and numbers never wrap; domain lists and licenses wrap between words.
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("id", style="bold", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("domains")
    table.add_column("license")
    table.add_column("score", justify="right", style="bold", no_wrap=True)
    for k in weights:
        table.add_column(_PART_HEADERS[k], justify="right", no_wrap=True)
    for m in rows:
        e = m.entry
        table.add_row(
            str(m.rank),
            e.id,
            format_params(e.params),
            ", ".join(e.domains),
            e.license or "?",
            f"{m.score:.1f}",
            *_part_cells(m, weights),
        )
    return table


def _narrow_selection(table: Any, rows: list, weights: dict) -> Any:
    """Under 80 columns' worth: the id on its own line, domains, license and score parts below it."""
    from rich.text import Text

    from gptctl.catalog.units import format_params

    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("model (domains · license; score parts)", min_width=max(len(m.entry.id) for m in rows))
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("score", justify="right", style="bold", no_wrap=True)
    for m in rows:
        e = m.entry
        parts = "  ".join(
            f"{_PART_HEADERS[k]} {cell}" for k, cell in zip(weights, _part_cells(m, weights), strict=False)
        )  # noqa: E501
        cell = Text(e.id, style="bold")
        cell.append(f"\n{', '.join(e.domains)} · {e.license or '?'}\n{parts}", style="dim")
        table.add_row(str(m.rank), cell, format_params(e.params), f"{m.score:.1f}")
    return table
