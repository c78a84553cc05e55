"""Replica worker processes behind the router (`gptctl serve ARTIFACT --replicas N`).

Each replica is a plain `gptctl serve start` process on its own free 127.0.0.1 port: the worker protocol
is the OpenAI HTTP API the single server already speaks, so a replica is exactly what `--replicas 1`
serves and the router adds nothing a replica must know about. A monitor thread polls each replica's
process and /health/ready every `poll_s`; a process that exits while the set is open is started again
(on a new port, with the artifact it last served) and counted in `restarts`. On Linux a replica gets
SIGTERM when the router process dies, even by kill -9, so no worker outlives its router.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# A replica of the tiny test llama is ready ~3 s after its start on 2 busy cores; SmolLM2-135M int4 in ~5 s.
DEFAULT_POLL_S = 0.25
_PR_SET_PDEATHSIG = 1
# A replica that exits this many times in a row before it was ever ready is not restarted again: the
# artifact or the flags are wrong, and restarting would only loop.
MAX_START_FAILURES = 3


@dataclass
class ReplicaOptions:
    """How each worker is started: the flags of `gptctl serve start` it gets."""

    artifact: str
    model_name: str
    provider: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    max_queued: int = 64
    api_key_env: str | None = None
    drain_timeout_s: float = 60.0


@dataclass
class Replica:
    """One worker: its process, port and what the router knows of it. `inflight` is the router's count."""

    index: int
    artifact: str
    port: int = 0
    proc: Any = None
    ready: bool = False
    version: str | None = None  # the fingerprint its /health/ready reports
    inflight: int = 0
    assigned: int = 0  # requests sent to it in all (breaks ties between equally idle replicas)
    restarts: int = 0
    failures_in_row: int = 0  # exits before becoming ready, since it was last ready
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "port": self.port,
            "pid": self.pid,
            "ready": self.ready,
            "version": self.version,
            "artifact": self.artifact,
            "inflight": self.inflight,
            "restarts": self.restarts,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_command(options: ReplicaOptions, artifact: str, port: int) -> list[str]:
    """The command line of one replica: `gptctl serve start` on 127.0.0.1:port."""
    cmd = [
        sys.executable,
        "-m",
        "gptctl",
        "serve",
        "start",
        artifact,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--provider",
        options.provider,
        "--max-batch",
        str(options.max_batch),
        "--max-queued",
        str(options.max_queued),
        "--model-name",
        options.model_name,
    ]
    if options.threads is not None:
        cmd += ["--threads", str(options.threads)]
    if options.api_key_env:
        cmd += ["--api-key-env", options.api_key_env]
    return cmd


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: replicas are still stopped by ReplicaSet.close
        pass


class ReplicaSet:
    """N replicas, started, watched and restarted (see the module docstring)."""

    def __init__(
        self,
        options: ReplicaOptions,
        count: int,
        *,
        headers: dict[str, str] | None = None,
        poll_s: float = DEFAULT_POLL_S,
        on_change: Callable[[ReplicaSet], None] | None = None,
    ):
        self.options = options
        self.headers = headers or {}
        self.poll_s = poll_s
        self.on_change = on_change or (lambda s: None)
        self.replicas = [Replica(i, options.artifact) for i in range(count)]
        self.restarts = 0
        self.failed: str | None = None  # why the set gave up (a replica could not start)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        for replica in self.replicas:
            self._spawn(replica)
        self._monitor = threading.Thread(target=self._watch, name="gptctl-serve-replicas", daemon=True)
        self._monitor.start()

    def _spawn(self, replica: Replica) -> None:
        replica.port = free_port()
        replica.ready, replica.version, replica.started = False, None, time.monotonic()
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        replica.proc = subprocess.Popen(
            worker_command(self.options, replica.artifact, replica.port), stdin=subprocess.DEVNULL, preexec_fn=preexec
        )  # noqa: PLW1509
        log.info("replica %d: pid %d on port %d (%s)", replica.index, replica.proc.pid, replica.port, replica.artifact)

    # -- watching ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        import httpx

        with httpx.Client(timeout=2.0, headers=self.headers) as client:
            while not self._closing.wait(self.poll_s):
                for replica in self.replicas:
                    self._check(client, replica)

    def _check(self, client: Any, replica: Replica) -> None:
        import httpx

        with self._lock:
            if self._closing.is_set():
                return
            code = replica.proc.poll()
            if code is not None and self.failed is not None:
                return
            if code is not None:
                replica.ready = False
                replica.failures_in_row += 0 if replica.version else 1  # version: it was ready in this life
                if replica.failures_in_row >= MAX_START_FAILURES:
                    self.failed = (
                        f"replica {replica.index} exited {replica.failures_in_row} times (last with {code}) "
                        "before it was ready"
                    )
                    self.on_change(self)
                    return
                log.warning("replica %d (pid %d) exited with %s: restarting it", replica.index, replica.proc.pid, code)
                replica.restarts += 1
                self.restarts += 1
                self._spawn(replica)
                self.on_change(self)
                return
        try:
            response = client.get(replica.url + "/health/ready")
            ready, body = response.status_code == 200, response.json()
        except (httpx.HTTPError, ValueError):
            ready, body = False, {}
        if ready != replica.ready:
            log.info("replica %d: %s", replica.index, "ready" if ready else "not ready")
        replica.ready = ready
        if ready:
            replica.version, replica.failures_in_row = body.get("version") or replica.version, 0

    def mark_failed(self, replica: Replica) -> None:
        """The router could not reach it: out of rotation until the monitor sees it ready again."""
        replica.ready = False

    # -- choosing -----------------------------------------------------------------------------------
    def pick(self, exclude: set[int] = frozenset()) -> Replica | None:
        """The ready replica with the least work (in flight, then fewest assigned); `exclude`d ones only if alone."""
        ready = [r for r in self.replicas if r.ready]
        pool = [r for r in ready if r.index not in exclude] or ready
        if not pool:
            return None
        return min(pool, key=lambda r: (r.inflight, r.assigned, r.index))

    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.ready)

    def wait_ready(self, timeout: float) -> bool:
        """Block until every replica is ready (True) or `timeout` passes, or a replica cannot start (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r.ready for r in self.replicas):
                return True
            time.sleep(self.poll_s / 2)
        return False

    # -- stopping ---------------------------------------------------------------------------------
    def close(self, timeout: float = 30.0) -> None:
        """SIGTERM every replica (each drains its in-flight requests), then kill what is left after `timeout`."""
        with self._lock:
            self._closing.set()
        for replica in self.replicas:
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            if replica.proc is None:
                continue
            try:
                replica.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait(5)
            replica.ready = False
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(5)
