"""Validation: ONNX Runtime against PyTorch on fixed inputs. It gates; it never warns.

Checks, in order: the prefill (every output), one decode step with the cache (every output), then greedy
generation over N tokens token for token. Any |difference| over `atol`, or any differing token, raises
`CheckFailed` (exit 1) carrying the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptctl.errors import CheckFailed

VALIDATION_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the patient waits for the doctor.",
    "Validation compares every output of the exported graph with the original PyTorch model.",
)
VALIDATION_LENGTH = 12  # tokens per fixed input (batch of two, no padding)


def fixed_inputs(tokenizer: Any, vocab_size: int, length: int = VALIDATION_LENGTH) -> np.ndarray:
    """A [2, length] batch of real token ids (random ids when there is no tokenizer)."""
    rows = []
    if tokenizer is not None:
        for text in VALIDATION_TEXTS:
            ids = [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if 0 <= i < vocab_size]
            while ids and len(ids) < length:
                ids = ids + ids
            if ids:
                rows.append(ids[:length])
    if len(rows) < 2:
        rng = np.random.default_rng(0)
        rows = rng.integers(0, vocab_size, size=(2, length)).tolist()
    return np.asarray(rows, dtype=np.int64)


class TorchReference:
    """What PyTorch says for the same inputs. `num_virtual` > 0: a peft prompt-tuning model."""

    def __init__(self, model: Any, *, num_virtual: int = 0):
        self.model = model
        self.num_virtual = num_virtual
        self.base = model.get_base_model() if num_virtual else model

    def prefill(self, ids: np.ndarray):
        import torch

        from gptctl.export.onnx_export import cache_layers

        x = torch.from_numpy(ids)
        with torch.no_grad():
            if self.num_virtual:
                out = self.model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
            else:
                pos = torch.arange(x.shape[1]).expand_as(x)
                out = self.model(input_ids=x, attention_mask=torch.ones_like(x), position_ids=pos, use_cache=True)
        p = self.num_virtual
        logits = out.logits[:, p:].float().numpy()
        presents = [t[:, :, p:].float().numpy().copy() for kv in cache_layers(out.past_key_values) for t in kv]
        return logits, presents, out.past_key_values

    def decode(self, token: np.ndarray, cache: Any, past_len: int):
        import torch

        from gptctl.export.onnx_export import cache_layers

        x = torch.from_numpy(token)
        total = self.num_virtual + past_len + 1
        with torch.no_grad():
            kwargs: dict[str, Any] = {"attention_mask": torch.ones((x.shape[0], total), dtype=torch.long)}
            if not self.num_virtual:
                kwargs["position_ids"] = torch.full_like(x, past_len)
            out = self.base(input_ids=x, past_key_values=cache, use_cache=True, **kwargs)
        p = self.num_virtual
        return out.logits.float().numpy(), [
            t[:, :, p:].float().numpy() for kv in cache_layers(out.past_key_values) for t in kv
        ]

    def encode(self, ids: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(ids)
        pos = torch.arange(x.shape[1]).expand_as(x)
        with torch.no_grad():
            return (
                self.model(input_ids=x, attention_mask=torch.ones_like(x), position_ids=pos)
                .last_hidden_state.float()
                .numpy()
            )

    def greedy(self, ids: np.ndarray, n: int) -> np.ndarray:
        import torch

        x = torch.from_numpy(ids)
        with torch.no_grad():
            seq = self.model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
                use_cache=True,
                pad_token_id=eos_ids(self.base)[0] if eos_ids(self.base) else 0,
            )
        return seq[:, -n:].numpy()


def eos_ids(model: Any) -> list[int]:
    cfg = getattr(model, "generation_config", None) or model.config
    eos = getattr(cfg, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


def _diff(a: Any, b: Any) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def validate_decoder(
    onnx_path: Path,
    reference: TorchReference,
    tokenizer: Any,
    *,
    atol: float,
    greedy_tokens: int,
    vocab_size: int,
    threads: int | None = None,
    lm: Any = None,
) -> dict[str, Any]:
    """Compare an exported decoder with its PyTorch reference; return the `validation` object
    (`lm`: an already open `OrtCausalLM` on `onnx_path`). Use `raise_if_failed` to gate on it."""
    from gptctl.runtime.session import OrtCausalLM

    if lm is None:
        lm, _ = OrtCausalLM.from_path(onnx_path, "cpu", threads=threads)
    ids = fixed_inputs(tokenizer, vocab_size)
    outputs: dict[str, dict[str, float]] = {}

    def record(stage: str, name: str, value: float) -> None:
        outputs.setdefault(name, {})[stage] = value

    ref_logits, ref_presents, cache = reference.prefill(ids)
    ort_out, ort_past = lm.forward(ids)
    record("prefill", "logits", _diff(ort_out["logits"], ref_logits))
    for name, ref in zip(lm.present_names, ref_presents, strict=False):
        record("prefill", name, _diff(ort_out[name], ref))
    if lm.has_cache:
        token = ref_logits[:, -1, :].argmax(-1).astype(np.int64)[:, None]
        ref_logits2, ref_presents2 = reference.decode(token, cache, ids.shape[1])
        ort_out2, _ = lm.forward(token, ort_past, past_len=ids.shape[1])
        record("decode", "logits", _diff(ort_out2["logits"], ref_logits2))
        for name, ref in zip(lm.present_names, ref_presents2, strict=False):
            record("decode", name, _diff(ort_out2[name], ref))
    for v in outputs.values():
        v["max"] = max(v.values())
    max_diff = max(v["max"] for v in outputs.values())
    prompt = ids[:1]
    ref_tokens = reference.greedy(prompt, greedy_tokens)
    ort_tokens = lm.greedy(prompt, greedy_tokens, suppress_ids=eos_ids(reference.base))
    mismatch = [
        i for i, (a, b) in enumerate(zip(ref_tokens[0].tolist(), ort_tokens[0].tolist(), strict=False)) if a != b
    ]  # noqa: E501
    result = {
        "passed": bool(max_diff <= atol and not mismatch),
        "atol": atol,
        "max_abs_diff": max_diff,
        "outputs": outputs,
        "greedy_match": not mismatch,
        "greedy_tokens": int(greedy_tokens),
        "greedy_first_mismatch": mismatch[0] if mismatch else None,
        "greedy_ort": ort_tokens[0].tolist(),
        "greedy_pytorch": ref_tokens[0].tolist(),
        "inputs": {"batch": int(ids.shape[0]), "sequence": int(ids.shape[1]), "decode_steps": 1 if lm.has_cache else 0},
    }
    return result


def validate_encoder(
    onnx_path: Path,
    reference: TorchReference,
    tokenizer: Any,
    *,
    atol: float,
    vocab_size: int,
    threads: int | None = None,
) -> dict[str, Any]:
    """feature-extraction: compare `last_hidden_state` on the fixed inputs."""
    from gptctl.runtime.providers import create_session

    session, info = create_session(str(onnx_path), "cpu", threads=threads)
    if session is None:
        raise CheckFailed(f"ONNX Runtime cannot load the exported graph: {info['reason']}")
    ids = fixed_inputs(tokenizer, vocab_size)
    names = [i.name for i in session.get_inputs()]
    feeds = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
        "position_ids": np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy(),
    }
    got = session.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in names})[0]
    d = _diff(got, reference.encode(ids))
    return {
        "passed": bool(d <= atol),
        "atol": atol,
        "max_abs_diff": d,
        "outputs": {"last_hidden_state": {"prefill": d, "max": d}},
        "greedy_match": None,
        "greedy_tokens": 0,
        "inputs": {"batch": int(ids.shape[0]), "sequence": int(ids.shape[1]), "decode_steps": 0},
    }


def raise_if_failed(validation: dict[str, Any], what: str = "the exported graph") -> None:
    """Turn a failed validation into CheckFailed with the figures (worst outputs, first differing token)."""
    if validation["passed"]:
        return
    atol = validation["atol"]
    worst = sorted(validation["outputs"].items(), key=lambda kv: -kv[1]["max"])
    details = [
        f"{name}: max |diff| {v['max']:.3g}" + ("  (over atol)" if v["max"] > atol else "") for name, v in worst[:8]
    ]
    reasons = []
    if validation["max_abs_diff"] > atol:
        reasons.append(f"max |ONNX - PyTorch| = {validation['max_abs_diff']:.3g} > atol {atol:g}")
    if validation.get("greedy_match") is False:
        i = validation["greedy_first_mismatch"]
        reasons.append(f"greedy generation differs from token {i} of {validation['greedy_tokens']}")
        details.append(f"greedy pytorch: {validation['greedy_pytorch']}")
        details.append(f"greedy onnx:    {validation['greedy_ort']}")
    raise CheckFailed(
        f"validation failed for {what}: " + "; ".join(reasons),
        "nothing was written; raise --atol only if the difference is acceptable, or report the architecture",
        details=details,
    )


def check_lora_merge(peft_model: Any, ids: np.ndarray, atol: float) -> tuple[Any, dict[str, Any]]:
    """Merge a LoRA adapter and compare merged-vs-adapter logits. Returns (merged model, figures)."""
    import torch

    x = torch.from_numpy(ids)
    with torch.no_grad():
        before = peft_model(input_ids=x, attention_mask=torch.ones_like(x)).logits.float().numpy()
        merged = peft_model.merge_and_unload()
        merged.eval()
        after = merged(input_ids=x, attention_mask=torch.ones_like(x)).logits.float().numpy()
    d = _diff(before, after)
    return merged, {
        "passed": bool(d <= atol),
        "atol": atol,
        "max_abs_diff": d,
        "compared": "logits (adapter vs merged)",
    }


def compare_converted(ref: Any, new: Any, tokenizer: Any, *, vocab_size: int, greedy_tokens: int) -> dict[str, Any]:
    """How far a quantized or fp16 graph (`new`) moved from the validated fp32 graph (`ref`), both open
    `OrtCausalLM`s: logits, top-1 agreement per position, greedy tokens (all and before the first
    difference). `check_converted` gates on these figures."""
    ids = fixed_inputs(tokenizer, vocab_size)
    a, _ = ref.forward(ids)
    b, _ = new.forward(ids)
    top_ref = np.asarray(a["logits"]).argmax(-1)
    top_new = np.asarray(b["logits"]).argmax(-1)
    g_ref = ref.greedy(ids[:1], greedy_tokens)[0]
    g_new = new.greedy(ids[:1], greedy_tokens)[0]
    differ = np.flatnonzero(g_ref != g_new)
    prefix = int(differ[0]) if differ.size else int(greedy_tokens)
    return {
        "logits_max_abs_diff": _diff(a["logits"], b["logits"]),
        "top1_agreement": round(float((top_ref == top_new).mean()), 4),
        "greedy_agreement": round(float((g_ref == g_new).mean()), 4),
        "greedy_prefix_agreement": round(prefix / max(int(greedy_tokens), 1), 4),
        "greedy_tokens": int(greedy_tokens),
        "positions": int(top_ref.size),
    }


def check_converted(
    result: dict[str, Any],
    *,
    min_top1: float,
    min_greedy_prefix: float,
    max_ppl_ratio: float,
    ppl_ratio: float | None,
    what: str,
) -> dict[str, Any]:
    """Gate the shipped converted graph on `compare_converted`'s figures (and the perplexity ratio when
    measured): adds `passed` and `thresholds` to `result`; raises CheckFailed with the figures when a
    threshold is crossed (the export then writes nothing)."""
    thresholds = {
        "min_top1_agreement": min_top1,
        "min_greedy_prefix": min_greedy_prefix,
        "max_ppl_ratio": max_ppl_ratio,
    }
    reasons = []
    if result["top1_agreement"] < min_top1:
        reasons.append(f"top-1 agreement {result['top1_agreement']:.3f} < --min-top1-agreement {min_top1:g}")
    if result["greedy_prefix_agreement"] < min_greedy_prefix:
        reasons.append(
            f"greedy prefix agreement {result['greedy_prefix_agreement']:.3f} < --min-greedy-prefix "
            f"{min_greedy_prefix:g}"
        )
    if ppl_ratio is not None:
        result["ppl_ratio"] = ppl_ratio
        if ppl_ratio > max_ppl_ratio:
            reasons.append(f"perplexity ratio {ppl_ratio:.4f} > --max-ppl-ratio {max_ppl_ratio:g}")
    result.update({"passed": not reasons, "thresholds": thresholds})
    if reasons:
        details = [f"{k}: {v}" for k, v in result.items() if k not in ("passed", "thresholds")]
        raise CheckFailed(
            f"the shipped {what} graph differs too much from the validated fp32 graph: " + "; ".join(reasons),
            "nothing was written; try another --quantize method (int4-mixed, int8), pass "
            "--calibration-data, or relax the threshold if the loss is acceptable",
            details=details,
        )
    return result
