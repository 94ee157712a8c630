"""A small, safe expression language over a sample's scores, to select samples.

    motion > 0.0005 and duration >= 2 and not duplicate
    (sharpness >= 50 or min_side >= 720) and 0.1 <= brightness <= 0.9

Grammar (a tokenizer and a recursive-descent parser; nothing is ever passed to ``eval``)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := operand (("<" | "<=" | ">" | ">=" | "==" | "!=") operand)*   # chained: a < b < c
    operand    := NUMBER | "true" | "false" | NAME | "(" expr ")" | "-" operand

Parentheses, ``not`` and ``-`` nest at most :data:`MAX_NESTING` deep (a deeper expression is a
:class:`FilterError`, not a ``RecursionError`` in the parser or the evaluator).

Names are a sample's numeric or boolean json fields (``width``, ``height``, ``fps``,
``num_frames``, ``duration``) and its curation scores (``json["curation"]``, written by
``videogen curate``: ``motion``, ``jitter``, ``duplicate``, ``sharpness``, ...). A name given in
``known`` is checked when the expression is parsed: an unknown one is an error naming the known
ones. Types are checked too: ``and``/``or``/``not`` take booleans, ``<``/``>`` numbers.

A pure module: typed nodes, a parser, a type check and an evaluator; no I/O. An expression is
parsed once (:class:`ScoreFilter`); :meth:`ScoreFilter.checked` checks the same tree against the
names a shard set carries. Used by ``videogen curate --filter`` (``data_recipes/curate/decide.py``)
and by ``VideoDataModule(filter=...)``, where :func:`videogen.data.stages.select` is the stage that
drops the samples that fail, and :mod:`videogen.data.sizing` sizes epochs by the samples that pass.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Union

# the json fields every sample may be filtered on, besides its curation scores
META_NAMES = {"width": "number", "height": "number", "fps": "number", "num_frames": "number", "duration": "number"}
KEYWORDS = {"and", "or", "not", "true", "false"}
MAX_NESTING = 32  # levels of ( ), not and -: far more than a filter needs, far less than Python's stack
_TOKEN = re.compile(r"\s*(?:(?P<number>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op><=|>=|==|!=|<|>|\(|\)|-))")


class FilterError(ValueError):
    """A malformed expression, an unknown name or a type error; the message shows where."""


class MissingScore(KeyError):
    """The sample has no value for a name the expression uses."""


def _error(text: str, pos: int, message: str) -> FilterError:
    return FilterError(f"filter {text!r}, column {pos + 1}: {message}\n  {text}\n  {' ' * pos}^")


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, name, op, keyword, end
    value: Any
    pos: int


def tokenize(text: str) -> list[_Tok]:
    tokens, pos = [], 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return tokens + [_Tok("end", None, pos)]
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _error(text, pos, f"unexpected character {text[pos]!r}")
        start = m.start(m.lastgroup)
        value = m.group(m.lastgroup)
        if m.lastgroup == "number":
            tokens.append(_Tok("number", float(value), start))
        elif m.lastgroup == "name":
            tokens.append(_Tok("keyword" if value.lower() in KEYWORDS else "name",
                               value.lower() if value.lower() in KEYWORDS else value, start))
        else:
            tokens.append(_Tok("op", value, start))
        pos = m.end()


# ---- the syntax tree: typed nodes (``pos``: the column a message points at) ----------------------


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Name:
    name: str
    pos: int


@dataclass(frozen=True)
class Neg:
    operand: "Node"
    pos: int


@dataclass(frozen=True)
class Not:
    operand: "Node"
    pos: int


@dataclass(frozen=True)
class And:
    operands: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    operands: tuple["Node", ...]


@dataclass(frozen=True)
class Compare:
    """``a < b <= c``: operands, the operators with their columns, and where the comparison starts."""

    operands: tuple["Node", ...]
    ops: tuple[tuple[str, int], ...]
    pos: int


Node = Union[Num, Bool, Name, Neg, Not, And, Or, Compare]
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, (Neg, Not)):
        return (node.operand,)
    if isinstance(node, (And, Or, Compare)):
        return node.operands
    return ()


def name_nodes(node: Node) -> Iterator[Name]:
    """Every name the expression reads, in order."""
    if isinstance(node, Name):
        yield node
    for child in children(node):
        yield from name_nodes(child)


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, self.i, self.depth = text, tokenize(text), 0, 0

    def nested(self, pos: int, parse):
        """``parse()`` one level deeper (inside ``(``, ``not`` or ``-``), refusing a runaway depth."""
        if self.depth >= MAX_NESTING:
            shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
            raise FilterError(f"filter {shown!r}, column {pos + 1}: nested deeper than {MAX_NESTING} levels of "
                              "( ), not and -; write the condition flatter")
        self.depth += 1
        try:
            return parse()
        finally:
            self.depth -= 1

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def at(self, keyword: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == "keyword" and tok.value == keyword

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self):
        if self.peek().kind == "end":
            raise _error(self.text, 0, "empty expression")
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise _error(self.text, tok.pos, f"unexpected {tok.value!r} (expected and, or or the end)")
        return node

    def chain(self, keyword: str, node, operand):
        """``operand (keyword operand)*``: the operand alone, or ``node`` of all of them."""
        nodes = [operand()]
        while self.at(keyword):
            self.take()
            nodes.append(operand())
        return nodes[0] if len(nodes) == 1 else node(tuple(nodes))

    def expr(self):
        return self.chain("or", Or, self.and_expr)

    def and_expr(self):
        return self.chain("and", And, self.not_expr)

    def not_expr(self):
        if self.at("not"):
            pos = self.take().pos
            return Not(self.nested(pos, self.not_expr), pos)
        return self.comparison()

    def comparison(self):
        start = self.peek().pos
        operands, ops = [self.operand()], []
        while self.peek().kind == "op" and self.peek().value in _COMPARE:
            tok = self.take()
            ops.append((tok.value, tok.pos))
            operands.append(self.operand())
        return operands[0] if not ops else Compare(tuple(operands), tuple(ops), start)

    def operand(self):
        tok = self.take()
        if tok.kind == "number":
            return Num(tok.value)
        if tok.kind == "keyword" and tok.value in ("true", "false"):
            return Bool(tok.value == "true")
        if tok.kind == "name":
            return Name(tok.value, tok.pos)
        if tok.kind == "op" and tok.value == "(":
            node = self.nested(tok.pos, self.expr)
            close = self.take()
            if close.kind != "op" or close.value != ")":
                raise _error(self.text, close.pos, "missing ')'")
            return node
        if tok.kind == "op" and tok.value == "-":
            return Neg(self.nested(tok.pos, self.operand), tok.pos)
        what = "the end" if tok.kind == "end" else repr(tok.value)
        raise _error(self.text, tok.pos, f"expected a number, a name, true, false or '(' but found {what}")


class ScoreFilter:
    """A parsed expression: ``ScoreFilter("motion > 0.0005")(values) -> bool``."""

    def __init__(self, text: str, known: Mapping[str, str] | None = None, *, tree: Node | None = None):
        """``known``: name -> "number" | "bool"; when given, other names are refused and types checked.
        ``tree``: the already parsed expression of ``text`` (see :meth:`checked`)."""
        self.text = text
        self.tree = tree if tree is not None else _Parser(text).parse()
        self.names = sorted({n.name for n in name_nodes(self.tree)})
        if known is not None:
            for node in name_nodes(self.tree):
                if node.name not in known:
                    raise _error(text, node.pos, f"unknown name {node.name!r}; the names here are "
                                 f"{', '.join(sorted(known))}")
            if self._type(self.tree, known) != "bool":
                raise _error(text, 0, "the expression is a number, not a condition (compare it: motion > 0.01)")

    def checked(self, known: Mapping[str, str]) -> "ScoreFilter":
        """This expression checked against ``known`` names and types (the tree is not parsed again)."""
        return ScoreFilter(self.text, known, tree=self.tree)

    def __repr__(self) -> str:
        return f"ScoreFilter({self.text!r})"

    def _type(self, node: Node, known: Mapping[str, str]) -> str:
        if isinstance(node, Num):
            return "number"
        if isinstance(node, Bool):
            return "bool"
        if isinstance(node, Name):
            return known[node.name]
        if isinstance(node, Neg):
            self._expect(node.operand, "number", known, node.pos, "'-' takes a number")
            return "number"
        if isinstance(node, Not):
            self._expect(node.operand, "bool", known, node.pos, "'not' takes a condition")
            return "bool"
        if isinstance(node, (And, Or)):
            word = "and" if isinstance(node, And) else "or"
            for n in node.operands:
                self._expect(n, "bool", known, _pos(n), f"'{word}' joins conditions")
            return "bool"
        types = [self._type(n, known) for n in node.operands]
        for k, (op, pos) in enumerate(node.ops):
            if op in ("<", "<=", ">", ">=") and "bool" in (types[k], types[k + 1]):
                raise _error(self.text, pos, f"'{op}' compares numbers, not true/false")
            if types[k] != types[k + 1]:
                raise _error(self.text, pos, f"'{op}' compares a {types[k]} with a {types[k + 1]}")
        return "bool"

    def _expect(self, node: Node, want: str, known, pos: int, message: str) -> None:
        got = self._type(node, known)
        if got != want:
            raise _error(self.text, pos, f"{message}; this is a {got}")

    def __call__(self, values: Mapping[str, Any]) -> bool:
        """True when the sample's ``values`` satisfy the expression; raises :class:`MissingScore`."""
        return bool(evaluate_node(self.tree, values))


def _pos(node: Node) -> int:
    """The column an error about ``node`` points at: its first name, else its own position."""
    for n in name_nodes(node):
        return n.pos
    return getattr(node, "pos", 0)


def evaluate_node(node: Node, values: Mapping[str, Any]):
    """The value of ``node`` for a sample's ``values``; raises :class:`MissingScore`."""
    if isinstance(node, (Num, Bool)):
        return node.value
    if isinstance(node, Name):
        if node.name not in values or values[node.name] is None:
            raise MissingScore(node.name)
        return values[node.name]
    if isinstance(node, Neg):
        return -evaluate_node(node.operand, values)
    if isinstance(node, Not):
        return not evaluate_node(node.operand, values)
    if isinstance(node, And):
        return all(evaluate_node(n, values) for n in node.operands)
    if isinstance(node, Or):
        return any(evaluate_node(n, values) for n in node.operands)
    vals = [evaluate_node(n, values) for n in node.operands]
    return all(_COMPARE[op](vals[k], vals[k + 1]) for k, (op, _) in enumerate(node.ops))


def value_type(value: Any) -> str | None:
    """"bool", "number" or None (not filterable) for a json value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return "number"
    return None


def sample_values(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The names a filter sees for a sample's json: its numeric fields, then its curation scores."""
    values = {k: meta[k] for k in META_NAMES if value_type(meta.get(k)) == "number"}
    curation = meta.get("curation")
    if isinstance(curation, dict):
        values.update({k: v for k, v in curation.items() if value_type(v) is not None})
    return values


def known_names(score_types: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**META_NAMES, **(score_types or {})}
