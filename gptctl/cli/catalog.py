"""Inspect and check model catalogs (the bundled one, --catalog FILE, or $GPTCTL_CATALOG)."""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from gptctl.cli.common import err, handle_errors, out, print_json
from gptctl.cli.select import (
    filter_values,
    opt_architecture,
    opt_catalog,
    opt_domain,
    opt_exportable,
    opt_instruct,
    opt_json,
    opt_language,
    opt_license,
    opt_max_params,
    opt_metric,
    opt_min_context,
    opt_min_params,
    opt_task,
)

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("validate")
@handle_errors
def validate_command(
    files: List[str] = typer.Argument(..., metavar="FILE...", help="Catalog files to check ('builtin' checks the bundled one)."),
) -> None:
    """Check catalog files against the schema; list every problem as file:line: field.path: problem (exit 2)."""
    from gptctl.catalog import validate_files

    for f in validate_files(files):
        out.print(f"ok: {f.name} ({f.models} models, sha256 {f.sha256[:12]})", highlight=False)


@app.command("list")
@handle_errors
def list_command(
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
    json_out: bool = opt_json(),
    catalog: Optional[List[str]] = opt_catalog(),
) -> None:
    """List catalog entries in file order, filtered with the same constraints as `gptctl select`."""
    from gptctl.options import parse_options
    from gptctl.selection import SelectOptions
    from gptctl.selection.core import select_models

    values = filter_values(
        domain=domain, max_params=max_params, min_params=min_params, license=license, task=task,
        language=language, min_context=min_context, instruct=instruct, metric=metric,
        architecture=architecture, exportable=exportable or None, catalog=catalog,
    )
    options = parse_options(SelectOptions, values, what="list options")
    result = select_models(options)
    if result.matched:
        for w in result.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
    kept = {m.id for m in result.models}
    entries = [e for e in result.catalog.entries if e.id in kept]  # catalog order, not score order
    if json_out:
        print_json({"models": [e.to_dict() for e in entries], "count": len(entries), "constraints": result.constraints,
                    "excluded": result.excluded, "catalog": result.catalog.info(), "warnings": result.warnings})
    else:
        _render_list(entries, result)
    result.require_match()


def _render_list(entries: list, result: Any) -> None:
    from rich import box
    from rich.table import Table

    from gptctl.catalog.units import format_context, format_params

    t = Table(title=f"{len(entries)} of {result.total} models", title_justify="left", highlight=False,
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("id", overflow="fold", style="bold", min_width=16)
    t.add_column("family", overflow="fold")
    t.add_column("arch", overflow="fold")
    t.add_column("params", justify="right", no_wrap=True)
    t.add_column("ctx", justify="right", no_wrap=True)
    t.add_column("license", overflow="fold")
    t.add_column("domains", overflow="fold")
    t.add_column("instr", no_wrap=True)
    t.add_column("release", no_wrap=True)
    for e in entries:
        t.add_row(e.id, e.family or "?", e.architecture or "?", format_params(e.params), format_context(e.context_length),
                  e.license or "?", ",".join(e.domains), {True: "yes", False: "no", None: "?"}[e.instruct], e.release or "?")
    if entries:
        out.print(t)


@app.command("show")
@handle_errors
def show_command(
    model_id: str = typer.Argument(..., metavar="ID", help="A model id from the catalog (case-insensitive if unique)."),
    json_out: bool = opt_json(),
    catalog: Optional[List[str]] = opt_catalog(),
) -> None:
    """Show every field of one catalog entry, and which file it came from."""
    from gptctl.catalog import format_context, format_params, is_exportable, load_catalogs

    cat = load_catalogs(catalog or None)
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
