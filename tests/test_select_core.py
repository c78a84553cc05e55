"""select_models: constraints, scoring, explanations and the selection file, through the library."""

import json
import math

import pytest

from gptctl.catalog import Catalog, load_catalogs
from gptctl.catalog.schema import ModelEntry
from gptctl.errors import BadInput, NothingMatched
from gptctl.model_source import resolve_model
from gptctl.options import option_problems
from gptctl.selection import ScoringConfig, SelectOptions, select_models, write_selection
from gptctl.selection.scoring import DEFAULT_WEIGHTS, Scorer, quality_of


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)


@pytest.fixture(scope="module")
def bundled():
    return load_catalogs(["builtin"])


def mk(id, params=100_000_000, **kw):
    kw.setdefault("tasks", ("text-generation",))
    kw.setdefault("domains", ("general",))
    return ModelEntry(id=id, params=params, **kw)


def catalog(*entries, scoring=None):
    return Catalog(entries=list(entries), files=[], scoring=scoring or {})


# ------------------------------------------------------------------------------------------ the issue's example


def test_medical_under_1b_ranks_biogpt_first(bundled):
    r = select_models(SelectOptions(domain=["medical"], max_params="1b"), bundled)
    assert r.models[0].id == "microsoft/biogpt"
    assert r.constraints == {"domain": ["medical"], "max_params": 1_000_000_000}


def test_biogpt_leads_medical_on_its_merits_not_only_by_being_alone(bundled):
    # Without the size cap, 8 medical models compete; biogpt still leads: it is the only small one with
    # a (fine-tuned) PubMedQA score, MIT-licensed. Scores are the documented formula, no special case.
    r = select_models(SelectOptions(domain=["medical"]), bundled)
    assert r.matched == 8 and r.models[0].id == "microsoft/biogpt"
    top = r.models[0]
    assert top.scored.criteria["license"] == 1.0 and "quality" not in top.scored.imputed
    assert math.isclose(sum(top.scored.parts.values()), top.score)


def test_domain_metrics_only_count_for_that_domain(bundled):
    biogpt = bundled.get("microsoft/biogpt")  # its only metric is PubMedQA
    general = Scorer(bundled.entries, ScoringConfig.build())
    medical = Scorer(bundled.entries, ScoringConfig.build(), ["medical"])
    assert "quality" in general.score(biogpt).imputed
    assert "quality" not in medical.score(biogpt).imputed
    assert quality_of(biogpt, medical.relevant) == pytest.approx((78.2 - 33.3) / (100 - 33.3))


# ------------------------------------------------------------------------------------------ JSON shape


def test_json_document_shape(bundled):
    d = select_models(SelectOptions(domain=["medical"], max_params="1b"), bundled).to_dict()
    assert set(d) >= {"models", "constraints", "excluded", "matched", "total", "funnel", "scoring", "catalog"}
    assert d["excluded"] == 59 and d["matched"] == 1 and d["total"] == 60
    m = d["models"][0]
    assert set(m) >= {
        "rank",
        "id",
        "params",
        "score",
        "parts",
        "criteria",
        "imputed",
        "family",
        "architecture",
        "license",
        "domains",
        "context_length",
        "release",
        "metrics",
        "exportable",
    }
    assert set(m["parts"]) == set(DEFAULT_WEIGHTS) and isinstance(m["score"], float)
    assert d["funnel"] == [
        {"constraint": "domain", "label": "domain medical", "before": 60, "removed": 52, "after": 8, "alone": 52},
        {"constraint": "max_params", "label": "params <= 1B", "before": 8, "removed": 7, "after": 1, "alone": 38},
    ]
    assert d["catalog"]["sha256"] == bundled.sha256
    json.dumps(d)  # plain JSON types only
    assert "excluded_models" not in d and "nearest_misses" not in d


def test_explain_lists_every_excluded_model_with_its_first_failed_constraint(bundled):
    r = select_models(SelectOptions(domain=["medical"], max_params="1b", explain=True), bundled)
    ex = r.to_dict()["excluded_models"]
    assert len(ex) == 59 == r.excluded
    by_id = {x["id"]: x for x in ex}
    assert by_id["openai-community/gpt2"] == {
        "id": "openai-community/gpt2",
        "constraint": "domain",
        "label": "domain medical",
        "reason": "is not medical (domains: general)",
    }
    assert by_id["microsoft/BioGPT-Large"]["constraint"] == "max_params"
    assert by_id["microsoft/BioGPT-Large"]["reason"] == "has 1.5B params > 1B"


# ------------------------------------------------------------------------------------------ nothing matched


def test_nothing_matched_counts_and_nearest_misses(bundled):
    r = select_models(SelectOptions(domain=["medical"], max_params="1b", min_context=2048), bundled)
    assert r.matched == 0 and r.models == []
    with pytest.raises(NothingMatched) as info:
        r.require_match()
    exc = info.value
    assert exc.exit_code == 1
    text = "\n".join(exc.details)
    assert "domain medical: removed 52 of 60" in text
    assert "params <= 1B: removed 7 of 8" in text
    assert "context >= 2k: removed 1 of 1" in text
    assert "microsoft/biogpt is medical but has context 1k < 2k tokens" in text
    misses = r.to_dict()["nearest_misses"]
    assert misses[0]["id"] == "microsoft/biogpt" and misses[0]["failed"] == ["min_context"]


def test_the_issues_biogpt_large_sentence(bundled):
    r = select_models(
        SelectOptions(domain=["medical"], max_params="1b", license=["mit"], architecture=["biogpt"], min_params="400m"),
        bundled,
    )
    assert r.matched == 0
    sentences = [m["sentence"] for m in r.nearest_misses]
    assert "microsoft/BioGPT-Large is medical, mit-licensed but has 1.5B params > 1B" in sentences


def test_values_no_entry_has_are_warned_about_not_silently_dropped(bundled):
    r = select_models(SelectOptions(license=["apache2", "mit"]), bundled)
    assert r.matched > 0
    assert r.warnings == ["no model in the catalog has license 'apache2' (did you mean 'apache-2.0'?)"]
    assert select_models(SelectOptions(architecture=["rwkv"]), bundled).warnings == [
        "no model in the catalog has architecture 'rwkv'"
    ]


# ------------------------------------------------------------------------------------------ constraints


@pytest.mark.parametrize(
    "options, check",
    [
        ({"license": ["apache-2.0", "mit"]}, lambda e: e.license in ("apache-2.0", "mit")),
        ({"task": "image-text-to-text"}, lambda e: "image-text-to-text" in e.tasks),
        ({"language": "zh"}, lambda e: "zh" in e.languages),
        ({"min_context": "32k"}, lambda e: e.context_length and e.context_length >= 32768),
        ({"instruct": True}, lambda e: e.instruct is True),
        ({"instruct": False}, lambda e: e.instruct is False),
        ({"metric": ["mmlu>=40"]}, lambda e: e.metrics.get("mmlu", -1) >= 40),
        ({"metric": ["gsm8k<10"]}, lambda e: e.metrics.get("gsm8k", 999) < 10),
        ({"architecture": ["llama", "gpt-neox"]}, lambda e: e.architecture in ("llama", "gpt_neox")),
        (
            {"exportable": True},
            lambda e: (
                e.architecture
                in (
                    "llama",
                    "qwen2",
                    "qwen3",
                    "gpt2",
                    "gpt_neox",
                    "opt",
                    "gemma3",
                    "gemma3_text",
                    "phi",
                    "phi3",
                    "olmo",
                    "stablelm",
                    "mistral",
                    "codegen",
                )
            ),
        ),
        ({"min_params": "1b", "max_params": "3b"}, lambda e: 1e9 <= e.params <= 3e9),
        ({"domain": ["legal", "finance"]}, lambda e: {"legal", "finance"} & set(e.domains)),
    ],
)
def test_each_constraint_keeps_exactly_the_models_that_satisfy_it(bundled, options, check):
    r = select_models(SelectOptions(**options), bundled)
    kept = {m.id for m in r.models}
    assert kept == {e.id for e in bundled.entries if check(e)}
    assert kept, "the example should keep something"


def test_missing_metric_fails_a_metric_floor_with_a_stated_reason(bundled):
    r = select_models(SelectOptions(metric=["mmlu>=40"], explain=True), bundled)
    reasons = {x.id: x.reason for x in r.exclusions}
    assert reasons["openai-community/gpt2"] == "has no mmlu score"
    assert reasons["meta-llama/Llama-3.2-1B"] == "has mmlu 32.2 < 40"


# ------------------------------------------------------------------------------------------ scoring


def test_weights_change_the_ranking_and_are_normalised(bundled):
    # --weight overrides one weight; the others keep their defaults; then all are normalised to sum 1
    w = select_models(SelectOptions(weight={"size": 1.0}, top=1), bundled).scoring["weights"]
    assert w["size"] == pytest.approx(1 / 1.75) and w["quality"] == pytest.approx(0.35 / 1.75)
    assert sum(w.values()) == pytest.approx(1)
    only_size = {"quality": 0, "size": 1, "context": 0, "recency": 0, "license": 0}
    size_first = select_models(SelectOptions(weight=only_size, top=1), bundled)
    assert size_first.models[0].id == "EleutherAI/pythia-70m"  # the smallest model
    ctx_first = select_models(
        SelectOptions(weight=["context=1", "size=0", "quality=0", "recency=0", "license=0"], top=3), bundled
    )
    assert all(m.entry.context_length == 131072 for m in ctx_first.models)


def test_catalog_scoring_block_then_cli_weights(bundled):
    cat = Catalog(entries=bundled.entries, files=bundled.files, scoring={"weights": {"size": 5.0}})
    r = select_models(SelectOptions(top=1), cat)
    assert r.scoring["weights"]["size"] == pytest.approx(5 / (5 + 0.35 + 0.1 + 0.15 + 0.15))
    r2 = select_models(SelectOptions(top=1, weight={"size": 0}), cat)
    assert r2.scoring["weights"]["size"] == 0


def test_all_zero_weights_is_bad_input(bundled):
    with pytest.raises(BadInput, match="all scoring weights are zero"):
        select_models(SelectOptions(weight={k: 0 for k in DEFAULT_WEIGHTS}), bundled)


def test_missing_data_policy_lower_quartile_median_ignore():
    full = mk(
        "a/full", metrics={"mmlu": 60.0}, metrics_source="x", context_length=4096, release="2024-01", license="mit"
    )
    others = [
        mk(f"a/{i}", metrics={"mmlu": 25.0 + 10 * i}, metrics_source="x") for i in range(4)
    ]  # quality 0, .13, .27, .4
    bare = mk("a/bare")  # no metrics, context, release, license
    cat = catalog(full, bare, *others)
    lq = Scorer(cat.entries, ScoringConfig.build())
    s = lq.score(bare)
    assert set(s.imputed) == {"quality", "context", "recency", "license"}
    assert s.criteria["quality"] == pytest.approx(10 / 75)  # nearest-rank 25th percentile of [0, .13, .27, .4, .47]
    assert s.criteria["quality"] > 0, "missing is never silently zero"
    med = Scorer(cat.entries, ScoringConfig.build({"missing": "median"}))
    assert med.score(bare).criteria["quality"] == pytest.approx(20 / 75)
    ign = Scorer(cat.entries, ScoringConfig.build({"missing": "ignore"}))
    s = ign.score(bare)
    assert set(s.criteria) == {"size"} and s.score == pytest.approx(100 * s.criteria["size"])
    # nobody has the data -> neutral 0.5 for everyone (changes no order)
    lone = Scorer([bare], ScoringConfig.build())
    assert lone.score(bare).criteria["quality"] == 0.5


def test_license_openness_table_and_catalog_override():
    e = mk("a/x", license="mylicense")
    assert "license" in Scorer([e], ScoringConfig.build()).score(e).imputed
    s = Scorer([e], ScoringConfig.build({"license_openness": {"mylicense": 0.9}})).score(e)
    assert s.criteria["license"] == 0.9 and "license" not in s.imputed


def test_ties_break_by_params_then_id():
    twins = [mk("b/two"), mk("a/one"), mk("c/small", params=50_000_000)]
    r = select_models(SelectOptions(weight={"license": 1}), catalog(*twins))  # all equal scores (no license data)
    assert [m.id for m in r.models] == ["c/small", "a/one", "b/two"]


# ------------------------------------------------------------------------------------------ options model


def test_select_options_normalise_and_report_problems():
    o = SelectOptions(
        domain="medical",
        max_params="1.5b",
        metric="mmlu >= 40",
        weight=["quality=0.7"],
        min_context="8k",
        catalog="x.yaml",
    )
    assert o.domain == ["medical"] and o.max_params == 1_500_000_000 and o.metric == ["mmlu>=40"]
    assert o.weight == {"quality": 0.7} and o.min_context == 8192 and o.catalog == ["x.yaml"]
    inst, problems = option_problems(
        SelectOptions, {"domian": ["medical"], "max_params": "1x", "top": 0}, ("steps", 0, "options")
    )
    assert inst is None
    msgs = {".".join(map(str, p)): m for p, m in problems}
    assert "did you mean 'domain'" in msgs["steps.0.options.domian"]
    assert "unknown unit 'x'" in msgs["steps.0.options.max_params"]
    assert "at least 1" in msgs["steps.0.options.top"]


def test_select_models_accepts_a_plain_mapping(bundled):
    r = select_models({"domain": ["medical"], "max_params": "1b"}, bundled)
    assert r.models[0].id == "microsoft/biogpt"
    with pytest.raises(BadInput, match="unknown domain 'medcal'"):
        select_models({"domain": ["medcal"]}, bundled)


# ------------------------------------------------------------------------------------------ --output file


def test_write_selection_and_model_source_reads_it(bundled, tmp_path):
    r = select_models(SelectOptions(domain=["medical"], max_params="1b"), bundled)
    path = write_selection(r, tmp_path / "sub" / "selection.json")
    doc = json.loads(path.read_text())
    assert doc["model"]["id"] == "microsoft/biogpt"
    assert {"id", "params", "score", "parts", "architecture", "family", "license", "source"} <= set(doc["model"])
    assert doc["models"][0] == doc["model"]
    assert doc["constraints"] == {"domain": ["medical"], "max_params": 1_000_000_000}
    assert doc["catalog"]["sha256"] == bundled.sha256 and doc["catalog"]["paths"] == bundled.paths
    assert doc["gptctl_version"]
    assert not list(path.parent.glob("*.partial"))
    # gptctl.model_source resolves a selection through model.source_path (or model.id)
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    doc["model"]["source_path"] = str(weights)
    path.write_text(json.dumps(doc))
    src = resolve_model(str(path))
    assert src.kind == "hf-dir" and src.path == weights and src.selection["model"]["id"] == "microsoft/biogpt"


def test_write_selection_refuses_empty_results_and_directories(bundled, tmp_path):
    empty = select_models(SelectOptions(domain=["medical"], max_params="100m"), bundled)
    with pytest.raises(NothingMatched):
        write_selection(empty, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()
    ok = select_models(SelectOptions(domain=["medical"]), bundled)
    with pytest.raises(BadInput, match="is a directory"):
        write_selection(ok, tmp_path)
