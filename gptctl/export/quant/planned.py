"""The searched int4/int8 methods: one plan per weight (bits, grid), the tied embedding/head stored once.

`PlannedQuant` is the interface of gptctl/export/quant/registry.py: `quantize(proto, opts, calibration)`.
Per weight it picks the bits (the mixed-precision rule of `mixed`, or every weight at `bits`) and a grid
(`search`: symmetric, errors weighted by calibration activations when `--calibration-data` is given;
`gptq`), keeps weights already on a 4-bit grid exactly (GGUF-origin), stores a tied embedding/LM head once
at 8 bits (`tied`), and writes each weight's choice and its measured error into the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class PlannedQuant:
    """A registered method: `bits` for the transformer's MatMuls, `grid` ("symmetric", "gptq"), `mixed`: which
    weights go to 8 bits ("" none, "q4km" Q4_K_M's rule in `mixed`, "measured" the most sensitive within
    --int8-share, `sensitivity`), `calibration`: "optional", "required" or "none"."""

    name: str
    bits: int
    grid: str = "symmetric"
    mixed: str = ""
    calibration: str = "optional"

    @property
    def uses_calibration(self) -> bool:
        return self.calibration != "none"

    def quantize(self, proto: Any, opts: Any, calibration: Sequence[Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Quantize `proto` (changed in place); `calibration`: tokenised samples (gptctl.evaluation) or None."""
        from gptctl.export.quant.matmulnbits import ACCURACY_LEVEL, lm_head_weight
        from gptctl.export.quant.rewrite import apply_plan, weight_names

        if self.calibration == "required" and not calibration:
            raise ValueError(f"--quantize {self.name} needs --calibration-data")
        block_size = opts.block_size
        head = lm_head_weight(proto)
        names = weight_names(proto, block_size)
        stats = self._stats(proto, calibration)
        tied = self._share_tied(proto, head, names, block_size, stats) if opts.head_bits >= 8 else None
        plan, promoted = self._plan(names, head, tied is not None, opts)
        measured = None
        if self.mixed == "measured":
            measured = self._measure(proto, names, plan, stats, calibration, opts)
            promoted = measured.pop("promoted")
        report = apply_plan(proto, plan, block_size=block_size, accuracy_level=ACCURACY_LEVEL, stats=stats)
        if measured is not None:
            for weight, kl in measured["kl_4bit"].items():
                report["weights"][weight]["sensitivity_kl"] = kl
        embedding = any(n.op_type == "GatherBlockQuantized" for n in proto.graph.node)
        if not embedding and self.bits == 4:
            from gptctl.export.quant.embedding import quantize_embedding

            proto = quantize_embedding(proto, block_size, accuracy_level=ACCURACY_LEVEL)
            embedding = any(n.op_type == "GatherBlockQuantized" for n in proto.graph.node)
        section = self._report(report, names, head, tied, promoted, stats, embedding, block_size, ACCURACY_LEVEL)
        if measured is not None:
            measured["kl_4bit"] = {f"{names[w]['kind']}@{names[w]['layer']}": v for w, v in measured["kl_4bit"].items()}
            section["sensitivity"] = measured
        return proto, section

    def _measure(self, proto: Any, names: dict, plan: dict, stats: Any, calibration: Any, opts: Any) -> dict:
        """--int8-share: each planned 4-bit weight's measured KL alone at 4 bits, the most sensitive set to 8 bits
        (`plan` updated in place, 4-bit grids computed once); the `sensitivity` manifest section + `promoted`."""
        from gptctl.export.quant.sensitivity import choose_8bit, measure_sensitivity, trial_grids

        if not calibration:
            return {"promoted": [], "skipped": "no calibration text to measure on", "kl_4bit": {}}
        candidates = [w for w, c in plan.items() if c.bits == 4 and names[w]["layer"] is not None]
        grids, dequantized = trial_grids(proto, {w: plan[w] for w in candidates}, stats, opts.block_size)
        found = measure_sensitivity(proto, dequantized, calibration)
        params = {w: names[w]["K"] * names[w]["N"] for w in candidates}
        chosen = choose_8bit(found.kl, params, opts.int8_share)
        for w in candidates:
            if w in chosen:
                plan[w] = replace(plan[w], bits=8)
            elif w in grids:
                plan[w] = replace(plan[w], grid=grids[w])
        kept_4bit = sum(v for w, v in found.kl.items() if w not in chosen)
        return {
            "promoted": chosen,
            "metric": "mean KL(fp32 || this weight alone at 4 bits) per calibration token",
            "tokens": found.tokens,
            "int8_share": opts.int8_share,
            "params_8bit_share": round(sum(params[w] for w in chosen) / max(sum(params.values()), 1), 4),
            "kl_4bit_sum": float(f"{sum(found.kl.values()):.4g}"),
            "kl_left_at_4bit": float(f"{kept_4bit:.4g}"),
            "kl_4bit": found.kl,
        }

    def _stats(self, proto: Any, calibration: Sequence[Any] | None) -> Any:
        if not calibration or not self.uses_calibration:
            return None
        from gptctl.export.quant.calibration import collect_stats

        return collect_stats(proto, calibration, hessian=self.grid == "gptq")

    def _share_tied(self, proto: Any, head: str | None, names: dict, block_size: int, stats: Any):
        from gptctl.export.quant.matmulnbits import ACCURACY_LEVEL
        from gptctl.export.quant.search import symmetric_search
        from gptctl.export.quant.tied import share_tied

        if head is None or head not in names:
            return None
        importance = stats.importance.get(head) if stats is not None else None
        return share_tied(
            proto,
            head,
            block_size=block_size,
            accuracy_level=ACCURACY_LEVEL,
            row_grid=symmetric_search,
            importance=importance,
        )

    def _plan(self, names: dict, head: str | None, tied: bool, opts: Any) -> tuple[dict, list[str]]:
        from gptctl.export.quant.mixed import promoted_weights
        from gptctl.export.quant.rewrite import WeightPlan

        grid, grid_name = _grid(self.grid)
        promoted = promoted_weights(names) if self.mixed == "q4km" else []
        plan = {}
        for weight in names:
            if weight == head:
                if tied:
                    continue
                # The LM head: --head-bits (8 by default), never below the method's bits.
                search_grid, _ = _grid("symmetric")
                plan[weight] = WeightPlan(max(self.bits, opts.head_bits), search_grid, "symmetric", True)
                continue
            bits = 8 if weight in promoted else self.bits
            plan[weight] = WeightPlan(bits, grid, grid_name, grid_name != "asymmetric")
        return plan, promoted

    def _report(
        self,
        report: dict,
        names: dict,
        head: str | None,
        tied: dict | None,
        promoted: list[str],
        stats: Any,
        embedding: bool,
        block_size: int,
        accuracy_level: int,
    ) -> dict[str, Any]:
        weights = report["weights"]
        for weight, choice in weights.items():
            choice.update({"layer": names[weight]["layer"], "kind": names[weight]["kind"]})
        eight = [w for w, c in weights.items() if c["bits"] == 8]
        return {
            "method": self.name,
            "bits": self.bits,
            "block_size": block_size,
            "accuracy_level": accuracy_level,
            "op": "MatMulNBits",
            "grid": self.grid,
            "symmetric": self.grid != "asymmetric",
            "matmuls_quantized": report["matmuls_quantized"] + (1 if tied else 0),
            "matmuls_total": len(names),
            "exact_grid_weights": report["exact_grid"],
            "searched_weights": report["searched"],
            "lm_head_quantized": bool(head and (tied or head in weights)),
            "lm_head_bits": 8 if tied else (weights[head]["bits"] if head in weights else None),
            "tied_embedding_shared": tied,
            "embedding_quantized": embedding,
            "mixed_8bit_weights": [f"{names[w]['kind']}@{names[w]['layer']}" for w in promoted],
            "weights_8bit": len(eight) + (1 if tied else 0),
            "calibration": None if stats is None else {"tokens": stats.tokens, "sequences": stats.sequences},
            "weights": weights,
        }


def _grid(name: str):
    from gptctl.export.quant.gptq import gptq_grid
    from gptctl.export.quant.rewrite import rows_grid
    from gptctl.export.quant.search import asymmetric_search, symmetric_search

    if name == "gptq":
        return gptq_grid, "gptq"
    if name == "asymmetric":
        return rows_grid(asymmetric_search), "asymmetric"
    return rows_grid(symmetric_search), "symmetric"


INT4 = PlannedQuant("int4", bits=4)
INT8 = PlannedQuant("int8", bits=8)
INT4_MIXED = PlannedQuant("int4-mixed", bits=4, mixed="q4km")
INT4_AUTO = PlannedQuant("int4-auto", bits=4, mixed="measured")
INT4_GPTQ = PlannedQuant("int4-gptq", bits=4, grid="gptq", calibration="required")
