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

Used by ``videogen curate --filter`` and by ``VideoDataModule(filter=...)``, where :func:`select`
is the stage that drops the samples that fail (counted in ``Skips`` as ``filtered_out``, or
``filter_missing_score`` for a sample without a score the expression names).
"""

from __future__ import annotations

import json
import logging
import math
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

log = logging.getLogger("videogen.data")

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


# Nodes are tuples: ("num", x) ("bool", b) ("name", n, pos) ("neg", node, pos) ("not", node, pos)
# ("and", [nodes]) ("or", [nodes]) ("cmp", [operands], [(op, pos)], pos)
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


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

    def expr(self):
        nodes = [self.and_expr()]
        while self.at("or"):
            self.take()
            nodes.append(self.and_expr())
        return nodes[0] if len(nodes) == 1 else ("or", nodes)

    def and_expr(self):
        nodes = [self.not_expr()]
        while self.at("and"):
            self.take()
            nodes.append(self.not_expr())
        return nodes[0] if len(nodes) == 1 else ("and", nodes)

    def not_expr(self):
        if self.at("not"):
            pos = self.take().pos
            return ("not", self.nested(pos, self.not_expr), pos)
        return self.comparison()

    def comparison(self):
        start = self.peek().pos
        operands, ops = [self.operand()], []
        while self.peek().kind == "op" and self.peek().value in _COMPARE:
            tok = self.take()
            ops.append((tok.value, tok.pos))
            operands.append(self.operand())
        return operands[0] if not ops else ("cmp", operands, ops, start)

    def operand(self):
        tok = self.take()
        if tok.kind == "number":
            return ("num", tok.value)
        if tok.kind == "keyword" and tok.value in ("true", "false"):
            return ("bool", tok.value == "true")
        if tok.kind == "name":
            return ("name", tok.value, tok.pos)
        if tok.kind == "op" and tok.value == "(":
            node = self.nested(tok.pos, self.expr)
            close = self.take()
            if close.kind != "op" or close.value != ")":
                raise _error(self.text, close.pos, "missing ')'")
            return node
        if tok.kind == "op" and tok.value == "-":
            return ("neg", self.nested(tok.pos, self.operand), tok.pos)
        what = "the end" if tok.kind == "end" else repr(tok.value)
        raise _error(self.text, tok.pos, f"expected a number, a name, true, false or '(' but found {what}")


class ScoreFilter:
    """A parsed expression: ``ScoreFilter("motion > 0.0005")(values) -> bool``."""

    def __init__(self, text: str, known: Mapping[str, str] | None = None):
        """``known``: name -> "number" | "bool"; when given, other names are refused and types checked."""
        self.text = text
        self.tree = _Parser(text).parse()
        self.names = sorted(self._names(self.tree))
        if known is not None:
            for node in self._name_nodes(self.tree):
                if node[1] not in known:
                    raise _error(text, node[2], f"unknown name {node[1]!r}; the names here are "
                                 f"{', '.join(sorted(known))}")
            if self._type(self.tree, known) != "bool":
                raise _error(text, 0, "the expression is a number, not a condition (compare it: motion > 0.01)")

    def __repr__(self) -> str:
        return f"ScoreFilter({self.text!r})"

    def _name_nodes(self, node) -> Iterator[tuple]:
        kind = node[0]
        if kind == "name":
            yield node
        elif kind in ("neg", "not"):
            yield from self._name_nodes(node[1])
        elif kind in ("and", "or"):
            for n in node[1]:
                yield from self._name_nodes(n)
        elif kind == "cmp":
            for n in node[1]:
                yield from self._name_nodes(n)

    def _names(self, node) -> set[str]:
        return {n[1] for n in self._name_nodes(node)}

    def _type(self, node, known: Mapping[str, str]) -> str:
        kind = node[0]
        if kind == "num":
            return "number"
        if kind == "bool":
            return "bool"
        if kind == "name":
            return known[node[1]]
        if kind == "neg":
            self._expect(node[1], "number", known, node[2], "'-' takes a number")
            return "number"
        if kind == "not":
            self._expect(node[1], "bool", known, node[2], "'not' takes a condition")
            return "bool"
        if kind in ("and", "or"):
            for n in node[1]:
                self._expect(n, "bool", known, self._pos(n), f"'{kind}' joins conditions")
            return "bool"
        operands, ops = node[1], node[2]
        types = [self._type(n, known) for n in operands]
        for k, (op, pos) in enumerate(ops):
            if op in ("<", "<=", ">", ">=") and "bool" in (types[k], types[k + 1]):
                raise _error(self.text, pos, f"'{op}' compares numbers, not true/false")
            if types[k] != types[k + 1]:
                raise _error(self.text, pos, f"'{op}' compares a {types[k]} with a {types[k + 1]}")
        return "bool"

    def _expect(self, node, want: str, known, pos: int, message: str) -> None:
        got = self._type(node, known)
        if got != want:
            raise _error(self.text, pos, f"{message}; this is a {got}")

    def _pos(self, node) -> int:
        for n in self._name_nodes(node):
            return n[2]
        return node[-1] if isinstance(node[-1], int) else 0

    def __call__(self, values: Mapping[str, Any]) -> bool:
        """True when the sample's ``values`` satisfy the expression; raises :class:`MissingScore`."""
        return bool(self._eval(self.tree, values))

    def _eval(self, node, values):
        kind = node[0]
        if kind in ("num", "bool"):
            return node[1]
        if kind == "name":
            if node[1] not in values or values[node[1]] is None:
                raise MissingScore(node[1])
            return values[node[1]]
        if kind == "neg":
            return -self._eval(node[1], values)
        if kind == "not":
            return not self._eval(node[1], values)
        if kind == "and":
            return all(self._eval(n, values) for n in node[1])
        if kind == "or":
            return any(self._eval(n, values) for n in node[1])
        vals = [self._eval(n, values) for n in node[1]]
        return all(_COMPARE[op](vals[k], vals[k + 1]) for k, (op, _) in enumerate(node[2]))


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


def select(records: Iterable, score_filter: ScoreFilter | str | None, skips) -> Iterator:
    """The stage: records (``.meta``, ``.url``, ``.key``) whose scores satisfy ``score_filter``."""
    if not score_filter:
        yield from records
        return
    if isinstance(score_filter, str):
        score_filter = ScoreFilter(score_filter)
    for r in records:
        try:
            ok = score_filter(sample_values(r.meta))
        except MissingScore as e:
            skips.add("filter_missing_score", r.url, r.key,
                      f"json has no {e.args[0]!r} score for filter {score_filter.text!r} (curate the set first)")
            continue
        if not ok:
            skips.add("filtered_out", r.url, r.key, f"{score_filter.text!r} is false")
            continue
        yield r


def manifest_score_types(manifest) -> dict[str, str]:
    """The curation scores a ``dataset.json`` says its samples carry (``created_by.curation.scores``)."""
    scores = (manifest.created_by.get("curation") or {}).get("scores") if manifest is not None else None
    return dict(scores) if isinstance(scores, dict) else {}


def filtered_shapes(path: str, score_filter: ScoreFilter, limits=None) -> tuple[Counter, int]:
    """The shape histogram (``(w, h, frames, fps) -> count``) and count of a local shard's samples that
    pass, read from their ``json`` members alone (through the one shard reader; media is skipped over,
    not read). Samples whose json holds no shape, or a shape that is not believable
    (:func:`~videogen.data.manifest.meta_problem`), are not counted (the stream probes or skips them)."""
    from videogen.data.manifest import _is_int, meta_problem
    from videogen.data.tar_reader import TarLimits, group_samples, read_tar

    shapes: Counter = Counter()
    count = 0
    for sample in group_samples(read_tar([path], None, limits or TarLimits(), only=("json",), strict=True)):
        raw = sample.members.get("json")
        if raw is None:
            continue
        try:
            meta = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if not isinstance(meta, dict) or meta_problem(meta):
            continue
        w, h, n, fps = (meta.get(k) for k in ("width", "height", "num_frames", "fps"))
        if not (_is_int(w) and _is_int(h) and _is_int(n) and fps is not None):
            continue
        try:
            if not score_filter(sample_values(meta)):
                continue
        except MissingScore:
            continue
        shapes[(w, h, n, float(fps))] += 1
        count += 1
    return shapes, count


def check_names(score_filter: ScoreFilter, urls: list[str], manifest: str | None = None) -> ScoreFilter:
    """The filter parsed again against the names these shards carry: the json fields every sample has
    and the curation scores their manifests list; an unknown name is a :class:`FilterError`."""
    from videogen.data.manifest import manifests_of

    types: dict[str, str] = {}
    for m in {id(m): m for m in manifests_of(urls, manifest).values()}.values():
        types.update(manifest_score_types(m))
    try:
        return ScoreFilter(score_filter.text, known_names(types))
    except FilterError as e:
        if types:
            raise
        raise FilterError(f"{e}\n(these shards' dataset.json lists no curation scores: run `videogen curate` on "
                          "them first, or filter on width, height, fps, num_frames, duration only)") from None


def filtered_shard_shapes(urls: list[str], score_filter: ScoreFilter, manifest: str | None = None,
                          limits=None) -> tuple[Counter, int]:
    """Shape histogram and count of the samples that pass, for equal epochs per rank: local shards
    are read (their json members only); remote ones are counted from their manifest, unfiltered
    (an overestimate: a rank whose share runs dry wraps around), with a warning."""
    from videogen.data.datamodule import shard_shapes
    from videogen.data.shards import local_path

    shapes: Counter = Counter()
    count = 0
    remote = [u for u in urls if local_path(u) is None]
    for url in urls:
        if local_path(url) is None:
            continue
        try:
            s, n = filtered_shapes(local_path(url), score_filter, limits)
        except (OSError, tarfile.TarError) as e:  # the stream skips it and counts why
            log.warning("%s: cannot be read to count the samples filter %r keeps (%s); counted as empty",
                        url, score_filter.text, e)
            continue
        shapes.update(s)
        count += n
    if remote:
        log.warning("filter %r: %d remote shards are counted from their manifest, unfiltered; epochs hold more "
                    "batches than the samples that pass fill once", score_filter.text, len(remote))
        s, n = shard_shapes(remote, manifest, limits)
        shapes.update(s)
        count += n
    return shapes, count
