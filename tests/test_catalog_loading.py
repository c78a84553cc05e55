"""Which catalog files are read (--catalog, GPTCTL_CATALOG, bundled), merging, hashing and the parse cache."""

import hashlib
import os
import textwrap

import pytest

from gptctl.catalog import builtin_path, load_catalogs
from gptctl.catalog import loader as loader_mod
from gptctl.errors import BadInput


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTCTL_CATALOG", raising=False)
    monkeypatch.delenv("GPTCTL_NO_CACHE", raising=False)


def cat_file(tmp_path, name, *entries, scoring=None):
    lines = ["models:"]
    for e in entries:
        lines.append(
            f"  - {{id: {e['id']}, params: {e.get('params', '100m')}, tasks: [text-generation], domains: [{e.get('domain', 'general')}]"  # noqa: E501
            + (f", license: {e['license']}" if "license" in e else "")
            + "}"
        )
    if scoring:
        lines.append("scoring:\n" + textwrap.indent(scoring, "  "))
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_default_is_the_bundled_catalog():
    cat = load_catalogs()
    assert [f.name for f in cat.files] == ["builtin"] and cat.paths == [str(builtin_path())]


def test_catalog_flag_replaces_the_bundled_one_and_later_files_override_same_ids(tmp_path):
    a = cat_file(tmp_path, "a.yaml", {"id": "x/one", "params": "1b"}, {"id": "x/two"})
    b = cat_file(tmp_path, "b.yaml", {"id": "x/three"}, {"id": "x/one", "params": "2b", "license": "mit"})
    cat = load_catalogs([str(a), str(b)])
    assert [e.id for e in cat.entries] == ["x/one", "x/two", "x/three"]  # override keeps the first position
    one = cat.get("x/one")
    assert one.params == 2_000_000_000 and one.license == "mit" and one.origin == str(b.resolve())


def test_builtin_word_extends_the_bundled_catalog(tmp_path):
    mine = cat_file(
        tmp_path, "mine.yaml", {"id": "me/private", "domain": "medical"}, {"id": "microsoft/biogpt", "params": "400m"}
    )
    cat = load_catalogs(["builtin", str(mine)])
    assert len(cat.entries) == 61
    assert cat.get("microsoft/biogpt").params == 400_000_000


def test_env_var_is_a_pathsep_separated_list(tmp_path, monkeypatch):
    a = cat_file(tmp_path, "a.yaml", {"id": "x/a"})
    b = cat_file(tmp_path, "b.yaml", {"id": "x/b"})
    monkeypatch.setenv("GPTCTL_CATALOG", f"{a}{os.pathsep}{os.pathsep}{b}")
    assert [e.id for e in load_catalogs().entries] == ["x/a", "x/b"]
    # --catalog wins over the environment
    assert [e.id for e in load_catalogs([str(b)]).entries] == ["x/b"]
    monkeypatch.setenv("GPTCTL_CATALOG", f"builtin{os.pathsep}{a}")
    assert len(load_catalogs().entries) == 61
    monkeypatch.setenv("GPTCTL_CATALOG", str(tmp_path / "gone.yaml"))
    with pytest.raises(BadInput, match="no such file"):
        load_catalogs()


def test_scoring_blocks_merge_key_by_key(tmp_path):
    a = cat_file(
        tmp_path, "a.yaml", {"id": "x/a"}, scoring="weights: {quality: 1, size: 2}\nlicense_openness: {mylic: 0.5}"
    )
    b = cat_file(tmp_path, "b.yaml", {"id": "x/b"}, scoring="weights: {size: 3}\nmissing: ignore")
    cat = load_catalogs([str(a), str(b)])
    assert cat.scoring == {
        "weights": {"quality": 1.0, "size": 3.0},
        "license_openness": {"mylic": 0.5},
        "missing": "ignore",
    }


def test_hash_is_over_file_contents_in_order(tmp_path):
    a = cat_file(tmp_path, "a.yaml", {"id": "x/a"})
    b = cat_file(tmp_path, "b.yaml", {"id": "x/b"})
    ha, hb = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b))
    cat = load_catalogs([str(a), str(b)])
    assert [f.sha256 for f in cat.files] == [ha, hb]
    assert cat.sha256 == hashlib.sha256(f"{ha}\n{hb}\n".encode()).hexdigest()
    assert load_catalogs([str(b), str(a)]).sha256 != cat.sha256
    info = cat.info()
    assert info["paths"] == [str(a.resolve()), str(b.resolve())] and info["sha256"] == cat.sha256


def test_get_is_exact_then_unique_case_insensitive_then_did_you_mean():
    cat = load_catalogs()
    assert cat.get("microsoft/BioGPT").id == "microsoft/biogpt"
    with pytest.raises(BadInput) as info:
        cat.get("microsoft/biogtp")
    assert "did you mean 'microsoft/biogpt'" in info.value.hint


def test_large_files_are_cached_by_content_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_mod, "CACHE_MIN_BYTES", 10)
    a = cat_file(tmp_path, "a.yaml", {"id": "x/a"}, {"id": "x/b", "params": "7b"})
    first = load_catalogs([str(a)])
    assert not first.files[0].cached
    cached = list((tmp_path / "cache" / "catalog").glob("*.cache"))
    assert len(cached) == 1 and first.files[0].sha256 in cached[0].name
    second = load_catalogs([str(a)])
    assert second.files[0].cached
    assert [e.to_dict() for e in second.entries] == [e.to_dict() for e in first.entries]
    assert second.entries[0].origin == first.entries[0].origin
    # a changed file has a new hash: parsed (and checked) again, never served stale
    a.write_text(a.read_text().replace("7b", "8b"))
    third = load_catalogs([str(a)])
    assert not third.files[0].cached and third.get("x/b").params == 8_000_000_000
    # a corrupt cache entry is ignored
    for c in (tmp_path / "cache" / "catalog").glob("*.cache"):
        c.write_bytes(b"\x00garbage")
    assert load_catalogs([str(a)]).get("x/b").params == 8_000_000_000
    # invalid files are never cached
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {id: y, params: 1b}\n")
    with pytest.raises(BadInput):
        load_catalogs([str(bad)])
    with pytest.raises(BadInput):
        load_catalogs([str(bad)])


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_mod, "CACHE_MIN_BYTES", 10)
    monkeypatch.setenv("GPTCTL_NO_CACHE", "1")
    a = cat_file(tmp_path, "a.yaml", {"id": "x/a"})
    load_catalogs([str(a)])
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_dir_is_harmless(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_mod, "CACHE_MIN_BYTES", 10)
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("GPTCTL_CACHE_DIR", str(blocker))
    a = cat_file(tmp_path, "a.yaml", {"id": "x/a"})
    assert len(load_catalogs([str(a)]).entries) == 1
