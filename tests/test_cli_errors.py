"""One error path: library errors -> exit codes (independent of --debug) -> one sentence, or one JSON object
on stdout under --json for every command that has --json."""

import json

import pytest
import typer
from typer.testing import CliRunner

from gptctl.cli import common
from gptctl.cli.app import app
from gptctl.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BadInput,
    CheckFailed,
    GptctlError,
    NothingMatched,
    Unexpected,
    exit_code_for,
)

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    monkeypatch.setitem(common.DEBUG, "on", False)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def json_error(res, code):
    """The one JSON object a failed --json command prints on stdout."""
    assert res.exit_code == code, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)  # exactly one document: a second one would not parse
    assert doc["exit_code"] == code and doc["error"] and "hint" in doc
    assert "Traceback" not in res.stdout + res.stderr
    return doc


# ------------------------------------------------------------------------------------------ exit codes


@pytest.mark.parametrize(
    "exc, code",
    [
        (BadInput("x"), EXIT_BAD_INPUT),
        (NothingMatched("x"), EXIT_FAILED),
        (CheckFailed("x"), EXIT_FAILED),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (FileNotFoundError("x"), EXIT_BAD_INPUT),
        (RuntimeError("x"), EXIT_FAILED),
        (Unexpected(RuntimeError("x")), EXIT_FAILED),
        (Unexpected(ValueError("x")), EXIT_BAD_INPUT),
    ],
)
def test_one_mapping_from_outcome_to_exit_code(exc, code):
    assert exit_code_for(exc) == code


@pytest.mark.parametrize(
    "args, code",
    [
        (["select", "--max-params", "abc"], 2),
        (["select", "--domain", "legal", "--max-params", "1b"], 1),
    ],
)
def test_debug_adds_the_traceback_but_keeps_the_exit_code(args, code):
    plain = run(*args)
    debug = run("--debug", *args)
    assert plain.exit_code == debug.exit_code == code
    assert "Traceback" in debug.stderr and "Traceback" not in plain.stderr
    assert "error:" in debug.stderr  # the sentence and hint still come after the traceback


def _command_raising(exc):
    @common.handle_errors
    def command(json_out: bool = False):
        raise exc

    return command


@pytest.mark.parametrize(
    "exc, code",
    [(KeyboardInterrupt(), 130), (RuntimeError("boom"), 1), (OSError("disk"), 2), (CheckFailed("gate", "fix it"), 1)],
)
def test_handle_errors_exit_codes_and_json(capsys, exc, code):
    with pytest.raises(typer.Exit) as e:
        _command_raising(exc)(json_out=True)
    assert e.value.exit_code == code
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["exit_code"] == code and captured.err.startswith("error:")


def test_partial_result_travels_with_the_error(capsys):
    exc = CheckFailed("provider missing", "install it", partial={"benchmark": {"cpu": {"available": True}}})
    with pytest.raises(typer.Exit):
        _command_raising(exc)(json_out=True)
    doc = json.loads(capsys.readouterr().out)
    expected = {
        "benchmark": {"cpu": {"available": True}},
        "error": "provider missing",
        "hint": "install it",
        "exit_code": 1,
    }
    assert doc == expected


def test_fail_merges_a_partial_the_command_holds(capsys):
    # What a recipe run does with the error its report holds: one object, the summary and the error.
    with pytest.raises(typer.Exit) as e:
        common.fail(GptctlError("step ship failed"), json_out=True, partial={"steps": [], "error": "old text"})
    doc = json.loads(capsys.readouterr().out)
    assert e.value.exit_code == 2 and doc["steps"] == [] and doc["error"] == "step ship failed"


# ------------------------------------------------------------------------------------------ --json, per command


def test_select_bad_input_json():
    doc = json_error(run("select", "--max-params", "abc", "--json"), 2)
    assert "max_params" in doc["error"]


def test_select_nothing_matched_json_is_one_object_with_the_ranking():
    doc = json_error(run("select", "--domain", "legal", "--max-params", "1b", "--json"), 1)
    assert doc["models"] == [] and doc["nearest_misses"] and doc["details"]


def test_catalog_list_and_show_json_errors():
    doc = json_error(run("catalog", "list", "--domain", "legal", "--max-params", "1b", "--json"), 1)
    assert doc["nearest_misses"]
    json_error(run("catalog", "show", "no/such-model", "--json"), 2)


def test_usage_error_json():
    doc = json_error(run("select", "--no-such-flag", "--json"), 2)
    assert "--no-such-flag" in doc["error"]


def test_bench_json_errors(tmp_path, monkeypatch):
    json_error(run("bench", tmp_path / "missing", "--json"), 2)
    import gptctl.bench

    def missing_provider(options, progress=None):
        raise CheckFailed(
            "required execution provider not active: cuda",
            "install onnxruntime-gpu",
            partial={"benchmark": {"cpu": {"available": True}}},
        )

    monkeypatch.setattr(gptctl.bench, "bench_artifact", missing_provider)
    doc = json_error(run("bench", tmp_path, "--require-provider", "cuda", "--json"), 1)
    assert "cuda" in doc["error"] and doc["benchmark"] == {"cpu": {"available": True}}


def test_export_optimize_and_run_json_errors(tmp_path):
    json_error(run("export", "--model", tmp_path / "missing", "--output", tmp_path / "o", "--json"), 2)
    data = tmp_path / "d.txt"
    data.write_text("some text\n")
    lora = ["optimize", "lora", "--model", tmp_path / "missing", "--data", data, "--output", tmp_path / "o", "--json"]
    json_error(run(*lora), 2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsteps: {a: {kind: no-such-kind}}\n")
    json_error(run("run", recipe, "--json"), 2)
