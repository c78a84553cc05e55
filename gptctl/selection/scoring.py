"""How `gptctl select` scores the models that pass the hard constraints.

score = 100 * sum(w[c] * v[c] for c in criteria), with the weights normalised to sum to 1 and
every criterion value v[c] normalised to [0, 1]. The per-criterion `parts` are the terms
100 * w[c] * v[c], so they add up to the score.

Criteria (all on fixed scales, so a model's score does not depend on which other models passed):

  quality  Mean over the relevant metrics the entry has (METRICS in gptctl.catalog.schema) of
           the score above chance: (score - chance) / (100 - chance), clipped to [0, 1]. Chance
           is 25 for 4-choice tests (MMLU, ARC, HellaSwag, MedQA), 50 for PIQA/WinoGrande, 0 for
           GSM8K/HumanEval... Relevant: general metrics always; domain metrics (MedQA, MedMCQA,
           PubMedQA for medical/biomedical; HumanEval, MBPP for code) only when `--domain` asks
           for that domain, so a fine-tuned PubMedQA score does not rank a model for general use.
           Catalog metrics come from different harnesses and shot counts (`metrics_source` says
           which, some are after fine-tuning), so quality is a rough signal, not a leaderboard.
  size     Size efficiency, log scale: 1.0 at <= 10M parameters, 0.0 at >= 100B.
  context  Context length, log2 scale: 0.0 at <= 512 tokens, 1.0 at >= 128k (131,072).
  recency  1.0 for the newest release month in the loaded catalog, minus 1/72 per month older
           (0.0 at six years older).
  license  Openness of the license: 1.0 permissive (MIT, Apache-2.0, BSD), 0.9 copyleft,
           0.75 open with use-based restrictions (OpenRAIL, BLOOM RAIL), 0.5 community licenses
           with commercial conditions (Llama, Gemma, HAI-DEF), 0.25 non-commercial or research
           only (CC-BY-NC, qwen-research). `other`, a bare `cc` and unlisted ids are unknown.
           A catalog's `scoring.license_openness` adds or changes entries.

Default weights: quality 0.35, size 0.25, context 0.10, recency 0.15, license 0.15. A catalog's
`scoring.weights` changes some of them, `--weight quality=0.7` (repeatable) overrides those;
the result is normalised to sum to 1 (all zero is an error).

Missing data (no metrics, no context_length, no release, unknown license) is never read as zero.
The policy (`scoring.missing` in a catalog) is one of:
  lower-quartile (default)  use the lower quartile (nearest-rank, 25th percentile) of that
                            criterion over all entries of the loaded catalog that have the data:
                            unknown is assumed below typical, but not worst;
  median                    use the median (nearest-rank, lower) instead;
  ignore                    drop the criterion for that model and renormalise its other weights.
If no entry in the catalog has the data, every model gets 0.5 for it (which changes no order).
Imputed values are marked (`imputed` in JSON, `*` in the table).

Ties break deterministically: higher score first (compared unrounded), then fewer parameters,
then id (alphabetical), so the ranking is a total order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gptctl.catalog.schema import CRITERIA, METRIC_DOMAINS, METRICS, MISSING_POLICIES, ModelEntry
from gptctl.errors import BadInput

DEFAULT_WEIGHTS: dict[str, float] = {"quality": 0.35, "size": 0.25, "context": 0.10, "recency": 0.15, "license": 0.15}
DEFAULT_MISSING = "lower-quartile"

SIZE_BEST, SIZE_WORST = 1e7, 1e11  # parameters
CONTEXT_WORST, CONTEXT_BEST = 512, 131072  # tokens
RECENCY_WINDOW_MONTHS = 72

LICENSE_OPENNESS: dict[str, float] = {
    # permissive
    "apache-2.0": 1.0,
    "mit": 1.0,
    "bsd-2-clause": 1.0,
    "bsd-3-clause": 1.0,
    "isc": 1.0,
    "unlicense": 1.0,
    "cc0-1.0": 1.0,
    "cc-by-4.0": 1.0,
    "bsl-1.0": 1.0,
    # copyleft
    "mpl-2.0": 0.9,
    "lgpl-3.0": 0.9,
    "gpl-3.0": 0.9,
    "agpl-3.0": 0.9,
    "cc-by-sa-4.0": 0.9,
    # open weights with use-based restrictions (commercial use allowed)
    "openrail": 0.75,
    "openrail++": 0.75,
    "creativeml-openrail-m": 0.75,
    "bigscience-openrail-m": 0.75,
    "bigscience-bloom-rail-1.0": 0.75,
    "bigcode-openrail-m": 0.75,
    # community licenses: commercial use with conditions / acceptable-use policies
    "llama2": 0.5,
    "llama3": 0.5,
    "llama3.1": 0.5,
    "llama3.2": 0.5,
    "llama3.3": 0.5,
    "llama4": 0.5,
    "gemma": 0.5,
    "health-ai-developer-foundations": 0.5,
    # non-commercial or research only
    "cc-by-nc-4.0": 0.25,
    "cc-by-nc-sa-4.0": 0.25,
    "cc-by-nc-nd-4.0": 0.25,
    "qwen-research": 0.25,
}


def relevant_metrics(domains: Iterable[str] = ()) -> frozenset[str]:
    """General metrics, plus the domain metrics of the domains asked for."""
    asked = set(domains)
    return frozenset(m for m in METRICS if m not in METRIC_DOMAINS or METRIC_DOMAINS[m] & asked)


def quality_of(entry: ModelEntry, relevant: frozenset[str] | None = None) -> float | None:
    """Mean above-chance score over the entry's relevant metrics; None when it has none."""
    total, n = 0.0, 0
    for name, value in entry.metrics.items():
        if relevant is not None and name not in relevant:
            continue
        chance = METRICS[name]
        total += min(1.0, max(0.0, (value - chance) / (100.0 - chance)))
        n += 1
    return total / n if n else None


_LOG_SIZE_BEST, _LOG_SIZE_SPAN = math.log10(SIZE_BEST), math.log10(SIZE_WORST) - math.log10(SIZE_BEST)
_LOG_CTX_WORST, _LOG_CTX_SPAN = math.log2(CONTEXT_WORST), math.log2(CONTEXT_BEST) - math.log2(CONTEXT_WORST)


def _size(params: int) -> float:
    return min(1.0, max(0.0, 1.0 - (math.log10(params) - _LOG_SIZE_BEST) / _LOG_SIZE_SPAN))


def _context(tokens: int) -> float:
    return min(1.0, max(0.0, (math.log2(tokens) - _LOG_CTX_WORST) / _LOG_CTX_SPAN))


def _recency(month: int, newest_month: int | None) -> float:
    return min(1.0, max(0.0, 1.0 - (newest_month - month) / RECENCY_WINDOW_MONTHS)) if newest_month is not None else 0.5


def size_of(entry: ModelEntry) -> float:
    return _size(entry.params)


def context_of(entry: ModelEntry) -> float | None:
    return None if entry.context_length is None else _context(entry.context_length)


def recency_of(entry: ModelEntry, newest_month: int | None) -> float | None:
    m = entry.release_month()
    if m is None or newest_month is None:
        return None
    return _recency(m, newest_month)


def license_of(entry: ModelEntry, table: Mapping[str, float]) -> float | None:
    return table.get(entry.license) if entry.license else None


@dataclass
class ScoringConfig:
    """Weights (normalised to sum 1), the missing-data policy and the license-openness table."""

    weights: dict[str, float]
    missing: str = DEFAULT_MISSING
    license_openness: dict[str, float] = field(default_factory=lambda: dict(LICENSE_OPENNESS))

    @classmethod
    def build(
        cls, catalog_scoring: Mapping[str, Any] | None = None, weight_overrides: Mapping[str, float] | None = None
    ) -> ScoringConfig:
        """Defaults, then the catalog's `scoring:` block, then `--weight` overrides."""
        cs = dict(catalog_scoring or {})
        w = {**DEFAULT_WEIGHTS, **cs.get("weights", {}), **dict(weight_overrides or {})}
        for k, v in w.items():
            if k not in CRITERIA:
                raise BadInput(f"unknown scoring criterion {k!r}", f"use one of {', '.join(CRITERIA)}")
            if v < 0 or v != v:
                raise BadInput(f"weight {k}={v} is negative", "weights are >= 0")
        total = sum(w.values())
        if total <= 0:
            raise BadInput(
                "all scoring weights are zero", "give at least one criterion a weight > 0, e.g. --weight quality=1"
            )
        missing = cs.get("missing", DEFAULT_MISSING)
        if missing not in MISSING_POLICIES:
            raise BadInput(f"unknown missing-data policy {missing!r}", f"use one of {', '.join(MISSING_POLICIES)}")
        return cls(
            weights={k: w[k] / total for k in CRITERIA},
            missing=missing,
            license_openness={**LICENSE_OPENNESS, **cs.get("license_openness", {})},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"weights": {k: round(v, 6) for k, v in self.weights.items()}, "missing": self.missing}


@dataclass
class Scored:
    score: float  # 0-100, unrounded
    parts: dict[str, float]  # weighted contributions, sum = score
    criteria: dict[str, float]  # normalised values in [0, 1] (imputed where marked)
    imputed: list[str]


def _nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class Scorer:
    """Scores entries; fallback values for missing data come from the whole loaded catalog."""

    def __init__(self, entries: Iterable[ModelEntry], config: ScoringConfig, domains: Iterable[str] = ()):
        self.config = config
        self.relevant = relevant_metrics(domains)
        entries = list(entries)
        months = [m for m in (e.release_month() for e in entries) if m is not None]
        self.newest_month = max(months) if months else None
        q = {"lower-quartile": 0.25, "median": 0.5}.get(config.missing)
        # Nearest-rank quantiles commute with non-decreasing maps, so quantiles are taken over the
        # raw values (context length, release month) and transformed once: one cheap pass.
        table = config.license_openness
        raw_known: dict[str, list[float]] = {
            "quality": [v for v in (quality_of(e, self.relevant) for e in entries if e.metrics) if v is not None],
            "size": [],  # params is a required field: size is never missing
            "context": [e.context_length for e in entries if e.context_length is not None],
            "recency": months,
            "license": [v for v in (table.get(e.license) for e in entries if e.license) if v is not None],
        }
        transform = {
            "quality": lambda v: v,
            "size": lambda v: v,
            "context": lambda c: _context(c),
            "recency": lambda m: _recency(m, self.newest_month),
            "license": lambda v: v,
        }
        self.fallback: dict[str, float | None] = {}
        for c in CRITERIA:
            vals = raw_known[c]
            if c == "size":
                self.fallback[c] = None  # never needed
            elif not vals:
                self.fallback[c] = 0.5  # nobody has the data: the same value for all, so no effect on order
            elif q is None:
                self.fallback[c] = None  # "ignore": renormalise per model
            else:
                vals.sort()
                self.fallback[c] = transform[c](_nearest_rank(vals, q))

    def _raw(self, e: ModelEntry) -> dict[str, float | None]:
        return {
            "quality": quality_of(e, self.relevant),
            "size": size_of(e),
            "context": context_of(e),
            "recency": recency_of(e, self.newest_month),
            "license": license_of(e, self.config.license_openness),
        }

    def score(self, e: ModelEntry) -> Scored:
        raw = self._raw(e)
        w = self.config.weights
        criteria: dict[str, float] = {}
        imputed: list[str] = []
        for c in CRITERIA:
            v = raw[c]
            if v is None:
                fb = self.fallback[c]
                if fb is None:
                    imputed.append(c)  # ignored: listed as imputed-by-omission, weight redistributed
                    continue
                v = fb
                imputed.append(c)
            criteria[c] = v
        weight_sum = sum(w[c] for c in criteria)
        scale = 1.0 / weight_sum if (self.config.missing == "ignore" and weight_sum > 0) else 1.0
        if self.config.missing == "ignore" and weight_sum == 0:
            scale = 0.0
        parts = {c: 100.0 * w[c] * scale * criteria[c] for c in criteria}
        return Scored(score=sum(parts.values()), parts=parts, criteria=criteria, imputed=imputed)


def rank_key(entry: ModelEntry, score: float) -> tuple:
    """The total order: score descending, then fewer parameters, then id."""
    return (-score, entry.params, entry.id)
