"""Catalog schema: every shipped YAML validates; every problem is reported at once as file:line: path: problem."""

import json
import textwrap
from pathlib import Path

import pytest

import gptctl
from gptctl.catalog import DOMAINS, FIELDS, METRICS, TASKS, builtin_path, load_catalogs, validate_files
from gptctl.catalog.schema import check_entry
from gptctl.errors import BadInput

DATA = Path(gptctl.__file__).parent / "data"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    monkeypatch.delenv("GPTCTL_NO_CACHE", raising=False)


def write(tmp_path, text, name="cat.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def problems_of(*paths):
    with pytest.raises(BadInput) as info:
        validate_files([str(p) for p in paths])
    exc = info.value
    return exc.details or [exc.message.removeprefix("invalid catalog: ")]


# ------------------------------------------------------------------------------------------ shipped data


@pytest.mark.parametrize("path", sorted(DATA.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    (f,) = validate_files([str(path)])
    assert f.models > 0


def test_bundled_catalog_has_the_60_models_with_sources():
    cat = load_catalogs()
    assert len(cat.entries) == 60
    assert cat.files[0].builtin and Path(cat.files[0].path) == builtin_path()
    assert all(e.source for e in cat.entries), "every bundled entry keeps its source"
    assert all(e.metrics_source for e in cat.entries if e.metrics)
    assert (DATA / "SOURCES.md").is_file()
    # package data: pyproject ships data/*.yaml and data/*.md
    assert builtin_path().parent == DATA


def test_bundled_catalog_matches_the_shared_copy_when_present():
    shared = Path("/work/shared/catalog/models.yaml")
    if not shared.exists():
        pytest.skip("shared catalog not on this machine")
    assert builtin_path().read_bytes() == shared.read_bytes()


def test_bundled_values_are_all_allowed():
    cat = load_catalogs()
    for e in cat.entries:
        assert set(e.tasks) <= set(TASKS) and set(e.domains) <= set(DOMAINS) and set(e.metrics) <= set(METRICS)


# ------------------------------------------------------------------------------------------ error classes


def test_all_problems_reported_at_once_with_file_line_and_path(tmp_path):
    p = write(
        tmp_path,
        """
        models:
          - id: a/one
            params: 1.5b
            tasks: [text-generation]
            domains: [medcal]
            paramz: 3
          - id: a/one
            params: 1x
            tasks: text-generation
            domains: [general]
            license: Apache 2.0
            release: 2024-13
            metrics: {mmlu: 120, mmlx: 3}
            instruct: maybe
          - id: a/two
            params: 7B
            params: 8B
            tasks: [text-generation]
            domains: [general]
        scoring:
          weights: {qualty: 1}
          missing: zero
        modles: []
        """,
    )
    probs = problems_of(p)
    text = "\n".join(probs)
    expected = [
        f"{p}:5: models[0].domains[0]: unknown domain 'medcal' (did you mean 'medical'?)",
        f"{p}:6: models[0].paramz: unknown field 'paramz' (did you mean 'params'?)",
        f"{p}:7: models[1].id: duplicate id 'a/one' (first at line 2)",
        f"{p}:8: models[1].params: '1x': unknown unit 'x'",
        f"{p}:9: models[1].tasks: expected a list, got a string",
        f"{p}:11: models[1].license: expected a lower-case license id",
        f"{p}:12: models[1].release: expected YYYY-MM or YYYY-MM-DD, got '2024-13'",
        f"{p}:13: models[1].metrics.mmlu: expected a score between 0 and 100, got 120",
        f"{p}:13: models[1].metrics.mmlx: unknown metric 'mmlx' (did you mean 'mmlu'?)",
        f"{p}:13: models[1].metrics: metrics need a 'metrics_source'",
        f"{p}:14: models[1].instruct: expected true or false, got 'maybe'",
        f"{p}:17: models[2].params: key 'params' appears more than once",
        f"{p}:21: scoring.weights.qualty: unknown criterion 'qualty' (did you mean 'quality'?)",
        f"{p}:22: scoring.missing: expected one of lower-quartile, median, ignore, got 'zero'",
        f"{p}:23: modles: unknown top-level key 'modles' (did you mean 'models'?)",
    ]
    for fragment in expected:
        assert any(line.startswith(fragment) for line in probs), f"missing: {fragment}\n--- got:\n{text}"
    assert len(probs) == len(expected)


def test_problems_across_several_files_are_reported_together(tmp_path):
    a = write(tmp_path, "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [generl]}\n", "a.yaml")
    b = write(tmp_path, "models:\n  - {id: y, params: 1b, tasks: [text-generation]}\n", "b.yaml")
    probs = problems_of(a, b)
    assert any(
        s.startswith(f"{a}:2: models[0].domains[0]: unknown domain 'generl' (did you mean 'general'?)") for s in probs
    )
    assert any(s.startswith(f"{b}:2: models[0]: missing required field 'domains'") for s in probs)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("models:\n  - id: x\n   params: 3\n", ":3: not valid YAML"),
        ("", "the file is empty"),
        ("- id: x\n", "got a list (put the entries under 'models:')"),
        ("models: {id: x}\n", "models: expected a list of model entries"),
        ("models:\n  - just-a-string\n", "models[0]: expected a mapping"),
        (
            "models:\n  - {id: 'has space', params: 1b, tasks: [text-generation], domains: [general]}\n",
            "models[0].id: expected an id without spaces",
        ),
        (
            "models:\n  - {id: x, params: 0, tasks: [text-generation], domains: [general]}\n",
            "models[0].params: a parameter count must be > 0",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [], domains: [general]}\n",
            "models[0].tasks: must list at least one value",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [general, general]}\n",
            "models[0].domains[1]: 'general' is listed twice",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [general], context_length: -5}\n",
            "context_length: expected a positive integer",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [general], languages: [English]}\n",
            "languages[0]: expected an ISO 639 language code",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [general], release: 2024-02-30}\n",
            "release: expected YYYY-MM or YYYY-MM-DD",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [txt-generation], domains: [general]}\n",
            "(did you mean 'text-generation'?)",
        ),
        (
            "models:\n  - {id: x, params: 1b, tasks: [text-generation], domains: [general], source: ''}\n",
            "source: expected a non-empty string",
        ),
        ("scoring: {weights: {quality: -1}}\n", "scoring.weights.quality: expected a weight >= 0"),
        (
            "scoring: {license_openness: {mit: 2}}\n",
            "scoring.license_openness.mit: expected an openness between 0 and 1",
        ),
        ("scoring: []\n", "scoring: expected a mapping"),
        ("other: 1\n", "unknown top-level key 'other'"),
    ],
)
def test_each_error_class(tmp_path, text, fragment):
    p = write(tmp_path, text)
    probs = problems_of(p)
    assert any(fragment in s for s in probs), probs
    assert all(s.startswith(str(p)) for s in probs)


def test_unreadable_inputs(tmp_path):
    assert "no such file" in problems_of(tmp_path / "missing.yaml")[0]
    assert "is a directory" in problems_of(tmp_path)[0]
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"models: [\xff]\n")
    assert "not UTF-8" in problems_of(bad)[0]


def test_yaml_dates_and_unit_params_are_normalised(tmp_path):
    p = write(
        tmp_path,
        """
        models:
          - id: x/y
            params: 1.5b
            tasks: [text-generation]
            domains: [general]
            release: 2024-09-25
        """,
    )
    (e,) = load_catalogs([str(p)]).entries
    assert e.params == 1_500_000_000 and e.release == "2024-09-25" and e.release_month() == 2024 * 12 + 8


def test_json_catalogs_are_accepted_and_checked_the_same_way(tmp_path):
    good = tmp_path / "c.json"
    good.write_text(
        json.dumps({"models": [{"id": "a/b", "params": "135m", "tasks": ["text-generation"], "domains": ["code"]}]})
    )
    (e,) = load_catalogs([str(good)]).entries
    assert e.params == 135_000_000
    bad = tmp_path / "d.json"
    bad.write_text(
        '{"models": [{"id": "a/b", "params": 1, "params": 2, "tasks": ["text-generation"], "domains": ["code"]}]}'
    )
    assert any("appears more than once" in s for s in problems_of(bad))
    broken = tmp_path / "e.json"
    broken.write_text('{"models": [}')
    assert "not valid JSON" in problems_of(broken)[0]


def test_fields_constant_matches_the_entry_dict():
    e = check_entry({"id": "a", "params": 1, "tasks": ["text-generation"], "domains": ["general"]}, ("m", 0), [])
    assert tuple(e.to_dict()) == FIELDS


def test_a_scoring_only_file_is_a_valid_overlay(tmp_path):
    p = write(tmp_path, "scoring:\n  weights: {quality: 1}\n  missing: median\n")
    cat = load_catalogs(["builtin", str(p)])
    assert len(cat.entries) == 60 and cat.scoring == {"weights": {"quality": 1.0}, "missing": "median"}
