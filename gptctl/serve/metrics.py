"""Prometheus metrics of the service, in a registry of its own (two servers in one process do not mix).

The engine reports through `ServeMetrics` as an observer (steps, first token, inter-token gaps, finish
reasons); the HTTP side counts requests by status, rejections and cancellations; gauges read the
deployment when scraped.
"""

from __future__ import annotations

from typing import Any

# Latency buckets in seconds: a tiny test model decodes in ~0.3 ms a token, a 1B model on CPU in ~30-100 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServeMetrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.running = Gauge("gptctl_serve_requests_running", "Requests decoding in the batch", registry=r)
        self.waiting = Gauge("gptctl_serve_requests_waiting", "Requests queued for a batch row", registry=r)
        self.requests = Counter(
            "gptctl_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.rejected = Counter("gptctl_serve_rejected", "Requests refused before the engine", ["reason"], registry=r)
        self.cancelled = Counter("gptctl_serve_cancelled", "Requests whose client went away mid-generation", registry=r)
        self.finished = Counter(
            "gptctl_serve_engine_finished", "Engine requests by finish reason", ["reason"], registry=r
        )
        self.ttft = Histogram(
            "gptctl_serve_time_to_first_token_seconds",
            "Queue + prefill until the first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "gptctl_serve_inter_token_latency_seconds",
            "Gap between a request's tokens",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "gptctl_serve_batch_size",
            "Rows per decode step",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
            registry=r,
        )
        self.tokens = Counter("gptctl_serve_generated_tokens", "Tokens generated", registry=r)
        self.version = Gauge(
            "gptctl_serve_model_version",
            "1 per loaded model version, by state",
            ["fingerprint", "artifact", "state"],
            registry=r,
        )
        self.batching = Gauge("gptctl_serve_batching_enabled", "1 when the batching self-check passed", registry=r)
        self._versions: set[tuple[str, str, str]] = set()

    # -- the engine's observer interface -----------------------------------------------------------
    def step(self, rows: int) -> None:
        self.batch.observe(rows)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.tokens.inc()

    def inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)
        self.tokens.inc()

    def finished_reason(self, reason: str) -> None:
        self.finished.labels(reason).inc()

    # -- scraping ---------------------------------------------------------------------------------
    def refresh(self, deployment: Any) -> None:
        """Set the gauges from the deployment's versions (called before each scrape)."""
        versions = [deployment.current, *deployment.retired]
        self.running.set(sum(v.engine.stats().running for v in versions))
        self.waiting.set(sum(v.engine.stats().waiting for v in versions))
        self.batching.set(1 if deployment.current.engine.batching else 0)
        labels = {(v.fingerprint, str(v.artifact), v.state) for v in versions}
        if deployment.loading:
            labels.add(("", str(deployment.loading), "loading"))
        for gone in self._versions - labels:
            self.version.remove(*gone)
        for label in labels:
            self.version.labels(*label).set(1)
        self._versions = labels

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class EngineObserver:
    """Adapts ServeMetrics to the engine's observer calls (`finished` is a counter's name there)."""

    def __init__(self, metrics: ServeMetrics):
        self._m = metrics

    def step(self, rows: int) -> None:
        self._m.step(rows)

    def first_token(self, seconds: float) -> None:
        self._m.first_token(seconds)

    def inter_token(self, seconds: float) -> None:
        self._m.inter_token(seconds)

    def finished(self, reason: str) -> None:
        self._m.finished_reason(reason)


class RouterMetrics:
    """The router's own series (`--replicas N`); /metrics adds them to the sum of the replicas' series."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # `requests`: the name the auth/counting middleware (app._Gate) increments.
        self.requests = Counter(
            "gptctl_serve_router_requests",
            "HTTP requests at the router by route and status",
            ["route", "status"],
            registry=r,
        )
        self.retries = Counter(
            "gptctl_serve_router_retries",
            "Requests sent again to another replica before their first token, by reason",
            ["reason"],
            registry=r,
        )
        self.restarts = Gauge(
            "gptctl_serve_replica_restarts", "Replica processes started again after they exited", registry=r
        )
        self.ready = Gauge("gptctl_serve_replicas_ready", "Replicas answering /health/ready", registry=r)
        self.inflight = Gauge(
            "gptctl_serve_replica_inflight",
            "Requests the router has in flight on each replica",
            ["replica"],
            registry=r,
        )

    def refresh(self, replicas: Any) -> None:
        self.restarts.set(replicas.restarts)
        self.ready.set(replicas.ready_count())
        for replica in replicas.replicas:
            self.inflight.labels(str(replica.index)).set(replica.inflight)

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def merge_expositions(texts: list[str]) -> str:
    """Prometheus text expositions summed sample by sample (same name and labels): counters, histogram
    buckets and gauges of N replicas add up to the service's (model_version's 1s count the replicas)."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, tuple[str, str, dict[tuple, float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            for s in family.samples:
                if s.name.endswith("_created"):  # a creation timestamp: a sum of them means nothing
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                samples[key] = samples.get(key, 0.0) + s.value
    lines = []
    for name, (kind, doc, samples) in families.items():
        if not samples:
            continue
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]
        for (sample, labels), value in samples.items():
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{shown}}} {value!r}" if shown else f"{sample} {value!r}")
    return "\n".join(lines) + "\n" if lines else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
