"""`--backend ray`: the study's trials run on Ray Tune (a local cluster, or --ray-address).

Design: a `ray.tune.Tuner` with a thin subclass of Ray's `OptunaSearch` on the very study `gptctl tune`
opened (the same storage, sampler and search space, the recipe-as-written already enqueued as trial
0). Ray places each trial (`--cpus-per-trial` CPUs) and runs it in a worker; the trial there is the
same `run_trial` as the local backend's. Ray's stock searcher tells Optuna only the objective values
and drops the constraints, so the subclass's `on_trial_complete` first records the trial the way the
local backend does (`record_trial`: `Trial.set_constraint` per gate, the record, trials.jsonl; all in
the driver, so only one process writes the storage), then hands the stock code the values (complete)
or nothing (stopped early: PRUNED; failed: FAIL). It reads one private attribute of OptunaSearch
(`_ot_trials`, trial id -> Optuna trial), which its public methods do not expose.

--time-budget becomes Tune's `time_budget_s`: at the budget Tune stops the trials still running (the local
backend lets the running trial finish); such a trial is recorded as failed ("Ray stopped the trial").

Why this rather than ask/tell with plain Ray tasks: Ray Tune then owns what it is good at (resources,
concurrency, the time budget, its own experiment view) and the subclass stays about a screen long.

Benchmarks never overlap on one machine: every timed step holds the flock DIR/bench-slot, which Ray's
worker processes share. On several machines, DIR must be on a shared filesystem (the step store in
DIR/cache/ links and renames there); the slot then serialises benchmarks across machines too where
the filesystem supports flock (NFSv4 does), which costs time but never accuracy.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.tune.store import SharedStore
from gptctl.tune.trial import TrialResult, run_trial

NUMBER = "_gptctl_trial"  # the Optuna trial number, passed to the worker in the trial's config


def _trainable(config: dict[str, Any], recipe, space, kinds, out: str) -> None:
    """One trial in a Ray worker: run it, report its record (a JSON text) for the driver to record."""
    from ray import tune

    number = int(config[NUMBER])
    params = {k: v for k, v in config.items() if k != NUMBER}
    workdir = Path(out) / "trials" / f"{number:04d}"
    result = run_trial(recipe, space, params, number, workdir, kinds=kinds, store=SharedStore(Path(out) / "cache"))
    # Tune checks that every result carries the searcher's metrics; the driver tells Optuna from the record.
    values = {f"objective_{i}": result.objectives.get(o.name, math.nan) for i, o in enumerate(space.objectives)}
    tune.report({"record": json.dumps(result.to_dict(), default=str), **values})


def _searcher_class():
    from optuna.trial import TrialState
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    class ConstrainedOptunaSearch(OptunaSearch):
        """OptunaSearch that records constraints (and the trial) before telling Optuna."""

        def __init__(self, *args, ctx, record, **kwargs):
            super().__init__(*args, **kwargs)
            self.ctx, self.record = ctx, record

        def __getstate__(self):
            # Tune pickles its searcher (tuner.pkl, experiment checkpoints) for its own restore; the study
            # lives in the Optuna storage and --resume reopens it there, so the live objects stay out.
            state = self.__dict__.copy()
            for key in ("ctx", "record", "_ot_study", "_ot_trials", "_sampler", "_storage", "_space"):
                state.pop(key, None)
            return state

        def save_to_dir(self, *args, **kwargs) -> None:
            return None  # see __getstate__: the Optuna storage is the study's checkpoint

        def suggest(self, trial_id: str):
            if self.ctx.stop.is_set():  # Ctrl-C: start no more trials, let the running ones finish
                return Searcher.FINISHED
            return super().suggest(trial_id)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None:
                return super().on_trial_complete(trial_id, result, error)
            if result and "record" in result:
                trial = TrialResult.from_dict(json.loads(result["record"]))
            else:
                why = "the Ray trial failed (see the Ray logs)" if error else "Ray stopped the trial"
                params = {k: v for k, v in ot_trial.params.items() if k != NUMBER}
                trial = TrialResult(ot_trial.number, params, error=why)
            values, state = self.record(ot_trial, trial, self.ctx.space, Path(self.ctx.options.output))
            if self.ctx.on_trial:
                self.ctx.on_trial(trial)
            metrics = dict(zip(self.metric, values, strict=True)) if values is not None else None
            super().on_trial_complete(trial_id, metrics, error=state == TrialState.FAIL)

    return ConstrainedOptunaSearch


def run_on_ray(ctx, record) -> None:
    """Run the remaining trials of `ctx.study` (gptctl.tune.run.StudyRun) on Ray Tune."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise BadInput("--backend ray needs Ray Tune", "pip install 'gptctl[ray]' (ray[tune])") from None
    opts, space, study = ctx.options, ctx.space, ctx.study
    finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    out = Path(opts.output).resolve()
    started = not ray.is_initialized()
    if started:
        ray.init(address=opts.ray_address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # SIGINT reaches gptctl's handler (stop after the running trials), not Tune's own.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment tables on stdout
    metrics = [f"objective_{i}" for i in range(len(space.objectives))]  # as _trainable reports them
    searcher = _searcher_class()(
        lambda t: {**space.sample(t), NUMBER: t.number},  # define-by-run: the sampler decides, as here
        metric=metrics,
        mode=["min" if o.direction == "minimize" else "max" for o in space.objectives],
        sampler=ctx.sampler,
        study_name=study.study_name,
        storage=ctx.storage,
        ctx=ctx,
        record=record,
    )
    trainable = tune.with_parameters(_trainable, recipe=ctx.recipe, space=space, kinds=ctx.kinds, out=str(out))
    remaining = opts.time_budget_s - (_now() - ctx.start) if opts.time_budget_s is not None else None
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": opts.cpus_per_trial}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=opts.trials - finished, time_budget_s=remaining, reuse_actors=False
        ),
        run_config=tune.RunConfig(name="ray", storage_path=str(out), verbose=0),
    )
    try:
        tuner.fit()
    finally:
        if started:
            ray.shutdown()


def _now() -> float:
    import time

    return time.monotonic()
