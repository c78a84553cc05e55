"""An export and a bench leave nothing behind in the system temp dir; pytest keeps no passing run's files."""

import getpass
import os
import tempfile

SMALL = {"provider": ["cpu"], "threads": 1, "iterations": 1, "warmup": 0, "decode_tokens": 2, "prompt_lengths": [8]}


def _third_party_fixed_names() -> set[str]:
    """Entries other libraries make once per user under a fixed name, not per run (so they never grow):
    ONNX Runtime's telemetry session id `.ses` (51 bytes, rewritten in place by every import), and torch's
    inductor cache root `torchinductor_USER` (created empty on import, filled only by torch.compile)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (some containers): torch falls back the same way
        user = "unknown"
    return {".ses", f"torchinductor_{user}"}


def _left_over(tmp: os.PathLike) -> dict[str, int]:
    """What is in `tmp` beyond the fixed names, by path, with sizes (bytes)."""
    fixed = _third_party_fixed_names()
    found = {}
    for root, dirs, files in os.walk(tmp):
        rel = os.path.relpath(root, tmp)
        for name in files:
            path = os.path.normpath(os.path.join(rel, name))
            if path not in fixed:
                found[path] = os.path.getsize(os.path.join(root, name))
        for name in dirs:
            path = os.path.normpath(os.path.join(rel, name))
            if path not in fixed and not os.listdir(os.path.join(root, name)):
                found[path + "/"] = 0
    return found


def test_export_and_bench_leave_nothing_in_the_temp_dir(tiny_gpt2, tmp_path, monkeypatch):
    from gptctl.bench import bench_artifact
    from gptctl.export import export_model

    tmp = tmp_path / "system-tmp"
    tmp.mkdir()
    # The library (tempfile.gettempdir()) and the bench workers (TMPDIR, inherited) both write here now.
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    out = tmp_path / "work" / "onnx"
    export_model({"model": str(tiny_gpt2), "output": str(out)})
    manifest = bench_artifact({"model": str(out), **SMALL})
    assert manifest["benchmark"]["cpu"]["available"] and manifest["benchmark"]["pytorch"]["available"]
    assert _left_over(tmp) == {}
    # The atomic output's staging directories (.onnx.partial-*, .onnx.old-*) are gone too.
    assert sorted(p.name for p in out.parent.iterdir()) == ["onnx"]


def test_left_over_sees_a_leaked_temp_dir(tmp_path):
    # The check above can fail: a mkdtemp directory or file nobody removed is reported.
    leaked = tempfile.mkdtemp(dir=tmp_path)
    (tmp_path / "torchinductor_x.onnx").write_bytes(b"1234")
    assert _left_over(tmp_path) == {os.path.basename(leaked) + "/": 0, "torchinductor_x.onnx": 4}


def test_pytest_keeps_temp_dirs_only_of_failed_tests(pytestconfig):
    # Each kept session of `make test` held ~400 MB of exports and tiny models: the default (the last 3
    # sessions, every test) left 1.2 GB under the system temp dir.
    assert pytestconfig.getini("tmp_path_retention_policy") == "failed"
    assert int(pytestconfig.getini("tmp_path_retention_count")) <= 1
