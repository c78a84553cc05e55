"""The fast decoder graph for Llama-family models, built directly from the PyTorch weights.

ONNX Runtime decodes a 135M model on CPU op by op: at batch 1 a step is mostly kernel launches, not FLOPs.
optimum's graph spends ~60 ops per layer on rotary, masks, cache concatenation and RMSNorm arithmetic; this
one 14, close to the shape onnxruntime-genai's model builder uses (SmolLM2-135M int4, as ONNX Runtime
runs it after its own fusions: 1,807 nodes per step with optimum's graph, 647 with this one):

    SkipSimplifiedLayerNormalization -> MatMul(q|k|v) -> Split -> RotaryEmbedding(q), RotaryEmbedding(k)
    -> GroupQueryAttention(cache) -> MatMul(o) -> SkipSimplifiedLayerNormalization -> MatMul(gate|up)
    -> Split -> SiLU * up -> MatMul(down)

One fused q|k|v and one fused gate|up weight per layer also make the int4 quantizer write fewer, larger
MatMulNBits (blocks run along the input dimension, so weights on a 4-bit grid stay on it). The inputs and
outputs are optimum's (input_ids, attention_mask, position_ids, past_key_values.N.key/value [batch,
kv_heads, past, head_dim] -> logits, present.N.key/value), so gptctl's runtime and optimum's
ORTModelForCausalLM run either graph unchanged.

Padding: GroupQueryAttention reads a row's cache as its first seqlens_k + 1 positions (right padding);
gptctl left-pads. So every row is given the full width (seqlens_k = total - 1) and the padded columns are
masked by an additive attention_bias built from attention_mask; the cache then holds exactly what
optimum's graph would, padding included, and rows prefilled alone can be joined into one decode batch.

Rotary: separate RotaryEmbedding ops, not GroupQueryAttention's own (do_rotary). On CPU (ORT 1.31) that gives
every row of a prompt position_ids[0, 0] + column (decode steps read each row's own id), which is wrong for
the rows of a left-padded batch; RotaryEmbedding reads every position id. Measured on SmolLM2-135M int4
(2 threads, 128 tokens, 5 interleaved rounds): the fused-rotary variant decoded at 41.7 tok/s median
against 41.6 for this graph and 31.6 for optimum's, so exactness costs nothing measurable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MODEL_TYPES = ("llama", "mistral", "qwen2")
# Rotary types whose frequencies are fixed once the model is loaded, so cos/sin can be tabulated once
# ("dynamic" and "longrope" rescale with the sequence length).
STATIC_ROPE = ("default", "linear", "llama3", "yarn")
# cos/sin rows: the model's context, but at least this many, as transformers (and optimum's graph) rotate any
# position while a table ends; perplexity windows (512 tokens) ran past tiny test models' 128-token context.
MIN_TABLE_POSITIONS = 4096
DEFAULT_OPSET = 18  # what optimum picks for Llama; every op below exists from opset 14
_NEG = float(np.finfo(np.float32).min)  # the additive mask value transformers uses for fp32


def unsupported_reason(model: Any) -> str | None:
    """None when `build_fast_graph` can express `model` exactly; else why not (recorded as the skip reason)."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"model type {model_type!r}: the fast layout covers {', '.join(MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}: the fast layout implements SiLU only"
    rotary = getattr(getattr(model, "model", None), "rotary_emb", None)
    if rotary is None:
        return "no rotary embedding module at model.model.rotary_emb"
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type not in STATIC_ROPE:
        return f"rope type {rope_type!r} changes with the sequence length; the fast layout tabulates it once"
    if float(getattr(config, "partial_rotary_factor", 1.0) or 1.0) != 1.0:
        return "partial rotary embedding is not implemented in the fast layout"
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    if head_dim % 16:
        # ONNX Runtime 1.31's CPU GroupQueryAttention refuses other sizes ("head_size shall be a multiple of 16").
        return f"head size {head_dim} is not a multiple of 16, which GroupQueryAttention needs on CPU"
    window = getattr(config, "sliding_window", None)
    uses_window = model_type == "mistral" or bool(getattr(config, "use_sliding_window", False))
    if uses_window and window is not None and window < config.max_position_embeddings:
        return f"sliding-window attention ({window}) is not implemented in the fast layout"
    for i, layer in enumerate(model.model.layers):
        missing = [p for p in _LAYER_PARTS if _module(layer, p) is None]
        if missing:
            return f"layer {i} has no {', '.join(missing)}"
        if any(type(_module(layer, p)).__name__ != "Linear" for p in _LAYER_PARTS[:7]):
            return f"layer {i} has non-Linear projections (already quantized?)"
        a, kv = layer.self_attn, int(config.num_key_value_heads)
        widths = [a.q_proj.out_features, a.k_proj.out_features, a.v_proj.out_features]
        if widths != [heads * head_dim, kv * head_dim, kv * head_dim]:
            return f"layer {i}: q/k/v widths {widths} are not the config's {heads}/{kv} heads of {head_dim}"
    return None


_LAYER_PARTS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
    "input_layernorm",
    "post_attention_layernorm",
)


def _module(root: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def _array(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


_MS_OPS = ("GroupQueryAttention", "SkipSimplifiedLayerNormalization", "RotaryEmbedding")


class _Builder:
    """Nodes and initializers of the graph being built; `node` returns the node's (first) output name."""

    def __init__(self):
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._consts: dict[tuple, str] = {}

    def init(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value: Any, dtype: Any) -> str:
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.init(f"gptctl/fast/const_{len(self._consts)}", array)
        return self._consts[key]

    def node(self, op: str, inputs: list[str], name: str, outputs: list[str] | None = None, **attrs) -> str:
        from onnx import helper

        domain = "com.microsoft" if op in _MS_OPS else ""
        outputs = outputs or [f"{name}/output_0"]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))
        return outputs[0]

    def linear(self, x: str, name: str, weights: list[Any], biases: list[Any]) -> str:
        """x @ concat(W_i^T) (+ concat(b_i)): one MatMul for projections that read the same input."""
        w = np.concatenate([_array(m) for m in weights], axis=0).T
        out = self.node("MatMul", [x, self.init(name.replace("/", ".").strip(".") + ".weight", w)], f"/{name}/MatMul")
        if any(b is not None for b in biases):
            b = np.concatenate(
                [
                    _array(b) if b is not None else np.zeros(m.shape[0], np.float32)
                    for b, m in zip(biases, weights, strict=True)
                ]
            )
            out = self.node("Add", [out, self.init(name.replace("/", ".").strip(".") + ".bias", b)], f"/{name}/Add")
        return out


def build_fast_graph(model: Any, *, opset: int | None = None) -> Any:
    """The fast decoder graph (an onnx ModelProto) of a model `unsupported_reason` accepts."""
    config = model.config
    layers = model.model.layers
    attn = layers[0].self_attn
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
    head_dim = int(getattr(attn, "head_dim", None) or config.hidden_size // heads)
    b = _Builder()
    emb = model.get_input_embeddings().weight
    x = b.node("Gather", [b.init("model.embed_tokens.weight", _array(emb)), "input_ids"], "/model/embed_tokens/Gather")
    masks = _attention_inputs(b)
    cos, sin = _rotary_tables(model, head_dim, max(int(config.max_position_embeddings), MIN_TABLE_POSITIONS))
    rotary = {"cos": b.init("cos_cache", cos), "sin": b.init("sin_cache", sin), "head_dim": head_dim}
    norm = layers[0].input_layernorm
    h = b.node(
        "SimplifiedLayerNormalization",
        [x, b.init("model.layers.0.input_layernorm.weight", _array(norm.weight))],
        "/model/layers.0/input_layernorm/LayerNorm",
        axis=-1,
        epsilon=float(norm.variance_epsilon),
    )
    residual = x
    gqa = {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(getattr(attn, "scaling", head_dim**-0.5))}
    # Each norm takes the block output and the residual stream, and hands on their sum as the new residual.
    norms = [(f"model.layers.{i + 1}.input_layernorm", layers[i + 1].input_layernorm) for i in range(len(layers) - 1)]
    norms.append(("model.norm", model.model.norm))
    for i, layer in enumerate(layers):
        a = _attention_block(b, i, layer, h, masks, rotary, gqa)
        post = f"model.layers.{i}.post_attention_layernorm"
        h, residual = _skip_norm(b, a, residual, layer.post_attention_layernorm, post)
        h, residual = _skip_norm(b, _mlp_block(b, i, layer, h), residual, norms[i][1], norms[i][0])
    head = model.get_output_embeddings()
    b.linear(h, "lm_head", [head.weight], [getattr(head, "bias", None)])
    b.nodes[-1].output[0] = "logits"
    vocab = int(head.weight.shape[0])
    return _model_proto(b, len(layers), kv_heads, head_dim, vocab, opset or DEFAULT_OPSET)


def _attention_inputs(b: _Builder) -> dict[str, str]:
    """seqlens_k, total_sequence_length and the additive padding bias [batch, 1, seq, total] from the mask.

    Every row gets the full width (seqlens_k = total - 1, as if nothing were padded) and the padded columns
    a bias of float32's minimum, so a left-padded row attends to exactly its own tokens (see the module doc).
    """
    from onnx import TensorProto

    p = "/model/attn_mask"
    mask_shape = b.node("Shape", ["attention_mask"], f"{p}/Shape")  # [batch, total]
    ids_shape = b.node("Shape", ["input_ids"], f"{p}/Shape_ids")  # [batch, seq]
    batch = b.node("Gather", [mask_shape, b.const([0], np.int64)], f"{p}/batch")
    seq = b.node("Gather", [ids_shape, b.const([1], np.int64)], f"{p}/seq")
    total_1d = b.node("Gather", [mask_shape, b.const([1], np.int64)], f"{p}/total_1d")
    total64 = b.node("Gather", [mask_shape, b.const(1, np.int64)], f"{p}/total64")
    total = b.node("Cast", [total64], f"{p}/total", to=TensorProto.INT32)
    last = b.node("Sub", [total, b.const(1, np.int32)], f"{p}/last")
    seqlens = b.node("Expand", [last, batch], f"{p}/seqlens_k")
    maskf = b.node("Cast", ["attention_mask"], f"{p}/Cast", to=TensorProto.FLOAT)
    pad = b.node("Sub", [b.const(1.0, np.float32), maskf], f"{p}/padding")
    bias2 = b.node("Mul", [pad, b.const(_NEG, np.float32)], f"{p}/bias_2d")
    bias4 = b.node("Unsqueeze", [bias2, b.const([1, 2], np.int64)], f"{p}/bias_4d")
    target = b.node("Concat", [batch, b.const([1], np.int64), seq, total_1d], f"{p}/bias_shape", axis=0)
    bias = b.node("Expand", [bias4, target], f"{p}/attention_bias")
    return {"seqlens_k": seqlens, "total": total, "bias": bias}


def _rotary_tables(model: Any, head_dim: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [positions, head_dim / 2] from the model's own rotary module (so every static scaling type is
    tabulated exactly as transformers computes it)."""
    import torch

    with torch.no_grad():
        dummy = torch.zeros(1, dtype=torch.float32)
        cos, sin = model.model.rotary_emb(dummy, torch.arange(positions)[None, :])
    # transformers repeats the frequencies twice (rotate_half); RotaryEmbedding takes one half.
    half = head_dim // 2
    return _array(cos[0, :, :half]), _array(sin[0, :, :half])


def _attention_block(b: _Builder, i: int, layer: Any, h: str, masks: dict, rotary: dict, gqa: dict) -> str:
    a = layer.self_attn
    p = f"model/layers.{i}/self_attn"
    projections = [a.q_proj, a.k_proj, a.v_proj]
    qkv = b.linear(h, f"{p}/qkv_proj", [m.weight for m in projections], [m.bias for m in projections])
    widths = [gqa["num_heads"] * rotary["head_dim"]] + [gqa["kv_num_heads"] * rotary["head_dim"]] * 2
    q, k, v = (f"/{p}/Split/{n}" for n in "qkv")
    b.node("Split", [qkv, b.const(widths, np.int64)], f"/{p}/Split", outputs=[q, k, v], axis=-1)
    tables = ["position_ids", rotary["cos"], rotary["sin"]]
    q = b.node("RotaryEmbedding", [q, *tables], f"/{p}/q_rotary", num_heads=gqa["num_heads"], interleaved=0)
    k = b.node("RotaryEmbedding", [k, *tables], f"/{p}/k_rotary", num_heads=gqa["kv_num_heads"], interleaved=0)
    past = [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
    # Inputs 7-9 (cos, sin, position ids for do_rotary) stay empty: rotary ran above (see the module doc).
    out = b.node(
        "GroupQueryAttention",
        [q, k, v, *past, masks["seqlens_k"], masks["total"], "", "", "", masks["bias"]],
        f"/{p}/GroupQueryAttention",
        outputs=[f"/{p}/GroupQueryAttention/output_0", f"present.{i}.key", f"present.{i}.value"],
        **gqa,
    )
    return b.linear(out, f"{p}/o_proj", [a.o_proj.weight], [a.o_proj.bias])


def _mlp_block(b: _Builder, i: int, layer: Any, h: str) -> str:
    mlp = layer.mlp
    p = f"model/layers.{i}/mlp"
    inter = int(mlp.gate_proj.weight.shape[0])
    gate_up = b.linear(
        h, f"{p}/gate_up_proj", [mlp.gate_proj.weight, mlp.up_proj.weight], [mlp.gate_proj.bias, mlp.up_proj.bias]
    )
    gate, up = f"/{p}/Split/gate", f"/{p}/Split/up"
    b.node("Split", [gate_up, b.const([inter, inter], np.int64)], f"/{p}/Split", outputs=[gate, up], axis=-1)
    sig = b.node("Sigmoid", [gate], f"/{p}/act_fn/Sigmoid")
    silu = b.node("Mul", [gate, sig], f"/{p}/act_fn/Mul")
    act = b.node("Mul", [silu, up], f"/{p}/Mul")
    return b.linear(act, f"{p}/down_proj", [mlp.down_proj.weight], [mlp.down_proj.bias])


def _skip_norm(b: _Builder, x: str, residual: str, norm: Any, name: str) -> tuple[str, str]:
    """(RMSNorm(x + residual), x + residual) in one SkipSimplifiedLayerNormalization."""
    p = "/" + name.replace(".layers.", "/layers.").replace(".", "/") + "/SkipLayerNorm"
    normed, summed = f"{p}/output_0", f"{p}/output_3"
    b.node(
        "SkipSimplifiedLayerNormalization",
        [x, residual, b.init(name + ".weight", _array(norm.weight))],
        p,
        outputs=[normed, "", "", summed],
        epsilon=float(norm.variance_epsilon),
    )
    return normed, summed


def _model_proto(b: _Builder, layers: int, kv_heads: int, head_dim: int, vocab: int, opset: int) -> Any:
    from onnx import TensorProto, helper

    def info(name: str, elem: int, dims: list) -> Any:
        return helper.make_tensor_value_info(name, elem, dims)

    past, total = "past_sequence_length", "past_sequence_length + sequence_length"
    inputs = [
        info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        info("attention_mask", TensorProto.INT64, ["batch_size", total]),
        info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    for i in range(layers):
        for kind in ("key", "value"):
            inputs.append(
                info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, ["batch_size", kv_heads, past, head_dim])
            )
            outputs.append(info(f"present.{i}.{kind}", TensorProto.FLOAT, ["batch_size", kv_heads, total, head_dim]))
    graph = helper.make_graph(b.nodes, "gptctl_fast_decoder", inputs, outputs, b.inits)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="gptctl")
    proto.ir_version = 8 if opset < 19 else 9  # what ONNX Runtime 1.17+ reads; onnx's newest may be too new
    return proto
