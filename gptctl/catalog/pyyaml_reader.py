"""PyYAML's reading of a catalog: the reference semantics both the loader and the fast path are held to.

`loader` parses with it; `fastyaml` asks it how a scalar reads before trusting yaml-rs with a file. It
sits below both so neither imports the other.
"""

from __future__ import annotations

from typing import Any


class ParseError(Exception):
    """A file that does not parse: the parser's problem and the 1-based line, when it knows one."""

    def __init__(self, problem: str, line: int | None):
        super().__init__(problem)
        self.problem, self.line = problem, line


def parse_pyyaml(text: str) -> tuple[Any, bool]:
    """Parse with PyYAML (libyaml when present): the reference semantics (safe_load, dates as text)."""
    import yaml

    loader = _FastLoader(text)
    try:
        return loader.get_single_data(), loader.duplicate_keys
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParseError(problem, mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()


_FAST_LOADER: list = []


def _FastLoader(text: str):
    """A libyaml loader (safe construction) that notes, cheaply, whether any mapping repeats a key."""
    if not _FAST_LOADER:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        class FastLoader(base):  # type: ignore[misc, valid-type]
            duplicate_keys = False

            def construct_yaml_timestamp(self, node):  # keep dates as text: the schema checks them
                return self.construct_scalar(node)

            def construct_mapping(self, node, deep=False):
                if not self.duplicate_keys:
                    keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
                    if len(keys) != len(set(keys)):
                        self.duplicate_keys = True
                return super().construct_mapping(node, deep=deep)

        FastLoader.add_constructor("tag:yaml.org,2002:timestamp", FastLoader.construct_yaml_timestamp)
        _FAST_LOADER.append(FastLoader)
    return _FAST_LOADER[0](text)
