"""fp32 decode of SmolLM2-135M against its memory roof, and against a matmul-only floor, interleaved.

The memory roof is fp32 weight bytes / read bandwidth. This machine's measured bandwidth moves by
+-20% from minute to minute, so this script measures three things in alternation, round after
round, and reports the median of each and of the per-round ratios:
  * read bandwidth: ONNX Runtime's MatMul streaming 256 MB of weights (best of 3);
  * the matmul-only floor: one ONNX graph holding exactly a decode step's weight products (per
    layer q, k, v, o, gate, up, down at SmolLM2-135M's shapes, 30 layers, the 576 x 49152 LM head),
    chained by one Add per layer and nothing else: what fp32 decode would cost if it were only its
    weight products, in ONNX Runtime (median of 5 runs);
  * an exported artifact's decode step (gptctl's own loop, past length 64; median of 5 steps).
decode/floor says how much of a step is not weight products (attention, norms, rotary, shape
arithmetic, dispatch); floor/roof says how close ONNX Runtime's own MatMul gets to the bandwidth at
these sizes.

    python benchmarks/bench_roof.py [--artifact runs/bench_export/fp32-optimize] [--threads 2] [--rounds 12]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HIDDEN, KV, FFN, LAYERS, VOCAB = 576, 192, 1536, 30, 49152  # SmolLM2-135M


def build():
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, outputs = [], [], []

    def weight(name, k, n):
        inits.append(numpy_helper.from_array((rng.standard_normal((k, n)) * 0.02).astype(np.float32), name))
        return name

    y = "x"
    for i in range(LAYERS):
        for proj, k, n, src in (
            ("q", HIDDEN, HIDDEN, y),
            ("k", HIDDEN, KV, y),
            ("v", HIDDEN, KV, y),
            ("gate", HIDDEN, FFN, y),
            ("up", HIDDEN, FFN, y),
        ):
            nodes.append(helper.make_node("MatMul", [src, weight(f"w{i}{proj}", k, n)], [f"{proj}{i}"]))
        nodes.append(helper.make_node("MatMul", [f"q{i}", weight(f"w{i}o", HIDDEN, HIDDEN)], [f"o{i}"]))
        nodes.append(helper.make_node("MatMul", [f"up{i}", weight(f"w{i}down", FFN, HIDDEN)], [f"down{i}"]))
        nodes.append(helper.make_node("Add", [f"o{i}", f"down{i}"], [f"y{i}"]))
        outputs += [f"k{i}", f"v{i}", f"gate{i}"]  # keep every product alive
        y = f"y{i}"
    nodes.append(helper.make_node("MatMul", [y, weight("head", HIDDEN, VOCAB)], ["logits"]))
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ["logits"] + outputs]
    graph = helper.make_graph(
        nodes, "matmul_floor", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN])], outs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model, sum(len(t.raw_data) for t in inits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default="runs/bench_export/fp32-optimize", help="an fp32 `gptctl export` directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    if not (Path(args.artifact) / "model.onnx").is_file():
        sys.exit(
            f"{args.artifact}/model.onnx not found: run benchmarks/bench_export.py first (it writes it), "
            "or pass --artifact with an fp32 `gptctl export` directory"
        )
    import numpy as np
    import onnxruntime as ort
    from bench_export import matmul_read_gbs

    from gptctl.runtime.session import OrtCausalLM

    model, weight_bytes = build()
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    floor_session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.ones((1, HIDDEN), dtype=np.float32)
    lm, _ = OrtCausalLM.from_path(Path(args.artifact) / "model.onnx", "cpu", threads=args.threads)
    prompt = np.random.default_rng(0).integers(100, 1000, (1, 64))
    out, past = lm.forward(prompt)
    token = np.array([[int(out["logits"][0, -1].argmax())]])

    def floor_s() -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            floor_session.run(None, {"x": x})
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def decode_s() -> float:
        times = []
        for _ in range(5):  # the same step (past length 64) each time: no cache growth between samples
            t0 = time.perf_counter()
            lm.forward(token, past, past_len=64)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    floor_s(), decode_s()  # warm-up
    rows = []
    for i in range(args.rounds):
        bw = matmul_read_gbs(args.threads, repeats=3)
        f, d = floor_s(), decode_s()
        roof = bw * 1e9 / weight_bytes
        rows.append((bw, roof, 1 / f, 1 / d))
        print(
            f"round {i + 1:2d}: read {bw:5.1f} GB/s  roof {roof:5.1f} tok/s  floor {1 / f:5.1f} tok/s  "
            f"decode {1 / d:5.1f} tok/s  decode/roof {roof and (1 / d) / roof:4.0%}",
            flush=True,
        )
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    ratio = lambda a, b: statistics.median(r[a] / r[b] for r in rows)  # noqa: E731
    print(
        f"\n{LAYERS * 7 + 1} weight products, {weight_bytes / 1e6:.0f} MB fp32, {args.threads} threads, {args.rounds} rounds; "
        f"artifact {args.artifact}"
    )
    print(
        f"medians: read bandwidth {med(0):.1f} GB/s -> roof {med(1):.1f} tok/s; matmul-only floor {med(2):.1f} tok/s; "
        f"decode {med(3):.1f} tok/s"
    )
    print(
        f"per-round ratios (median): decode/roof {ratio(3, 1):.0%} (target >= 90%), floor/roof {ratio(2, 1):.0%}, "
        f"decode/floor {ratio(3, 2):.0%}"
    )


if __name__ == "__main__":
    main()
