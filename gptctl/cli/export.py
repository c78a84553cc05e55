"""Export a model to a validated ONNX artifact (KV cache), optionally quantized and benchmarked.

Input: any `gptctl optimize` output (LoRA or prompt-tuning adapter, pruned model), a Hugging Face
directory, a .gguf file, or a Hub id from the local cache. Validation against PyTorch always runs and
fails the export (exit 1) over --atol. Exit codes: 0 ok, 1 validation or a required provider failed,
2 bad input.
"""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from gptctl.cli.common import handle_errors, out, print_json


def _bench_flags(provider, require_provider, threads, decode_tokens, prompt_lengths, batch_sizes, iterations, warmup):
    return {"provider": provider or None, "require_provider": require_provider or None, "threads": threads,
            "decode_tokens": decode_tokens, "prompt_lengths": prompt_lengths or None, "batch_sizes": batch_sizes or None,
            "iterations": iterations, "warmup": warmup}


_PROVIDER_HELP = "Execution providers to benchmark: cpu, cuda, tensorrt (comma-separated or repeated; default: every one that really initialises)."
_REQUIRE_HELP = "Fail (exit 1) unless these providers are really active (not silently on CPU)."


# The benchmark flags `export --benchmark` and `bench` share: one definition each (typer needs a
# fresh OptionInfo per signature, hence a function).
_BENCH_FLAGS = {
    "provider": ("--provider", _PROVIDER_HELP),
    "require_provider": ("--require-provider", _REQUIRE_HELP),
    "threads": ("--threads", "Intra-op threads (default: all cores)."),
    "decode_tokens": ("--decode-tokens", "Tokens per decode measurement (default 64)."),
    "prompt_lengths": ("--prompt-lengths", "Prefill sequence lengths (default 32,128)."),
    "batch_sizes": ("--batch-sizes", "Prefill batch sizes (default 1)."),
    "iterations": ("--iterations", "Timed runs per prefill cell (default 10)."),
    "warmup": ("--warmup", "Untimed warm-up runs (default 2)."),
}


def _bench_opt(name: str):
    flag, help = _BENCH_FLAGS[name]
    return typer.Option(None, flag, help=help)


@handle_errors
def export_command(
    model: str = typer.Option(..., "--model", "-m", help="Model dir, adapter dir, .gguf, pkg:PACKAGE/FILE or Hub id (local cache)."),
    output: str = typer.Option(..., "--output", "-o", help="Output directory (written atomically)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --output."),
    task: Optional[str] = typer.Option(None, "--task", help="text-generation-with-past (default), text-generation, feature-extraction."),
    atol: Optional[float] = typer.Option(None, "--atol", help="Max |ONNX - PyTorch| on any output (default 1e-3); over it the export fails."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default: optimum's for the architecture)."),
    optimize: bool = typer.Option(False, "--optimize", help="ONNX Runtime transformer fusions where supported."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="none, int8 or int4 (weight-only MatMulNBits, LM head included)."),
    block_size: Optional[int] = typer.Option(None, "--block-size", help="Weights per quantization scale (default 32)."),
    head_bits: Optional[int] = typer.Option(None, "--head-bits", help="LM head bits under --quantize int4: 8 (default; 4 bits cost SmolLM2 +7% perplexity) or 4."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp32 (default) or fp16 (for GPU providers)."),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Text (.txt, .jsonl 'text') for perplexity of fp32 vs quantized."),
    greedy_tokens: Optional[int] = typer.Option(None, "--greedy-tokens", help="Greedy tokens that must match PyTorch (default 16)."),
    benchmark: bool = typer.Option(False, "--benchmark", help="Benchmark the artifact per provider vs PyTorch eager."),
    provider: Optional[List[str]] = _bench_opt("provider"),
    require_provider: Optional[List[str]] = _bench_opt("require_provider"),
    threads: Optional[int] = _bench_opt("threads"),
    decode_tokens: Optional[int] = _bench_opt("decode_tokens"),
    prompt_lengths: Optional[List[str]] = _bench_opt("prompt_lengths"),
    batch_sizes: Optional[List[str]] = _bench_opt("batch_sizes"),
    iterations: Optional[int] = _bench_opt("iterations"),
    warmup: Optional[int] = _bench_opt("warmup"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code from the model's repo."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest (with validation and benchmark) as JSON."),
) -> None:
    """Export a model to a validated ONNX artifact (KV cache); optionally quantize and benchmark it."""
    from gptctl.bench import run_benchmark
    from gptctl.cli.progress import RichProgress
    from gptctl.export import export_model

    options: dict[str, Any] = {
        "model": model, "output": output, "overwrite": overwrite, "task": task, "atol": atol, "opset": opset,
        "optimize": optimize, "quantize": quantize, "block_size": block_size, "head_bits": head_bits, "dtype": dtype, "eval_data": eval_data,
        "greedy_tokens": greedy_tokens, "benchmark": benchmark, "trust_remote_code": trust_remote_code,
        **_bench_flags(provider, require_provider, threads, decode_tokens, prompt_lengths, batch_sizes, iterations, warmup),
    }
    with RichProgress(enabled=not json_out) as progress:
        manifest = export_model(options, progress=progress, benchmark=run_benchmark)
    if json_out:
        print_json(manifest)
        return
    render_export(manifest, output)


@handle_errors
def bench_command(
    artifact: str = typer.Argument(..., help="Directory written by `gptctl export`."),
    provider: Optional[List[str]] = _bench_opt("provider"),
    require_provider: Optional[List[str]] = _bench_opt("require_provider"),
    threads: Optional[int] = _bench_opt("threads"),
    decode_tokens: Optional[int] = _bench_opt("decode_tokens"),
    prompt_lengths: Optional[List[str]] = _bench_opt("prompt_lengths"),
    batch_sizes: Optional[List[str]] = _bench_opt("batch_sizes"),
    iterations: Optional[int] = _bench_opt("iterations"),
    warmup: Optional[int] = _bench_opt("warmup"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also measure the PyTorch eager baseline."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow custom model code for the baseline."),
    json_out: bool = typer.Option(False, "--json", help="Print the artifact's manifest with the fresh benchmark as JSON."),
) -> None:
    """Benchmark an existing export artifact per execution provider, with PyTorch eager as baseline."""
    from gptctl.bench import bench_artifact
    from gptctl.cli.progress import RichProgress

    options = {"model": artifact, "baseline": baseline, "trust_remote_code": trust_remote_code,
               **_bench_flags(provider, require_provider, threads, decode_tokens, prompt_lengths, batch_sizes, iterations, warmup)}
    with RichProgress(enabled=not json_out) as progress:
        manifest = bench_artifact(options, progress=progress)
    if json_out:
        print_json(manifest)
        return
    render_benchmark(manifest["benchmark"])


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return str(x)


def render_export(manifest: dict[str, Any], output: str) -> None:
    from rich.table import Table

    v = manifest["validation"]
    table = Table(title=f"validation: ONNX Runtime vs PyTorch (atol {v['atol']:g}; {v.get('checked_graph', 'model.onnx')})")
    for col in ("output", "prefill max |diff|", "decode max |diff|", "ok"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for name, d in v["outputs"].items():
        ok = d["max"] <= v["atol"]
        table.add_row(name, _fmt(d.get("prefill")), _fmt(d.get("decode")), "[green]ok[/]" if ok else "[red]over[/]")
    out.print(table)
    if v.get("greedy_match") is not None:
        out.print(f"greedy generation: {v['greedy_tokens']} tokens, " + ("[green]identical[/]" if v["greedy_match"] else "[red]differ[/]"))
    if v.get("lora_merge"):
        lm = v["lora_merge"]
        out.print(f"LoRA merge: adapter vs merged logits max |diff| {lm['max_abs_diff']:.3g} (atol {lm['atol']:g})")
    m = manifest["metrics"]
    summary = Table(title="artifact")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows = [("output", output), ("size (MB)", m["size_bytes"] / 1e6), ("export wall (s)", m["export_wall_s"]),
            ("max |diff|", v["max_abs_diff"]), ("validation", "passed" if v["passed"] else "FAILED")]
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


def render_benchmark(bench: dict[str, Any]) -> None:
    from rich.table import Table

    cells = []
    for entry in bench.values():
        for key in (entry.get("prefill_ms") or {}):
            if key not in ("iterations", "warmup") and key not in cells:
                cells.append(key)
    some = next((e for e in bench.values() if e.get("prefill_ms")), {})
    pre = some.get("prefill_ms") or {}
    title = "benchmark"
    if pre:
        title += f" (prefill: {pre.get('iterations')} timed runs after {pre.get('warmup')} warm-up; decode: batch 1, {some.get('decode_tokens')} tokens, median of {some.get('decode_runs')})"
    table = Table(title=title)
    cols = ["backend", "active", "session (s)"] + [f"prefill {c} p50/p90/p99 ms" for c in cells] + \
           ["decode tok/s", "vs pytorch", "peak RSS MB", "size MB"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("backend", "active") else "right")
    for name, e in bench.items():
        if not e.get("available"):
            table.add_row(name, "[red]no[/]", "-", *["-" for _ in cells], "-", "-", "-", "-")
            continue
        pre_cells = []
        for c in cells:
            p = (e.get("prefill_ms") or {}).get(c)
            pre_cells.append(f"{p['p50']:.1f}/{p['p90']:.1f}/{p['p99']:.1f}" if p else "-")
        speed = e.get("decode_speedup_vs_pytorch")
        table.add_row(name, "[green]yes[/]", _fmt(e.get("session_s")), *pre_cells, _fmt(e.get("decode_tokens_per_s"), ".1f"),
                      f"{speed:.2f}x" if speed else "-", _fmt(e.get("peak_rss_mb"), ".0f"), _fmt(e.get("size_mb"), ".1f"))
    out.print(table)
    for name, e in bench.items():
        if not e.get("available"):
            out.print(f"[yellow]{name}:[/] not measured: {e.get('reason')}", highlight=False)
