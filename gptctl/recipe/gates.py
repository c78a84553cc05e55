"""Gates: a small, safe expression language over step manifests (no `eval`).

    steps.tune.metrics.ppl_after <= 1.05 * steps.tune.metrics.ppl_before
    steps.ship.validation.passed and steps.ship.validation.max_abs_diff <= 1e-3
    not steps.ship.benchmark.cuda.available or steps.ship.benchmark.cuda.decode_speedup_vs_pytorch >= 1

Grammar (lowest precedence first):

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | "null" | PATH | FUNC "(" expr ("," expr)* ")" | "(" expr ")"

A PATH is dotted names (`steps.ship.benchmark.cpu.decode_tokens_per_s`), looked up in the
values the runner provides. `and`/`or` short-circuit, so a guard like `not x.available or ...`
keeps a missing measurement from being looked up. Functions: abs, min, max.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FUNCTIONS: dict[str, Callable[..., Any]] = {"abs": abs, "min": min, "max": max}
KEYWORDS = {"and", "or", "not", "true", "false", "null"}

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<string>"[^"\\]*"|'[^'\\]*')
    | (?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*)
    | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|,)
    )""",
    re.VERBOSE,
)


class GateSyntaxError(ValueError):
    """An expression that does not parse; `position` is the character offset of the problem."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


class GateEvalError(ValueError):
    """A gate that cannot be evaluated (a missing manifest value, a type mismatch)."""


@dataclass(frozen=True)
class Token:
    kind: str  # number | string | path | op | keyword | end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split a gate expression into tokens; raise GateSyntaxError at the first character it cannot read."""
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].lstrip()
            raise GateSyntaxError(f"unexpected character {bad[:1]!r}", len(text) - len(bad))
        kind = m.lastgroup
        value = m.group(kind)
        start = m.start(kind)
        if kind == "path" and value in KEYWORDS:
            kind = "keyword"
        tokens.append(Token(kind, value, start))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# The parsed tree is plain tuples: ("num", v) ("str", v) ("const", v) ("path", "a.b") ("neg", x)
# ("not", x) ("bin", op, l, r) ("and", l, r) ("or", l, r) ("call", name, [args]).
Node = tuple


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self, kind: str, text: str | None = None) -> Token | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, text: str, what: str) -> Token:
        t = self.take(kind, text)
        if t is None:
            raise GateSyntaxError(f"expected {what}, found {self._describe(self.tok)}", self.tok.pos)
        return t

    @staticmethod
    def _describe(t: Token) -> str:
        return "the end of the expression" if t.kind == "end" else repr(t.text)

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise GateSyntaxError("empty expression", 0)
        node = self.or_()
        if self.tok.kind != "end":
            raise GateSyntaxError(f"unexpected {self._describe(self.tok)}", self.tok.pos)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.take("keyword", "or"):
            node = ("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.take("keyword", "and"):
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.take("keyword", "not"):
            return ("not", self.not_())
        return self.compare()

    def compare(self) -> Node:
        node = self.sum()
        if self.tok.kind == "op" and self.tok.text in ("<", "<=", ">", ">=", "==", "!="):
            op = self.take("op").text
            node = ("bin", op, node, self.sum())
            if self.tok.kind == "op" and self.tok.text in ("<", "<=", ">", ">=", "==", "!="):
                raise GateSyntaxError("chained comparisons are not supported; join them with 'and'", self.tok.pos)
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take("op").text
            node = ("bin", op, node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take("op").text
            node = ("bin", op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.take("op", "-"):
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if self.take("number"):
            return ("num", float(t.text) if any(c in t.text for c in ".eE") else int(t.text))
        if self.take("string"):
            return ("str", t.text[1:-1])
        if t.kind == "keyword" and t.text in ("true", "false", "null"):
            self.i += 1
            return ("const", {"true": True, "false": False, "null": None}[t.text])
        if self.take("path"):
            if self.take("op", "("):
                if t.text not in FUNCTIONS:
                    raise GateSyntaxError(f"unknown function {t.text!r} (known: {', '.join(FUNCTIONS)})", t.pos)
                args = [self.or_()]
                while self.take("op", ","):
                    args.append(self.or_())
                self.expect("op", ")", "')'")
                return ("call", t.text, args)
            return ("path", t.text)
        if self.take("op", "("):
            node = self.or_()
            self.expect("op", ")", "')'")
            return node
        raise GateSyntaxError(f"expected a number, a path or '(', found {self._describe(t)}", t.pos)


def parse(text: str) -> Node:
    """Parse a gate expression into a tree; raise GateSyntaxError with the offending position."""
    return _Parser(text).parse()


def paths(node: Node) -> list[str]:
    """Every dotted path the expression reads, in order (for validation and display)."""
    kind = node[0]
    if kind == "path":
        return [node[1]]
    if kind in ("neg", "not"):
        return paths(node[1])
    if kind == "bin":
        return paths(node[2]) + paths(node[3])
    if kind in ("and", "or"):
        return paths(node[1]) + paths(node[2])
    if kind == "call":
        return [p for a in node[2] for p in paths(a)]
    return []


_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@dataclass
class GateResult:
    """One evaluated gate: its expression, every value it read, the compared sides, pass/fail."""

    expr: str
    passed: bool
    values: dict[str, Any] = field(default_factory=dict)
    detail: str = ""  # e.g. "11.9 <= 12.6" for a top-level comparison
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"expr": self.expr, "values": self.values, "detail": self.detail, "passed": self.passed}
        if self.error:
            d["error"] = self.error
        return d


def evaluate(text: str, lookup: Callable[[str], Any]) -> GateResult:
    """Evaluate a gate. `lookup(path)` returns a value or raises KeyError with a readable reason."""
    result = GateResult(expr=text, passed=False)
    try:
        tree = parse(text)
        if tree[0] == "bin" and tree[1] in _COMPARE:
            # A top-level comparison: show both sides, e.g. "11.9 <= 12.6".
            a, b = _eval(tree[2], lookup, result.values), _eval(tree[3], lookup, result.values)
            result.detail = f"{_fmt(a)} {tree[1]} {_fmt(b)}"
            value = _apply(tree[1], a, b)
        else:
            value = _eval(tree, lookup, result.values)
        if not isinstance(value, bool):
            raise GateEvalError(f"the expression gives {_fmt(value)}, not true/false; compare it with something")
        result.passed = value
    except (GateSyntaxError, GateEvalError) as exc:
        result.error = str(exc)
    return result


def compared_sides(text: str, lookup: Callable[[str], Any]) -> tuple[str, Any, Any] | None:
    """For a gate that is one top-level comparison `a OP b`: (OP, a, b), both sides evaluated; None for
    any other gate. `gptctl tune` turns the sides into a margin (how far a gate passed or failed).
    Raises GateSyntaxError or GateEvalError as `evaluate` reports them."""
    tree = parse(text)
    if tree[0] != "bin" or tree[1] not in _COMPARE:
        return None
    return tree[1], _eval(tree[2], lookup, {}), _eval(tree[3], lookup, {})


def _eval(node: Node, lookup: Callable[[str], Any], seen: dict[str, Any]) -> Any:
    kind = node[0]
    if kind in ("num", "str", "const"):
        return node[1]
    if kind == "path":
        try:
            value = lookup(node[1])
        except KeyError as exc:
            raise GateEvalError(exc.args[0] if exc.args else f"{node[1]}: not found") from None
        seen[node[1]] = value
        return value
    if kind == "neg":
        return -_number(_eval(node[1], lookup, seen), "-")
    if kind == "not":
        return not _truth(_eval(node[1], lookup, seen), "not")
    if kind == "and":
        return _truth(_eval(node[1], lookup, seen), "and") and _truth(_eval(node[2], lookup, seen), "and")
    if kind == "or":
        return _truth(_eval(node[1], lookup, seen), "or") or _truth(_eval(node[2], lookup, seen), "or")
    if kind == "call":
        args = [_number(_eval(a, lookup, seen), node[1]) for a in node[2]]
        if node[1] == "abs" and len(args) != 1:
            raise GateEvalError("abs() takes one argument")
        return FUNCTIONS[node[1]](*args)
    _, op, left, right = node
    return _apply(op, _eval(left, lookup, seen), _eval(right, lookup, seen))


def _apply(op: str, a: Any, b: Any) -> Any:
    if op in ("==", "!="):
        return _COMPARE[op](a, b)
    if op in _COMPARE and isinstance(a, str) and isinstance(b, str):
        return _COMPARE[op](a, b)
    a, b = _number(a, op), _number(b, op)
    if op == "/" and b == 0:
        raise GateEvalError("division by zero")
    return (_COMPARE.get(op) or _ARITH[op])(a, b)


def _number(v: Any, op: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise GateEvalError(f"'{op}' needs numbers, got {_fmt(v)}")
    if isinstance(v, float) and math.isnan(v):
        raise GateEvalError(f"'{op}' got NaN")
    return v


def _truth(v: Any, op: str) -> bool:
    if not isinstance(v, bool):
        raise GateEvalError(f"'{op}' needs true/false, got {_fmt(v)}")
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, float):
        return f"{v:.6g}"
    return repr(v) if isinstance(v, str) else str(v)
