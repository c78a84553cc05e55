"""The Optuna study behind `gptctl tune`: samplers by name, storage, the recipe enqueued as trial 0.

Optuna is imported inside these functions (`gptctl --help` never loads it). Constraints reach the
samplers the way Optuna 5 documents: each trial's `Trial.set_constraint(key, value)` stores them in
its system attributes and TPE, NSGA-II and GP read them from there (`constraints_func`, deprecated in
Optuna 5, is not used); `Study.best_trials` then holds only feasible trials.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.tune.space import SearchSpace

# name -> (module, class); imported when chosen.
SAMPLERS: dict[str, tuple[str, str]] = {
    "tpe": ("optuna.samplers", "TPESampler"),
    "nsga2": ("optuna.samplers", "NSGAIISampler"),
    "gp": ("optuna.samplers", "GPSampler"),
    "random": ("optuna.samplers", "RandomSampler"),
    "grid": ("optuna.samplers", "GridSampler"),
}
JOURNAL = "study.journal"


def make_sampler(name: str, space: SearchSpace, *, seed: int = 0, trials: int = 20):
    """The named sampler, set up for this space and trial budget."""
    if name not in SAMPLERS:
        raise BadInput(f"unknown sampler {name!r}", f"choose one of {', '.join(SAMPLERS)}")
    module, cls_name = SAMPLERS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    if name == "grid":
        grid = {p.path: p.values() for p in space.params}
        continuous = [k for k, v in grid.items() if v is None]
        if continuous:
            raise BadInput(
                f"the grid sampler needs a finite space; continuous: {', '.join(continuous)}",
                "give those ranges a step, or choose --sampler tpe",
            )
        return cls(grid, seed=seed)
    if name == "tpe":
        import warnings

        import optuna

        # The first third of a small budget explores at random before TPE models the results; `group`
        # (experimental in Optuna 5) models conditional parameters apart from the rest.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return cls(seed=seed, n_startup_trials=max(1, min(10, trials // 3)), multivariate=True, group=True)
    if name == "nsga2":
        return cls(seed=seed, population_size=max(2, min(50, trials // 2)))
    return cls(seed=seed)


def storage_for(url: str | None, out_dir: Path):
    """A journal file in DIR by default; an RDB URL (sqlite:///, postgresql://...), redis://, or a
    journal file path (*.journal, for several machines on one shared filesystem) otherwise."""
    import optuna

    journal = optuna.storages.journal
    if url is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(out_dir / JOURNAL)))
    if url.startswith("redis://"):
        return optuna.storages.JournalStorage(journal.JournalRedisBackend(url))
    if url.endswith(".journal") and "://" not in url:
        return optuna.storages.JournalStorage(journal.JournalFileBackend(url))
    return optuna.storages.RDBStorage(url)  # an object, not the URL: Ray's OptunaSearch takes only those


def open_study(
    space: SearchSpace,
    name: str,
    *,
    storage: Any,
    sampler,
    resume: bool,
    baseline: dict[str, Any],
):
    """Create the study (the recipe as written enqueued first) or, with `resume`, load it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [o.direction for o in space.objectives]
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        exists = True
    except KeyError:
        study, exists = None, False
    if exists and not resume:
        raise BadInput(
            f"the storage already holds a study {name!r} ({len(study.trials)} trials)",
            "pass --resume to continue it, or --output DIR / --storage URL for a new one",
        )
    if exists:
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise BadInput(f"study {name!r} has other objectives", "change --output, or restore the objectives")
        return study
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=directions)
    study.set_user_attr("objectives", [o.name for o in space.objectives])
    study.enqueue_trial(baseline, user_attrs={"baseline": True})
    return study
