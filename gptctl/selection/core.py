"""Selecting models: hard constraints, then a documented score (see `gptctl.selection.scoring`).

Every constraint is applied in a fixed order (task, domain, language, license, instruct,
architecture, exportable, max/min params, min context, metric floors); a model is excluded by the
first one it fails, which `--explain` reports and the funnel counts. When nothing matches, the
result says how many models each constraint removed and names the nearest misses (the models that
fail the fewest constraints, by the smallest margin).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.catalog.exportable import is_exportable, normalise_architecture
from gptctl.catalog.loader import Catalog, load_catalogs
from gptctl.catalog.schema import ModelEntry, did_you_mean
from gptctl.catalog.units import format_context, format_params
from gptctl.errors import BadInput, NothingMatched
from gptctl.selection.scoring import Scored, Scorer, ScoringConfig, rank_key

# ------------------------------------------------------------------------------------------ constraints


@dataclass
class Constraint:
    """One hard constraint. `ok` is the fast test; `why` says why a model fails (a phrase that
    reads after the model id: "has 1.5B params > 1B"), computed only when it is shown."""

    key: str
    label: str
    ok: Callable[[ModelEntry], bool]
    why: Callable[[ModelEntry], str]
    passes: Callable[[ModelEntry], str | None] = lambda e: None  # "medical": for near-miss sentences
    distance: Callable[[ModelEntry], float] = lambda e: 1.0  # how far from passing (for near misses)

    def check(self, e: ModelEntry) -> str | None:
        """None when `e` passes, else the reason it fails."""
        return None if self.ok(e) else self.why(e)


def _one_of(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "one of " + ", ".join(values)


def build_constraints(options: Any) -> list[Constraint]:
    """The constraints `options` (a SelectOptions) asks for, in evaluation order."""
    cs = [c for build in _CONSTRAINT_BUILDERS if (c := build(options)) is not None]
    from gptctl.selection.options import parse_metric_floor

    for text in options.metric:
        name, op, value = parse_metric_floor(text)
        cs.append(_metric_constraint(name, op, value))
    return cs


def _task_constraint(o: Any) -> Constraint | None:
    if not o.task:
        return None
    t = o.task
    return Constraint(
        "task", f"task {t}", lambda e: t in e.tasks, lambda e: f"does not do {t} (tasks: {', '.join(e.tasks)})"
    )


def _domain_constraint(o: Any) -> Constraint | None:
    if not o.domain:
        return None
    want = list(o.domain)
    wset = frozenset(want)
    return Constraint(
        "domain",
        f"domain {' or '.join(want)}",
        lambda e: not wset.isdisjoint(e.domains),
        lambda e: f"is not {' or '.join(want)} (domains: {', '.join(e.domains)})",
        passes=lambda e: "/".join(d for d in want if d in e.domains) or None,
    )


def _language_constraint(o: Any) -> Constraint | None:
    if not o.language:
        return None
    lang = o.language
    return Constraint(
        "language",
        f"language {lang}",
        lambda e: lang in e.languages,
        lambda e: (
            f"does not list language {lang} (languages: {', '.join(e.languages)})"
            if e.languages
            else "lists no languages"
        ),
    )


def _license_constraint(o: Any) -> Constraint | None:
    if not o.license:
        return None
    allowed = list(o.license)
    aset = frozenset(allowed)
    return Constraint(
        "license",
        f"license {_one_of(allowed)}",
        lambda e: e.license in aset,
        lambda e: f"has license {e.license}, not {_one_of(allowed)}" if e.license else "has no known license",
        passes=lambda e: f"{e.license}-licensed" if e.license else None,
    )


def _instruct_constraint(o: Any) -> Constraint | None:
    if o.instruct is None:
        return None
    want_i = o.instruct

    def why_instruct(e: ModelEntry) -> str:
        if e.instruct is None:
            return "does not say whether it is instruction-tuned"
        return "is a base model (not instruction-tuned)" if want_i else "is instruction-tuned (not a base model)"

    return Constraint(
        "instruct",
        "instruction-tuned" if want_i else "base model",
        lambda e: e.instruct is want_i,
        why_instruct,
        passes=lambda e: ("instruction-tuned" if want_i else "a base model") if e.instruct is want_i else None,
    )


def _architecture_constraint(o: Any) -> Constraint | None:
    if not o.architecture:
        return None
    archs = [normalise_architecture(a) for a in o.architecture]
    aset = frozenset(archs)
    return Constraint(
        "architecture",
        f"architecture {_one_of(archs)}",
        lambda e: e.architecture is not None and normalise_architecture(e.architecture) in aset,
        lambda e: (
            f"has architecture {e.architecture}, not {_one_of(archs)}"
            if e.architecture
            else "has no known architecture"
        ),
    )


def _exportable_constraint(o: Any) -> Constraint | None:
    if not o.exportable:
        return None
    return Constraint(
        "exportable",
        "ONNX-exportable architecture",
        lambda e: is_exportable(e.architecture),
        lambda e: (
            f"has architecture {e.architecture}, which the ONNX exporter does not support"
            if e.architecture
            else "has no known architecture, so ONNX export support is unknown"
        ),
        passes=lambda e: "ONNX-exportable" if is_exportable(e.architecture) else None,
    )


def _max_params_constraint(o: Any) -> Constraint | None:
    if o.max_params is None:
        return None
    mx = o.max_params
    return Constraint(
        "max_params",
        f"params <= {format_params(mx)}",
        lambda e: e.params <= mx,
        lambda e: f"has {format_params(e.params)} params > {format_params(mx)}",
        distance=lambda e: max(0.0, math.log10(e.params / mx)),
    )


def _min_params_constraint(o: Any) -> Constraint | None:
    if o.min_params is None:
        return None
    mn = o.min_params
    return Constraint(
        "min_params",
        f"params >= {format_params(mn)}",
        lambda e: e.params >= mn,
        lambda e: f"has {format_params(e.params)} params < {format_params(mn)}",
        distance=lambda e: max(0.0, math.log10(mn / e.params)),
    )


def _min_context_constraint(o: Any) -> Constraint | None:
    if o.min_context is None:
        return None
    mc = o.min_context
    return Constraint(
        "min_context",
        f"context >= {format_context(mc)}",
        lambda e: e.context_length is not None and e.context_length >= mc,
        lambda e: (
            f"has context {format_context(e.context_length)} < {format_context(mc)} tokens"
            if e.context_length is not None
            else "has no known context length"
        ),
        distance=lambda e: 1.0 if e.context_length is None else max(0.0, math.log2(mc / e.context_length) / 8),
    )


# One builder per option, in evaluation order (metric floors follow, one constraint each).
_CONSTRAINT_BUILDERS: tuple[Callable[[Any], Constraint | None], ...] = (
    _task_constraint,
    _domain_constraint,
    _language_constraint,
    _license_constraint,
    _instruct_constraint,
    _architecture_constraint,
    _exportable_constraint,
    _max_params_constraint,
    _min_params_constraint,
    _min_context_constraint,
)


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}
_NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">="}


def _metric_constraint(name: str, op: str, value: float) -> Constraint:
    test = _OPS[op]

    def ok(e: ModelEntry) -> bool:
        v = e.metrics.get(name)
        return v is not None and test(v, value)

    def why(e: ModelEntry) -> str:
        v = e.metrics.get(name)
        return f"has no {name} score" if v is None else f"has {name} {v:g} {_NEGATED[op]} {value:g}"

    def distance(e: ModelEntry) -> float:
        v = e.metrics.get(name)
        return 1.0 if v is None else abs(v - value) / 20.0

    return Constraint(f"metric:{name}{op}{value:g}", f"{name} {op} {value:g}", ok, why, distance=distance)


def value_warnings(options: Any, catalog: Catalog) -> list[str]:
    """Values that no catalog entry has. Not an error (a valid value may simply be absent), but
    a close match suggests a typo that silently removes models, so it is reported."""
    entries = catalog.entries
    checks = (
        ("license", options.license, lambda: {e.license for e in entries if e.license}),
        (
            "architecture",
            [normalise_architecture(a) for a in options.architecture],
            lambda: {normalise_architecture(e.architecture) for e in entries if e.architecture},
        ),
        (
            "language",
            [options.language] if options.language else [],
            lambda: {lang for e in entries for lang in e.languages},
        ),
        ("task", [options.task] if options.task else [], lambda: {t for e in entries for t in e.tasks}),
    )
    out = []
    for key, values, known_values in checks:
        if not values:
            continue
        known = known_values()
        for v in values:
            if v not in known:
                out.append(f"no model in the catalog has {key} {v!r}{did_you_mean(v, sorted(known))}")
    return out


# ------------------------------------------------------------------------------------------ results


@dataclass
class RankedModel:
    rank: int
    entry: ModelEntry
    scored: Scored

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def score(self) -> float:
        return self.scored.score

    def to_dict(self) -> dict[str, Any]:
        e = self.entry.to_dict()
        d: dict[str, Any] = {
            "rank": self.rank,
            "id": e.pop("id"),
            "params": e.pop("params"),
            "score": round(self.scored.score, 4),
            "parts": {k: round(v, 4) for k, v in self.scored.parts.items()},
            "criteria": {k: round(v, 4) for k, v in self.scored.criteria.items()},
            "imputed": list(self.scored.imputed),
        }
        d.update(e)
        d["exportable"] = is_exportable(self.entry.architecture)
        return d


class Exclusion:
    """An excluded model and the first constraint it failed (the reason is worded on demand)."""

    __slots__ = ("entry", "_constraint")

    def __init__(self, entry: ModelEntry, constraint: Constraint):
        self.entry, self._constraint = entry, constraint

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def constraint(self) -> str:
        return self._constraint.key

    @property
    def label(self) -> str:
        return self._constraint.label

    @property
    def reason(self) -> str:
        return self._constraint.why(self.entry)

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "constraint": self.constraint, "label": self.label, "reason": self.reason}

    def sentence(self) -> str:
        return f"{self.id} {self.reason}"


@dataclass
class SelectionResult:
    """What `select_models` found. `models` is the ranking (cut to `--top`), best first."""

    models: list[RankedModel]
    matched: int
    total: int
    constraints: dict[str, Any]
    funnel: list[dict[str, Any]]
    failing: list[tuple[ModelEntry, list[int]]]  # excluded entries with the indexes of every constraint they fail
    constraint_list: list[Constraint]
    nearest_misses: list[dict[str, Any]]
    scoring: dict[str, Any]
    catalog: Catalog
    explain: bool = False
    top: int | None = None
    options: Any = None
    warnings: list[str] = field(default_factory=list)

    @property
    def excluded(self) -> int:
        return self.total - self.matched

    @property
    def exclusions(self) -> list[Exclusion]:
        """Every excluded model with the first constraint it failed, in catalog order."""
        cs = self.constraint_list
        return [Exclusion(e, cs[fails[0]]) for e, fails in self.failing]

    @property
    def best(self) -> RankedModel | None:
        return self.models[0] if self.models else None

    def to_dict(self) -> dict[str, Any]:
        """The `--json` document."""
        d: dict[str, Any] = {
            "models": [m.to_dict() for m in self.models],
            "constraints": self.constraints,
            "excluded": self.excluded,
            "matched": self.matched,
            "total": self.total,
            "top": self.top,
            "funnel": self.funnel,
            "scoring": self.scoring,
            "catalog": self.catalog.info(),
            "warnings": self.warnings,
        }
        if self.explain:
            d["excluded_models"] = [x.to_dict() for x in self.exclusions]
        if not self.matched:
            d["nearest_misses"] = self.nearest_misses
        return d

    def funnel_lines(self) -> list[str]:
        return [
            f"{f['label']}: removed {f['removed']} of {f['before']} (on its own it would remove {f['alone']})"
            for f in self.funnel
        ]

    def require_match(self) -> SelectionResult:
        """Raise NothingMatched (exit 1) explaining which constraints removed how many models."""
        if self.matched:
            return self
        if not self.total:
            names = ", ".join(f.name for f in self.catalog.files) or "(none)"
            raise NothingMatched(
                f"the catalog has no models (files: {names})",
                "check --catalog / $GPTCTL_CATALOG",
                partial=self.to_dict(),
            )
        details = self.funnel_lines() + [f"note: {w}" for w in self.warnings]
        if self.nearest_misses:
            details.append("nearest misses:")
            details += [f"  {m['sentence']}" for m in self.nearest_misses]
        raise NothingMatched(
            f"no model matches all {len(self.funnel)} constraint{'s' if len(self.funnel) != 1 else ''} "
            f"({self.total} models in the catalog)",
            "relax a constraint (see the nearest misses); --explain lists why each model was excluded",
            details=details,
            partial=self.to_dict(),  # `--json` prints the funnel and nearest misses with the error
        )


def select_models(options: Any, catalogs: Catalog | Sequence[str | os.PathLike] | None = None) -> SelectionResult:
    """Filter the catalog by the hard constraints in `options` and rank what is left.

    Args:
        options: a SelectOptions, or a mapping validated into one.
        catalogs: a loaded Catalog, or catalog paths; None uses `options.catalog`, else
            $GPTCTL_CATALOG, else the bundled catalog.

    Returns a SelectionResult; an empty ranking is not an error here (call `require_match()`).
    Raises BadInput for invalid options or catalogs.
    """
    from gptctl.selection.options import SelectOptions

    if not isinstance(options, SelectOptions):
        from gptctl.options import parse_options

        options = parse_options(SelectOptions, dict(options), what="select options")
    if isinstance(catalogs, Catalog):
        catalog = catalogs
    else:
        catalog = load_catalogs(list(catalogs) if catalogs is not None else (options.catalog or None))
    config = ScoringConfig.build(catalog.scoring, options.weight)
    constraints = build_constraints(options)
    warnings = value_warnings(options, catalog)

    entries = catalog.entries
    passed, failing, removed, alone = _apply_constraints(entries, constraints)
    scorer = Scorer(entries, config, options.domain)
    ranking = _rank(passed, scorer, options.top)
    funnel = _funnel(constraints, len(entries), removed, alone)

    misses = _nearest_misses(failing, constraints, scorer) if not passed else []
    scoring = {
        **config.to_dict(),
        "imputed_values": {k: (round(v, 4) if v is not None else None) for k, v in scorer.fallback.items()},
        "quality_metrics": sorted(scorer.relevant),
    }
    return SelectionResult(
        models=ranking,
        matched=len(passed),
        total=len(entries),
        constraints=options.constraints_dict(),
        funnel=funnel,
        failing=failing,
        constraint_list=constraints,
        nearest_misses=misses,
        scoring=scoring,
        catalog=catalog,
        explain=options.explain,
        top=options.top,
        options=options,
        warnings=warnings,
    )


def _apply_constraints(entries, constraints: list[Constraint]):
    """(passed, failing with the indexes of the constraints each fails, removed per constraint in funnel
    order (by its first failure), removed per constraint alone)."""
    removed = [0] * len(constraints)
    alone = [0] * len(constraints)
    passed: list[ModelEntry] = []
    failing: list[tuple[ModelEntry, list[int]]] = []
    tests = [(i, c.ok) for i, c in enumerate(constraints)]
    for e in entries:
        fails = [i for i, ok in tests if not ok(e)]
        if fails:
            for i in fails:
                alone[i] += 1
            removed[fails[0]] += 1
            failing.append((e, fails))
        else:
            passed.append(e)
    return passed, failing, removed, alone


def _rank(passed: list[ModelEntry], scorer: Scorer, top: int | None) -> list[RankedModel]:
    scored = [(scorer.score(e), e) for e in passed]
    scored.sort(key=lambda t: rank_key(t[1], t[0].score))
    if top is not None:
        scored = scored[:top]
    return [RankedModel(rank=i + 1, entry=e, scored=s) for i, (s, e) in enumerate(scored)]


def _funnel(constraints: list[Constraint], total: int, removed: list[int], alone: list[int]) -> list[dict[str, Any]]:
    """One row per constraint, in order: how many models it saw, removed, left, and would remove alone."""
    funnel = []
    before = total
    for i, c in enumerate(constraints):
        funnel.append(
            {
                "constraint": c.key,
                "label": c.label,
                "before": before,
                "removed": removed[i],
                "after": before - removed[i],
                "alone": alone[i],
            }
        )
        before -= removed[i]
    return funnel


def _nearest_misses(failing, constraints: list[Constraint], scorer: Scorer, limit: int = 5) -> list[dict[str, Any]]:
    if not failing:
        return []
    fewest = min(len(f) for _, f in failing)
    close = []
    for e, fails in failing:
        if len(fails) == fewest:
            close.append((round(sum(constraints[i].distance(e) for i in fails), 9), e, fails))
    close.sort(key=lambda t: (t[0], rank_key(t[1], scorer.score(t[1]).score)))
    out = []
    for _, e, fails in close[:limit]:
        failed = set(fails)
        passes = [p for i, c in enumerate(constraints) if i not in failed for p in [c.passes(e)] if p]
        reasons = [constraints[i].why(e) for i in fails]
        joined = " and ".join(reasons)
        sentence = f"{e.id} is {', '.join(passes)} but {joined}" if passes else f"{e.id} {joined}"
        out.append(
            {"id": e.id, "failed": [constraints[i].key for i in fails], "reasons": reasons, "sentence": sentence}
        )
    return out


# ------------------------------------------------------------------------------------------ output file


def selection_document(result: SelectionResult) -> dict[str, Any]:
    """The `--output` JSON: the chosen model first, then the ranking, constraints and catalog hash."""
    from gptctl import __version__

    result.require_match()
    models = [m.to_dict() for m in result.models]
    return {
        "model": models[0],
        "models": models,
        "constraints": result.constraints,
        "matched": result.matched,
        "excluded": result.excluded,
        "scoring": result.scoring,
        "catalog": result.catalog.info(),
        "gptctl_version": __version__,
    }


def write_selection(result: SelectionResult, path: str | os.PathLike) -> Path:
    """Write the selection JSON atomically; `optimize`/`run` accept the file in place of a model id.

    Raises NothingMatched when the result is empty, BadInput when `path` cannot be written.
    """
    doc = selection_document(result)
    p = Path(path).expanduser()
    if p.is_dir():
        raise BadInput(f"--output {p} is a directory", "give a file name, e.g. selection.json")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, p)
    except OSError as exc:
        raise BadInput(f"cannot write --output {p}: {exc.strerror or exc}", "choose a writable path") from None
    return p


def load_selection(data: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen model entry of a selection document (what `gptctl.model_source` reads as `model.id`)."""
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or not model.get("id"):
        raise BadInput("not a selection: no 'model.id'", "pass the file written by `gptctl select --output`")
    return dict(model)
