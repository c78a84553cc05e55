"""`--backend ray` on a real local Ray cluster (num_cpus=2, no dashboard), shared by the module: completions
equal to batch-1 greedy, a swap through the deployment's user_config under load with no failed request and
no request seeing two versions, a corrupt user_config leaving the old version serving, `gptctl serve swap`
through the admin route, `ray-config` checked by Ray Serve's own schema and run by its import path. The
tests of the optional extra (no ray import on the local path, BadInput without ray) run without ray."""

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace

import httpx
import pytest
import yaml
from serve_support import exported_llama, free_port
from test_serve_app import client, reference
from test_serve_swap import corrupt_copy, swap_cli

from gptctl.cli.app import app

MODEL = "tiny-llama"
PROMPTS = ["The doctor", "A nurse measured", "Fever, cough and", "The clinic opens at"]
TOKENS = 8


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    return exported_llama(tmp_path_factory, seed=0)


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    return exported_llama(tmp_path_factory, seed=1)


@pytest.fixture(scope="module")
def versions(v1, v2):
    """Each artifact loaded here too (batch 1): its fingerprint and the batch-1 greedy text of each prompt."""
    from gptctl.serve.versions import LoadOptions, load_version

    out = {}
    for path in (v1, v2):
        version = load_version(path, LoadOptions(max_batch=1, check_batching=False))
        refs = {p: reference(version, version.tokenizer(p)["input_ids"], TOKENS)[0] for p in PROMPTS}
        out[path] = (version.fingerprint, refs)
        version.engine.stop()
    return out


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed (the gptctl[ray] extra)")
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def served(cluster, v1):
    """The `gptctl` application, deployed the way `gptctl serve start --backend ray` deploys it."""
    from gptctl.serve.ray_backend import RayOptions, start_ray
    from gptctl.serve.server import ServeOptions

    options = ServeOptions(artifact=str(v1), port=free_port(), model_name=MODEL, max_batch=4, max_queued=16)
    serving = start_ray(options, RayOptions())
    yield serving, options


def ready(url):
    return httpx.get(url + "/health/ready", timeout=10).json()


def wait_ready(url, until, timeout=60):
    deadline = time.monotonic() + timeout
    while not until(body := ready(url)):
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    return body


class Load:
    """Clients sending completions (every other one streamed) until stopped; keeps each result or error."""

    def __init__(self, url, workers=3):
        self.url, self.stop, self.results, self.errors = url, threading.Event(), [], []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(workers)]

    def run(self, worker):
        c, i = client(type("Live", (), {"url": self.url})), worker
        while not self.stop.is_set():
            prompt, stream = PROMPTS[i % len(PROMPTS)], i % 2 == 0
            i += 1
            try:
                got = c.completions.create(model=MODEL, prompt=prompt, max_tokens=TOKENS, temperature=0, stream=stream)
                if stream:
                    chunks = list(got)
                    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
                    self.results.append((prompt, text, {ch.system_fingerprint for ch in chunks}))
                else:
                    self.results.append((prompt, got.choices[0].text, {got.system_fingerprint}))
            except Exception as exc:  # noqa: BLE001 - every failure is reported by the test
                self.errors.append(repr(exc))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def check_results(load, versions):
    refs = {fp: r for fp, r in versions.values()}
    assert not load.errors, load.errors[:3]
    for prompt, text, fps in load.results:
        assert len(fps) == 1, fps  # every chunk of a stream from one version
        assert text == refs[next(iter(fps))][prompt], (prompt, fps)
    return {next(iter(fps)) for _, _, fps in load.results}


def test_completions_through_ray_equal_batch1_greedy(served, v1, versions):
    serving, _ = served
    fp, refs = versions[v1]
    c = client(type("Live", (), {"url": serving.url}))
    for prompt in PROMPTS[:2]:
        got = c.completions.create(model=MODEL, prompt=prompt, max_tokens=TOKENS, temperature=0)
        assert got.choices[0].text == refs[prompt] and got.system_fingerprint == fp
        chunks = list(c.completions.create(model=MODEL, prompt=prompt, max_tokens=TOKENS, temperature=0, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == refs[prompt]
    assert ready(serving.url)["status"] == "ready"


def test_user_config_swap_under_load_fails_no_request(served, v1, v2, versions):
    from gptctl.serve.ray_backend import RayOptions, deploy, serve_config

    serving, options = served
    new_fp = versions[v2][0]
    with Load(serving.url) as load:
        while len(load.results) < 6 and not load.errors:
            time.sleep(0.05)
        # What `serve deploy` of `gptctl serve ray-config v2` does: only user_config changes.
        deploy(serve_config(replace(options, artifact=str(v2)), RayOptions()))
        wait_ready(serving.url, lambda b: b.get("version") == new_fp)
        seen_new = len(load.results)
        while len(load.results) < seen_new + 6 and not load.errors:
            time.sleep(0.05)
    assert check_results(load, versions) == {versions[v1][0], new_fp}  # the load spanned the swap


def test_corrupt_user_config_leaves_the_old_version_serving(served, v2, versions, tmp_path):
    from gptctl.serve.ray_backend import RayOptions, deploy, serve_config

    serving, options = served
    fp = versions[v2][0]
    assert ready(serving.url)["version"] == fp
    bad = corrupt_copy(v2, tmp_path / "truncated", "truncated")
    with Load(serving.url, workers=2) as load:
        deploy(serve_config(replace(options, artifact=str(bad)), RayOptions()))
        body = wait_ready(serving.url, lambda b: "error" in b)
    assert body["status"] == "ready" and body["version"] == fp and "keeps serving" in body["error"]
    assert check_results(load, versions) == {fp}


def test_serve_swap_cli_through_the_admin_route(served, v1, versions):
    serving, _ = served
    res = swap_cli(serving.url, v1)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["current"] == versions[v1][0] == ready(serving.url)["version"]


def test_ray_config_is_valid_for_ray_serve_and_runs_by_its_import_path(served, v1, versions, tmp_path):
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema
    from typer.testing import CliRunner

    out = tmp_path / "serve.yaml"
    args = ["serve", "ray-config", str(v1), "-o", str(out), "--replicas", "2", "--autoscale-max", "3"]
    res = CliRunner().invoke(app, [*args, "--threads", "2", "--model-name", MODEL])
    assert res.exit_code == 0, res.output
    schema = ServeDeploySchema.model_validate(yaml.safe_load(out.read_text()))
    (application,) = schema.applications
    (dep,) = application.deployments
    assert dep.user_config == {"artifact": str(v1.resolve())} and "artifact" not in application.args
    assert dep.autoscaling_config["min_replicas"] == 2 and dep.autoscaling_config["max_replicas"] == 3
    assert dep.ray_actor_options.num_cpus == 2 and application.args["single_replica"] is False
    # The import path builds the app; run with the artifact as an arg, on the cluster's second CPU.
    built = import_attr(application.import_path)({**application.args, "artifact": str(v1)})
    serve.run(built, name="by-import-path", route_prefix="/by-import-path")
    try:
        url = served[0].url + "/by-import-path"
        got = client(type("Live", (), {"url": url})).completions.create(
            model=MODEL, prompt=PROMPTS[0], max_tokens=TOKENS, temperature=0
        )
        assert got.choices[0].text == versions[v1][1][PROMPTS[0]]
        # More than one replica possible: the admin route would swap one of them, so it refuses.
        refused = httpx.post(url + "/admin/swap", json={"artifact": str(v1)}, timeout=10)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "swap_by_user_config"
    finally:
        serve.delete("by-import-path")


def test_the_local_path_never_imports_ray():
    probe = (
        "import sys, gptctl.cli.app, gptctl.cli.serve, gptctl.serve.backends, gptctl.serve.server, "
        "gptctl.serve.ray_backend; from gptctl.serve.backends import load_backend; load_backend('local'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_without_ray_the_ray_backend_is_a_bad_input(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    res = CliRunner().invoke(app, ["serve", "start", str(tmp_path), "--backend", "ray", "--port", "0"])
    assert res.exit_code == 2, res.output
    assert "gptctl[ray]" in res.output
