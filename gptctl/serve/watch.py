"""`gptctl serve --watch LINK`: follow a symlink that a deploy script replaces atomically, swapping to its target.

A deploy writes the new artifact beside the old one and then renames a fresh symlink over LINK
(`ln -sfn NEW LINK.tmp && mv -T LINK.tmp LINK`), so LINK always names a complete artifact. The watcher
polls LINK's resolved target and, when it changes, asks the running server to swap through its own
`POST /admin/swap`: the same route `gptctl serve swap` uses, so validation, canary warm-up, the atomic
switch and draining are the ones every other update goes through (one replica or a router's several).
A target that fails to load is not retried until LINK changes again; the old version keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptctl.errors import BadInput, GptctlError

log = logging.getLogger(__name__)

# Polling, not inotify: a rename over a symlink is one event on Linux but none on some network
# filesystems, and a one-second delay is nothing next to loading and warming a model.
DEFAULT_INTERVAL_S = 1.0


def link_target(link: str | Path) -> str:
    """LINK's fully resolved target (what the server would load)."""
    return os.path.realpath(Path(link).expanduser())


def check_watchable(link: str | Path) -> None:
    """Refuse --watch on something that is not a symlink to a directory (before the server starts)."""
    path = Path(link).expanduser()
    if not path.is_symlink():
        raise BadInput(
            f"--watch {link}: not a symbolic link",
            "point a symlink at the artifact (ln -sfn ARTIFACT LINK) and replace it atomically to deploy",
        )
    if not Path(link_target(path)).is_dir():
        raise BadInput(f"--watch {link}: its target {link_target(path)} is not a directory")


@dataclass
class WatchEvent:
    """One change of LINK's target and what the swap made of it."""

    target: str
    ok: bool
    detail: str


@dataclass
class LinkWatcher:
    """Polls `link` every `interval_s` and calls `swap(target)` when its target changes."""

    link: str
    swap: Callable[[str], Any]
    interval_s: float = DEFAULT_INTERVAL_S
    current: str = ""
    events: list[WatchEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = self.current or link_target(self.link)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> WatchEvent | None:
        """Check LINK now; swap if its target changed. Returns what happened (None: no change)."""
        try:
            target = link_target(self.link)
        except OSError:  # LINK missing for a moment mid-deploy: look again next time
            return None
        if target == self.current or not Path(target).is_dir():
            return None
        self.current = target  # a failed target is not retried until LINK moves again
        try:
            result = self.swap(target)
            event = WatchEvent(target, True, f"now serving {result.get('current', target)}")
            log.info("--watch: %s -> %s", self.link, event.detail)
        except GptctlError as exc:
            event = WatchEvent(target, False, exc.message)
            log.warning("--watch: swap to %s failed, the old version keeps serving: %s", target, exc.message)
        self.events.append(event)
        return event

    def start(self) -> LinkWatcher:
        self._thread = threading.Thread(target=self._run, name="gptctl-serve-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()


def http_swapper(host: str, port: int, api_key_env: str | None, timeout_s: float = 600.0) -> Callable[[str], Any]:
    """A swap function that goes through the server's own /admin/swap (local server or router alike)."""
    from gptctl.serve.client import swap

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{port}"
    return lambda target: swap(url, target, api_key_env=api_key_env, timeout=timeout_s)
