"""Reading YAML safely, keeping the line of every key so errors can say file:line and field path."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from gptctl.errors import BadInput

Path_ = tuple  # a field path: ("models", 3, "params")


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


def load_yaml(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    """Load a YAML file with `yaml.safe_load` semantics; return (data, {field path: line})."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise BadInput(f"{p}: no such file", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{p}: cannot read: {exc}") from exc
    return load_yaml_text(text, str(p))


def load_yaml_text(text: str, name: str = "<string>") -> tuple[Any, dict[tuple, int]]:
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        raise BadInput(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}", "fix the YAML syntax") from None
    if node is None:
        return None, {}
    lines: dict[tuple, int] = {}
    _walk(node, (), lines)
    return yaml.load(text, Loader=yaml.SafeLoader), lines


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[path + (key,)] = k.start_mark.line + 1
            _walk(v, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines[path + (i,)] = v.start_mark.line + 1
            _walk(v, path + (i,), lines)


def duplicate_keys(text: str) -> list[tuple[tuple, int]]:
    """Mapping keys that appear twice in one mapping (safe_load silently keeps the last)."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    found: list[tuple[tuple, int]] = []

    def walk(n: yaml.Node, path: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for k, v in n.value:
                if k.value in seen:
                    found.append((path + (k.value,), k.start_mark.line + 1))
                seen.add(k.value)
                walk(v, path + (k.value,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return found


def line_of(lines: dict[tuple, int], path: tuple) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def format_path(path: Iterable) -> str:
    """("steps", 2, "options", "rank") -> "steps[2].options.rank"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '' — appended to unknown-key messages."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
