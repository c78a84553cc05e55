"""The ONNX export itself: optimum's exporter, then gptctl's post-processing in one load/save pass.

optimum-onnx builds the graph (its per-architecture OnnxConfig and model patcher, `torch.onnx.export`).
gptctl then, on the in-memory graph: ties the LM head back to the embedding (or leaves it untied for
quantization), folds a prompt-tuning soft prompt into the graph as a constant prefix KV cache, and saves
once (external data above 2 GB). optimum's own post-processing and dynamic-axis check are skipped: they
reload, re-check and re-save the whole model, and gptctl's validation runs every output anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput

MODEL_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"
# Protobuf's hard limit is 2 GiB; stay clear of it (graph structure and names add to the weights).
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2


def export_with_optimum(model: Any, output_dir: Path, *, task: str, opset: int | None = None) -> Path:
    """Export a loaded transformers model with optimum's ONNX exporter; return the .onnx path."""
    from optimum.exporters.onnx.convert import export_models
    from optimum.exporters.onnx.utils import _get_submodels_and_onnx_configs
    from optimum.exporters.tasks import TasksManager

    TasksManager.standardize_model_attributes(model)
    model_type = getattr(model.config, "export_model_type", None) or model.config.model_type
    check_export_task(model_type, task, (getattr(model.config, "architectures", None) or [None])[0])
    onnx_config, models_and_configs = _get_submodels_and_onnx_configs(
        model=model,
        task=task,
        monolith=False,
        custom_onnx_configs={},
        custom_architecture=False,
        float_dtype="fp32",
        fn_get_submodels=None,
        preprocessors=None,
        _variant="default",
        library_name="transformers",
        model_kwargs=None,
    )
    if len(models_and_configs) != 1:
        raise BadInput(
            f"task {task!r} exports {len(models_and_configs)} graphs for {model_type}",
            "gptctl ships one-graph decoders and encoders",
        )
    opset = opset or onnx_config.DEFAULT_ONNX_OPSET
    output_dir.mkdir(parents=True, exist_ok=True)
    name = next(iter(models_and_configs))
    import warnings

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # The tracer's warnings are about control flow optimum's patcher already handles; validation
            # checks the result on every output instead.
            warnings.simplefilter("ignore")
            export_models(
                models_and_onnx_configs=models_and_configs,
                output_dir=output_dir,
                opset=opset,
                output_names=[name + ".onnx"],
                device="cpu",
                disable_dynamic_axes_fix=True,
                dtype="fp32",
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return output_dir / (name + ".onnx")


def optimum_tasks(model_type: str) -> set[str]:
    """The tasks optimum's ONNX exporter supports for a transformers model_type (empty if it knows none)."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the architectures' ONNX configs)
    from optimum.exporters.tasks import TasksManager

    if model_type not in TasksManager._SUPPORTED_MODEL_TYPE:
        return set()
    return set(TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers"))


def check_export_task(model_type: str, task: str, architecture: str | None = None) -> None:
    """BadInput unless `task` can be exported for `model_type`, naming the gptctl `--task` that fits.

    optimum lists a dozen tasks for an encoder (fill-mask, question-answering...); gptctl exports three
    (`gptctl.export.options.TASKS`), so only those are offered. An encoder under the default
    text-generation task (a BERT such as all-MiniLM-L6-v2) is told to pass --task feature-extraction.
    """
    from gptctl.export.options import TASKS

    supported = optimum_tasks(model_type)
    if task in supported:
        return
    fitting = [t for t in TASKS if t in supported]
    if fitting == ["feature-extraction"]:
        raise BadInput(
            f"this is an encoder ({architecture or model_type}): pass --task feature-extraction",
            f"gptctl exports a {model_type!r} model only as feature-extraction (hidden states), not {task}",
        )
    raise BadInput(
        f"gptctl cannot export a {model_type!r} model for task {task!r}",
        f"pass --task {' or '.join(fitting)}"
        if fitting
        else f"optimum's ONNX exporter has none of gptctl's tasks ({', '.join(TASKS)}) for {model_type}",
    )


def check_directory_task(directory: Path, task: str) -> None:
    """`check_export_task` for an HF directory before any model is loaded: only an encoder under a
    text-generation task is refused here (the export itself checks every other case on the loaded model)."""
    import json

    if task == "feature-extraction":
        return
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return  # model_source reports an unreadable config where it loads it
    model_type = config.get("model_type")
    supported = optimum_tasks(model_type) if isinstance(model_type, str) else set()
    if supported and not any(t.startswith("text-generation") for t in supported):
        check_export_task(model_type, task, (config.get("architectures") or [None])[0])


def load_onnx(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=True)


def save_onnx(proto: Any, path: Path) -> list[Path]:
    """Save a graph as `path` (+ `model.onnx_data` when the weights exceed protobuf's 2 GB); return the files."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data_path = path.with_name(path.name + "_data")
    for stale in (path, data_path):
        if stale.exists():
            stale.unlink()
    weight_bytes = sum(_tensor_bytes(t) for t in proto.graph.initializer)
    if weight_bytes > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            proto,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_path.name,
            size_threshold=1024,
            convert_attribute=False,
        )
        return [path, data_path]
    onnx.save_model(proto, str(path))
    return [path]


def _tensor_bytes(t: Any) -> int:
    import numpy as np
    from onnx import helper

    if t.raw_data:
        return len(t.raw_data)
    n = int(np.prod(t.dims)) if len(t.dims) else 1
    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except Exception:
        itemsize = 4
    return n * itemsize


def tie_lm_head(proto: Any) -> list[str]:
    """Replace an LM-head weight that is an exact transposed copy of the embedding by Transpose(embedding).

    `torch.onnx.export` writes a tied LM head as a second, transposed copy of the embedding matrix
    (113 MB of the 538 MB for SmolLM2-135M). Returns the names of the removed duplicates.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    gather_tables = {n.input[0] for n in proto.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    removed: list[str] = []
    for table in gather_tables:
        emb = numpy_helper.to_array(inits[table])
        if emb.ndim != 2:
            continue
        for node in proto.graph.node:
            if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1] in removed:
                continue
            cand = inits[node.input[1]]
            if list(cand.dims) != [emb.shape[1], emb.shape[0]] or cand.data_type != inits[table].data_type:
                continue
            if not np.array_equal(numpy_helper.to_array(cand), emb.T):
                continue
            dup = node.input[1]
            transposed = f"{table}/transposed_for_lm_head"
            proto.graph.node.insert(
                0, helper.make_node("Transpose", [table], [transposed], perm=[1, 0], name="gptctl/tie_lm_head")
            )
            for other in proto.graph.node:
                for i, name in enumerate(other.input):
                    if name == dup:
                        other.input[i] = transposed
            proto.graph.initializer.remove(cand)
            removed.append(dup)
    return removed


def fold_prompt_prefix(proto: Any, prefix: Sequence[tuple[Any, Any]]) -> int:
    """Fold a prompt-tuning soft prompt into a decoder graph as a constant prefix KV cache.

    `prefix[i] = (key, value)` is layer i's cache for the virtual tokens, shape [1, heads, P, head_dim],
    computed by running the base model on the soft prompt. Inside the graph every past input becomes
    concat(prefix, past), the attention mask gets P leading ones, position ids move by P, and every present
    output drops its first P positions again. Callers (ORTModelForCausalLM, gptctl run) see a plain
    decoder whose tokens are conditioned on the prompt exactly as in peft's forward.
    Returns P.
    """
    graph = proto.graph
    num_virtual = int(prefix[0][0].shape[2])
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    if "input_ids" not in inputs or not any(n.startswith("past_key_values.") for n in inputs):
        raise BadInput(
            "a prompt-tuning adapter needs the text-generation-with-past task",
            "drop --task or pass --task text-generation-with-past",
        )
    fold = _PrefixFold(num_virtual)
    fold.cache(prefix, inputs, outputs)
    fold.mask_and_positions(inputs)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in fold.renames:
                node.input[i] = fold.renames[name]
    tail = fold.slice_presents(graph, outputs)
    nodes = fold.head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(fold.inits)
    return num_virtual


class _PrefixFold:
    """The nodes and constants `fold_prompt_prefix` adds: `head` runs before the graph, `renames` point
    the graph's inputs at their prefixed versions."""

    def __init__(self, num_virtual: int):
        from onnx import helper

        self.num_virtual = num_virtual
        self.inits: list[Any] = []
        self.renames: dict[str, str] = {}
        # batch = Shape(input_ids)[0:1], so the constant prefix can be expanded to the batch.
        self.head: list[Any] = [
            helper.make_node(
                "Shape", ["input_ids"], ["gptctl/prompt/batch"], start=0, end=1, name="gptctl/prompt/batch"
            )
        ]

    def const(self, name: str, array: Any) -> str:
        import numpy as np
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def cache(self, prefix: Sequence[tuple[Any, Any]], inputs: set[str], outputs: set[str]) -> None:
        """past_key_values.L.key/value -> concat(expanded prefix, past)."""
        import numpy as np
        from onnx import helper

        for layer, (key, value) in enumerate(prefix):
            for kind, tensor in (("key", key), ("value", value)):
                name = f"past_key_values.{layer}.{kind}"
                if name not in inputs:
                    raise BadInput(
                        f"exported graph has no input {name}",
                        "the architecture's cache layout is not supported for prompt folding",
                    )
                t = np.ascontiguousarray(np.asarray(tensor, dtype=np.float32))
                c = self.const(f"gptctl/prompt/{layer}.{kind}", t)
                shp = self.const(f"gptctl/prompt/{layer}.{kind}/dims", np.array(t.shape[1:], dtype=np.int64))
                full_shape = f"gptctl/prompt/{layer}.{kind}/shape"
                expanded = f"gptctl/prompt/{layer}.{kind}/expanded"
                joined = f"{name}/with_prompt"
                self.head += [
                    helper.make_node("Concat", ["gptctl/prompt/batch", shp], [full_shape], axis=0),
                    helper.make_node("Expand", [c, full_shape], [expanded]),
                    helper.make_node("Concat", [expanded, name], [joined], axis=2),
                ]
                self.renames[name] = joined
                present = f"present.{layer}.{kind}"
                if present not in outputs:
                    raise BadInput(
                        f"exported graph has no output {present}",
                        "the architecture's cache layout is not supported for prompt folding",
                    )

    def mask_and_positions(self, inputs: set[str]) -> None:
        """P leading ones on the attention mask; position ids moved by P."""
        import numpy as np
        from onnx import helper

        num_virtual = self.num_virtual
        if "attention_mask" in inputs:
            ones = self.const("gptctl/prompt/mask_ones", np.ones((1, num_virtual), dtype=np.int64))
            mshape = self.const("gptctl/prompt/mask_dims", np.array([num_virtual], dtype=np.int64))
            self.head += [
                helper.make_node("Concat", ["gptctl/prompt/batch", mshape], ["gptctl/prompt/mask_shape"], axis=0),
                helper.make_node("Expand", [ones, "gptctl/prompt/mask_shape"], ["gptctl/prompt/mask_prefix"]),
                helper.make_node(
                    "Concat", ["gptctl/prompt/mask_prefix", "attention_mask"], ["attention_mask/with_prompt"], axis=1
                ),
            ]
            self.renames["attention_mask"] = "attention_mask/with_prompt"
        if "position_ids" in inputs:
            offset = self.const("gptctl/prompt/position_offset", np.array(num_virtual, dtype=np.int64))
            self.head.append(helper.make_node("Add", ["position_ids", offset], ["position_ids/with_prompt"]))
            self.renames["position_ids"] = "position_ids/with_prompt"

    def slice_presents(self, graph: Any, outputs: set[str]) -> list[Any]:
        """Present outputs: the graph computes concat(prefix, past, new); callers get (past, new)."""
        import numpy as np
        from onnx import helper

        starts = self.const("gptctl/prompt/slice_start", np.array([self.num_virtual], dtype=np.int64))
        ends = self.const("gptctl/prompt/slice_end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
        axes = self.const("gptctl/prompt/slice_axis", np.array([2], dtype=np.int64))
        tail = []
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name.startswith("present.") and name in outputs:
                    full = f"{name}/with_prompt"
                    node.output[i] = full
                    for other in graph.node:
                        for j, inp in enumerate(other.input):
                            if inp == name:
                                other.input[j] = full
                    tail.append(helper.make_node("Slice", [full, starts, ends, axes], [name]))
        return tail


def prompt_prefix_cache(peft_model: Any) -> list[tuple[Any, Any]]:
    """Run the base model on a prompt-tuning adapter's soft prompt; return per-layer (key, value) arrays."""
    import torch

    base = peft_model.get_base_model()
    with torch.no_grad():
        prompts = peft_model.get_prompt(batch_size=1)
        dtype = next(base.parameters()).dtype
        out = base(inputs_embeds=prompts.to(dtype), use_cache=True)
    return [(k.float().numpy(), v.float().numpy()) for k, v in cache_layers(out.past_key_values)]


def cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """(key, value) tensors per layer from any transformers cache object or legacy tuple."""
    if hasattr(cache, "layers") and cache.layers and hasattr(cache.layers[0], "keys"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache, strict=False))
    if hasattr(cache, "to_legacy_cache"):
        return [tuple(x) for x in cache.to_legacy_cache()]
    return [tuple(x) for x in cache]


def convert_fp16(proto: Any) -> Any:
    """Convert weights and activations to float16 (inputs/outputs included), for GPU providers."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=False, disable_shape_infer=True)
