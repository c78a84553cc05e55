"""Share the shape arithmetic that every layer of an exported decoder repeats.

A traced transformer computes the same shapes once per layer: `view(bsz, q_len, heads, head_dim)`
becomes Shape -> Gather -> Unsqueeze -> Concat -> Reshape on that layer's own tensor, and `repeat_kv`,
the rotary slices and the KV concat do the same. For SmolLM2-135M (30 layers) that is ~2,000 of the
~3,400 nodes ONNX Runtime runs per decode step, each a few microseconds of dispatch for a handful of
integers: about a third of a decode step on 2 CPU cores, more than the int4 matrix products.

ONNX Runtime's common-subexpression elimination would merge these chains, but it cannot see that
layer 7's hidden states have the same shape as layer 3's. This pass works that out with ONNX Runtime's
symbolic shape inference and points every `Shape` node at the first tensor in the graph with the
same symbolic shape; the chains then become identical and ONNX Runtime merges them when it creates
the session (measured on SmolLM2-135M int4: 3,393 -> 1,807 nodes per step; with --optimize 1,358).

Only shapes made of integers and the graph inputs' own dimension names (and arithmetic on them) are
used, never a dimension the inference had to invent or merge, so two tensors share a Shape only when
their shapes are equal for every input. The export's validation (ONNX Runtime against PyTorch, prefill
and decode, greedy tokens) runs on the rewritten graph, as it does on every graph gptctl writes.
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SMALL_INIT_BYTES = 1024  # larger initializers (weights) are only shapes to the inference


def share_shape_computations(proto: Any) -> dict[str, Any]:
    """Rewire `Shape` nodes in place (see the module doc); return a report for the manifest."""
    shapes = _symbolic_shapes(proto)
    if isinstance(shapes, str):
        return {"applied": False, "reason": shapes}
    symbols = {
        w
        for i in proto.graph.input
        for d in i.type.tensor_type.shape.dim
        if d.dim_param
        for w in _WORD.findall(d.dim_param)
    }
    exact = {
        name: s for name, s in shapes.items() if all(isinstance(d, int) or set(_WORD.findall(d)) <= symbols for d in s)
    }
    # The first tensor (in topological order: inputs, then node outputs) with each shape.
    first: dict[tuple, str] = {}
    for name in [i.name for i in proto.graph.input] + [o for n in proto.graph.node for o in n.output]:
        s = exact.get(name)
        if s is not None:
            first.setdefault(s, name)
    rewired = total = 0
    for node in proto.graph.node:
        if node.op_type != "Shape" or node.domain not in ("", "ai.onnx"):
            continue
        total += 1
        s = exact.get(node.input[0])
        if s is not None and first[s] != node.input[0]:
            # `first[s]` precedes node.input[0] in topological order, so it cannot depend on this node:
            # the graph stays acyclic and in order.
            node.input[0] = first[s]
            rewired += 1
    return {"applied": True, "shape_nodes": total, "shape_nodes_rewired": rewired, "distinct_shapes": len(first)}


def _symbolic_shapes(proto: Any) -> dict[str, tuple] | str:
    """{tensor name: shape as a tuple of ints and dimension strings}, or a reason it is unavailable."""
    import onnx
    from onnx import helper

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError as exc:  # pragma: no cover - onnxruntime always ships it
        return f"onnxruntime's symbolic shape inference is unavailable: {exc}"
    # The inference needs the weights' shapes, not their bytes: hand it a graph in which large
    # initializers are graph inputs (a copy of the nodes only, whatever the model's size).
    small, big = [], []
    for t in proto.graph.initializer:
        is_big = t.data_location == onnx.TensorProto.EXTERNAL or _nbytes(t) > _SMALL_INIT_BYTES
        (big if is_big else small).append(t)
    inputs = list(proto.graph.input) + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big]
    graph = helper.make_graph(list(proto.graph.node), proto.graph.name, inputs, list(proto.graph.output), small)
    light = helper.make_model(graph, opset_imports=list(proto.opset_import), ir_version=proto.ir_version)
    import contextlib
    import tempfile

    try:
        # When the inference is incomplete ONNX Runtime saves `sym_shape_infer_temp.onnx` into the current
        # directory before raising: run it from a scratch directory, so nothing lands outside --output.
        # (chdir is process-wide; an export runs its passes on one thread.)
        with tempfile.TemporaryDirectory(prefix="gptctl-shapes-") as scratch, contextlib.chdir(scratch):
            inferred = SymbolicShapeInference.infer_shapes(light, auto_merge=True, guess_output_rank=False)
    except Exception as exc:  # noqa: BLE001 - an unsupported op only means the pass is skipped
        return f"symbolic shape inference failed: {type(exc).__name__}: {str(exc)[:200]}"
    if inferred is None:
        return "symbolic shape inference gave no result"
    out: dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims: list = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                break
        else:
            out[vi.name] = tuple(dims)
    return out


def _nbytes(t: Any) -> int:
    if t.raw_data:
        return len(t.raw_data)
    return 4 * max(len(t.float_data), len(t.int32_data)) + 8 * max(len(t.int64_data), len(t.double_data))
