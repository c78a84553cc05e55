"""A bounded canary of the service: start `gptctl serve` on an artifact, drive a load test, stop it.

Used by the recipe step kind `serve` and by benchmarks/bench_serve.py. The service runs as its own process
(the command users run, `--replicas` included) on a free 127.0.0.1 port, and is stopped with SIGTERM, so
the canary also proves that it drains and exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from gptctl.errors import CheckFailed
from gptctl.serve.loadtest import LoadtestOptions, LoadtestReport, run_loadtest
from gptctl.serve.replicas import free_port


@dataclass
class CanaryOptions:
    artifact: str
    requests: int = 8
    concurrency: int = 2
    max_tokens: int = 16
    prompt: str = "The patient was given"
    provider: str = "cpu"
    threads: int | None = None
    max_batch: int = 8
    replicas: int = 1
    ready_timeout_s: float = 300.0
    timeout: float = 120.0  # seconds one request may take


@dataclass
class CanaryResult:
    report: LoadtestReport
    startup_s: float  # from the process start to /health/ready
    exit_code: int  # of the service after SIGTERM (0: drained)
    log_tail: list[str] = field(default_factory=list)


class Service:
    """`gptctl serve ARTIFACT` as a child process on a free local port (a context manager)."""

    def __init__(self, options: CanaryOptions):
        self.options = options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def __enter__(self) -> Service:
        import httpx

        o = self.options
        cmd = [
            sys.executable,
            "-m",
            "gptctl",
            "serve",
            "start",
            o.artifact,
            "--port",
            str(self.port),
            "--provider",
            o.provider,
            "--max-batch",
            str(o.max_batch),
            "--replicas",
            str(o.replicas),
        ]
        if o.threads is not None:
            cmd += ["--threads", str(o.threads)]
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        while time.monotonic() - started < o.ready_timeout_s and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.stop()[1]
        raise CheckFailed(
            f"gptctl serve {o.artifact} was not ready within {o.ready_timeout_s:g} s: "
            + (tail[-1] if tail else "no output"),
            "run `gptctl serve` on it by hand to see why",
        )

    def stop(self) -> tuple[int, list[str]]:
        """SIGTERM (drain), then kill after 60 s; (exit code, last lines of stderr)."""
        if self.proc is None:
            return 0, []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, (err or "").strip().splitlines()[-5:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.stop()


def run_canary(options: CanaryOptions) -> CanaryResult:
    """Serve `options.artifact`, send the bounded load, stop the service; the load test's report."""
    with Service(options) as service:
        report = run_loadtest(
            LoadtestOptions(
                url=service.url,
                requests=options.requests,
                concurrency=options.concurrency,
                max_tokens=options.max_tokens,
                prompt=options.prompt,
                timeout=options.timeout,
            )
        )
        code, tail = service.stop()
    return CanaryResult(report=report, startup_s=round(service.startup_s, 2), exit_code=code, log_tail=tail)
