"""Inspect and check model catalogs (the bundled one, --catalog FILE, or $GPTCTL_CATALOG)."""

from __future__ import annotations

from typing import Any

import typer

from gptctl.cli.common import err, handle_errors, out, print_fitting, print_json
from gptctl.cli.flags import extra_option, json_flag, options_command
from gptctl.selection.options import SelectOptions

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("validate")
@handle_errors
def validate_command(
    files: list[str] = typer.Argument(
        ..., metavar="FILE...", help="Catalog files to check ('builtin' checks the bundled one)."
    ),
) -> None:
    """Check catalog files against the schema; list every problem as file:line: field.path: problem (exit 2)."""
    from gptctl.catalog import validate_files

    for f in validate_files(files):
        out.print(f"ok: {f.name} ({f.models} models, sha256 {f.sha256[:12]})", highlight=False)


def _list(values: dict[str, Any], json_out: bool) -> None:
    """List catalog entries in file order, filtered with the same constraints as `gptctl select`."""
    from gptctl.options import parse_options
    from gptctl.selection.core import select_models

    options = parse_options(SelectOptions, values, what="list options")
    result = select_models(options)
    if result.matched:
        for w in result.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
    kept = {m.id for m in result.models}
    entries = [e for e in result.catalog.entries if e.id in kept]  # catalog order, not score order
    if json_out:
        result.require_match()  # nothing matched: the error path prints one object (funnel, nearest misses)
        print_json(
            {
                "models": [e.to_dict() for e in entries],
                "count": len(entries),
                "constraints": result.constraints,
                "excluded": result.excluded,
                "catalog": result.catalog.info(),
                "warnings": result.warnings,
            }
        )
    else:
        _render_list(entries, result)
    result.require_match()


# The constraint flags of `gptctl select`, from the same declarations (scoring and ranking flags left out).
list_command = app.command("list")(
    options_command(
        SelectOptions, _list, name="list", doc=_list.__doc__, extra=[json_flag()], skip=("weight", "top", "explain")
    )
)


def _render_list(entries: list, result: Any) -> None:
    """One row per entry when the console is wide enough, else the id whole on a line, its fields below."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from gptctl.catalog.units import format_context, format_params

    if not entries:
        return
    tables = []
    for narrow in (False, True):
        t = Table(
            title=f"{len(entries)} of {result.total} models",
            title_justify="left",
            highlight=False,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        heads = ("family", "arch", "params", "ctx", "license", "domains", "instr", "release")
        t.add_column(
            "id" + (f" ({' · '.join(heads)})" if narrow else ""),
            style="bold",
            no_wrap=not narrow,
            min_width=max(len(e.id) for e in entries),
        )
        if not narrow:
            for head in heads:
                t.add_column(head, justify="right" if head in ("params", "ctx") else "left", no_wrap=head != "domains")
        for e in entries:
            cells = [
                e.family or "?",
                e.architecture or "?",
                format_params(e.params),
                format_context(e.context_length),
                e.license or "?",
                ", ".join(e.domains),
                {True: "yes", False: "no", None: "?"}[e.instruct],
                e.release or "?",
            ]
            if narrow:
                t.add_row(Text(e.id, style="bold") + Text("\n" + " · ".join(cells), style="not bold dim"))
            else:
                t.add_row(e.id, *cells)
        tables.append(t)
    print_fitting(*tables)


def _show(values: dict[str, Any], model_id: str, json_out: bool) -> None:
    """Show every field of one catalog entry, and which file it came from."""
    from gptctl.catalog import format_context, format_params, is_exportable, load_catalogs

    cat = load_catalogs(values.get("catalog") or None)
    e = cat.get(model_id)
    d = e.to_dict()
    d["exportable"] = is_exportable(e.architecture)
    d["catalog_file"] = e.origin
    if json_out:
        print_json(d)
        return
    from rich import box
    from rich.table import Table

    t = Table(show_header=False, box=box.SIMPLE, highlight=False, pad_edge=False)
    t.add_column("field", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for k, v in d.items():
        if k == "params":
            v = f"{v:,} ({format_params(v)}, {'exact' if e.params_exact else 'nominal'})"
        elif k == "context_length" and v is not None:
            v = f"{v:,} tokens ({format_context(v)})"
        elif k == "metrics":
            v = ", ".join(f"{m} {s:g}" for m, s in v.items()) if v else "—"
        elif isinstance(v, list):
            v = ", ".join(v) if v else "—"
        elif v is None:
            v = "— (not recorded)"
        elif isinstance(v, bool):
            v = "yes" if v else "no"
        t.add_row(k, str(v))
    out.print(t)
    if e.id != model_id:
        err.print(f"(matched {e.id!r} for {model_id!r})", highlight=False)


# Only `--catalog` comes from SelectOptions: the entry is named by its id.
show_command = app.command("show")(
    options_command(
        SelectOptions,
        _show,
        name="show",
        doc=_show.__doc__,
        only=("catalog",),
        extra=[
            extra_option(
                "model_id",
                str,
                typer.Argument(..., metavar="ID", help="A model id from the catalog (case-insensitive if unique)."),
            ),
            json_flag(),
        ],
    )
)
