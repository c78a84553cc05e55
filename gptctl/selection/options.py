"""`SelectOptions`: the one definition of select's options, used by the CLI flags and by recipes.

Field names are the CLI flag names in snake_case. Values are normalised on validation:
`max_params: "1b"` becomes 1000000000, `metric: "mmlu >= 40"` becomes "mmlu>=40",
`weight: ["quality=0.7"]` becomes {"quality": 0.7}.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from gptctl.catalog.schema import CRITERIA, DOMAINS, METRICS, TASKS, did_you_mean
from gptctl.catalog.units import format_params, parse_context, parse_params

_METRIC = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(>=|<=|>|<|=>|=<|==|=)\s*([-+0-9.eE]+)\s*$")
OPERATORS = (">=", ">", "<=", "<")


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("gptctl_option", message)


def _as_list(v: Any) -> Any:
    if v is None:
        return []
    if isinstance(v, (str, int, float)):
        return [v]
    if isinstance(v, tuple):
        return list(v)
    return v


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
            return msg[len(prefix):]
    return msg


class SelectOptions(BaseModel):
    """Hard constraints, scoring weights and output options for `gptctl select`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    domain: list[str] = Field(default_factory=list, description="keep models in any of these domains")
    max_params: Optional[int] = Field(None, description="at most this many parameters (units allowed: 135m, 1.5b)")
    min_params: Optional[int] = Field(None, description="at least this many parameters")
    license: list[str] = Field(default_factory=list, description="allow-list of license ids")
    task: Optional[str] = Field(None, description="a task the model must list (e.g. text-generation)")
    language: Optional[str] = Field(None, description="a language the model must list (ISO 639 code)")
    min_context: Optional[int] = Field(None, description="at least this context length in tokens (8k = 8192)")
    instruct: Optional[bool] = Field(None, description="true: instruction-tuned only; false: base models only")
    metric: list[str] = Field(default_factory=list, description="metric floors like 'mmlu>=40'")
    architecture: list[str] = Field(default_factory=list, description="keep these transformers model_types")
    exportable: bool = Field(False, description="only architectures optimum's ONNX exporter supports")
    weight: dict[str, float] = Field(default_factory=dict, description="scoring weights, e.g. {quality: 0.7}")
    top: Optional[int] = Field(None, description="keep the best N")
    explain: bool = Field(False, description="list every excluded model with the first constraint it failed")
    catalog: list[str] = Field(default_factory=list, description="catalog files (default: $GPTCTL_CATALOG or the bundled one)")

    @field_validator("domain", "license", "architecture", "metric", "catalog", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in _as_list(v)]

    @field_validator("domain")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out = []
        for d in v:
            d = d.strip().lower()
            if d not in DOMAINS:
                raise _fail(f"unknown domain {d!r}{did_you_mean(d, DOMAINS)}; allowed: {', '.join(DOMAINS)}")
            if d not in out:
                out.append(d)
        return out

    @field_validator("license", "architecture")
    @classmethod
    def _lower_tokens(cls, v: list[str]) -> list[str]:
        out = []
        for x in v:
            x = x.strip().lower()
            if not x or " " in x:
                raise _fail(f"expected a lower-case id without spaces, got {x!r}")
            if x not in out:
                out.append(x)
        return out

    @field_validator("max_params", "min_params", mode="before")
    @classmethod
    def _params(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            return parse_params(v)
        except ValueError as exc:
            raise _fail(_strip_input(str(exc), v)) from None

    @field_validator("min_context", mode="before")
    @classmethod
    def _context(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            return parse_context(v)
        except ValueError as exc:
            raise _fail(_strip_input(str(exc), v)) from None

    @field_validator("task")
    @classmethod
    def _task(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in TASKS:
            raise _fail(f"unknown task{did_you_mean(v, TASKS)}; allowed: {', '.join(TASKS)}")
        return v

    @field_validator("language")
    @classmethod
    def _language(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            v = v.strip().lower()
            if not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", v):
                raise _fail("expected an ISO 639 language code like en, zh or fr")
        return v

    @field_validator("metric")
    @classmethod
    def _metrics(cls, v: list[str]) -> list[str]:
        out = []
        for text in v:
            try:
                name, op, value = parse_metric_floor(text)
            except ValueError as exc:
                raise _fail(str(exc)) from None
            norm = f"{name}{op}{value:g}"
            if norm not in out:
                out.append(norm)
        return out

    @field_validator("weight", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        if v is None:
            return {}
        items: list[tuple[Any, Any]] = []
        if isinstance(v, dict):
            items = list(v.items())
        else:
            for text in _as_list(v):
                if not isinstance(text, str) or "=" not in text:
                    raise _fail(f"{text!r} is not a weight (write e.g. quality=0.7)")
                k, _, val = text.partition("=")
                items.append((k.strip(), val.strip()))
        out: dict[str, float] = {}
        for k, val in items:
            if k not in CRITERIA:
                raise _fail(f"unknown scoring criterion {k!r}{did_you_mean(k, CRITERIA)}; criteria: {', '.join(CRITERIA)}")
            try:
                f = float(val)
            except (TypeError, ValueError):
                raise _fail(f"weight {k}={val!r} is not a number") from None
            if not f >= 0 or f == float("inf"):
                raise _fail(f"weight {k}={val} must be a finite number >= 0")
            out[k] = f
        return out

    @field_validator("top")
    @classmethod
    def _top(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v < 1:
            raise _fail("must be at least 1")
        return v

    @field_validator("min_params")
    @classmethod
    def _min_le_max(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        mx = info.data.get("max_params")  # validated first (declared first)
        if v is not None and mx is not None and v > mx:
            raise _fail(f"{format_params(v)} is larger than max_params {format_params(mx)}: no model can match")
        return v

    def constraints_dict(self) -> dict[str, Any]:
        """The hard constraints that are set, as plain JSON values."""
        d = self.model_dump(include={"domain", "max_params", "min_params", "license", "task", "language",
                                     "min_context", "instruct", "metric", "architecture", "exportable"})
        return {k: v for k, v in d.items() if v is not None and v != [] and not (k == "exportable" and v is False)}
