"""Model selection: hard constraints over the catalog, a documented weighted score, explanations.

    from gptctl.selection import SelectOptions, select_models, write_selection
    result = select_models(SelectOptions(domain=["medical"], max_params="1b"))
    result.require_match()            # NothingMatched (exit 1) with per-constraint counts
    write_selection(result, "selection.json")

Scoring is described in `gptctl.selection.scoring`.
"""

from gptctl.selection.core import (
    Constraint,
    Exclusion,
    RankedModel,
    SelectionResult,
    build_constraints,
    load_selection,
    select_models,
    selection_document,
    write_selection,
)
from gptctl.selection.options import SelectOptions
from gptctl.selection.scoring import DEFAULT_MISSING, DEFAULT_WEIGHTS, LICENSE_OPENNESS, ScoringConfig

__all__ = [
    "Constraint", "DEFAULT_MISSING", "DEFAULT_WEIGHTS", "Exclusion", "LICENSE_OPENNESS", "RankedModel",
    "ScoringConfig", "SelectOptions", "SelectionResult", "build_constraints", "load_selection",
    "select_models", "selection_document", "write_selection",
]
