"""`gptctl select` and `gptctl catalog` through typer's test runner: output, exit codes, no tracebacks."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

from gptctl.cli import common
from gptctl.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    monkeypatch.setitem(common.DEBUG, "on", False)
    monkeypatch.setattr(common.out, "_width", 160)  # a wide terminal, so table cells are not folded
    monkeypatch.setattr(common.err, "_width", 160)


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def assert_no_traceback(res):
    assert "Traceback" not in res.output and "Traceback" not in (res.stderr or "")
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)


# ------------------------------------------------------------------------------------------ success paths


def test_issue_example_ranks_biogpt_first():
    res = run("select", "--domain", "medical", "--max-params", "1b", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["models"][0]["id"] == "microsoft/biogpt"
    assert doc["constraints"] == {"domain": ["medical"], "max_params": 1_000_000_000}
    assert doc["excluded"] == 59


def test_json_schema_of_select():
    res = run("select", "--max-params", "2b", "--license", "apache-2.0", "--top", "3", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)  # stdout holds exactly one JSON object
    assert isinstance(doc, dict) and len(doc["models"]) == 3 and doc["top"] == 3 and doc["matched"] > 3
    for m in doc["models"]:
        assert isinstance(m["id"], str) and isinstance(m["params"], int) and isinstance(m["score"], float)
        assert set(m["parts"]) == {"quality", "size", "context", "recency", "license"}
        assert abs(sum(m["parts"].values()) - m["score"]) < 1e-3
        assert m["license"] == "apache-2.0" and m["params"] <= 2_000_000_000
    assert [m["rank"] for m in doc["models"]] == [1, 2, 3]
    assert doc["constraints"] == {"max_params": 2_000_000_000, "license": ["apache-2.0"]}
    assert doc["excluded"] == doc["total"] - doc["matched"]


def test_table_output_has_rank_id_params_domains_license_score_and_parts():
    res = run("select", "--domain", "medical", "--top", "3")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for header in ("#", "id", "params", "domains", "license", "score", "qual", "size", "ctx", "new", "open"):
        assert header in out
    assert "microsoft/biogpt" in out and "347M" in out and "biomedical, medical" in out
    assert "top 3 of 8 models" in out and "imputed" in out


def test_explain_lists_excluded_models():
    res = run("select", "--domain", "medical", "--max-params", "1b", "--explain")
    assert res.exit_code == 0
    assert "59 excluded" in res.stdout
    assert "microsoft/BioGPT-Large" in res.stdout and "has 1.5B params > 1B" in res.stdout
    doc = json.loads(run("select", "--domain", "medical", "--max-params", "1b", "--explain", "--json").stdout)
    assert len(doc["excluded_models"]) == 59


def test_output_file_is_written(tmp_path):
    target = tmp_path / "sel.json"
    res = run("select", "--domain", "medical", "--max-params", "1b", "--output", target)
    assert res.exit_code == 0, res.output
    doc = json.loads(target.read_text())
    assert doc["model"]["id"] == "microsoft/biogpt" and len(doc["catalog"]["sha256"]) == 64


def test_weights_and_instruct_flags():
    res = run(
        "select",
        "--instruct",
        "--weight",
        "size=1",
        "--weight",
        "quality=0",
        "--weight",
        "context=0",
        "--weight",
        "recency=0",
        "--weight",
        "license=0",
        "--top",
        "1",
        "--json",
    )
    doc = json.loads(res.stdout)
    assert doc["models"][0]["instruct"] is True and doc["scoring"]["weights"]["size"] == 1.0
    base = json.loads(run("select", "--base", "--json").stdout)
    assert all(m["instruct"] is False for m in base["models"])


def test_user_catalog_via_flag_and_env(tmp_path, monkeypatch):
    cat = tmp_path / "mine.yaml"
    cat.write_text(
        "models:\n  - {id: me/tiny-med, params: 10m, tasks: [text-generation], domains: [medical], license: mit}\n"
    )
    doc = json.loads(run("select", "--domain", "medical", "--catalog", cat, "--json").stdout)
    assert [m["id"] for m in doc["models"]] == ["me/tiny-med"]
    doc = json.loads(
        run("select", "--domain", "medical", "--catalog", "builtin", "--catalog", cat, "--top", "2", "--json").stdout
    )
    assert doc["matched"] == 9
    monkeypatch.setenv("GPTCTL_CATALOG", str(cat))
    assert json.loads(run("catalog", "list", "--json").stdout)["count"] == 1


# ------------------------------------------------------------------------------------------ nothing matched: exit 1


def test_nothing_matched_exits_1_with_counts_and_nearest_misses():
    res = run("select", "--domain", "medical", "--max-params", "300m")
    assert res.exit_code == 1
    assert_no_traceback(res)
    err = res.stderr
    assert "no model matches all 2 constraints" in err
    assert "domain medical: removed 52 of 60" in err and "params <= 300M: removed 8 of 8" in err
    assert "microsoft/biogpt is medical but has 347M params > 300M" in err
    assert "microsoft/BioGPT-Large is medical but has 1.5B params > 300M" in err


def test_nothing_matched_with_json_still_prints_the_document():
    res = run("select", "--domain", "legal", "--max-params", "1b", "--json")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["models"] == [] and doc["nearest_misses"] and doc["excluded"] == 60


def test_an_empty_catalog_says_so(tmp_path):
    overlay = tmp_path / "scoring-only.yaml"
    overlay.write_text("scoring: {missing: median}\n")
    res = run("select", "--catalog", overlay)
    assert res.exit_code == 1 and "the catalog has no models" in res.stderr


def test_output_is_not_written_when_nothing_matched(tmp_path):
    res = run("select", "--domain", "legal", "--max-params", "1b", "--output", tmp_path / "s.json")
    assert res.exit_code == 1 and not (tmp_path / "s.json").exists()


# ------------------------------------------------------------------------------------------ bad input: exit 2, no traceback  # noqa: E501

BAD = [
    (["select", "--max-params", "1x"], "unknown unit 'x'"),
    (["select", "--min-params", "abc"], "not a parameter count"),
    (["select", "--max-params", "1.5"], "did you mean 1.5b"),
    (["select", "--domain", "medcal"], "did you mean 'medical'"),
    (["select", "--task", "text-generaton"], "did you mean 'text-generation'"),
    (["select", "--language", "English"], "ISO 639"),
    (["select", "--min-context", "lots"], "not a context length"),
    (["select", "--metric", "mmlu=>40"], "write '>='"),
    (["select", "--metric", "mmlx>=40"], "did you mean 'mmlu'"),
    (["select", "--metric", "mmlu"], "not a metric constraint"),
    (["select", "--metric", "mmlu>=400"], "0-100"),
    (["select", "--weight", "qualty=1"], "did you mean 'quality'"),
    (["select", "--weight", "quality"], "not a weight"),
    (["select", "--weight", "quality=-1"], ">= 0"),
    (
        [
            "select",
            "--weight",
            "quality=0",
            "--weight",
            "size=0",
            "--weight",
            "context=0",
            "--weight",
            "recency=0",
            "--weight",
            "license=0",
        ],
        "all scoring weights are zero",
    ),
    (["select", "--top", "0"], "at least 1"),
    (["select", "--top", "many"], "Invalid value"),
    (["select", "--min-params", "2b", "--max-params", "1b"], "no model can match"),
    (["select", "--catalog", "does-not-exist.yaml"], "no such file"),
    (["select", "--bogus"], "No such option"),
    (["catalog", "show", "microsoft/biogtp"], "did you mean 'microsoft/biogpt'"),
    (["catalog", "list", "--max-params", "1x"], "unknown unit 'x'"),
    (["catalog", "validate", "nope.yaml"], "no such file"),
]


@pytest.mark.parametrize("args, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exits_2_with_one_clear_message(args, fragment):
    res = run(*args)
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert_no_traceback(res)
    assert fragment in res.output, res.output


def test_output_to_a_directory_fails_before_printing(tmp_path):
    res = run("select", "--output", tmp_path, "--json")
    assert res.exit_code == 2 and "is a directory" in res.stderr
    doc = json.loads(res.stdout)  # under --json only the error object: no ranking was printed first
    assert doc["exit_code"] == 2 and "is a directory" in doc["error"] and "models" not in doc


def test_schema_errors_exit_2_listing_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""\
        models:
          - id: a/b
            parmas: 1b
            tasks: [text-generation]
            domains: [general]
          - id: a/b
            params: 2b
            tasks: [text-generation]
            domains: [general]
        """)
    )
    for args in (["select", "--catalog", bad], ["catalog", "validate", bad], ["catalog", "list", "--catalog", bad]):
        res = run(*args)
        assert res.exit_code == 2
        assert_no_traceback(res)
        assert f"{bad}:2: models[0]: missing required field 'params'" in res.stderr
        assert f"{bad}:3: models[0].parmas: unknown field 'parmas' (did you mean 'params'?)" in res.stderr
        assert f"{bad}:6: models[1].id: duplicate id 'a/b' (first at line 2)" in res.stderr


def test_invalid_yaml_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - id: x\n   params: 3\n")
    res = run("select", "--catalog", bad)
    assert res.exit_code == 2 and f"{bad}:3: not valid YAML" in res.stderr
    assert_no_traceback(res)


# ------------------------------------------------------------------------------------------ catalog subcommands


def test_catalog_validate_ok(tmp_path):
    res = run("catalog", "validate", "builtin")
    assert res.exit_code == 0 and "ok: builtin (60 models" in res.stdout


def test_catalog_list_filters_like_select():
    res = run("catalog", "list", "--domain", "code", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["count"] == 5 and all("code" in m["domains"] for m in doc["models"])
    table = run("catalog", "list", "--domain", "medical", "--max-params", "1b")
    assert table.exit_code == 0 and "microsoft/biogpt" in table.stdout and "1 of 60 models" in table.stdout
    none = run("catalog", "list", "--domain", "legal", "--max-params", "1b")
    assert none.exit_code == 1 and "nearest misses" in none.stderr


def test_catalog_show():
    res = run("catalog", "show", "microsoft/biogpt", "--json")
    assert res.exit_code == 0
    d = json.loads(res.stdout)
    assert (
        d["params"] == 346763264
        and d["license"] == "mit"
        and d["exportable"] is False
        and d["catalog_file"].endswith("models.yaml")
    )
    text = run("catalog", "show", "Qwen/Qwen2.5-0.5B")
    assert text.exit_code == 0 and "494,032,768" in text.stdout and "32,768 tokens" in text.stdout


def test_debug_shows_the_traceback_for_library_errors():
    # --debug adds the traceback; the exit code stays bad input's (tests/test_cli_errors.py covers more).
    res = run("--debug", "select", "--domain", "medcal", catch_exceptions=True)
    assert res.exit_code == 2 and "Traceback" in res.stderr and "BadInput" in res.stderr
