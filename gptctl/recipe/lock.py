"""One run per workdir: an exclusive `flock` on WORKDIR/.gptctl-run/lock, held while `run_recipe` runs.

The kernel drops an flock when its process dies, however it dies (SIGKILL included), so a lock left by a
killed run is never mistaken for a live one; the file only records who holds it (PID, start time,
recipe) for the message a second run prints. Without the lock, two runs of one workdir both took the
other's step in progress for "interrupted last time" and wrote the same outputs at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput
from gptctl.recipe.cache import STATE_DIR

LOCK_FILE = "lock"
_POLL_S = 0.2  # how often a waiting run retries: short next to any step, invisible in CPU use


def lock_path(workdir: Path) -> Path:
    return Path(workdir) / STATE_DIR / LOCK_FILE


@contextlib.contextmanager
def workdir_lock(workdir: Path, *, recipe: str, wait_s: float = 0.0) -> Iterator[dict[str, Any]]:
    """Hold the workdir's lock for the block; yield what was recorded (pid, started, recipe).

    Raises:
        BadInput: another live run holds it and did not let go within `wait_s` seconds (exit 2).
    """
    import fcntl

    path = lock_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the step's subprocesses
    try:
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _busy(workdir, wait_s) from None
                time.sleep(_POLL_S)
        me = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "recipe": recipe}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        yield me
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def holder(workdir: Path) -> dict[str, Any] | None:
    """Who holds the workdir's lock now (pid, started, recipe), or None when no live run does."""
    import fcntl

    path = lock_path(workdir)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: nobody runs (released at close)
        return None
    except BlockingIOError:
        return _recorded(path)
    finally:
        os.close(fd)


def _recorded(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # the holder has not written its record yet
        return {}


def _busy(workdir: Path, wait_s: float) -> BadInput:
    who = _recorded(lock_path(workdir))
    by = f"run PID {who.get('pid', '?')} since {who.get('started', '?')}"
    if who.get("recipe"):
        by += f" (recipe {who['recipe']})"
    waited = f" (waited {wait_s:g}s)" if wait_s > 0 else ""
    return BadInput(
        f"workdir {workdir} is in use by {by}{waited}",
        "let that run finish, pass --wait SECONDS to queue behind it, or choose another --workdir",
    )
