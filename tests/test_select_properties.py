"""Ranking invariants, with hypothesis over generated catalogs and constraint sets:

* adding a constraint never adds a result;
* the order is a total order (strictly increasing sort keys; the catalog's order does not matter);
* `--top N` is a prefix of the full ranking;
* a constraint only removes models: the ranking under constraints is the unconstrained ranking
  (for the same --domain, which chooses the quality metrics) with the failing models taken out.
"""

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gptctl.catalog import Catalog
from gptctl.catalog.schema import ModelEntry
from gptctl.selection import SelectOptions, select_models
from gptctl.selection.scoring import rank_key

DOMAINS = ["general", "medical", "code", "chat", "legal"]
LICENSES = [None, "mit", "apache-2.0", "llama2", "other", "cc-by-nc-4.0", "bigcode-openrail-m"]
ARCHS = [None, "llama", "gpt2", "biogpt", "qwen2"]
METRIC_NAMES = ["mmlu", "hellaswag", "medqa", "humaneval"]
PARAMS = st.one_of(
    st.sampled_from([70_000_000, 135_000_000, 1_000_000_000, 7_000_000_000]),
    st.integers(min_value=1_000_000, max_value=100_000_000_000),
)


RELEASES = [None] + [f"{y}-{m:02d}" for y in range(2018, 2026) for m in (1, 4, 7, 10)]
ROW = st.fixed_dictionaries(
    {
        "params": PARAMS,
        "domains": st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=3, unique=True).map(tuple),
        "architecture": st.sampled_from(ARCHS),
        "context_length": st.sampled_from([None, 1024, 2048, 8192, 32768, 131072]),
        "license": st.sampled_from(LICENSES),
        "languages": st.lists(st.sampled_from(["en", "zh", "fr"]), max_size=3, unique=True).map(tuple),
        "instruct": st.sampled_from([None, True, False]),
        "release": st.sampled_from(RELEASES),
        "metrics": st.dictionaries(
            st.sampled_from(METRIC_NAMES), st.integers(0, 1000).map(lambda v: v / 10), max_size=3
        ),
    }
)


def _catalog(rows):
    return Catalog(
        entries=[
            ModelEntry(id=f"org/m{i:03d}", tasks=("text-generation",), metrics_source="generated", **row)
            for i, row in enumerate(rows)
        ],
        files=[],
    )


def catalogs():
    return st.lists(ROW, max_size=20).map(_catalog)


CONSTRAINTS = {
    "domain": st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=2, unique=True),
    "max_params": PARAMS,
    "min_params": PARAMS,
    "license": st.lists(st.sampled_from([x for x in LICENSES if x]), min_size=1, max_size=3, unique=True),
    "language": st.sampled_from(["en", "zh", "fr"]),
    "min_context": st.sampled_from([1024, 4096, 32768]),
    "instruct": st.booleans(),
    "metric": st.lists(
        st.builds(lambda n, v: f"{n}>={v}", st.sampled_from(METRIC_NAMES), st.integers(0, 90)), min_size=1, max_size=2
    ),
    "architecture": st.lists(st.sampled_from([a for a in ARCHS if a]), min_size=1, max_size=2, unique=True),
    "exportable": st.just(True),
}


@st.composite
def option_sets(draw, exclude=()):
    keys = draw(st.lists(st.sampled_from([k for k in CONSTRAINTS if k not in exclude]), max_size=4, unique=True))
    opts = {k: draw(CONSTRAINTS[k]) for k in keys}
    if "min_params" in opts and "max_params" in opts and opts["min_params"] > opts["max_params"]:
        opts["min_params"], opts["max_params"] = opts["max_params"], opts["min_params"]
    return opts


def ids(result):
    return [m.id for m in result.models]


SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(catalogs(), option_sets(), st.data())
def test_adding_a_constraint_never_adds_a_result(cat, opts, data):
    extra_key = data.draw(
        st.sampled_from([k for k in CONSTRAINTS if k not in opts]) if len(opts) < len(CONSTRAINTS) else st.nothing()
    )
    extra = data.draw(CONSTRAINTS[extra_key])
    more = {**opts, extra_key: extra}
    if extra_key in ("min_params", "max_params"):
        lo, hi = more.get("min_params"), more.get("max_params")
        assume(lo is None or hi is None or lo <= hi)
    before = set(ids(select_models(SelectOptions(**opts), cat)))
    after = set(ids(select_models(SelectOptions(**more), cat)))
    assert after <= before


@SETTINGS
@given(catalogs(), option_sets(), st.randoms(use_true_random=False))
def test_ranking_is_a_total_order_independent_of_catalog_order(cat, opts, rnd):
    r = select_models(SelectOptions(**opts), cat)
    keys = [rank_key(m.entry, m.score) for m in r.models]
    assert all(a < b for a, b in zip(keys, keys[1:], strict=False)), "strictly increasing: no two models compare equal"
    assert [m.rank for m in r.models] == list(range(1, len(r.models) + 1))
    shuffled = list(cat.entries)
    rnd.shuffle(shuffled)
    again = select_models(SelectOptions(**opts), Catalog(entries=shuffled, files=[]))
    assert ids(again) == ids(r)
    assert [m.score for m in again.models] == [m.score for m in r.models]


@SETTINGS
@given(catalogs(), option_sets(), st.integers(min_value=1, max_value=30))
def test_top_n_is_a_prefix_of_the_full_ranking(cat, opts, n):
    full = select_models(SelectOptions(**opts), cat)
    top = select_models(SelectOptions(**opts, top=n), cat)
    assert ids(top) == ids(full)[:n]
    assert top.matched == full.matched and top.excluded == full.excluded


@SETTINGS
@given(catalogs(), option_sets(exclude=("domain",)), st.one_of(st.none(), CONSTRAINTS["domain"]))
def test_constraints_only_remove_models_from_the_ranking(cat, opts, domain):
    base = {"domain": domain} if domain else {}
    unconstrained = select_models(SelectOptions(**base), cat)
    constrained = select_models(SelectOptions(**base, **opts), cat)
    kept = set(ids(constrained))
    assert ids(constrained) == [i for i in ids(unconstrained) if i in kept]
    assert constrained.matched + constrained.excluded == len(cat.entries)
    assert sum(f["removed"] for f in constrained.funnel) == constrained.excluded
