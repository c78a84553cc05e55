"""Loading catalogs: the bundled one, `--catalog FILE` (repeatable) and `GPTCTL_CATALOG`.

Which files: `--catalog` paths if given, else the `GPTCTL_CATALOG` environment variable (paths
separated by os.pathsep, ':' on Linux/macOS and ';' on Windows), else the bundled catalog. Both
*replace* the bundled catalog; the word `builtin` names it, so `--catalog builtin --catalog mine.yaml`
extends it. Later files override earlier entries with the same id (in place) and merge their
`scoring:` blocks key by key.

Speed: a file is parsed with libyaml (`yaml.CSafeLoader`), or, when it is large (>= 256 KiB), with
yaml-rs where `gptctl.catalog.fastyaml` can vouch that it reads the file exactly as PyYAML would
(~0.3 s instead of ~3 s for 10,000 entries), then checked by the hand-rolled schema in
`gptctl.catalog.schema`. Line numbers are only needed for error messages, so only a file that
has problems is parsed a second time with the line-tracking loader. A large file that checks
clean is cached (Python's marshal format) keyed by its SHA-256 (under $GPTCTL_CACHE_DIR, else
$XDG_CACHE_HOME/gptctl, else ~/.cache/gptctl; GPTCTL_NO_CACHE=1 turns the cache off); the cached
form loads in ~0.1 s. A `.json` catalog is parsed with the json module (~0.1 s for 10,000
entries, plus the schema check).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# PyYAML's reading lives one level down: fastyaml checks itself against it without importing this module.
from gptctl.catalog.pyyaml_reader import ParseError as _ParseError
from gptctl.catalog.pyyaml_reader import parse_pyyaml as _parse_pyyaml
from gptctl.catalog.schema import SCHEMA_VERSION, TOP_KEYS, ModelEntry, check_entry, check_scoring, did_you_mean
from gptctl.errors import BadInput

BUILTIN = "builtin"
ENV_VAR = "GPTCTL_CATALOG"
CACHE_MIN_BYTES = 256 * 1024


def builtin_path() -> Path:
    """The bundled catalog (package data)."""
    return Path(__file__).resolve().parent.parent / "data" / "models.yaml"


@dataclass
class CatalogFile:
    """One catalog file that was read: where, its content hash, how many entries."""

    path: str  # absolute
    name: str  # as the user wrote it (or "builtin")
    sha256: str
    models: int
    builtin: bool = False
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "name": self.name,
            "sha256": self.sha256,
            "models": self.models,
            "builtin": self.builtin,
        }


@dataclass
class Catalog:
    """The merged catalog: entries in file order (overrides keep the first position)."""

    entries: list[ModelEntry]
    files: list[CatalogFile]
    scoring: dict[str, Any] = field(default_factory=dict)
    _by_id: dict[str, ModelEntry] | None = None

    @property
    def by_id(self) -> dict[str, ModelEntry]:
        if self._by_id is None:
            self._by_id = {e.id: e for e in self.entries}
        return self._by_id

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def sha256(self) -> str:
        """One hash for the whole set: SHA-256 over the files' own SHA-256 digests, in order."""
        h = hashlib.sha256()
        for f in self.files:
            h.update(f.sha256.encode() + b"\n")
        return h.hexdigest()

    def info(self) -> dict[str, Any]:
        return {"paths": self.paths, "sha256": self.sha256, "files": [f.to_dict() for f in self.files]}

    def get(self, model_id: str) -> ModelEntry:
        """The entry with this id (exact, else the only case-insensitive match); BadInput otherwise."""
        if model_id in self.by_id:
            return self.by_id[model_id]
        folded = [e for e in self.entries if e.id.casefold() == model_id.casefold()]
        if len(folded) == 1:
            return folded[0]
        hint = did_you_mean(model_id, self.by_id).strip(" ()") or "see `gptctl catalog list`"
        raise BadInput(f"no model {model_id!r} in the catalog ({', '.join(f.name for f in self.files)})", hint)


def resolve_paths(paths: Sequence[str | os.PathLike] | None = None) -> list[tuple[str, Path, bool]]:
    """(name, path, is_builtin) for --catalog paths, else $GPTCTL_CATALOG, else the bundled catalog."""
    names: list[str]
    if paths:
        names = [str(p) for p in paths]
    else:
        env = os.environ.get(ENV_VAR, "")
        names = [p.strip() for p in env.split(os.pathsep) if p.strip()] or [BUILTIN]
    out = []
    for name in names:
        if name == BUILTIN:
            out.append((BUILTIN, builtin_path(), True))
        else:
            out.append((name, Path(name).expanduser(), False))
    return out


def load_catalogs(paths: Sequence[str | os.PathLike] | None = None, *, use_cache: bool = True) -> Catalog:
    """Load and merge catalogs (see the module docstring for which files).

    Raises:
        BadInput: listing every problem in every file at once, each as `file:line: field.path: problem`.
    """
    resolved = resolve_paths(paths)
    loaded = []
    problems: list[str] = []
    for name, path, builtin in resolved:
        result = _load_file(name, path, builtin, use_cache=use_cache)
        problems.extend(result[3])
        loaded.append(result)
    if problems:
        _raise_problems(problems)
    entries: list[ModelEntry] = []
    index: dict[str, int] = {}
    scoring: dict[str, Any] = {}
    files = []
    for entries_i, scoring_i, cfile, _ in loaded:
        files.append(cfile)
        for e in entries_i:
            at = index.get(e.id)
            if at is None:
                index[e.id] = len(entries)
                entries.append(e)
            else:
                entries[at] = e
        for key, value in scoring_i.items():
            if isinstance(value, dict):
                scoring[key] = {**scoring.get(key, {}), **value}
            else:
                scoring[key] = value
    return Catalog(entries=entries, files=files, scoring=scoring)


def validate_files(paths: Iterable[str | os.PathLike]) -> list[CatalogFile]:
    """Check each file on its own (no merging, no cache). Raises BadInput listing every problem."""
    results = []
    problems: list[str] = []
    for name in paths:
        name = str(name)
        builtin = name == BUILTIN
        path = builtin_path() if builtin else Path(name).expanduser()
        _, _, cfile, probs = _load_file(name, path, builtin, use_cache=False)
        problems.extend(probs)
        results.append(cfile)
    if problems:
        _raise_problems(problems)
    return results


def _raise_problems(problems: list[str]) -> None:
    n = len(problems)
    raise BadInput(
        f"invalid catalog: {problems[0]}" if n == 1 else f"invalid catalog: {n} problems",
        "the README's 'Catalog' section describes every field and its allowed values",
        details=problems if n > 1 else None,
    )


# ------------------------------------------------------------------------------------------ one file


def _load_file(
    name: str, path: Path, builtin: bool, *, use_cache: bool
) -> tuple[list[ModelEntry], dict, CatalogFile, list[str]]:
    shown = str(path) if builtin else name
    cfile = CatalogFile(
        path=str(path.resolve()) if path.exists() else str(path), name=name, sha256="", models=0, builtin=builtin
    )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], {}, cfile, [f"{shown}: no such file (check the --catalog / {ENV_VAR} path)"]
    except IsADirectoryError:
        return [], {}, cfile, [f"{shown}: is a directory, not a catalog file"]
    except OSError as exc:
        return [], {}, cfile, [f"{shown}: cannot read: {exc.strerror or exc}"]
    cfile.sha256 = hashlib.sha256(data).hexdigest()

    cache_file = _cache_file(cfile.sha256) if use_cache and len(data) >= CACHE_MIN_BYTES else None
    if cache_file is not None:
        cached = _read_cache(cache_file, cfile.path)
        if cached is not None:
            cfile.models, cfile.cached = len(cached[0]), True
            return cached[0], cached[1], cfile, []

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], {}, cfile, [f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})"]

    is_json = path.suffix.lower() == ".json"
    try:
        doc, has_duplicate_keys = _parse(text, is_json)
    except _ParseError as exc:
        return (
            [],
            {},
            cfile,
            [
                f"{shown}:{exc.line}: not valid {'JSON' if is_json else 'YAML'}: {exc.problem}"
                if exc.line
                else f"{shown}: not valid {'JSON' if is_json else 'YAML'}: {exc.problem}"
            ],
        )

    raw_problems: list[tuple] = []
    entries, scoring = _check_document(doc, raw_problems, cfile.path)
    if raw_problems or has_duplicate_keys:
        return [], {}, cfile, _locate(shown, text, raw_problems)
    cfile.models = len(entries)
    if cache_file is not None:
        _write_cache(cache_file, entries, scoring)
    return entries, scoring, cfile, []


def _check_document(doc: Any, problems: list, origin: str) -> tuple[list[ModelEntry], dict]:
    if doc is None:
        problems.append(((), "the file is empty; expected a mapping with a 'models:' list"))
        return [], {}
    if not isinstance(doc, dict):
        what = "a list (put the entries under 'models:')" if isinstance(doc, list) else type(doc).__name__
        problems.append(((), f"expected a mapping with a 'models:' list, got {what}"))
        return [], {}
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(
                ((key,), f"unknown top-level key {key!r}{did_you_mean(key, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
            )
    scoring = check_scoring(doc["scoring"], ("scoring",), problems) if "scoring" in doc else {}
    if "models" not in doc:
        if "scoring" not in doc:
            problems.append(((), "missing 'models:' (a list of model entries)"))
        return [], scoring
    models = doc["models"]
    if not isinstance(models, list):
        problems.append((("models",), "expected a list of model entries"))
        return [], scoring
    entries = []
    first_at: dict[str, int] = {}
    for i, raw in enumerate(models):
        entry = check_entry(raw, ("models", i), problems, origin)
        mid = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(mid, str):
            if mid in first_at:
                j = first_at[mid]
                problems.append((("models", i, "id"), f"duplicate id {mid!r}", ("models", j, "id")))
            else:
                first_at[mid] = i
        if entry is not None:
            entries.append(entry)
    return entries, scoring


# ------------------------------------------------------------------------------------------ parsing


def _parse(text: str, is_json: bool) -> tuple[Any, bool]:
    """Parse quickly; return (document, whether some mapping repeats a key)."""
    if is_json:
        dup = [False]

        def pairs(items):
            d = dict(items)
            if len(d) != len(items):
                dup[0] = True
            return d

        try:
            return json.loads(text, object_pairs_hook=pairs), dup[0]
        except json.JSONDecodeError as exc:
            raise _ParseError(exc.msg, exc.lineno) from None
    if len(text) >= CACHE_MIN_BYTES:  # small files parse quickly enough; the fast path is for big ones
        from gptctl.catalog import fastyaml

        doc = fastyaml.load(text)
        if doc is not None:
            return doc, False
    return _parse_pyyaml(text)


def _locate(shown: str, text: str, problems: list[tuple]) -> list[str]:
    """Second pass, only when there are problems: find the line of each field path (and find
    repeated mapping keys, which a YAML load silently resolves to the last one)."""
    from gptctl.yamlfile import format_path, line_of

    lines: dict[tuple, int] = {}
    dups: list[tuple] = []
    try:
        import yaml

        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if node is not None:
            _walk(node, (), lines, dups)
    except Exception:  # noqa: BLE001 - lines are a courtesy; the problems are reported regardless
        pass
    out = [
        f"{shown}:{line}: {format_path(path)}: key {path[-1]!r} appears more than once in this mapping (YAML would keep the last)"  # noqa: E501
        for path, line in dups
    ]
    for prob in problems:
        path, msg = prob[0], prob[1]
        line = line_of(lines, path) if lines else None
        if len(prob) > 2:
            other = line_of(lines, prob[2]) if lines else None
            msg += f" (first at line {other})" if other else f" (first at {format_path(prob[2])})"
        where = f"{shown}:{line}" if line else shown
        out.append(f"{where}: {format_path(path)}: {msg}")
    # Keep file order for humans: by line, then as found.
    return [p for _, p in sorted(enumerate(out), key=lambda t: (_line_key(t[1], shown), t[0]))]


def _walk(node: Any, path: tuple, lines: dict[tuple, int], dups: list[tuple]) -> None:
    import yaml

    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                dups.append((path + (key,), k.start_mark.line + 1))
            else:
                lines[path + (key,)] = k.start_mark.line + 1
            seen.add(key)
            _walk(v, path + (key,), lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines[path + (i,)] = v.start_mark.line + 1
            _walk(v, path + (i,), lines, dups)


def _line_key(message: str, shown: str) -> int:
    rest = message[len(shown) + 1 :]
    head = rest.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


# ------------------------------------------------------------------------------------------ cache

_CACHE_TAG = "gptctl-catalog-cache"


def _cache_file(sha: str) -> Path | None:
    if os.environ.get("GPTCTL_NO_CACHE"):
        return None
    import sys

    from gptctl import __version__

    base = os.environ.get("GPTCTL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "gptctl"
    )
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"  # marshal's format may change between Python versions
    return Path(base) / "catalog" / f"{sha}-s{SCHEMA_VERSION}-v{__version__}-{py}.cache"


def _read_cache(cache_file: Path, origin: str) -> tuple[list[ModelEntry], dict] | None:
    """The checked entries of a file seen before. marshal holds only plain data here (tuples,
    strings, numbers, dicts) and is about twice as fast to load as JSON; anything unexpected is
    ignored and the file is parsed again."""
    import marshal

    try:
        tag, rows, scoring = marshal.loads(cache_file.read_bytes())
        if tag != _CACHE_TAG or not isinstance(rows, tuple) or not isinstance(scoring, dict):
            return None
        from_row = ModelEntry.from_row
        return [from_row(r, origin) for r in rows], scoring
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError):
        return None  # absent or unreadable: parse the file instead


def _write_cache(cache_file: Path, entries: list[ModelEntry], scoring: dict) -> None:
    import marshal

    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=cache_file.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(marshal.dumps((_CACHE_TAG, tuple(tuple(e.to_row()) for e in entries), scoring)))
        os.replace(tmp, cache_file)
    except (OSError, ValueError):
        pass  # a read-only home is fine: the cache only saves time
