"""Export a model to a validated ONNX artifact (KV cache), optionally quantized and benchmarked.

Input: any `gptctl optimize` output (LoRA or prompt-tuning adapter, pruned model), a Hugging Face
directory, a .gguf file, or a Hub id from the local cache. Validation against PyTorch always runs and
fails the export (exit 1) over --atol. Exit codes: 0 ok, 1 validation or a required provider failed,
2 bad input.
"""

from __future__ import annotations

from typing import Any

import typer

from gptctl.bench.options import BenchOptions
from gptctl.cli.common import out, print_json
from gptctl.cli.flags import extra_option, json_flag, options_command
from gptctl.export.options import ExportOptions


def _export(values: dict[str, Any], json_out: bool) -> None:
    """Export a model to a validated ONNX artifact (KV cache); optionally quantize and benchmark it."""
    from gptctl.bench import run_benchmark
    from gptctl.cli.progress import RichProgress
    from gptctl.export import export_model

    with RichProgress(enabled=not json_out) as progress:
        manifest = export_model(values, progress=progress, benchmark=run_benchmark)
    if json_out:
        print_json(manifest)
        return
    render_export(manifest, values["output"])


def _bench(values: dict[str, Any], artifact: str, json_out: bool) -> None:
    """Benchmark an existing export artifact per execution provider, with PyTorch eager as baseline."""
    from gptctl.bench import bench_artifact
    from gptctl.cli.progress import RichProgress

    with RichProgress(enabled=not json_out) as progress:
        manifest = bench_artifact({**values, "model": artifact}, progress=progress)
    if json_out:
        print_json(manifest)
        return
    render_benchmark(manifest["benchmark"])


# Every flag is a field of ExportOptions / BenchOptions (gptctl/export/options.py, gptctl/runtime/settings.py):
# --quantize's choices come from the quantization registry, --provider's from the execution providers' table.
export_command = options_command(
    ExportOptions,
    _export,
    name="export",
    doc=_export.__doc__,
    extra=[
        json_flag("Print the manifest (with validation and benchmark) as JSON."),
    ],
)
bench_command = options_command(
    BenchOptions,
    _bench,
    name="bench",
    doc=_bench.__doc__,
    extra=[
        extra_option("artifact", str, typer.Argument(..., help=BenchOptions.model_fields["model"].help)),
        json_flag("Print the artifact's manifest with the fresh benchmark as JSON."),
    ],
)


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def render_export(manifest: dict[str, Any], output: str) -> None:
    """Validation summary (worst output per kind; every output under --verbose), then the artifact."""
    from rich.table import Table

    from gptctl.cli.common import VERBOSITY

    v = manifest["validation"]
    title = (
        f"validation: ONNX Runtime vs PyTorch, max |diff| (atol {v['atol']:g}; {v.get('checked_graph', 'model.onnx')})"
    )
    out.print(_validation_table(v, title) if VERBOSITY["level"] > 0 else _validation_summary(v, title))
    if VERBOSITY["level"] <= 0 and len(v["outputs"]) > len(_output_kinds(v["outputs"])):
        out.print(
            "[dim]every output: gptctl --verbose export ..., or validation.outputs in gptctl.json[/]", highlight=False
        )
    if v.get("greedy_match") is not None:
        out.print(
            f"greedy generation: {v['greedy_tokens']} tokens, "
            + ("[green]identical[/]" if v["greedy_match"] else "[red]differ[/]")
        )
    if v.get("lora_merge"):
        lm = v["lora_merge"]
        out.print(f"LoRA merge: adapter vs merged logits max |diff| {lm['max_abs_diff']:.3g} (atol {lm['atol']:g})")
    m = manifest["metrics"]
    summary = Table(title="artifact")
    summary.add_column("metric", no_wrap=True)
    summary.add_column("value", justify="right")
    rows = [
        ("output", output),
        ("size (MB)", m["size_bytes"] / 1e6),
        ("export wall (s)", m["export_wall_s"]),
        ("max |diff|", v["max_abs_diff"]),
        ("validation", "passed" if v["passed"] else "FAILED"),
    ]
    q = manifest.get("quantization")
    if q:
        head = f"LM head int{q['lm_head_bits']}" if q.get("lm_head_quantized") else "LM head NOT quantized"
        emb = ", embedding int4" if q.get("embedding_quantized") else ""
        rows.append(("quantization", f"int{q['bits']} MatMulNBits block {q['block_size']}, {head}{emb}"))
    for key in ("ppl_fp32", "ppl_quantized", "ppl_ratio"):
        if key in m:
            rows.append((key, m[key]))
    for k, val in rows:
        summary.add_row(k, _fmt(val, ".4g"))
    out.print(summary)
    if manifest.get("benchmark"):
        render_benchmark(manifest["benchmark"])


def _output_kind(name: str) -> str:
    """present.3.key -> present keys; logits -> logits (a kind per graph output role)."""
    parts = name.split(".")
    if len(parts) == 3 and parts[1].isdigit():
        return f"{parts[0]} {parts[2]}s"
    return name


def _output_kinds(outputs: dict[str, Any]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for name in outputs:
        kinds.setdefault(_output_kind(name), []).append(name)
    return kinds


def _ok(d: dict[str, Any], atol: float) -> bool:
    return d["max"] <= atol


def _validation_summary(v: dict[str, Any], title: str) -> Any:
    """One row per kind of output (logits, present keys, present values): its worst output and how many
    are within atol. SmolLM2-135M's 30 layers alone give 60 present.* rows; every row is in the manifest."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("outputs", "n", "worst", "prefill", "decode", "ok"):
        table.add_column(col, justify="left" if col in ("outputs", "worst") else "right", no_wrap=True)
    for kind, names in _output_kinds(v["outputs"]).items():
        worst = max(names, key=lambda n: v["outputs"][n]["max"])
        d = v["outputs"][worst]
        within = sum(_ok(v["outputs"][n], v["atol"]) for n in names)
        ok = "[green]ok[/]" if within == len(names) else f"[red]{len(names) - within} over[/]"
        table.add_row(
            kind, str(len(names)), worst if len(names) > 1 else "", _fmt(d.get("prefill")), _fmt(d.get("decode")), ok
        )
    return table


def _validation_table(v: dict[str, Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in ("output", "prefill", "decode", "ok"):
        table.add_column(col, justify="left" if col == "output" else "right", no_wrap=True)
    for name, d in v["outputs"].items():
        table.add_row(
            name, _fmt(d.get("prefill")), _fmt(d.get("decode")), "[green]ok[/]" if _ok(d, v["atol"]) else "[red]over[/]"
        )
    return table


def render_benchmark(bench: dict[str, Any]) -> None:
    """One row per backend when the console is wide enough, else one column per backend. An encoder
    (feature-extraction) shows latency and sequences/s per batch x length; a decoder prefill and decode."""
    from gptctl.cli.common import print_fitting

    encoder = any(e.get("kind") == "encoder" or e.get("encoder_ms") for e in bench.values())
    title, rows = _encoder_rows(bench) if encoder else _decoder_rows(bench)
    rows = [
        ("active", lambda e: "[green]yes[/]"),
        ("session s", lambda e: _fmt(e.get("session_s"))),
        *rows,
        ("peak RSS MB", lambda e: _fmt(e.get("peak_rss_mb"), ".0f")),
        ("size MB", lambda e: _fmt(e.get("size_mb"), ".1f")),
    ]
    print_fitting(_bench_by_backend(bench, rows, title), _bench_by_metric(bench, rows, title))
    for name, e in bench.items():
        if not e.get("available"):
            out.print(f"[yellow]{name}:[/] not measured: {e.get('reason')}", highlight=False)


def _grid_cells(bench: dict[str, Any], grid: str) -> tuple[list[str], dict[str, Any]]:
    """The batch x length cells measured by any backend, and one measured grid (for its run counts)."""
    cells: list[str] = []
    for entry in bench.values():
        for key in entry.get(grid) or {}:
            if key not in ("iterations", "warmup") and key not in cells:
                cells.append(key)
    some = next((e[grid] for e in bench.values() if e.get(grid)), {})
    return cells, some


def _decoder_rows(bench: dict[str, Any]) -> tuple[str, list]:
    cells, pre = _grid_cells(bench, "prefill_ms")
    some = next((e for e in bench.values() if e.get("prefill_ms")), {})
    title = "benchmark"
    if pre:
        title += (
            f" (prefill ms p50/p90/p99: {pre.get('iterations')} timed runs after {pre.get('warmup')} warm-up; "
            f"decode: batch 1, {some.get('decode_tokens')} tokens, median of {some.get('decode_runs')})"
        )
    # (header, value per measured backend); an unavailable backend shows "-" in every row.
    rows = [(f"prefill {c}", lambda e, c=c: _prefill(e, c)) for c in cells]
    rows += [
        ("decode tok/s", lambda e: _fmt(e.get("decode_tokens_per_s"), ".1f")),
        (
            "vs pytorch",
            lambda e: f"{e['decode_speedup_vs_pytorch']:.2f}x" if e.get("decode_speedup_vs_pytorch") else "-",
        ),
    ]
    return title, rows


def _encoder_rows(bench: dict[str, Any]) -> tuple[str, list]:
    cells, grid = _grid_cells(bench, "encoder_ms")
    title = "benchmark: encoder"
    if grid:
        title += (
            f" (per batch x length: latency ms p50 and sequences/s; {grid.get('iterations')} timed runs after "
            f"{grid.get('warmup')} warm-up; vs pytorch: its p50 / this p50)"
        )
    rows = []
    for c in cells:
        rows += [
            (f"{c} ms p50", lambda e, c=c: _fmt(((e.get("encoder_ms") or {}).get(c) or {}).get("p50"), ".2f")),
            (
                f"{c} seq/s",
                lambda e, c=c: _fmt(((e.get("encoder_ms") or {}).get(c) or {}).get("sequences_per_s"), ".1f"),
            ),
            (f"{c} vs pytorch", lambda e, c=c: _speedup((e.get("encoder_speedup_vs_pytorch") or {}).get(c))),
        ]
    return title, rows


def _speedup(x: float | None) -> str:
    return f"{x:.2f}x" if x else "-"


def _prefill(e: dict[str, Any], cell: str) -> str:
    p = (e.get("prefill_ms") or {}).get(cell)
    return f"{p['p50']:.1f}/{p['p90']:.1f}/{p['p99']:.1f}" if p else "-"


def _bench_cell(e: dict[str, Any], value: Any, header: str) -> str:
    if e.get("available"):
        return value(e)
    return "[red]no[/]" if header == "active" else "-"


def _bench_by_backend(bench: dict[str, Any], rows: list, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("backend", no_wrap=True)
    for header, _ in rows:
        table.add_column(header, justify="left" if header == "active" else "right", no_wrap=True)
    for name, e in bench.items():
        table.add_row(name, *[_bench_cell(e, value, header) for header, value in rows])
    return table


def _bench_by_metric(bench: dict[str, Any], rows: list, title: str) -> Any:
    """Transposed for narrow output: a few backends fit 80 columns where a dozen metric columns do not."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("", no_wrap=True)
    for name in bench:
        table.add_column(name, justify="right", no_wrap=True)
    for header, value in rows:
        table.add_row(header, *[_bench_cell(e, value, header) for e in bench.values()])
    return table
