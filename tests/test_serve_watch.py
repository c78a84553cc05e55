"""`gptctl serve --watch LINK`: an atomically replaced symlink swaps the served version; a broken target
leaves the old one serving and is not retried until the link moves again."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_support import exported_llama, free_port

from gptctl.errors import BadInput, CheckFailed
from gptctl.serve.watch import LinkWatcher, check_watchable


def _point(link: Path, target: Path) -> None:
    """What a deploy script does: a fresh symlink renamed over the old one (one atomic step)."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def test_watcher_swaps_on_change_and_does_not_retry_a_failed_target(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    link = tmp_path / "current"
    link.symlink_to(a)
    calls = []

    def swap(target):
        calls.append(target)
        if target.endswith("/b"):
            raise CheckFailed("swap refused (HTTP 422): broken")
        return {"current": "fp-" + Path(target).name}

    w = LinkWatcher(str(link), swap)
    assert w.poll_once() is None and calls == []  # the first target is what is already served
    _point(link, b)
    event = w.poll_once()
    assert event is not None and not event.ok and "broken" in event.detail
    assert w.poll_once() is None and calls == [str(b.resolve())]  # a failed target is not retried
    _point(link, c)
    event = w.poll_once()
    assert event.ok and event.detail == "now serving fp-c" and calls[-1] == str(c.resolve())


def test_watch_needs_a_symlink_to_a_directory(tmp_path):
    with pytest.raises(BadInput, match="not a symbolic link"):
        check_watchable(tmp_path)
    (tmp_path / "f").write_text("x")
    (tmp_path / "l").symlink_to(tmp_path / "f")
    with pytest.raises(BadInput, match="not a directory"):
        check_watchable(tmp_path / "l")


def _version(url: str) -> str | None:
    try:
        r = httpx.get(url + "/health/ready", timeout=2)
    except httpx.TransportError:
        return None
    return r.json().get("version") if r.status_code == 200 else None


def _wait(predicate, timeout: float, proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_server_follows_its_link(tmp_path, tmp_path_factory):
    first, second = exported_llama(tmp_path_factory, 0), exported_llama(tmp_path_factory, 1)
    broken = tmp_path / "broken"
    shutil.copytree(second, broken)
    onnx = next(broken.rglob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:1000])  # truncated: loading it fails
    link = tmp_path / "current"
    link.symlink_to(first)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gptctl", "serve", "start", str(link), "--watch", str(link), "--port", str(port)]
    cmd += ["--model-name", "tiny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: _version(url) is not None, 90, proc)
        v1 = _version(url)
        _point(link, second)
        _wait(lambda: _version(url) not in (None, v1), 90, proc)
        v2 = _version(url)
        _point(link, broken)
        time.sleep(4)  # a few polls: the broken target is tried once and refused
        assert _version(url) == v2
        body = {"model": "tiny", "prompt": "The doctor", "max_tokens": 3, "temperature": 0}
        assert httpx.post(url + "/v1/completions", json=body, timeout=30).status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert "swap to" in err and "failed" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
