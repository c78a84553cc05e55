"""`SelectOptions`: the one definition of select's options, used by the CLI flags and by recipes.

Field names are the CLI flag names in snake_case. Values are normalised on validation:
`max_params: "1b"` becomes 1000000000, `metric: "mmlu >= 40"` becomes "mmlu>=40",
`weight: ["quality=0.7"]` becomes {"quality": 0.7}.
"""

from __future__ import annotations

import re
from typing import Any

from gptctl.catalog.schema import CRITERIA, DOMAINS, METRICS, TASKS, did_you_mean
from gptctl.catalog.units import format_params, parse_context, parse_params
from gptctl.options import LightOptions, option

_METRIC = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(>=|<=|>|<|=>|=<|==|=)\s*([-+0-9.eE]+)\s*$")
OPERATORS = (">=", ">", "<=", "<")


def _as_list(v: Any) -> list:
    if isinstance(v, (str, int, float)):
        return [v]
    if isinstance(v, tuple):
        return list(v)
    if not isinstance(v, list):
        raise ValueError("expected a list of strings")
    return v


def _str_list(v: Any) -> list[str]:
    """A value or list of values (numbers allowed, as text) -> a list of strings."""
    out = [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in _as_list(v)]
    for x in out:
        if not isinstance(x, str):
            raise ValueError(f"expected a list of strings, got an item {x!r}")
    return out


def parse_metric_floor(text: str) -> tuple[str, str, float]:
    """'mmlu>=40' -> ('mmlu', '>=', 40.0). Raises ValueError with a hint."""
    m = _METRIC.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a metric constraint (write e.g. 'mmlu>=40')")
    name, op, num = m.groups()
    name = name.lower().replace("-", "_")
    if op in ("=>", "=<"):
        raise ValueError(f"{text!r}: write {op[::-1]!r}, not {op!r}")
    if op in ("=", "=="):
        raise ValueError(f"{text!r}: use a floor or ceiling (>=, >, <=, <), not equality")
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}{did_you_mean(name, METRICS)}; known: {', '.join(METRICS)}")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"{text!r}: {num!r} is not a number") from None
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r}: metric scores are 0-100")
    return name, op, value


def _strip_input(msg: str, v: Any) -> str:
    # The caller appends "(got ...)": avoid saying the input twice.
    for prefix in (f"{v!r}: ", f"{v!r} "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


_C = "Constraints"


def _opt(kind: str, help: str, default: Any = None, panel: str = _C, **kw: Any) -> Any:
    return option(kind, default, help, panel=panel, **kw)


class SelectOptions(LightOptions):
    """Hard constraints, scoring weights and output options for `gptctl select`.

    Declared like every options set (see gptctl.options): nothing heavy is imported, so `select` starts fast.
    Fields are normalised in declaration order (min_params is checked against max_params)."""

    domain: list[str] = _opt(
        "list",
        "Keep models in this domain (repeatable: any of). E.g. medical, code, general.",
        short="-d",
        metavar="DOMAIN",
    )
    max_params: int | None = _opt("any", "At most N parameters: 135m, 1.5b, 7B, 7e9.", metavar="N")
    min_params: int | None = _opt("any", "At least N parameters (units as --max-params).", metavar="N")
    license: list[str] = _opt(
        "list", "Allow this license id (repeatable allow-list), e.g. apache-2.0, mit.", short="-l", metavar="LICENSE"
    )
    task: str | None = _opt("str", "A task the model must list, e.g. text-generation.", metavar="TASK")
    language: str | None = _opt("str", "A language the model must list (ISO 639 code, e.g. en, zh).", metavar="LANG")
    min_context: int | None = _opt("any", "At least this context length: 4096, 8k (k = 1024).", metavar="TOKENS")
    instruct: bool | None = _opt(
        "bool", "Only instruction-tuned models, or only base models.", flag="--instruct/--base"
    )
    metric: list[str] = _opt(
        "list",
        "Metric floor, e.g. 'mmlu>=40' (repeatable). Models without that metric are excluded.",
        short="-m",
        metavar="EXPR",
    )
    architecture: list[str] = _opt(
        "list", "Keep this transformers model_type (repeatable), e.g. llama, qwen2.", short="-a", metavar="ARCH"
    )
    exportable: bool = _opt(
        "bool", "Only architectures optimum's ONNX exporter supports (text generation with KV cache).", False
    )
    weight: dict[str, float] = _opt(
        "dict",
        "Scoring weight, e.g. quality=0.7 (repeatable). Criteria: quality, size, "
        "context, recency, license. Weights are normalised to sum 1.",
        panel="Scoring",
        short="-w",
        metavar="NAME=W",
    )
    top: int | None = _opt("int", "Show only the best N.", panel="Output", short="-n", metavar="N")
    explain: bool = _opt(
        "bool", "Also list every excluded model with the first constraint it failed.", False, panel="Output"
    )
    catalog: list[str] = _opt(
        "list",
        "Catalog file (repeatable; later files override the same ids). Replaces the "
        "bundled "
        "catalog; 'builtin' names it. Default: $GPTCTL_CATALOG, else the bundled catalog.",
        panel="Catalog",
        short="-c",
        metavar="FILE",
    )

    @staticmethod
    def normalise_domain(v: Any, done: dict) -> list[str]:
        out = []
        for d in _str_list(v):
            d = d.strip().lower()
            if d not in DOMAINS:
                raise ValueError(f"unknown domain {d!r}{did_you_mean(d, DOMAINS)}; allowed: {', '.join(DOMAINS)}")
            if d not in out:
                out.append(d)
        return out

    @staticmethod
    def normalise_license(v: Any, done: dict) -> list[str]:
        out = []
        for x in _str_list(v):
            x = x.strip().lower()
            if not x or " " in x:
                raise ValueError(f"expected a lower-case id without spaces, got {x!r}")
            if x not in out:
                out.append(x)
        return out

    normalise_architecture = normalise_license

    @staticmethod
    def normalise_max_params(v: Any, done: dict) -> int:
        try:
            return parse_params(v)
        except ValueError as exc:
            raise ValueError(_strip_input(str(exc), v)) from None

    @staticmethod
    def normalise_min_params(v: Any, done: dict) -> int:
        n = SelectOptions.normalise_max_params(v, done)
        mx = done.get("max_params")
        if mx is not None and n > mx:
            raise ValueError(f"{format_params(n)} is larger than max_params {format_params(mx)}: no model can match")
        return n

    @staticmethod
    def normalise_min_context(v: Any, done: dict) -> int:
        try:
            return parse_context(v)
        except ValueError as exc:
            raise ValueError(_strip_input(str(exc), v)) from None

    @staticmethod
    def normalise_task(v: str, done: dict) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task{did_you_mean(v, TASKS)}; allowed: {', '.join(TASKS)}")
        return v

    @staticmethod
    def normalise_language(v: str, done: dict) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", v):
            raise ValueError("expected an ISO 639 language code like en, zh or fr")
        return v

    @staticmethod
    def normalise_metric(v: Any, done: dict) -> list[str]:
        out = []
        for text in _str_list(v):
            name, op, value = parse_metric_floor(text)
            norm = f"{name}{op}{value:g}"
            if norm not in out:
                out.append(norm)
        return out

    @staticmethod
    def normalise_weight(v: Any, done: dict) -> dict[str, float]:
        items: list[tuple[Any, Any]] = []
        if isinstance(v, dict):
            items = list(v.items())
        else:
            for text in _as_list(v):
                if not isinstance(text, str) or "=" not in text:
                    raise ValueError(f"{text!r} is not a weight (write e.g. quality=0.7)")
                k, _, val = text.partition("=")
                items.append((k.strip(), val.strip()))
        out: dict[str, float] = {}
        for k, val in items:
            if k not in CRITERIA:
                raise ValueError(
                    f"unknown scoring criterion {k!r}{did_you_mean(k, CRITERIA)}; criteria: {', '.join(CRITERIA)}"
                )
            try:
                f = float(val)
            except (TypeError, ValueError):
                raise ValueError(f"weight {k}={val!r} is not a number") from None
            if not f >= 0 or f == float("inf"):
                raise ValueError(f"weight {k}={val} must be a finite number >= 0")
            out[k] = f
        return out

    @staticmethod
    def normalise_top(v: int, done: dict) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @staticmethod
    def normalise_catalog(v: Any, done: dict) -> list[str]:
        return _str_list(v)

    def constraints_dict(self) -> dict[str, Any]:
        """The hard constraints that are set, as plain JSON values."""
        d = self.model_dump(
            include={
                "domain",
                "max_params",
                "min_params",
                "license",
                "task",
                "language",
                "min_context",
                "instruct",
                "metric",
                "architecture",
                "exportable",
            }
        )
        return {k: v for k, v in d.items() if v is not None and v != [] and not (k == "exportable" and v is False)}
