"""Output to a pipe at 80 columns (CI logs) stays readable: no model id split, no header cut; export
summarises its validation (worst output per kind) and shows every output only under --verbose."""

import json
import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from gptctl.cli import common
from gptctl.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    monkeypatch.setitem(common.DEBUG, "on", False)
    monkeypatch.setitem(common.VERBOSITY, "level", 0)
    monkeypatch.setattr(common.out, "_width", 80)  # what rich uses for a pipe, or COLUMNS=80
    monkeypatch.setattr(common.err, "_width", 80)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_whole(words, text):
    """Each word appears unbroken on one line (a fold would split it across lines)."""
    lines = text.splitlines()
    broken = [w for w in words if not any(w in line for line in lines)]
    assert not broken, f"split across lines: {broken}\n{text}"


def assert_within(text, width=80, skip=("score = sum of parts",)):
    """Table lines fit the width (captions are single soft-wrapped lines) and no header was cut."""
    assert "…" not in text, text
    too_wide = [line for line in text.splitlines() if len(line.rstrip()) > width and not line.startswith(skip)]
    assert not too_wide, too_wide


def _ids(*args):
    res = run("select", *args, "--json")
    assert res.exit_code == 0, res.stderr
    return [m["id"] for m in json.loads(res.stdout)["models"]]


@pytest.mark.parametrize("args", [["--top", "12"], ["--domain", "medical"], []])
def test_select_table_at_80_columns_keeps_every_id_whole(args):
    ids = _ids(*args)
    res = run("select", *args)
    assert res.exit_code == 0
    assert_whole(ids, res.stdout)
    assert_within(res.stdout)


def test_select_explain_at_80_columns_keeps_excluded_ids_whole():
    res = run("select", "--domain", "code", "--max-params", "1b", "--explain")
    excluded = re.findall(r"^ (\S+/\S+)", res.stdout, re.M)
    assert len(excluded) > 40  # the narrow layout: each excluded id starts its own line
    assert_whole(_ids(), res.stdout)  # every catalog id appears whole (ranked or excluded)
    assert_within(res.stdout)


def test_select_to_a_real_pipe_with_columns_80():
    env = {**os.environ, "COLUMNS": "80", "GPTCTL_NO_CACHE": "1"}
    env.pop("GPTCTL_CATALOG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gptctl", "select", "--top", "10"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert_whole(_ids("--top", "10"), proc.stdout)
    assert_within(proc.stdout)


def test_wide_console_keeps_one_row_per_model(monkeypatch):
    monkeypatch.setattr(common.out, "_width", 200)
    ids = _ids("--top", "5")
    res = run("select", "--top", "5")
    rows = [line for line in res.stdout.splitlines() if any(i in line for i in ids)]
    assert len(rows) == 5 and all("apache-2.0" in r or "gemma" in r or "llama" in r for r in rows[:1])


def test_catalog_list_at_80_columns_keeps_every_id_whole():
    res = run("catalog", "list", "--max-params", "2b")
    assert res.exit_code == 0, res.stderr
    listed = json.loads(run("catalog", "list", "--max-params", "2b", "--json").stdout)["models"]
    assert_whole([m["id"] for m in listed], res.stdout)
    assert_within(res.stdout)


# ------------------------------------------------------------------------------------------ export, bench


@pytest.fixture(scope="module")
def exported(tiny_model_factory, tmp_path_factory):
    """A tiny llama exported through the CLI at 80 columns: (output dir, stdout)."""
    out = tmp_path_factory.mktemp("narrow") / "onnx"
    mp = pytest.MonkeyPatch()
    mp.setattr(common.out, "_width", 80)
    try:
        res = run("export", "-m", tiny_model_factory("llama"), "-o", out)
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return out, res.stdout


def test_export_summarises_validation_per_kind(exported):
    out, stdout = exported
    outputs = json.loads((out / "gptctl.json").read_text())["validation"]["outputs"]
    layers = sum(name.endswith(".key") for name in outputs)
    assert layers >= 2 and len(outputs) == 2 * layers + 1  # logits + a key and a value per layer
    assert "present keys" in stdout and "present values" in stdout and "logits" in stdout
    shown = [name for name in outputs if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", stdout)]
    assert len(shown) <= 3, shown  # at most the worst key and the worst value (+ logits), not every layer
    assert re.search(rf"present keys[\s│]+{layers}[\s│]", stdout)
    assert "--verbose" in stdout and "gptctl.json" in stdout
    assert_within(stdout)


def test_export_verbose_shows_every_output(exported, capsys, monkeypatch):
    from gptctl.cli.export import render_export

    out, _ = exported
    manifest = json.loads((out / "gptctl.json").read_text())
    monkeypatch.setitem(common.VERBOSITY, "level", 1)
    render_export(manifest, str(out))
    stdout = capsys.readouterr().out
    assert all(name in stdout for name in manifest["validation"]["outputs"])
    assert_within(stdout)


def test_export_summary_counts_outputs_over_atol(exported, capsys):
    from gptctl.cli.export import render_export

    out, _ = exported
    manifest = json.loads((out / "gptctl.json").read_text())
    v = manifest["validation"]
    worst = max((n for n in v["outputs"] if n.endswith(".value")), key=lambda n: v["outputs"][n]["max"])
    v["atol"] = v["outputs"][worst]["max"] / 2  # only outputs above half the worst value fail
    over = sum(d["max"] > v["atol"] for n, d in v["outputs"].items() if n.endswith(".value"))
    render_export(manifest, str(out))
    assert re.search(rf"present values.*{worst}.*{over} over", capsys.readouterr().out)


def test_bench_table_at_80_columns_keeps_headers_and_backends_whole(exported):
    out, _ = exported
    res = run(
        "bench",
        out,
        "--no-baseline",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--decode-tokens",
        "2",
        "--prompt-lengths",
        "8,16",
        "--provider",
        "cpu",
    )
    assert res.exit_code == 0, res.output
    assert_whole(["cpu", "prefill b1_s8", "prefill b1_s16", "decode tok/s", "vs pytorch", "peak RSS MB"], res.stdout)
    assert_within(res.stdout, skip=("benchmark (",))
