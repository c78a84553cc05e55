"""The yaml-rs fast path for large catalogs: whatever it returns is what PyYAML would have built.

The contract (gptctl/catalog/fastyaml.py): `load(text)` returns either None ("parse it with PyYAML")
or exactly the document the PyYAML loader builds (same values, same types, dates kept as text).
Generated documents are full of scalars that YAML 1.1 and 1.2 read differently.
"""

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptctl.catalog import fastyaml
from gptctl.catalog.loader import _parse_pyyaml

pytestmark = pytest.mark.skipif(not fastyaml.available(), reason="yaml-rs is not installed")

# Plain scalars whose meaning differs between YAML 1.1 (PyYAML) and 1.2 (yaml-rs), or is close to it.
TRICKY = [
    "yes",
    "no",
    "on",
    "off",
    "Yes",
    "NO",
    "On",
    "OFF",
    "y",
    "n",
    "Y",
    "N",
    "true",
    "False",
    "TRUE",
    "null",
    "Null",
    "~",
    "1e9",
    "1.5e9",
    "1E+9",
    "1.0e+9",
    "1.5E-3",
    "-.5",
    ".5",
    "+.5",
    "0.5",
    "-0.0",
    "1.",
    "+1",
    "-0",
    "00",
    "0",
    "017",
    "0o17",
    "0x1F",
    "0x_1",
    "0b101",
    "1_000",
    "1_0.5",
    "1:20",
    "12:30:00",
    "-1:30",
    "2024-01-02",
    "2024-1-2",
    "2024-01-02T10:00:00Z",
    "2024-01-02 10:00:00",
    "2001-12-14t21:59:43.10-05:00",
    "2025-07",
    "2024-13-45",
    ".inf",
    "-.Inf",
    ".NaN",
    "nan",
    "inf",
    "123456789012345678901234",
    "9223372036854775808",
    "7B",
    "135m",
    "1.5b",
    "=",
    "1e",
    "e9",
    "3-4",
    "4-bit",
    "25-shot",
    "78.2%",
    "v1.5",
    "Qwen2.5-0.5B",
    "mmlu>=40",
    "a b",
    "on the fly",
    "trained on data",
    "no-op",
    "yes/no",
    "1.5B)",
    "(2024)",
    "3x",
    "0x1Fg",
    "1e9%",
    "12:30:00Z",
    "2024-01-02T10:00",
    "5-shot)",
    "1_000x",
]
WORDS = st.sampled_from(TRICKY) | st.from_regex(r"[a-z][a-z0-9_\-]{0,8}", fullmatch=True)


def quoted(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


scalar_text = WORDS.flatmap(lambda w: st.sampled_from([w, quoted(w), '"' + w + '"']))
keys = st.sampled_from(
    ["id", "params", "on", "yes", "no", "1", "017", "2024-01-02", "1e3", "release", "metrics", "x"]
) | st.from_regex(r"[a-z]{1,6}", fullmatch=True)


@st.composite
def documents(draw, depth=0):
    """YAML text: a mapping of keys to plain/quoted scalars, block lists, flow lists and nested mappings."""
    lines = []
    for key in draw(st.lists(keys, min_size=1, max_size=6, unique=True)):
        kind = draw(st.sampled_from(["scalar", "block", "flow", "map"] if depth < 2 else ["scalar", "flow"]))
        if kind == "scalar":
            lines.append(f"{key}: {draw(scalar_text)}")
        elif kind == "block":
            lines.append(f"{key}:")
            lines += [f"- {v}" for v in draw(st.lists(scalar_text, min_size=1, max_size=4))]
        elif kind == "flow":
            lines.append(f"{key}: [{', '.join(draw(st.lists(scalar_text, max_size=4)))}]")
        else:
            lines.append(f"{key}:")
            lines += ["  " + ln for ln in draw(documents(depth + 1)).splitlines()]
    return "\n".join(lines) + "\n"


def pyyaml(text):
    try:
        return ("ok", _parse_pyyaml(text)[0])
    except Exception as exc:  # noqa: BLE001
        return ("error", type(exc).__name__)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_fast_path_returns_pyyaml_document_or_declines(text):
    fast = fastyaml.load(text)
    if fast is None:
        return
    kind, slow = pyyaml(text)
    assert kind == "ok", f"fast path accepted text PyYAML rejects ({slow}):\n{text}"
    assert fastyaml._same(fast, slow), f"fast {fast!r}\n!= PyYAML {slow!r}\nfor:\n{text}"


@pytest.mark.parametrize("token", TRICKY)
@pytest.mark.parametrize("form", ["k: {}\n", "- {}\n", "k: [a, {}]\n", "{}: v\n"])
def test_each_tricky_scalar_alone(token, form):
    text = form.format(token)
    fast = fastyaml.load(text)
    if fast is not None:
        kind, slow = pyyaml(text)
        assert kind == "ok" and fastyaml._same(fast, slow), (text, fast, slow)


def generated_catalog(n):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_cli
    finally:
        sys.path.pop(0)
    import yaml

    return yaml.dump(bench_cli.generate(n), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def test_realistic_catalogs_take_the_fast_path_and_match():
    # The benchmark's generated catalog (bundled entries replicated, with anchors, prose, dates)
    # and the bundled catalog itself must not be declined: else the fast path never helps.
    from importlib import resources

    bundled = resources.files("gptctl").joinpath("data/models.yaml").read_text()
    for text in (generated_catalog(300), bundled):
        fast = fastyaml.load(text)
        assert fast is not None
        assert fastyaml._same(fast, _parse_pyyaml(text)[0])


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n---\nb: 2\n",  # two documents
        "a: &x {b: 1}\nc:\n  <<: *x\n",  # merge key
        "a: !!str 1\n",  # tag
        "%YAML 1.1\n---\na: 1\n",  # directive
        "a:\n\t- 1\n",  # tab
        "? [a, b]\n: 1\n",  # complex key
        "a: 1\na: 2\n",  # repeated key: the loader reports it with line numbers from the slow path
        "languages: [en, no]\n",  # Norwegian, or false?
        "a: [1, 2\n",  # a syntax error: PyYAML reports it
        "",
    ],
)
def test_declines(text):
    assert fastyaml.load(text) is None


def test_loader_uses_the_fast_path_only_for_large_files(monkeypatch, tmp_path):
    from gptctl.catalog import loader

    calls = []
    real = fastyaml.load
    monkeypatch.setattr(fastyaml, "load", lambda text: calls.append(len(text)) or real(text))
    big = tmp_path / "big.yaml"
    big.write_text(generated_catalog(1500))
    assert big.stat().st_size >= loader.CACHE_MIN_BYTES
    cat = loader.load_catalogs([str(big)], use_cache=False)
    assert len(cat.entries) == 1500 and calls == [len(big.read_text())]
    calls.clear()
    loader.load_catalogs(None, use_cache=False)  # the bundled catalog is small: PyYAML
    assert calls == []


def test_without_yaml_rs_the_loader_still_works(monkeypatch, tmp_path):
    from gptctl.catalog import loader

    monkeypatch.setitem(sys.modules, "yaml_rs", None)  # import yaml_rs raises ImportError
    big = tmp_path / "big.yaml"
    big.write_text(generated_catalog(1500))
    assert fastyaml.load(big.read_text()) is None
    assert len(loader.load_catalogs([str(big)], use_cache=False).entries) == 1500
