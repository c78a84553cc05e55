"""A fast path for large YAML catalogs that gives exactly what PyYAML would, or declines.

PyYAML (even with libyaml) needs ~3 s for a 10,000-entry catalog on a small machine: it builds a
Python node object per scalar and resolves each one with regexes in Python. `yaml-rs` (Rust) parses
the same file in ~0.3 s, but it implements YAML 1.2 while PyYAML implements 1.1, and the two read
some plain scalars differently: `yes`/`no`/`on`/`off` (1.1 booleans), `017` (1.1 octal), `1_000`,
`1:20` (1.1 base 60), `1e9` and `-.5` (1.2 floats, 1.1 strings), `<<` (1.1 merge keys), `=`,
timestamps. gptctl's catalog semantics are PyYAML's (`yaml.safe_load`, dates kept as text), so
`load()` only returns a document when it can vouch that PyYAML would have built the same one:

* the text must contain none of the constructs whose meaning differs or that yaml-rs may treat
  differently (tags, merge keys, directives, several documents, tabs, complex keys, 1.1 booleans
  standing alone as a scalar);
* every number-like token that is not a plain decimal integer, decimal fraction or YYYY-MM-DD date
  is parsed alone by both libraries, and any disagreement declines;
* yaml-rs must parse the file without error and without a repeated key (PyYAML keeps the last
  value silently; the catalog loader reports it, so it needs the slow path's line numbers anyway).

Otherwise it returns None and the caller parses with PyYAML as before. A property test checks the
contract (whatever `load` returns equals PyYAML's result) over generated documents full of such
scalars. The slow path stays the reference and is what every error message comes from.
"""

from __future__ import annotations

import re
from typing import Any

_BOOLS_11 = {"yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "="}
# A YAML 1.1 boolean (or `=`, PyYAML's "value" tag) standing alone as a scalar: a key, a value, a
# list item or a flow item; the same words inside longer text ("trained on data") are harmless.
_BOOL_SCALAR = re.compile(
    r"(?:^|[\[{,]|[:\-](?=[ \t]))[ \t]*(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|=)[ \t]*(?:$|#|[,\]}]|:(?:[ \t]|$))",  # noqa: E501
    re.MULTILINE,
)
_TAG = re.compile(r"(?:^|[\s\[{,])!")
_COMPLEX_KEY = re.compile(r"^[ \t]*\?(?:[ \t]|$)", re.MULTILINE)
_FLOW_PUNCT = str.maketrans(",[]{}", "     ")
# Number-like tokens that both libraries read the same way without checking: plain decimal
# integers (not too long for a float-free parse) and fractions, and dates (kept as text by both).
_PLAIN = re.compile(r"(?:[-+]?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?|[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?)")
_MAX_ODD_TOKENS = 500  # beyond this many distinct tokens to check one by one, PyYAML is as quick


def available() -> bool:
    try:
        import yaml_rs  # noqa: F401
    except ImportError:
        return False
    return True


def load(text: str) -> Any | None:
    """The document PyYAML's catalog loader would build from `text`, or None to say "use PyYAML"."""
    if not text.strip() or _declines(text):
        return None
    try:
        import yaml_rs
    except ImportError:
        return None
    # Whitespace-separated tokens (flow punctuation counts as space) are a superset of the plain
    # scalars' words: cheap to collect (a C-level split) and to deduplicate.
    tokens = {t.rstrip(":") for t in set(text.translate(_FLOW_PUNCT).split())}
    if any(_bool_scalar(text, word) for word in tokens & _BOOLS_11):
        return None
    odd = [t for t in tokens if _numberish(t) and not _PLAIN.fullmatch(t)]
    if len(odd) > _MAX_ODD_TOKENS or not all(_agree(t, yaml_rs) for t in odd):
        return None
    try:
        return yaml_rs.loads(text, parse_datetime=False, duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.Error)
    except Exception:  # noqa: BLE001 - any failure means "let PyYAML parse it and report"
        return None


def _declines(text: str) -> bool:
    """Constructs where the libraries differ, or that catalogs never need: decline on sight.
    Substring tests first (C speed); a regex only runs when its character is present at all."""
    if "\t" in text or "<<" in text:  # tabs (the libraries disagree where they are allowed); merge keys
        return True
    if text.startswith(("%", "...")) or "\n%" in text or "\n..." in text:  # directives, document ends
        return True
    markers = text.startswith("---") + text.count("\n---")
    if markers > 1 or (markers == 1 and not text.lstrip().startswith("---")):
        return True  # several documents (PyYAML refuses them; yaml-rs would return a list)
    if "!" in text and _TAG.search(text):
        return True
    if "?" in text and _COMPLEX_KEY.search(text):
        return True
    return False


def _bool_scalar(text: str, word: str) -> bool:
    """Whether `word` (a YAML 1.1 boolean) stands alone as a scalar anywhere in `text`. The words
    also occur inside prose ("accuracy on PubMedQA"), so find each whole-word occurrence with a
    C-speed substring search and test only its line with the full pattern."""
    i, n = text.find(word), len(word)
    while i >= 0:
        j = i + n
        if (i == 0 or text[i - 1] in " \n[{,:-") and (j == len(text) or text[j] in " \n,]}#:"):
            start, end = text.rfind("\n", 0, i) + 1, text.find("\n", j)
            if _BOOL_SCALAR.search(text, start, len(text) if end < 0 else end):
                return True
        i = text.find(word, j)
    return False


# Every character a YAML 1.1 or 1.2 number, date or time can contain: digits, signs, '.', '_', ':',
# and the letters of exponents, 0x/0o/0b prefixes, hex digits, .inf/.nan and timestamps.
_SCALAR_CHARS = frozenset("0123456789.+-_:eExXoObBaAcCdDfFiInNtTzZ")


def _numberish(token: str) -> bool:
    """Could this token be (part of) a plain scalar that one library reads as a number, a date or a
    time? Not if it holds a character no such form uses ("78.2%", "25.0)", "5-shot"): both read a string."""
    c = token[0]
    if not (c.isdigit() or (len(token) > 1 and c in "+-." and (token[1].isdigit() or token[1] == "."))):
        return False
    return _SCALAR_CHARS.issuperset(token)


def _agree(token: str, yaml_rs) -> bool:
    """Whether a plain scalar `token` means the same thing to both libraries."""
    from gptctl.catalog.pyyaml_reader import parse_pyyaml

    try:
        fast = yaml_rs.loads(f"- {token}\n", parse_datetime=False)
        slow = parse_pyyaml(f"- {token}\n")[0]
    except Exception:  # noqa: BLE001
        return False
    return _same(fast, slow)


def _same(a: Any, b: Any) -> bool:
    """Equal with types: 1, 1.0 and True are different values in a catalog."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _same(ka, kb) and _same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=False)
        )
    if isinstance(a, float) and a != a:
        return b != b
    return a == b
