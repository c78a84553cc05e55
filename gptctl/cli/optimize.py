"""`gptctl optimize lora|prompt-tuning|prune`: flags -> options -> `gptctl.optimize.optimize` -> summary.

The flags are generated from the pydantic option models (one definition; recipes use the same
field names), so this module stays a thin border: no torch here, nothing printed by the library.
"""

from __future__ import annotations

import inspect
import os
import typing
from typing import Any, Optional

import typer

from gptctl.cli import common
from gptctl.optimize.options import LoraOptions, OptimizeOptions, PromptTuningOptions, PruneOptions

app = typer.Typer(help="Adapt (LoRA, prompt tuning) or shrink (pruning) a causal LM; perplexity before and after.",
                  no_args_is_help=True)

_HELP = {
    "lora": "Train LoRA adapters on your data; saves the adapter (and with --merge the merged model).",
    "prompt-tuning": "Learn virtual prompt tokens on your data; saves the peft adapter.",
    "prune": "Zero the least important attention/MLP weights (magnitude or wanda), permanently.",
}


def _flag_type(annotation: Any) -> Any:
    """The type typer parses a field as: lists as a comma-separated string, Literals as strings."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return Optional[_flag_type(inner[0])]
    if origin is list:
        return str
    if origin is typing.Literal:
        return str
    return annotation


def _describe(field) -> str:
    text = field.description or ""
    ann = field.annotation
    if typing.get_origin(ann) is typing.Literal:
        text += f" [{'|'.join(typing.get_args(ann))}]"
    return text


def _command(method: str, options_cls: type[OptimizeOptions]):
    params = []
    for name, field in options_cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        panel = (field.json_schema_extra or {}).get("panel")
        required = field.is_required()
        default = ... if required else field.default
        if isinstance(default, list):
            default = ",".join(default)
        kind = _flag_type(field.annotation)
        if kind is bool:
            option = typer.Option(default, flag, help=_describe(field), rich_help_panel=panel, show_default=False)
        else:
            option = typer.Option(default, flag, help=_describe(field), rich_help_panel=panel, show_default=not required)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
    params.append(inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                    default=typer.Option(False, "--json", help="Print the manifest as JSON to stdout.")))

    @common.handle_errors
    def command(**kwargs: Any) -> None:
        json_out = kwargs.pop("json_out")
        _quiet_libraries()
        from gptctl.cli.progress import RichProgress
        from gptctl.optimize import optimize
        from gptctl.options import parse_options

        opts = parse_options(options_cls, kwargs, what=f"{method} options")
        main = os.environ.get("RANK", "0") == "0"  # under `accelerate launch`, only rank 0 reports
        with RichProgress(enabled=main) as progress:
            manifest = optimize(method, opts, progress=progress)
        if not main:
            return
        if json_out:
            common.print_json(manifest)
        else:
            _summary(method, opts, manifest)

    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = _HELP[method]
    command.__name__ = method.replace("-", "_")
    return command


def _quiet_libraries() -> None:
    # Library chatter (GGUF conversion bars, advisory warnings) would drown the progress bars.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantisation bar
    import warnings

    warnings.filterwarnings("ignore", module="peft")
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", module="accelerate")


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
    if method == "prune":
        table.add_row("sparsity", f"requested {_fmt(m.get('sparsity_requested'))}, realised {_fmt(m.get('sparsity_realised'))} "
                                  f"over {_fmt(m.get('pruned_params'))} weights ({_fmt(m.get('sparsity_model'))} of the model)")
        layers = list(m.get("per_layer", {}).values())
        if layers:
            lo, hi = min(x["sparsity"] for x in layers), max(x["sparsity"] for x in layers)
            table.add_row("per layer", f"{len(layers)} layers, sparsity {lo:.4f} .. {hi:.4f}")
        table.add_row("prune time", f"{_fmt(m.get('prune_s'))} s" + (f" (+ {_fmt(m['calibration_s'])} s calibration)" if m.get("calibration_s") else ""))
    else:
        table.add_row("trainable", f"{_fmt(m.get('trainable_params'))} of {_fmt(m.get('total_params'))} ({_fmt(m.get('trainable_pct'))}%)")
        table.add_row("loss", f"{_fmt(m.get('loss_first'))} -> {_fmt(m.get('loss_last'))} over {_fmt(m.get('steps'))} steps")
        table.add_row("throughput", f"{_fmt(m.get('train_tokens_per_s'))} tokens/s ({_fmt(m.get('train_tokens'))} tokens, {_fmt(m.get('train_s'))} s)")
    table.add_row("wall time", f"{_fmt(m.get('wall_s'))} s (model load {_fmt(m.get('load_s'))} s)")
    table.add_row("manifest", f"{opts.output}/gptctl.json")
    common.out.print(table)


for _method, _cls in (("lora", LoraOptions), ("prompt-tuning", PromptTuningOptions), ("prune", PruneOptions)):
    app.command(_method, help=_HELP[_method])(_command(_method, _cls))
