"""`gptctl serve` from the command line: --help stays light, a real server process starts, serves and
drains on SIGTERM, and the flags that guard it (API key, non-local host) behave."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serve_support import exported_llama, free_port
from test_cli_imports import imported_by

SERVER_STACK = {"fastapi", "uvicorn", "starlette", "prometheus_client", "httpx", "onnxruntime", "torch", "transformers"}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["serve", "--help"],
        ["serve", "start", "--help"],
        ["serve", "swap", "--help"],
        ["serve", "loadtest", "--help"],
    ],
)
def test_serve_help_imports_no_server_stack(args):
    code, modules = imported_by(args)
    assert code == 0
    assert not modules & SERVER_STACK, sorted(modules & SERVER_STACK)


def test_a_server_process_serves_then_drains_on_sigterm(tmp_path_factory):
    artifact = exported_llama(tmp_path_factory)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SERVE_TEST_KEY": "k3y"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gptctl",
            "serve",
            str(artifact),
            "--port",
            str(port),
            "--max-batch",
            "2",
            "--api-key-env",
            "SERVE_TEST_KEY",
            "--model-name",
            "tiny",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, ready = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(url + "/health/ready", headers={"Authorization": "Bearer k3y"}, timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, proc.stderr.read() if proc.poll() is not None else ""
        body = {"model": "tiny", "prompt": "The doctor", "max_tokens": 5, "temperature": 0}
        assert httpx.post(url + "/v1/completions", json=body).status_code == 401
        ok = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 5
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/v1" in err and "ready: tiny fp_" in err


def test_missing_api_key_variable_and_bad_artifact_exit_2(tmp_path, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_KEY_VAR"}
    bad_key = subprocess.run(
        [
            sys.executable,
            "-m",
            "gptctl",
            "serve",
            str(exported_llama(tmp_path_factory)),
            "--api-key-env",
            "NO_SUCH_KEY_VAR",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_key.returncode == 2 and "NO_SUCH_KEY_VAR" in bad_key.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "gptctl", "serve", str(tmp_path / "nope"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_a_non_local_host_without_a_key_is_warned_about():
    from gptctl.serve.server import ServeOptions, exposure_warning

    assert "without --api-key-env" in exposure_warning(ServeOptions(artifact="x", host="0.0.0.0"))
    assert exposure_warning(ServeOptions(artifact="x", host="0.0.0.0", api_key_env="KEY")) is None
    assert exposure_warning(ServeOptions(artifact="x")) is None


def test_percentiles_of_the_loadtest():
    from gptctl.serve.loadtest import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile([], 50) is None
    assert json.dumps(percentile([3.0], 95)) == "3.0"
