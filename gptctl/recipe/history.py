"""What a workdir remembers of its runs: one summary per run, and which run made each cached result.

WORKDIR/summaries/RUN.json is written once per run and never overwritten (RUN: the UTC start time),
WORKDIR/summary.json is a copy of the latest. A cached step points at the run that produced its result
(`produced_by`), with that run's duration: a cached rerun used to overwrite summary.json with 0 s for
every step and lose the real run's timings.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

SUMMARIES_DIR = "summaries"
LATEST = "summary.json"


def new_run_id(workdir: Path) -> str:
    """A name for this run, unique in the workdir (called under the workdir lock)."""
    base = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run, n = base, 1
    while summary_file(workdir, run).exists():
        n += 1
        run = f"{base}-{n}"
    return run


def summary_file(workdir: Path, run: str) -> Path:
    return Path(workdir) / SUMMARIES_DIR / f"{run}.json"


def write_summaries(workdir: Path, run: str, summary: dict[str, Any]) -> Path:
    """Write this run's summary to summaries/RUN.json and to summary.json (atomically, each)."""
    text = json.dumps(summary, indent=2, default=str) + "\n"
    path = summary_file(workdir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (path, Path(workdir) / LATEST):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path


def produced_by(state: dict[str, Any]) -> dict[str, Any]:
    """The run that made a cached step's result, from the step's cache record."""
    run = state.get("run")
    out: dict[str, Any] = {
        "run": run,
        "summary": f"{SUMMARIES_DIR}/{run}.json" if run else None,
        "duration_s": round(float(state.get("duration_s") or 0.0), 3),
        "finished": state.get("finished"),
    }
    return out


def discard_output(output: Path) -> None:
    """Remove a step's previous output before it reruns: moved aside first, so that a kill during the
    deletion leaves a hidden `.NAME.old-*` leftover (cleaned by the next run), never a half-deleted output."""
    if not output.exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
    os.replace(output, aside / output.name)
    shutil.rmtree(aside, ignore_errors=True)
