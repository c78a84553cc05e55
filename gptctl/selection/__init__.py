"""Model selection: hard constraints over the catalog, a documented weighted score, explanations.

    from gptctl.selection import SelectOptions, select_models, write_selection
    result = select_models(SelectOptions(domain=["medical"], max_params="1b"))
    result.require_match()            # NothingMatched (exit 1) with per-constraint counts
    write_selection(result, "selection.json")

Scoring is described in `gptctl.selection.scoring`.
"""

# Names -> the submodule defining them, imported on first use (PEP 562): `gptctl select --help` builds
# its flags from gptctl.selection.options alone, without the ranking code (~15 ms of start-up).
_EXPORTS = {
    **dict.fromkeys(
        (
            "Constraint",
            "Exclusion",
            "RankedModel",
            "SelectionResult",
            "build_constraints",
            "load_selection",
            "select_models",
            "selection_document",
            "write_selection",
        ),
        "core",
    ),
    "SelectOptions": "options",
    **dict.fromkeys(("DEFAULT_MISSING", "DEFAULT_WEIGHTS", "LICENSE_OPENNESS", "ScoringConfig"), "scoring"),
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gptctl.selection' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"gptctl.selection.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Constraint",
    "DEFAULT_MISSING",
    "DEFAULT_WEIGHTS",
    "Exclusion",
    "LICENSE_OPENNESS",
    "RankedModel",
    "ScoringConfig",
    "SelectOptions",
    "SelectionResult",
    "build_constraints",
    "load_selection",
    "select_models",
    "selection_document",
    "write_selection",
]
