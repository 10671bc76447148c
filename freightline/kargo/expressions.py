"""Kargo's ``${{ expr }}`` expressions: the one expression evaluator of Freightline.

The language is expr-lang's (github.com/expr-lang/expr, v1.17 as Kargo v1.11 embeds
it): literals, names, member access and optional chaining, indexing and slicing,
calls and method calls, expr-lang's operators with its precedence table, the pipe
``|``, ``let``, ``if``/``else``, predicates over ``#`` (``filter``, ``map``,
``reduce`` ...) and its built-ins, dates and durations included; plus Kargo's
functions (``quote``, ``unsafeQuote``, ``semverParse`` ...) and Kargo's typing of
rendered templates (:func:`render_string`). docs/expressions.md is the reference.

A hand-written tokenizer feeds a Pratt parser that builds a small AST of frozen
dataclasses (each node knows its position, for error messages); an interpreter walks
it, dispatching by node type, within a budget of steps and sizes so that hostile
input fails with a message. ``matches`` uses RE2, Go's regexp engine.

Everything here is pure and deterministic (no I/O, clock or randomness), so Temporal
workflow code can import it inside its sandbox: ``now()`` returns the ``datetime`` the
caller put under :data:`NOW` in the environment (a promotion's planning time, a
discovery's or a verification's start, all recorded in a history). The only global
state is the ``lru_cache`` of parsed expressions and compiled patterns.

Differences from expr-lang, on purpose:

- an unknown top-level name is an error (expr-lang without a typed env gives
  nil), except on the left of ``??``, so ``maybe ?? "default"`` works;
- division by zero and ``**`` overflow are errors instead of ``Inf``/``NaN``;
- ``string(x)`` uses the interpolation text form described in
  :func:`render_string` rather than Go's ``%v``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import functools
import io
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NoReturn

import re2  # type: ignore[import-untyped]

from freightline.errors import ExpressionError
from freightline.kargo.semver import InvalidVersionError, Version, parse_version, try_parse_version

__all__ = [
    "ArrayNode",
    "Binary",
    "Call",
    "Chain",
    "Closure",
    "Conditional",
    "ExpressionError",
    "Let",
    "Literal",
    "MapNode",
    "Member",
    "Name",
    "Node",
    "Pointer",
    "SliceNode",
    "Unary",
    "evaluate",
    "parse",
    "render",
    "render_string",
    "render_text",
]

# expr-lang's precedence table (parser/operator/operator.go). ``??`` binds
# tightest and may not be mixed with other operators without parentheses.
_BINARY: Mapping[str, int] = MappingProxyType(
    {
        "or": 10,
        "||": 10,
        "and": 15,
        "&&": 15,
        "==": 20,
        "!=": 20,
        "<": 20,
        ">": 20,
        ">=": 20,
        "<=": 20,
        "in": 20,
        "matches": 20,
        "contains": 20,
        "startsWith": 20,
        "endsWith": 20,
        "..": 25,
        "+": 30,
        "-": 30,
        "*": 60,
        "/": 60,
        "%": 60,
        "**": 100,
        "^": 100,
        "??": 500,
        "|": 0,
    }
)
_RIGHT_ASSOCIATIVE = frozenset({"**", "^"})
_COMPARISON_PRECEDENCE = 20
_UNARY: Mapping[str, int] = MappingProxyType({"not": 50, "!": 50, "-": 90, "+": 90})
_NEGATABLE = frozenset({"in", "matches", "contains", "startsWith", "endsWith"})
_RESERVED = frozenset({"true", "false", "nil", "let", "if", "else"})
# Builtins whose argument at this index is a predicate (a closure over #).
_PREDICATE_ARGS: Mapping[str, int] = MappingProxyType(
    {
        name: 1
        for name in (
            "all",
            "any",
            "none",
            "one",
            "filter",
            "map",
            "count",
            "sum",
            "find",
            "findIndex",
            "findLast",
            "findLastIndex",
            "groupBy",
            "sortBy",
            "reduce",
        )
    }
)
_WORD_OPERATORS = frozenset(
    {"not", "in", "or", "and", "matches", "contains", "startsWith", "endsWith"}
)
_TWO_CHAR_OPERATORS = frozenset({"&&", "||", "==", "!=", "<=", ">=", "**", "??", "?.", ".."})
_ONE_CHAR_OPERATORS = frozenset("+-*/%^<>!?:,.()[]{}=&|;#")

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
# Bounds the work one expression can ask for (parse nesting, ``a..b`` ranges),
# so a bad expression fails with a message instead of exhausting the worker.
_MAX_NESTING = 100
_MAX_RANGE = 1_000_000
# Evaluation steps (nodes visited plus elements walked) and the largest string, array or
# map a function may build: enough for any real template, small enough to stop hostile ones.
_MAX_STEPS = 1_000_000
_MAX_SIZE = 1_000_000


# --- AST -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """Base of the expression AST; ``pos`` is where it starts in the text (errors name it)."""

    pos: int = dataclasses.field(default=-1, compare=False, kw_only=True, repr=False)


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """An int, float, string, bool or nil literal."""

    value: Any


@dataclass(frozen=True, slots=True)
class Name(Node):
    """A name looked up in the environment (or a builtin, when called)."""

    name: str


@dataclass(frozen=True, slots=True)
class ArrayNode(Node):
    """An array literal ``[a, b]``."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class MapNode(Node):
    """A map literal ``{a: 1, "b": 2, (expr): 3}``."""

    pairs: tuple[tuple[Node, Node], ...]


@dataclass(frozen=True, slots=True)
class Member(Node):
    """``obj.name`` (``dot``) or ``obj[key]``; ``optional`` for ``?.``."""

    obj: Node
    key: Node
    optional: bool = False
    dot: bool = True


@dataclass(frozen=True, slots=True)
class SliceNode(Node):
    """``obj[start:stop]``, either bound optional."""

    obj: Node
    start: Node | None
    stop: Node | None


@dataclass(frozen=True, slots=True)
class Call(Node):
    """``f(args)`` or ``obj.method(args)``."""

    callee: Node
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Chain(Node):
    """The extent of an optional chain: a nil before ``?.`` makes all of it nil."""

    node: Node


@dataclass(frozen=True, slots=True)
class Unary(Node):
    """``!x``, ``not x``, ``-x``, ``+x``."""

    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary(Node):
    """``left op right``; ``not in`` and friends are ``Unary("not", Binary(...))``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Pointer(Node):
    """``#`` (the element a predicate looks at), ``#index`` or ``#acc``; ``.Field`` is
    ``Member(Pointer(""), "Field")``."""

    name: str


@dataclass(frozen=True, slots=True)
class Closure(Node):
    """A predicate argument (``filter(xs, # > 1)``, ``map(xs, {.Name})``), evaluated per element."""

    body: Node


@dataclass(frozen=True, slots=True)
class Let(Node):
    """``let name = value; body``."""

    name: str
    value: Node
    body: Node


@dataclass(frozen=True, slots=True)
class Conditional(Node):
    """``cond ? then : otherwise``."""

    cond: Node
    then: Node
    otherwise: Node


# --- errors ----------------------------------------------------------------


class _ParseError(Exception):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class _EvalError(Exception):
    """What went wrong while evaluating; ``evaluate`` adds the expression text and where."""

    pos: int | None = None

    def at(self, pos: int | None) -> _EvalError:
        self.pos = pos
        return self


class _NilChain(Exception):
    """Raised by ``?.`` on nil and caught by the enclosing :class:`Chain`."""


def _quoted(text: str) -> str:
    # Error messages are one line: a multi-line expression shows its newlines escaped.
    return '"' + text.replace("\n", "\\n") + '"'


def _location(text: str, pos: int) -> str:
    # Like expr-lang: 1-based columns; the end of input is reported at the last character.
    pos = max(0, min(pos, len(text) - 1))
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    if "\n" in text:
        return f"line {line}, column {column}"
    return f"column {column}"


# --- tokenizer -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "op", "num", "str", "eof"
    text: str  # source text (decoded value for strings)
    pos: int
    value: Any = None  # parsed number or decoded string

    def is_op(self, *values: str) -> bool:
        return self.kind == "op" and (not values or self.text in values)

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of expression"
        if self.kind == "str":
            return f"string {json.dumps(self.value, ensure_ascii=False)}"
        return f"token {_quoted(self.text)}"


_SIMPLE_ESCAPES: Mapping[str, str] = MappingProxyType(
    {
        "a": "\a",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
        "v": "\v",
        "\\": "\\",
        "'": "'",
        '"': '"',
    }
)
_HEX_ESCAPES: Mapping[str, int] = MappingProxyType({"x": 2, "u": 4, "U": 8})
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"


def _is_ident_char(char: str) -> bool:
    return char.isalnum() or char in "_$"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def tokens(self) -> list[_Token]:
        tokens: list[_Token] = []
        while True:
            token = self._next()
            tokens.append(token)
            if token.kind == "eof":
                return tokens

    def _peek(self, offset: int = 0) -> str:
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def _next(self) -> _Token:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace():
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise _ParseError("unclosed comment", self.pos)
                self.pos = end + 2
            else:
                break
        start = self.pos
        if start >= len(text):
            return _Token("eof", "", len(text))
        char = text[start]
        if char in "'\"":
            return self._string(char)
        if char == "#":
            self.pos += 1
            while self.pos < len(text) and _is_ident_char(text[self.pos]):
                self.pos += 1
            return _Token("pointer", text[start : self.pos], start, text[start + 1 : self.pos])
        if char == "`":
            end = text.find("`", start + 1)
            if end < 0:
                raise _ParseError("string literal not terminated", start)
            self.pos = end + 1
            return _Token("str", text[start : end + 1], start, text[start + 1 : end])
        if "0" <= char <= "9" or (char == "." and "0" <= self._peek(1) <= "9"):
            return self._number()
        if char.isalpha() or char in "_$":
            while self.pos < len(text) and _is_ident_char(text[self.pos]):
                self.pos += 1
            word = text[start : self.pos]
            return _Token("op" if word in _WORD_OPERATORS else "ident", word, start)
        pair = text[start : start + 2]
        if pair in _TWO_CHAR_OPERATORS:
            self.pos += 2
            return _Token("op", pair, start)
        if char in _ONE_CHAR_OPERATORS:
            self.pos += 1
            return _Token("op", char, start)
        raise _ParseError(f"unrecognized character {_quoted(char)}", start)

    def _number(self) -> _Token:
        # Same scanning rules as expr-lang's lexer, so the same texts are numbers.
        text = self.text
        start = self.pos
        digits = "0123456789_"
        if self._peek() == "0" and self._peek(1) in ("x", "X", "o", "O", "b", "B"):
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[
                self._peek(1).lower()
            ]
            self.pos += 2
        while self._peek() and self._peek() in digits:
            self.pos += 1
        if self._peek() == "." and self._peek(1) != ".":
            self.pos += 1
            while self._peek() and self._peek() in digits:
                self.pos += 1
        if self._peek() in ("e", "E"):
            self.pos += 1
            if self._peek() in ("+", "-"):
                self.pos += 1
            while self._peek() and self._peek() in digits:
                self.pos += 1
        raw = text[start : self.pos]
        if self._peek() and _is_ident_char(self._peek()):
            raise _ParseError(f"bad number syntax {_quoted(raw + self._peek())}", start)
        cleaned = raw.replace("_", "").lower()
        value: int | float
        try:
            if cleaned.startswith(("0x", "0o", "0b")):
                value = int(cleaned[2:], {"x": 16, "o": 8, "b": 2}[cleaned[1]])
            elif "." in cleaned or "e" in cleaned:
                value = float(cleaned)
                if math.isinf(value):
                    raise _ParseError(f"float literal {_quoted(raw)} is out of range", start)
            else:
                value = int(cleaned, 10)
        except ValueError:
            raise _ParseError(f"invalid number literal {_quoted(raw)}", start) from None
        if isinstance(value, int) and value > _INT64_MAX:
            raise _ParseError(f"integer literal {_quoted(raw)} is out of range", start)
        return _Token("num", raw, start, value)

    def _string(self, quote: str) -> _Token:
        text = self.text
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(text):
                raise _ParseError("string literal not terminated", start)
            char = text[self.pos]
            if char == quote:
                self.pos += 1
                return _Token("str", text[start : self.pos], start, "".join(out))
            if char != "\\":
                out.append(char)
                self.pos += 1
                continue
            escape_pos = self.pos
            kind = self._peek(1)
            if kind in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[kind])
                self.pos += 2
            elif kind in _HEX_ESCAPES:
                width = _HEX_ESCAPES[kind]
                digits = text[self.pos + 2 : self.pos + 2 + width]
                if len(digits) != width or any(d not in _HEX for d in digits):
                    raise _ParseError(f"invalid escape \\{kind} in string", escape_pos)
                code = int(digits, 16)
                if kind != "x" and (code > 0x10FFFF or 0xD800 <= code <= 0xDFFF):
                    raise _ParseError(f"invalid unicode escape \\{kind}{digits}", escape_pos)
                out.append(chr(code))
                self.pos += 2 + width
            elif kind and kind in _OCTAL:
                digits = text[self.pos + 1 : self.pos + 4]
                if len(digits) != 3 or any(d not in _OCTAL for d in digits) or int(digits, 8) > 255:
                    raise _ParseError("invalid octal escape in string", escape_pos)
                out.append(chr(int(digits, 8)))
                self.pos += 4
            else:
                raise _ParseError("invalid escape in string", escape_pos)


# --- parser ----------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _Lexer(text).tokens()
        self.index = 0
        self.depth = 0
        self.closures = 0  # how many predicates enclose the current position

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def _peek(self) -> _Token:
        return self.tokens[min(self.index + 1, len(self.tokens) - 1)]

    def _advance(self) -> _Token:
        token = self.current
        if token.kind != "eof":
            self.index += 1
        return token

    def _fail(self, token: _Token | None = None, message: str | None = None) -> NoReturn:
        token = token or self.current
        raise _ParseError(message or f"unexpected {token.describe()}", token.pos)

    def _expect(self, value: str) -> _Token:
        if not self.current.is_op(value):
            self._fail()
        return self._advance()

    def parse(self) -> Node:
        node = self.expression(0)
        if self.current.kind != "eof":
            self._fail()
        return node

    def expression(self, precedence: int) -> Node:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            self._fail(message="expression is nested too deeply")
        try:
            return self._expression(precedence)
        finally:
            self.depth -= 1

    def _expression(self, precedence: int) -> Node:
        if precedence == 0 and self.current.kind == "ident" and self.current.text == "let":
            return self._let()
        left = self._primary()
        previous = ""
        while self.current.kind == "op":
            token = self.current
            negate = token.text == "not"
            if negate:
                following = self._peek()
                if not (following.kind == "op" and following.text in _NEGATABLE):
                    self._fail(following)
                if _BINARY[following.text] < precedence:
                    break
                token = following
            op = token.text
            if op not in _BINARY or _BINARY[op] < precedence:
                break
            if previous == "??" and op != "??":
                self._fail(
                    token,
                    f'operator "{op}" and "??" cannot be mixed; wrap either in parentheses',
                )
            self._advance()
            if negate:
                self._advance()
            op_precedence = _BINARY[op]
            if op == "|":
                left = self._pipe(left)
            elif op_precedence == _COMPARISON_PRECEDENCE:
                left = self._comparison(left, op, negate)
            else:
                right_precedence = op_precedence + (0 if op in _RIGHT_ASSOCIATIVE else 1)
                left = Binary(op, left, self.expression(right_precedence), pos=token.pos)
                if negate:
                    left = Unary("not", left, pos=token.pos)
            previous = op
        if precedence == 0:
            left = self._conditional(left)
        return left

    def _let(self) -> Node:
        # let name = value; body
        self._advance()
        name = self._advance()
        if name.kind != "ident" or name.text in _RESERVED:
            self._fail(name, f"expected a variable name after let, not {name.describe()}")
        self._expect("=")
        value = self.expression(0)
        self._expect(";")
        return Let(name.text, value, self.expression(0))

    def _pipe(self, left: Node) -> Node:
        # a | f(b) is f(a, b): the right side must name a function.
        name = self._advance()
        if name.kind != "ident":
            self._fail(name, f"expected a function name after |, not {name.describe()}")
        if self.current.is_op("("):
            return self._call(name.text, left)
        return Call(Name(name.text, pos=name.pos), (left,), pos=name.pos)

    def _comparison(self, left: Node, op: str, negate: bool) -> Node:
        # expr-lang chains comparisons: ``a < b < c`` means ``a < b && b < c``.
        root: Node | None = None
        while True:
            op_pos = self.tokens[self.index - 1].pos
            right = self.expression(_COMPARISON_PRECEDENCE + 1)
            node: Node = Binary(op, left, right, pos=op_pos)
            if negate:
                node = Unary("not", node, pos=op_pos)
            root = node if root is None else Binary("&&", root, node, pos=op_pos)
            left = right
            token = self.current
            negate = token.is_op("not") and self._peek().text in _NEGATABLE
            if negate:
                token = self._peek()
            if not (token.kind == "op" and _BINARY.get(token.text) == _COMPARISON_PRECEDENCE):
                return root
            op = token.text
            self._advance()
            if negate:
                self._advance()

    def _conditional(self, node: Node) -> Node:
        while self.current.is_op("?"):
            question = self._advance()
            then = self.expression(0)
            self._expect(":")
            node = Conditional(node, then, self.expression(0), pos=question.pos)
        return node

    def _primary(self) -> Node:
        token = self.current
        if token.kind == "ident" and token.text == "if" and self._peek().kind != "op":
            return self._if()
        if token.kind == "pointer":
            if not self.closures:
                self._fail(token, f"{_quoted(token.text)} can only be used inside a predicate")
            self._advance()
            return self._postfix(Pointer(token.value, pos=token.pos))
        if token.is_op(".") and self.closures and self._peek().kind == "ident":
            # .Field inside a predicate is #.Field
            self._advance()
            name = self._advance()
            pointer = Pointer("", pos=token.pos)
            return self._postfix(Member(pointer, Literal(name.text), pos=token.pos))
        if token.kind == "op" and token.text in _UNARY:
            self._advance()
            operand = self.expression(_UNARY[token.text])
            return self._postfix(Unary(token.text, operand, pos=token.pos))
        if token.is_op("("):
            self._advance()
            inner = self.expression(0)
            self._expect(")")
            return self._postfix(inner)
        return self._secondary()

    def _if(self) -> Node:
        # expr-lang's if cond { a } else { b }
        start = self._advance().pos
        cond = self.expression(0)
        self._expect("{")
        then = self.expression(0)
        self._expect("}")
        else_token = self._advance()
        if else_token.kind != "ident" or else_token.text != "else":
            self._fail(else_token, "expected else after the if block")
        if self.current.kind == "ident" and self.current.text == "if":
            return Conditional(cond, then, self._if(), pos=start)
        self._expect("{")
        otherwise = self.expression(0)
        self._expect("}")
        return Conditional(cond, then, otherwise, pos=start)

    def _secondary(self) -> Node:
        token = self._advance()
        node: Node
        if token.kind == "ident":
            if token.text in ("true", "false"):
                return Literal(token.text == "true")
            if token.text == "nil":
                return Literal(None)
            is_call = self.current.is_op("(")
            node = (
                self._call(token.text, pos=token.pos)
                if is_call
                else Name(token.text, pos=token.pos)
            )
        elif token.kind == "num":
            return Literal(token.value)
        elif token.kind == "str":
            node = Literal(token.value)
        elif token.is_op("["):
            node = self._array()
        elif token.is_op("{"):
            node = self._map()
        else:
            self._fail(token)
        return self._postfix(node)

    def _call(self, name: str, piped: Node | None = None, pos: int = -1) -> Node:
        if pos < 0:
            pos = self.tokens[self.index - 1].pos
        callee = Name(name, pos=pos)
        if name not in _PREDICATE_ARGS:
            given = self._arguments()
            return Call(callee, given if piped is None else (piped, *given), pos=pos)
        # A predicate builtin: its predicate argument is a closure, braces optional.
        closure_at = _PREDICATE_ARGS[name]
        self._expect("(")
        args: list[Node] = [] if piped is None else [piped]
        written = 0
        while not self.current.is_op(")"):
            if written:
                self._expect(",")
                if self.current.is_op(")"):
                    break
            written += 1
            if len(args) == closure_at:
                args.append(self._closure())
            else:
                args.append(self.expression(0))
        self._advance()
        return Call(callee, tuple(args), pos=pos)

    def _closure(self) -> Node:
        self.closures += 1
        try:
            if self.current.is_op("{"):
                self._advance()
                body = self.expression(0)
                self._expect("}")
            else:
                body = self.expression(0)
        finally:
            self.closures -= 1
        return Closure(body)

    def _arguments(self) -> tuple[Node, ...]:
        self._expect("(")
        args: list[Node] = []
        while not self.current.is_op(")"):
            if args:
                self._expect(",")
                if self.current.is_op(")"):
                    break
            args.append(self.expression(0))
        self._advance()
        return tuple(args)

    def _array(self) -> Node:
        items: list[Node] = []
        while not self.current.is_op("]"):
            if items:
                self._expect(",")
                if self.current.is_op("]"):
                    break
            items.append(self.expression(0))
        self._advance()
        return ArrayNode(tuple(items))

    def _map(self) -> Node:
        pairs: list[tuple[Node, Node]] = []
        while not self.current.is_op("}"):
            if pairs:
                self._expect(",")
                if self.current.is_op("}"):
                    break
            token = self.current
            key: Node
            if token.kind in ("ident", "num"):
                key = Literal(token.text)
                self._advance()
            elif token.kind == "str":
                key = Literal(token.value)
                self._advance()
            elif token.is_op("("):
                key = self.expression(0)
            else:
                self._fail(
                    token,
                    "a map key must be a name, a quoted string, a number or a "
                    f"parenthesised expression, not {token.describe()}",
                )
            self._expect(":")
            pairs.append((key, self.expression(0)))
        self._advance()
        return MapNode(tuple(pairs))

    def _postfix(self, node: Node) -> Node:
        while True:
            token = self.current
            # A chain keeps growing through later accessors, so ``a?.b.c`` is nil when a is.
            in_chain = isinstance(node, Chain)
            inner = node.node if isinstance(node, Chain) else node
            optional = token.is_op("?.")
            if token.is_op(".", "?.") and not self._peek().is_op("["):
                self._advance()
                name = self._advance()
                if name.kind == "eof":
                    self._fail(name)
                if not (
                    name.kind == "ident" or (name.kind == "op" and name.text in _WORD_OPERATORS)
                ):
                    self._fail(name, f"expected a field name after {_quoted(token.text)}")
                node = Member(inner, Literal(name.text), optional=optional, dot=True, pos=token.pos)
                if self.current.is_op("("):
                    node = Call(node, self._arguments(), pos=token.pos)
            elif token.is_op("[") or (optional and self._peek().is_op("[")):
                if optional:
                    self._advance()
                self._advance()
                node = self._index(inner, optional, token.pos)
            else:
                return node
            if in_chain or optional:
                node = Chain(node)

    def _index(self, obj: Node, optional: bool, pos: int) -> Node:
        start: Node | None = None
        stop: Node | None = None
        if not self.current.is_op(":"):
            start = self.expression(0)
            if self.current.is_op("]"):
                self._advance()
                return Member(obj, start, optional=optional, dot=False, pos=pos)
        self._expect(":")
        if not self.current.is_op("]"):
            stop = self.expression(0)
        self._expect("]")
        return SliceNode(obj, start, stop, pos=pos)


@functools.lru_cache(maxsize=1024)
def parse(expression: str) -> Node:
    """Parse one bare expr-lang expression (no ``${{ }}``) into an AST.

    Raises :class:`ExpressionError` naming the expression and the column of the
    problem, e.g. ``expression "vars.a +": unexpected end of expression at column 8``.
    """
    try:
        return _Parser(expression).parse()
    except _ParseError as err:
        raise ExpressionError(
            f"expression {_quoted(expression)}: {err.message} at {_location(expression, err.pos)}"
        ) from None
    except RecursionError:
        raise ExpressionError(
            f"expression {_quoted(expression)}: expression is nested too deeply"
        ) from None


# --- values ----------------------------------------------------------------


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is float:  # the common case, kept cheap
        return True
    return kind is not bool and isinstance(value, int | float)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | tuple | Mapping)


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if _is_list(value):
        return "list"
    if isinstance(value, Mapping):
        return "map"
    if callable(value):
        return "function"
    return type(value).__name__


def _int64(value: int) -> int:
    # expr-lang's ints are Go int64s, which wrap on overflow.
    return (value - _INT64_MIN) % 2**64 + _INT64_MIN


def _float_text(value: float) -> str:
    # Go's encoding/json formatting, which Kargo uses for non-string results.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        text = format(Decimal(repr(value)), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value))


def _jsonable(value: Any) -> Any:
    """Plain JSON data for ``value``; objects by their fields, as Go marshals structs."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _EvalError(f"cannot encode {_float_text(value)} as JSON")
        # Go prints an integral float64 without a fraction; so do we.
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else _to_text(key)
            out[name] = _jsonable(item)
        return out
    if _is_list(value):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, Time):  # Go marshals a time.Time as RFC 3339
        return value.at.isoformat().replace("+00:00", "Z")
    if isinstance(value, Duration):  # and a time.Duration as its nanoseconds
        return value.ns
    if isinstance(value, SemverVersion):
        return str(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):  # objects that know their JSON form (Kargo's json tags)
        return _jsonable(to_json())
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models, by their JSON field names
        return _jsonable(dump(mode="json", by_alias=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    raise _EvalError(f"cannot encode {_type_name(value)} as JSON")


def _to_json(value: Any, *, indent: int | None = None) -> str:
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(
        _jsonable(value),
        indent=indent,
        separators=separators,
        sort_keys=True,  # Go's encoding/json sorts map keys
        ensure_ascii=False,
    )


def _to_text(value: Any) -> str:
    """The text a value interpolates as: see :func:`render_string`."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    return _to_json(value)


def _describe(value: Any) -> str:
    """A short rendering of a value for error messages."""
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 60 else value[:57] + "...", ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return _to_text(value)
    return _type_name(value)


def _unparse(node: Node) -> str:
    """Source-like text of ``node``, used to name sub-expressions in messages."""
    match node:
        case Literal(value=value):
            if isinstance(value, str):
                return json.dumps(value, ensure_ascii=False)
            return "nil" if value is None else _to_text(value)
        case Name(name=name):
            return name
        case Member(obj=obj, key=key, optional=optional, dot=dot):
            base = _unparse(obj)
            if dot and isinstance(key, Literal):
                return f"{base}{'?.' if optional else '.'}{key.value}"
            return f"{base}{'?.' if optional else ''}[{_unparse(key)}]"
        case SliceNode(obj=obj, start=start, stop=stop):
            low = "" if start is None else _unparse(start)
            high = "" if stop is None else _unparse(stop)
            return f"{_unparse(obj)}[{low}:{high}]"
        case Call(callee=callee, args=args):
            return f"{_unparse(callee)}({', '.join(_unparse(a) for a in args)})"
        case Chain(node=inner):
            return _unparse(inner)
        case Unary(op=op, operand=operand):
            return f"{op}{' ' if op == 'not' else ''}{_unparse(operand)}"
        case Binary(op=op, left=left, right=right):
            return f"({_unparse(left)} {op} {_unparse(right)})"
        case Conditional(cond=cond, then=then, otherwise=otherwise):
            return f"({_unparse(cond)} ? {_unparse(then)} : {_unparse(otherwise)})"
        case ArrayNode(items=items):
            return f"[{', '.join(_unparse(i) for i in items)}]"
        case MapNode(pairs=pairs):
            return "{" + ", ".join(f"{_unparse(k)}: {_unparse(v)}" for k, v in pairs) + "}"
        case Pointer(name=name):
            return "#" + name
        case Closure(body=body):
            return "{" + _unparse(body) + "}"
        case Let(name=name, value=value, body=body):
            return f"let {name} = {_unparse(value)}; {_unparse(body)}"
    return type(node).__name__


# --- builtins --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Builtin:
    function: Callable[..., Any]
    min_args: int
    max_args: int
    needs_env: bool = False  # called with the environment first (now(), configMap())


def _string_arg(value: Any, what: str = "argument") -> str:
    if not isinstance(value, str):
        raise _EvalError(f"{what} must be a string, not {_type_name(value)}")
    return value


def _int_arg(value: Any, what: str = "argument") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _EvalError(f"{what} must be an int, not {_type_name(value)}")
    return value


def _builtin_len(value: Any) -> int:
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    raise _EvalError(f"invalid argument (type {_type_name(value)})")


def _builtin_trim(value: Any, chars: Any = None) -> str:
    text = _string_arg(value)
    return text.strip() if chars is None else text.strip(_string_arg(chars, "characters"))


def _builtin_trim_prefix(value: Any, prefix: Any = " ") -> str:
    return _string_arg(value).removeprefix(_string_arg(prefix, "prefix"))


def _builtin_trim_suffix(value: Any, suffix: Any = " ") -> str:
    return _string_arg(value).removesuffix(_string_arg(suffix, "suffix"))


def _builtin_split(value: Any, separator: Any, limit: Any = -1) -> list[str]:
    # Go's strings.SplitN: an empty separator splits into characters, n < 0 means all.
    text = _string_arg(value)
    sep = _string_arg(separator, "separator")
    n = _int_arg(limit, "limit")
    if n == 0:
        return []
    if sep == "":
        parts = list(text)
        if 0 < n < len(parts):
            parts = [*parts[: n - 1], "".join(parts[n - 1 :])]
        return parts
    return text.split(sep, n - 1 if n > 0 else -1)


def _builtin_join(values: Any, separator: Any = "") -> str:
    if not _is_list(values):
        raise _EvalError(f"first argument must be a list, not {_type_name(values)}")
    return _string_arg(separator, "separator").join(
        _string_arg(v, f"element {i}") for i, v in enumerate(values)
    )


def _builtin_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _EvalError("cannot convert bool to int")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _EvalError(f"cannot convert {_float_text(value)} to int")
        return _int64(int(value))
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        number = int(value)
        if _INT64_MIN <= number <= _INT64_MAX:
            return number
        raise _EvalError(f"{_describe(value)} is out of range for an int")
    raise _EvalError(f"cannot convert {_describe(value)} to int")


def _builtin_float(value: Any) -> float:
    if _is_number(value):
        return float(value)
    # Python's float() also takes "1_0"; Go's ParseFloat does not.
    if isinstance(value, str) and "_" not in value:
        try:
            return float(value)
        except ValueError:
            pass
    raise _EvalError(f"cannot convert {_describe(value)} to float")


def _builtin_from_json(value: Any) -> Any:
    try:
        return json.loads(_string_arg(value))
    except ValueError as err:
        raise _EvalError(f"invalid JSON: {err}") from None


def _builtin_keys(value: Any) -> list[Any]:
    if not isinstance(value, Mapping):
        raise _EvalError(f"argument must be a map, not {_type_name(value)}")
    return list(value.keys())


def _builtin_values(value: Any) -> list[Any]:
    if not isinstance(value, Mapping):
        raise _EvalError(f"argument must be a map, not {_type_name(value)}")
    return list(value.values())


def _builtin_abs(value: Any) -> int | float:
    if not _is_number(value):
        raise _EvalError(f"argument must be a number, not {_type_name(value)}")
    return _int64(abs(value)) if isinstance(value, int) else abs(value)


def _extreme(pick: Callable[[Any, Any], bool], args: tuple[Any, ...]) -> Any:
    values = list(args[0]) if len(args) == 1 and _is_list(args[0]) else list(args)
    if not values:
        raise _EvalError("needs at least one number")
    best = values[0]
    for value in values:
        if not _is_number(value):
            raise _EvalError(f"arguments must be numbers, not {_type_name(value)}")
        if pick(value, best):
            best = value
    return best


def _builtin_max(*args: Any) -> Any:
    return _extreme(lambda a, b: a > b, args)


def _builtin_min(*args: Any) -> Any:
    return _extreme(lambda a, b: a < b, args)


def _builtin_replace(value: Any, old: Any, new: Any, count: Any = -1) -> str:
    return _string_arg(value).replace(
        _string_arg(old, "old"), _string_arg(new, "new"), _int_arg(count, "count")
    )


def _builtin_first(value: Any) -> Any:
    return value[0] if _is_list(value) and value else None


def _builtin_last(value: Any) -> Any:
    return value[-1] if _is_list(value) and value else None


def _builtin_get(value: Any, key: Any) -> Any:
    # expr-lang's get(): like indexing, but nil instead of an error.
    try:
        return _fetch(value, key, "", dot=False)
    except _EvalError:
        return None


def _builtin_from_base64(value: Any) -> str:
    try:
        return base64.b64decode(_string_arg(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise _EvalError(f"invalid base64: {err}") from None


def _builtin_as_yaml(value: Any) -> str:
    # Kargo's asYAML(): go-yaml v3's Marshal (keys sorted, four-space indent, sequences
    # indented under their key, no folding), wrapped in quotes that render strips again.
    from ruamel.yaml import YAML  # only here: the evaluator needs no YAML otherwise

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=4, sequence=6, offset=4)
    yaml.width = 1 << 30
    buffer = io.StringIO()
    yaml.dump(_sorted(_jsonable(value)), buffer)
    # A scalar at the top dumps with a document end marker that go-yaml does not write.
    text = buffer.getvalue().removesuffix("...\n")
    return f'"{text}"'


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def _builtin_as_json(value: Any) -> str:
    # Kargo's asJSON(): indented JSON and a newline, wrapped in quotes render strips again.
    return f'"{_to_json(value, indent=2)}\n"'


def _builtin_repeat(value: Any, count: Any) -> str:
    text = _string_arg(value)
    times = _int_arg(count, "count")
    if times < 0:
        raise _EvalError("negative repeat count")
    if len(text) * times > _MAX_SIZE:
        raise _EvalError(f"result would be longer than {_MAX_SIZE} characters")
    return text * times


def _number_arg(value: Any) -> int | float:
    if not _is_number(value):
        raise _EvalError(f"argument must be a number, not {_type_name(value)}")
    return value  # type: ignore[no-any-return]


def _builtin_round(value: Any) -> float:
    number = float(_number_arg(value))
    if math.isnan(number) or math.isinf(number):
        return number
    # Go's math.Round: half away from zero (Python's round() is half to even).
    return float(math.copysign(math.floor(abs(number) + 0.5), number))


def _list_arg(value: Any, what: str = "argument") -> list[Any]:
    if not _is_list(value):
        raise _EvalError(f"{what} must be an array, not {_type_name(value)}")
    return list(value)


def _builtin_take(values: Any, count: Any) -> list[Any]:
    n = _int_arg(count, "count")
    if n < 0:
        raise _EvalError("cannot take a negative number of elements")
    return _list_arg(values)[:n]


def _builtin_sort(values: Any, order: Any = "asc") -> list[Any]:
    items = _list_arg(values)
    return _sorted_values(items, items, order)


def _builtin_uniq(values: Any) -> list[Any]:
    out: list[Any] = []
    for item in _list_arg(values):
        if not any(_equal(item, seen) for seen in out):
            out.append(item)
    return out


def _builtin_concat(*arrays: Any) -> list[Any]:
    out: list[Any] = []
    for index, array in enumerate(arrays):
        out.extend(_list_arg(array, f"argument {index + 1}"))
        _check_size(out)
    return out


def _builtin_flatten(values: Any) -> list[Any]:
    out: list[Any] = []

    def walk(items: list[Any] | tuple[Any, ...], depth: int) -> None:
        if depth > _MAX_NESTING:
            raise _EvalError("array is nested too deeply")
        for item in items:
            if _is_list(item):
                walk(item, depth + 1)
            else:
                out.append(item)

    walk(_list_arg(values), 0)
    return out


def _builtin_mean(values: Any) -> float:
    items = _list_arg(values)
    if not items:
        return 0.0
    return float(_sum(items)) / len(items)


def _builtin_median(values: Any) -> float:
    items = sorted(_number_arg(v) for v in _list_arg(values))
    if not items:
        return 0.0
    middle = len(items) // 2
    if len(items) % 2:
        return float(items[middle])
    return (items[middle - 1] + items[middle]) / 2


def _builtin_to_pairs(value: Any) -> list[list[Any]]:
    if not isinstance(value, Mapping):
        raise _EvalError(f"argument must be a map, not {_type_name(value)}")
    return [[key, item] for key, item in value.items()]


def _builtin_from_pairs(value: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for pair in _list_arg(value):
        if not _is_list(pair) or len(pair) != 2:
            raise _EvalError("each element must be a [key, value] pair")
        try:
            out[pair[0]] = pair[1]
        except TypeError:
            raise _EvalError(f"cannot use {_type_name(pair[0])} as a map key") from None
    return out


def _builtin_split_after(value: Any, separator: Any, limit: Any = -1) -> list[str]:
    text = _string_arg(value)
    sep = _string_arg(separator, "separator")
    n = _int_arg(limit, "limit")
    if n == 0:
        return []
    if sep == "":
        return _builtin_split(text, sep, n)
    parts = text.split(sep, n - 1 if n > 0 else -1)
    return [part + sep for part in parts[:-1]] + parts[-1:]


def _builtin_type(value: Any) -> str:
    if isinstance(value, Time):
        return "time.Time"
    if isinstance(value, Duration):
        return "time.Duration"
    if isinstance(value, SemverVersion):
        return "*semver.Version"
    name = _type_name(value)
    return {"list": "array", "function": "func"}.get(name, name)


def _bits(function: Callable[[int, int], int]) -> Callable[[Any, Any], int]:
    def apply(left: Any, right: Any) -> int:
        return _int64(function(_int_arg(left), _int_arg(right)))

    return apply


def _builtin_bitshl(value: Any, shift: Any) -> int:
    amount = _int_arg(shift, "shift")
    if amount < 0:
        raise _EvalError("negative shift amount")
    return _int64(_int_arg(value) << amount) if amount < 64 else 0


def _builtin_bitushr(value: Any, shift: Any) -> int:
    amount = _int_arg(shift, "shift")
    if amount < 0:
        raise _EvalError("negative shift amount")
    return _int64((_int_arg(value) % 2**64) >> amount) if amount < 64 else 0


def _go_quote(text: str) -> str:
    """Go's strconv.Quote: what Kargo's quote() does to a string."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(char)])
        elif char.isprintable() or char == " ":
            out.append(char)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _go_json(value: Any) -> str:
    """Go's json.Marshal: compact, map keys sorted, and <, >, & escaped as Go does."""
    text = _to_json(value)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _builtin_unsafe_quote(value: Any) -> str:
    # Kargo's unsafeQuote(): the value's JSON wrapped in quotes, which rendering strips
    # again; a string keeps its own (escaped) quotes.
    return f'"{_go_json(value)}"'


def _builtin_quote(value: Any) -> str:
    # Kargo's quote(): a string Go-quoted, anything else as unsafeQuote(); rendering strips
    # the outer quotes, so ``${{ quote(true) }}`` yields the string "true".
    if isinstance(value, str):
        return _go_quote(value)
    return _builtin_unsafe_quote(value)


NOW = "$now"
"""The environment key holding the ``datetime`` that ``now()`` returns."""
CONFIG_MAPS = "$configMaps"
"""The environment key holding the project's ConfigMaps (name to data) for ``configMap()``."""
SHARED_CONFIG_MAPS = "$sharedConfigMaps"
"""The environment key holding the shared ConfigMaps for ``sharedConfigMap()``."""


# --- dates, durations, versions ---------------------------------------------

_DURATION_UNITS_NS: Mapping[str, int] = MappingProxyType(
    {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
     "h": 3600 * 10**9}
)  # fmt: skip
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def _parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    pos = 0
    total = Decimal(0)
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            break
        total += Decimal(match.group(1)) * _DURATION_UNITS_NS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise _EvalError(f"invalid duration {_describe(text)}")
    ns = int(total) * sign
    if not _INT64_MIN <= ns <= _INT64_MAX:
        raise _EvalError(f"duration {_describe(text)} is out of range")
    return ns


def _go_duration_text(ns: int) -> str:
    """Go's Duration.String(): 1h2m3.5s, 1.5ms, 0s."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)

    def fraction(value: int, scale: int) -> str:
        whole, rest = divmod(value, scale)
        if not rest:
            return str(whole)
        digits = str(rest).rjust(len(str(scale)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}"

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{fraction(ns, 1_000)}µs"
    if ns < 10**9:
        return f"{sign}{fraction(ns, 1_000_000)}ms"
    hours, ns = divmod(ns, 3600 * 10**9)
    minutes, ns = divmod(ns, 60 * 10**9)
    text = fraction(ns, 10**9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return f"{sign}{text}"


@dataclass(frozen=True, slots=True)
class Duration:
    """expr-lang's ``time.Duration`` (``duration("1h")``): nanoseconds, Go's methods."""

    ns: int

    def Hours(self) -> float:
        return self.ns / (3600 * 10**9)

    def Minutes(self) -> float:
        return self.ns / (60 * 10**9)

    def Seconds(self) -> float:
        return self.ns / 10**9

    def Milliseconds(self) -> int:
        return int(self.ns / 1_000_000)

    def Microseconds(self) -> int:
        return int(self.ns / 1_000)

    def Nanoseconds(self) -> int:
        return self.ns

    def String(self) -> str:
        return _go_duration_text(self.ns)

    def Abs(self) -> Duration:
        return Duration(abs(self.ns))


# Go layout elements, longest first, and their strftime equivalents.
_GO_LAYOUT: tuple[tuple[str, str], ...] = (
    ("January", "%B"), ("Monday", "%A"), ("2006", "%Y"), ("-07:00", "%:z"), ("Z07:00", "%:z"),
    ("-0700", "%z"), ("Z0700", "%z"), ("Jan", "%b"), ("Mon", "%a"), ("MST", "%Z"), ("002", "%j"),
    ("01", "%m"), ("02", "%d"), ("_2", "%e"), ("15", "%H"), ("03", "%I"), ("04", "%M"),
    ("05", "%S"), ("06", "%y"), ("PM", "%p"), (".000000000", ".%N9"), (".000000", ".%f"),
    (".000", ".%N3"), ("1", "%-m"), ("2", "%-d"), ("3", "%-I"), ("4", "%-M"), ("5", "%-S"),
)  # fmt: skip


def _go_layout(layout: str) -> str:
    out: list[str] = []
    pos = 0
    while pos < len(layout):
        for element, directive in _GO_LAYOUT:
            if layout.startswith(element, pos):
                out.append(directive)
                pos += len(element)
                break
        else:
            out.append(layout[pos].replace("%", "%%"))
            pos += 1
    return "".join(out)


def _strftime(moment: datetime.datetime, layout: str) -> str:
    fmt = _go_layout(layout)
    micro = f"{moment.microsecond:06d}"
    fmt = fmt.replace("%N9", micro + "000").replace("%N3", micro[:3])
    if "%:z" in fmt:
        offset = moment.strftime("%z")
        zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
        fmt = fmt.replace("%:z", zone.replace("%", "%%"))
    fmt = fmt.replace("%-m", str(moment.month)).replace("%-d", str(moment.day))
    fmt = fmt.replace("%-I", str(moment.hour % 12 or 12)).replace("%-M", str(moment.minute))
    fmt = fmt.replace("%-S", str(moment.second)).replace("%e", f"{moment.day:2d}")
    return moment.strftime(fmt)


@dataclass(frozen=True, slots=True)
class Time:
    """expr-lang's ``time.Time`` (``now()``, ``date("2024-01-02")``), with Go's methods."""

    at: datetime.datetime

    def Year(self) -> int:
        return self.at.year

    def Month(self) -> int:
        return self.at.month

    def Day(self) -> int:
        return self.at.day

    def Hour(self) -> int:
        return self.at.hour

    def Minute(self) -> int:
        return self.at.minute

    def Second(self) -> int:
        return self.at.second

    def Nanosecond(self) -> int:
        return self.at.microsecond * 1000

    def Weekday(self) -> int:
        return (self.at.weekday() + 1) % 7  # Go: Sunday is 0

    def YearDay(self) -> int:
        return self.at.timetuple().tm_yday

    def Unix(self) -> int:
        return math.floor(self.at.timestamp())

    def UnixMilli(self) -> int:
        return math.floor(self.at.timestamp() * 1000)

    def UTC(self) -> Time:
        return Time(self.at.astimezone(datetime.UTC))

    def In(self, zone: Any) -> Time:
        return Time(self.at.astimezone(_zone(zone)))

    def Format(self, layout: Any) -> str:
        return _strftime(self.at, _string_arg(layout, "layout"))

    def Add(self, delta: Any) -> Time:
        if not isinstance(delta, Duration):
            raise _EvalError(f"Add needs a duration, not {_type_name(delta)}")
        return Time(self.at + datetime.timedelta(microseconds=delta.ns // 1000))

    def AddDate(self, years: Any, months: Any, days: Any) -> Time:
        month_index = self.at.month - 1 + _int_arg(months, "months")
        year = self.at.year + _int_arg(years, "years") + month_index // 12
        month = month_index % 12 + 1
        # Go normalises an overflowing day (Jan 31 + 1 month is Mar 3): so do we.
        first = self.at.replace(year=year, month=month, day=1)
        return Time(first + datetime.timedelta(days=self.at.day - 1 + _int_arg(days, "days")))

    def Sub(self, other: Any) -> Duration:
        if not isinstance(other, Time):
            raise _EvalError(f"Sub needs a time, not {_type_name(other)}")
        return _time_difference(self, other)

    def Before(self, other: Any) -> bool:
        return self.at < _time_arg(other)

    def After(self, other: Any) -> bool:
        return self.at > _time_arg(other)

    def Equal(self, other: Any) -> bool:
        return self.at == _time_arg(other)

    def IsZero(self) -> bool:
        return False

    def String(self) -> str:
        return _strftime(self.at, "2006-01-02 15:04:05.000000 -0700 MST")


def _time_arg(value: Any) -> datetime.datetime:
    if not isinstance(value, Time):
        raise _EvalError(f"needs a time, not {_type_name(value)}")
    return value.at


def _time_difference(left: Time, right: Time) -> Duration:
    delta = left.at - right.at
    return Duration((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000)


def _builtin_duration(value: Any) -> Duration:
    return Duration(_parse_go_duration(_string_arg(value)))


_DATE_LAYOUTS = (
    "2006-01-02",
    "15:04:05",
    "2006-01-02 15:04:05",
    "2006-01-02T15:04:05Z07:00",
    "02 Jan 06 15:04 MST",
    "Monday, 02-Jan-06 15:04:05 MST",
    "Mon, 02 Jan 2006 15:04:05 MST",
)


def _zone(name: Any) -> datetime.tzinfo:
    text = _string_arg(name, "timezone")
    if text in ("UTC", ""):
        return datetime.UTC
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _EvalError(f"unknown time zone {_describe(text)}") from None


def _builtin_timezone(name: Any) -> str:
    # expr-lang gives a *time.Location; its name serves every place that takes one here.
    _zone(name)
    return str(name)


def _parse_with_layout(text: str, layout: str, zone: datetime.tzinfo) -> datetime.datetime | None:
    fmt = _go_layout(layout)
    if "%N9" in fmt or "%N3" in fmt:
        fmt = fmt.replace("%N9", "%f").replace("%N3", "%f")
    fmt = fmt.replace("%-m", "%m").replace("%-d", "%d").replace("%e", "%d")
    fmt = fmt.replace("%-I", "%I").replace("%-M", "%M").replace("%-S", "%S")
    candidate = text
    if "%:z" in fmt:
        fmt = fmt.replace("%:z", "%z")
        candidate = re.sub(r"Z$", "+00:00", candidate)
    if "%Z" in fmt:  # Python reads only UTC/GMT names; others are refused below
        fmt = fmt.replace("%Z", "%Z")
    if "%f" in fmt:  # Python reads at most six fractional digits
        candidate = re.sub(r"\.(\d{6})\d+", r".\1", candidate)
    try:
        parsed = datetime.datetime.strptime(candidate, fmt)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed


def _builtin_date(value: Any, layout: Any = None, zone: Any = None) -> Time:
    text = _string_arg(value)
    tz = datetime.UTC if zone is None else _zone(zone)
    layouts = _DATE_LAYOUTS if layout is None else (_string_arg(layout, "layout"),)
    for candidate in layouts:
        parsed = _parse_with_layout(text, candidate, tz)
        if parsed is not None:
            return Time(parsed)
    raise _EvalError(f"cannot parse {_describe(text)} as a date")


def _builtin_now(env: Mapping[str, Any]) -> Time:
    # Deterministic on purpose: the clock is what the caller passed in (a promotion's
    # planning time, recorded in its history), never the wall clock.
    moment = env.get(NOW)
    if not isinstance(moment, datetime.datetime):
        raise _EvalError("now() is not available here (no clock is passed to this expression)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return Time(moment)


class SemverVersion:
    """What Kargo's ``semverParse()`` gives: Masterminds' ``*semver.Version`` methods."""

    __slots__ = ("_version",)

    def __init__(self, version: Version) -> None:
        self._version = version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SemverVersion) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __str__(self) -> str:
        return str(self._version)

    def Major(self) -> int:
        return self._version.major

    def Minor(self) -> int:
        return self._version.minor

    def Patch(self) -> int:
        return self._version.patch

    def Prerelease(self) -> str:
        return ".".join(self._version.prerelease)

    def Metadata(self) -> str:
        return ".".join(self._version.build)

    def Original(self) -> str:
        return self._version.original

    def String(self) -> str:
        return str(self._version)

    def IncMajor(self) -> SemverVersion:
        v = self._version
        return SemverVersion(Version(v.major + 1, 0, 0, original=f"{v.major + 1}.0.0"))

    def IncMinor(self) -> SemverVersion:
        v = self._version
        return SemverVersion(
            Version(v.major, v.minor + 1, 0, original=f"{v.major}.{v.minor + 1}.0")
        )

    def IncPatch(self) -> SemverVersion:
        # Masterminds: a prerelease of x.y.z increments to x.y.z itself.
        v = self._version
        patch = v.patch if v.prerelease else v.patch + 1
        return SemverVersion(
            Version(v.major, v.minor, patch, original=f"{v.major}.{v.minor}.{patch}")
        )

    def Compare(self, other: Any) -> int:
        theirs = _semver_arg(other)
        return (self._version > theirs) - (self._version < theirs)

    def LessThan(self, other: Any) -> bool:
        return self._version < _semver_arg(other)

    def GreaterThan(self, other: Any) -> bool:
        return self._version > _semver_arg(other)

    def Equal(self, other: Any) -> bool:
        return self._version == _semver_arg(other)


def _semver_arg(value: Any) -> Version:
    if isinstance(value, SemverVersion):
        return value._version
    raise _EvalError(f"needs a version from semverParse(), not {_type_name(value)}")


def _builtin_semver_parse(value: Any) -> SemverVersion:
    text = _string_arg(value)
    try:
        return SemverVersion(parse_version(text, strict=False))
    except InvalidVersionError as err:
        raise _EvalError(f"invalid semantic version: {err}") from None


def _builtin_semver_diff(first: Any, second: Any) -> str:
    one = try_parse_version(_string_arg(first, "first argument"), strict=False)
    two = try_parse_version(_string_arg(second, "second argument"), strict=False)
    if one is None or two is None:
        return "Incomparable"
    if one.major != two.major:
        return "Major"
    if one.minor != two.minor:
        return "Minor"
    if one.patch != two.patch:
        return "Patch"
    if one.build != two.build:
        return "Metadata"
    return "None"  # as in Kargo, a prerelease difference alone is "None"


def _data_lookup(env: Mapping[str, Any], key: str, function: str, name: Any) -> dict[str, str]:
    table = env.get(key)
    if not isinstance(table, Mapping):
        where = (
            "Freightline has no shared resources namespace: apply the ConfigMap to the "
            "project and use configMap()"
            if key == SHARED_CONFIG_MAPS
            else "only promotion steps read the project's ConfigMaps"
        )
        raise _EvalError(f"{function}() is not available here: {where}")
    data = table.get(_string_arg(name, "name"))
    return dict(data) if isinstance(data, Mapping) else {}


def _refuse_secret(function: str) -> Callable[..., NoReturn]:
    def refuse(*_args: Any) -> NoReturn:
        raise _EvalError(
            f"{function}() is only available in the config of a step a worker activity runs "
            "(git, file, kustomize, helm, http, ... steps): here it would be evaluated in the "
            "workflow and the secret's value written into its history (see docs/expressions.md)"
        )

    return refuse


_BUILTINS: Mapping[str, _Builtin] = MappingProxyType(
    {
        "len": _Builtin(_builtin_len, 1, 1),
        "upper": _Builtin(lambda s: _string_arg(s).upper(), 1, 1),
        "lower": _Builtin(lambda s: _string_arg(s).lower(), 1, 1),
        "trim": _Builtin(_builtin_trim, 1, 2),
        "trimPrefix": _Builtin(_builtin_trim_prefix, 1, 2),
        "trimSuffix": _Builtin(_builtin_trim_suffix, 1, 2),
        "split": _Builtin(_builtin_split, 2, 3),
        "join": _Builtin(_builtin_join, 1, 2),
        "replace": _Builtin(_builtin_replace, 3, 4),
        "indexOf": _Builtin(lambda s, sub: _string_arg(s).find(_string_arg(sub)), 2, 2),
        "lastIndexOf": _Builtin(lambda s, sub: _string_arg(s).rfind(_string_arg(sub)), 2, 2),
        "hasPrefix": _Builtin(lambda s, p: _string_arg(s).startswith(_string_arg(p)), 2, 2),
        "hasSuffix": _Builtin(lambda s, p: _string_arg(s).endswith(_string_arg(p)), 2, 2),
        "string": _Builtin(_to_text, 1, 1),
        "int": _Builtin(_builtin_int, 1, 1),
        "float": _Builtin(_builtin_float, 1, 1),
        "abs": _Builtin(_builtin_abs, 1, 1),
        "max": _Builtin(_builtin_max, 1, 1_000),
        "min": _Builtin(_builtin_min, 1, 1_000),
        "toJSON": _Builtin(lambda v: _to_json(v, indent=2), 1, 1),
        "fromJSON": _Builtin(_builtin_from_json, 1, 1),
        "toBase64": _Builtin(lambda s: base64.b64encode(_string_arg(s).encode()).decode(), 1, 1),
        "fromBase64": _Builtin(_builtin_from_base64, 1, 1),
        "keys": _Builtin(_builtin_keys, 1, 1),
        "values": _Builtin(_builtin_values, 1, 1),
        "first": _Builtin(_builtin_first, 1, 1),
        "last": _Builtin(_builtin_last, 1, 1),
        "get": _Builtin(_builtin_get, 2, 2),
        "quote": _Builtin(_builtin_quote, 1, 1),
        "unsafeQuote": _Builtin(_builtin_unsafe_quote, 1, 1),
        "asYAML": _Builtin(_builtin_as_yaml, 1, 1),
        "asJSON": _Builtin(_builtin_as_json, 1, 1),
        "splitAfter": _Builtin(_builtin_split_after, 2, 3),
        "repeat": _Builtin(_builtin_repeat, 2, 2),
        "ceil": _Builtin(lambda n: float(math.ceil(_number_arg(n))), 1, 1),
        "floor": _Builtin(lambda n: float(math.floor(_number_arg(n))), 1, 1),
        "round": _Builtin(_builtin_round, 1, 1),
        "mean": _Builtin(_builtin_mean, 1, 1),
        "median": _Builtin(_builtin_median, 1, 1),
        "take": _Builtin(_builtin_take, 2, 2),
        "reverse": _Builtin(lambda a: _list_arg(a)[::-1], 1, 1),
        "sort": _Builtin(_builtin_sort, 1, 2),
        "uniq": _Builtin(_builtin_uniq, 1, 1),
        "concat": _Builtin(_builtin_concat, 1, 1_000),
        "flatten": _Builtin(_builtin_flatten, 1, 1),
        "toPairs": _Builtin(_builtin_to_pairs, 1, 1),
        "fromPairs": _Builtin(_builtin_from_pairs, 1, 1),
        "type": _Builtin(_builtin_type, 1, 1),
        "bitand": _Builtin(_bits(lambda a, b: a & b), 2, 2),
        "bitor": _Builtin(_bits(lambda a, b: a | b), 2, 2),
        "bitxor": _Builtin(_bits(lambda a, b: a ^ b), 2, 2),
        "bitnand": _Builtin(_bits(lambda a, b: a & ~b), 2, 2),
        "bitnot": _Builtin(lambda a: _int64(~_int_arg(a)), 1, 1),
        "bitshl": _Builtin(_builtin_bitshl, 2, 2),
        "bitshr": _Builtin(_bits(lambda a, b: a >> b if b >= 0 else 0), 2, 2),
        "bitushr": _Builtin(_builtin_bitushr, 2, 2),
        "now": _Builtin(_builtin_now, 0, 0, needs_env=True),
        "date": _Builtin(_builtin_date, 1, 3),
        "duration": _Builtin(_builtin_duration, 1, 1),
        "timezone": _Builtin(_builtin_timezone, 1, 1),
        "semverParse": _Builtin(_builtin_semver_parse, 1, 1),
        "semverDiff": _Builtin(_builtin_semver_diff, 2, 2),
        "configMap": _Builtin(
            lambda env, name: _data_lookup(env, CONFIG_MAPS, "configMap", name), 1, 1, True
        ),
        "sharedConfigMap": _Builtin(
            lambda env, name: _data_lookup(env, SHARED_CONFIG_MAPS, "sharedConfigMap", name),
            1,
            1,
            True,
        ),
        "secret": _Builtin(_refuse_secret("secret"), 1, 1),
        "sharedSecret": _Builtin(_refuse_secret("sharedSecret"), 1, 1),
    }
)


# --- predicates --------------------------------------------------------------

_Apply = Callable[..., Any]
_Test = Callable[[Any, int], bool]

_PREDICATE_ARITY: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "all": (2, 2),
        "any": (2, 2),
        "none": (2, 2),
        "one": (2, 2),
        "filter": (2, 2),
        "map": (2, 2),
        "count": (1, 2),
        "sum": (1, 2),
        "find": (2, 2),
        "findIndex": (2, 2),
        "findLast": (2, 2),
        "findLastIndex": (2, 2),
        "groupBy": (2, 2),
        "sortBy": (1, 3),
        "reduce": (2, 3),
    }
)


def _check_arity(name: str, given: int, low: int, high: int) -> None:
    if low <= given <= high:
        return
    expected = (
        f"{low} argument{'' if low == 1 else 's'}" if low == high else f"{low} to {high} arguments"
    )
    raise _EvalError(f"{name}: expected {expected}, got {given}")


def _check_size(value: Any) -> None:
    if isinstance(value, str | list | tuple | Mapping) and len(value) > _MAX_SIZE:
        raise _EvalError(f"result has {len(value)} elements, more than the limit of {_MAX_SIZE}")


def _sum(values: list[Any]) -> Any:
    total: Any = 0
    for value in values:
        if not _is_number(value):
            raise _EvalError(f"cannot add {_type_name(value)}")
        total = total + value
    return _int64(total) if isinstance(total, int) else total


def _sort_key(value: Any) -> Any:
    if _is_number(value) or isinstance(value, str):
        return value
    raise _EvalError(f"cannot sort {_type_name(value)} values")


def _sorted_values(values: list[Any], keys: list[Any], order: Any) -> list[Any]:
    if order not in ("asc", "desc"):
        raise _EvalError(f'order must be "asc" or "desc", not {_describe(order)}')
    checked = [_sort_key(k) for k in keys]
    if any(isinstance(k, str) for k in checked) and not all(isinstance(k, str) for k in checked):
        raise _EvalError("cannot sort a mix of strings and numbers")
    indexes = sorted(range(len(values)), key=lambda i: checked[i], reverse=order == "desc")
    return [values[i] for i in indexes]


def _pred_reduce(items: list[Any], apply: _Apply, rest: list[Any]) -> Any:
    if rest:
        acc, start = rest[0], 0
    elif items:
        acc, start = items[0], 1
    else:
        raise _EvalError("reduce of an empty array needs an initial value")
    for index in range(start, len(items)):
        acc = apply(items[index], index, acc=acc)
    return acc


def _pred_group_by(items: list[Any], apply: _Apply) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for index, item in enumerate(items):
        key = apply(item, index)
        try:
            groups.setdefault(key, []).append(item)
        except TypeError:
            raise _EvalError(f"cannot group by {_type_name(key)}") from None
    return groups


def _pred_sort_by(
    items: list[Any], body: Node | None, apply: _Apply, test: _Test, rest: list[Any]
) -> Any:
    keys = items if body is None else [apply(item, index) for index, item in enumerate(items)]
    return _sorted_values(items, keys, rest[0] if rest else "asc")


def _first_index(items: list[Any], test: _Test, backwards: bool) -> int:
    order = range(len(items) - 1, -1, -1) if backwards else range(len(items))
    return next((i for i in order if test(items[i], i)), -1)


_PREDICATES: Mapping[str, Callable[[list[Any], Node | None, _Apply, _Test, list[Any]], Any]] = (
    MappingProxyType(
        {
            "all": lambda items, body, apply, test, rest: all(
                test(x, i) for i, x in enumerate(items)
            ),
            "any": lambda items, body, apply, test, rest: any(
                test(x, i) for i, x in enumerate(items)
            ),
            "none": lambda items, body, apply, test, rest: (
                not any(test(x, i) for i, x in enumerate(items))
            ),
            "one": lambda items, body, apply, test, rest: (
                sum(1 for i, x in enumerate(items) if test(x, i)) == 1
            ),
            "filter": lambda items, body, apply, test, rest: [
                x for i, x in enumerate(items) if test(x, i)
            ],
            "map": lambda items, body, apply, test, rest: [
                apply(x, i) for i, x in enumerate(items)
            ],
            "count": lambda items, body, apply, test, rest: sum(
                1
                for i, x in enumerate(items)
                if (test(x, i) if body is not None else _truthy_bool(x))
            ),
            "sum": lambda items, body, apply, test, rest: _sum(
                items if body is None else [apply(x, i) for i, x in enumerate(items)]
            ),
            "find": lambda items, body, apply, test, rest: (
                None if (i := _first_index(items, test, backwards=False)) < 0 else items[i]
            ),
            "findIndex": lambda items, body, apply, test, rest: _first_index(
                items, test, backwards=False
            ),
            "findLast": lambda items, body, apply, test, rest: (
                None if (i := _first_index(items, test, backwards=True)) < 0 else items[i]
            ),
            "findLastIndex": lambda items, body, apply, test, rest: _first_index(
                items, test, backwards=True
            ),
            "groupBy": lambda items, body, apply, test, rest: _pred_group_by(items, apply),
            "sortBy": _pred_sort_by,
            "reduce": lambda items, body, apply, test, rest: _pred_reduce(items, apply, rest),
        }
    )
)


def _truthy_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _EvalError(f"without a predicate, elements must be bools, not {_type_name(value)}")
    return value


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2, the engine (and syntax) of Go's regexp: linear time, so
    a hostile pattern cannot hold the worker as a backtracking engine's could."""
    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print
    try:
        return re2.compile(pattern, options)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        raise _EvalError(f"invalid regular expression {_describe(pattern)}: {reason}") from None


# --- interpreter -----------------------------------------------------------


def _equal(left: Any, right: Any) -> bool:
    # expr-lang equality: numbers by value across int/float, no bool/number mixing.
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if isinstance(left, str) or isinstance(right, str):
        return isinstance(left, str) and isinstance(right, str) and left == right
    if _is_list(left) and _is_list(right):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if _is_plain(left) or _is_plain(right):
        return False
    try:
        return bool(left == right)
    except Exception:
        return False


def _fetch(obj: Any, key: Any, node: Node | str, *, dot: bool) -> Any:
    """``obj.key`` or ``obj[key]``: nil for a missing map key, an error otherwise.

    ``node`` is what ``obj`` came from, turned into text only for an error message."""
    if isinstance(obj, Mapping):
        try:
            return obj.get(key)
        except TypeError:
            raise _EvalError(f"cannot index map with {_describe(key)}") from None
    if _is_list(obj) and not dot and type(key) is int and -len(obj) <= key < len(obj):
        return obj[key]  # the common case, kept cheap
    subject = node if isinstance(node, str) else _unparse(node)
    if obj is None:
        if dot:
            raise _EvalError(f'{_quoted(subject)} is nil, so it has no field "{key}"')
        raise _EvalError(f"cannot index nil ({_quoted(subject)} is nil)")
    if _is_list(obj) or isinstance(obj, str):
        kind = _type_name(obj)
        if dot:
            raise _EvalError(f'{_quoted(subject)} ({kind}) has no field "{key}"')
        if not isinstance(key, int) or isinstance(key, bool):
            raise _EvalError(f"cannot index {kind} with {_describe(key)}")
        index = key + len(obj) if key < 0 else key
        if not 0 <= index < len(obj):
            raise _EvalError(f"index {key} out of range for {kind} of length {len(obj)}")
        return obj[index]
    if _is_plain(obj):
        if dot:
            raise _EvalError(f'{_quoted(subject)} ({_type_name(obj)}) has no field "{key}"')
        raise _EvalError(f"cannot index {_type_name(obj)} with {_describe(key)}")
    # Any other object: its public attributes, as expr-lang reads exported struct fields.
    if not isinstance(key, str) or key.startswith("_"):
        raise _EvalError(f"cannot index {_type_name(obj)} with {_describe(key)}")
    try:
        return getattr(obj, key)
    except AttributeError:
        raise _EvalError(f'{_quoted(subject)} has no field "{key}"') from None
    except Exception as err:  # a property that failed
        raise _EvalError(f"{_quoted(subject)}.{key}: {err}") from err


def _slice(obj: Any, start: Any, stop: Any, node: Node) -> Any:
    if not (_is_list(obj) or isinstance(obj, str)):
        raise _EvalError(f"cannot slice {_type_name(obj)} ({_quoted(_unparse(node))})")
    for bound in (start, stop):
        if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool)):
            raise _EvalError(f"slice bounds must be ints, not {_type_name(bound)}")
    result = obj[start:stop]
    return list(result) if isinstance(result, tuple) else result


class _Interpreter:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env
        self.steps = 0
        # let variables and predicate frames (#, #index, #acc), innermost last
        self.variables: dict[str, Any] = {}
        self.frames: list[dict[str, Any]] = []

    def charge(self, cost: int = 1) -> None:
        # The step budget: a hostile expression (nested maps over big ranges) fails with a
        # message instead of holding the worker.
        self.steps += cost
        if self.steps > _MAX_STEPS:
            raise _EvalError(f"expression takes more than {_MAX_STEPS} evaluation steps")

    def eval(self, node: Node) -> Any:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            self.charge(0)
        try:
            return _HANDLERS[type(node)](self, node)
        except _EvalError as err:
            # The innermost node that knows where it is names the place of the error.
            if err.pos is None and node.pos >= 0:
                err.pos = node.pos
            raise
        except KeyError:  # pragma: no cover - every node class has a handler
            if type(node) in _HANDLERS:
                raise
            raise _EvalError(f"cannot evaluate {type(node).__name__}") from None

    # One method per node class, dispatched by type (a match statement over a dozen
    # class patterns costs more than the work of most nodes).

    def _literal(self, node: Literal) -> Any:
        return node.value

    def _name(self, node: Name) -> Any:
        return self._lookup(node.name)

    def _pointer_node(self, node: Pointer) -> Any:
        return self._pointer(node.name)

    def _member(self, node: Member) -> Any:
        target = self.eval(node.obj)
        if target is None and node.optional:
            raise _NilChain
        return _fetch(target, self.eval(node.key), node.obj, dot=node.dot)

    def _slice_node(self, node: SliceNode) -> Any:
        return _slice(
            self.eval(node.obj),
            None if node.start is None else self.eval(node.start),
            None if node.stop is None else self.eval(node.stop),
            node.obj,
        )

    def _chain(self, node: Chain) -> Any:
        try:
            return self.eval(node.node)
        except _NilChain:
            return None

    def _call_node(self, node: Call) -> Any:
        return self._call(node.callee, node.args)

    def _array(self, node: ArrayNode) -> Any:
        return [self.eval(item) for item in node.items]

    def _map_node(self, node: MapNode) -> Any:
        return self._map(node.pairs)

    def _unary_node(self, node: Unary) -> Any:
        return self._unary(node.op, self.eval(node.operand))

    def _binary_node(self, node: Binary) -> Any:
        return self._binary(node.op, node.left, node.right)

    def _conditional(self, node: Conditional) -> Any:
        test = self.eval(node.cond)
        if not isinstance(test, bool):
            raise _EvalError(f"condition of ?: must be a bool, not {_type_name(test)}")
        return self.eval(node.then if test else node.otherwise)

    def _let(self, node: Let) -> Any:
        saved = self.variables
        self.variables = {**saved, node.name: self.eval(node.value)}
        try:
            return self.eval(node.body)
        finally:
            self.variables = saved

    def _closure(self, node: Closure) -> Any:
        raise _EvalError("a predicate can only be an argument of a predicate builtin")

    def _lookup(self, name: str) -> Any:
        if name in self.variables:
            return self.variables[name]
        if name in self.env:
            return self.env[name]
        if name == "$env":
            return {k: v for k, v in self.env.items() if not k.startswith("$")}
        raise _EvalError(f"unknown name {_quoted(name)}")

    def _pointer(self, name: str) -> Any:
        if not self.frames:  # pragma: no cover - the parser refuses # outside predicates
            raise _EvalError("# outside a predicate")
        frame = self.frames[-1]
        if name not in frame:
            raise _EvalError(f"unknown pointer #{name}")
        return frame[name]

    def _map(self, pairs: tuple[tuple[Node, Node], ...]) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in pairs:
            key = self.eval(key_node)
            try:
                result[key] = self.eval(value_node)
            except TypeError:
                raise _EvalError(f"cannot use {_type_name(key)} as a map key") from None
        return result

    def _call(self, callee: Node, arg_nodes: tuple[Node, ...]) -> Any:
        name = callee.name if isinstance(callee, Name) else _unparse(callee)
        builtin: _Builtin | None = None
        if (
            isinstance(callee, Name)
            and callee.name not in self.variables
            and callee.name not in self.env
        ):
            if callee.name in _PREDICATE_ARGS:
                return self._predicate(callee.name, arg_nodes)
            builtin = _BUILTINS.get(callee.name)
            if builtin is None:
                raise _EvalError(f"unknown name {_quoted(callee.name)}")
            function = builtin.function
        else:
            function = self.eval(callee)
            if not callable(function):
                raise _EvalError(
                    f"{_quoted(name)} is not a function (it is {_type_name(function)})"
                )
        args = [self.eval(arg) for arg in arg_nodes]
        if builtin is not None:
            _check_arity(name, len(args), builtin.min_args, builtin.max_args)
            if builtin.needs_env:
                args.insert(0, self.env)
        try:
            result = function(*args)
        except _EvalError as err:
            raise _EvalError(f"{name}: {err}").at(err.pos) from err.__cause__
        except ExpressionError as err:
            raise _EvalError(f"{name}: {err}") from err
        except Exception as err:
            # A function from the env (imageFrom, commitFrom, ...) failed: say which.
            raise _EvalError(f"{name}: {err}") from err
        _check_size(result)
        return result

    def _predicate(self, name: str, arg_nodes: tuple[Node, ...]) -> Any:
        low, high = _PREDICATE_ARITY[name]
        _check_arity(name, len(arg_nodes), low, high)
        items = self.eval(arg_nodes[0])
        if isinstance(items, Mapping) and name in ("filter", "map", "all", "any", "none", "one"):
            items = list(items.values())
        if not _is_list(items):
            raise _EvalError(f"{name}: first argument must be an array, not {_type_name(items)}")
        items = list(items)
        body = (
            arg_nodes[1].body if len(arg_nodes) > 1 and isinstance(arg_nodes[1], Closure) else None
        )
        rest = [self.eval(node) for node in arg_nodes[2:]]
        self.charge(len(items))

        def apply(item: Any, index: int, **extra: Any) -> Any:
            assert body is not None
            self.frames.append({"": item, "index": index, **extra})
            try:
                return self.eval(body)
            finally:
                self.frames.pop()

        def test(item: Any, index: int) -> bool:
            value = apply(item, index)
            if not isinstance(value, bool):
                raise _EvalError(f"{name}: the predicate must give a bool, not {_type_name(value)}")
            return value

        try:
            return _PREDICATES[name](items, body, apply, test, rest)
        except _EvalError as err:
            if str(err).startswith(f"{name}:"):
                raise
            raise _EvalError(f"{name}: {err}").at(err.pos) from err.__cause__

    def _unary(self, op: str, value: Any) -> Any:
        if op in ("!", "not"):
            if not isinstance(value, bool):
                raise _EvalError(f"invalid operation: {op} on {_type_name(value)}")
            return not value
        if not _is_number(value):
            raise _EvalError(f"invalid operation: {op} on {_type_name(value)}")
        if op == "-":
            return _int64(-value) if isinstance(value, int) else -value
        return value

    def _binary(self, op: str, left_node: Node, right_node: Node) -> Any:
        if op in ("&&", "and", "||", "or"):
            return self._logical(op, left_node, right_node)
        if op == "??":
            left = self._coalesce_left(left_node)
            return self.eval(right_node) if left is None else left
        left = self.eval(left_node)
        right = self.eval(right_node)
        if op == "==":
            return _equal(left, right)
        if op == "!=":
            return not _equal(left, right)
        if op in ("<", "<=", ">", ">="):
            return self._compare(op, left, right)
        if op in ("+", "-", "*", "/", "%", "**", "^"):
            return self._arithmetic(op, left, right)
        if op == "..":
            return self._range(left, right)
        if op == "in":
            return self._in(left, right)
        return self._string_operator(op, left, right)

    def _logical(self, op: str, left_node: Node, right_node: Node) -> bool:
        left = self.eval(left_node)
        if not isinstance(left, bool):
            raise _EvalError(f"invalid operation: {op} on {_type_name(left)} (needs bools)")
        if (op in ("&&", "and")) != left:  # short-circuit: false && x, true || x
            return left
        right = self.eval(right_node)
        if not isinstance(right, bool):
            raise _EvalError(f"invalid operation: {op} on {_type_name(right)} (needs bools)")
        return right

    def _coalesce_left(self, node: Node) -> Any:
        # A bare unknown name on the left of ?? is nil, as it is in Kargo.
        if isinstance(node, Name) and node.name not in self.env:
            return None
        return self.eval(node)

    @staticmethod
    def _mismatch(op: str, left: Any, right: Any) -> _EvalError:
        return _EvalError(f"invalid operation: {_type_name(left)} {op} {_type_name(right)}")

    def _compare(self, op: str, left: Any, right: Any) -> bool:
        if isinstance(left, Time) and isinstance(right, Time):
            left, right = left.at, right.at
        elif isinstance(left, Duration) and isinstance(right, Duration):
            left, right = left.ns, right.ns
        elif not (
            (_is_number(left) and _is_number(right))
            or (isinstance(left, str) and isinstance(right, str))
        ):
            raise self._mismatch(op, left, right)
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        if op == ">":
            return bool(left > right)
        return bool(left >= right)

    def _arithmetic(self, op: str, left: Any, right: Any) -> Any:
        if op == "+":
            if isinstance(left, str) and isinstance(right, str):
                if len(left) + len(right) > _MAX_SIZE:
                    raise _EvalError(f"string would be longer than {_MAX_SIZE} characters")
                return left + right
            if _is_list(left) and _is_list(right):
                if len(left) + len(right) > _MAX_SIZE:
                    raise _EvalError(f"array would have more than {_MAX_SIZE} elements")
                self.charge(len(left) + len(right))
                return [*left, *right]
        if isinstance(left, (Time, Duration)):
            return self._time_arithmetic(op, left, right)
        if not (_is_number(left) and _is_number(right)):
            raise self._mismatch(op, left, right)
        both_int = isinstance(left, int) and isinstance(right, int)
        if op in ("+", "-", "*"):
            result = left + right if op == "+" else left - right if op == "-" else left * right
            return _int64(result) if both_int else result
        if op == "/":  # always a float in expr-lang
            if right == 0:
                raise _EvalError("division by zero")
            return float(left) / float(right)
        if op == "%":
            if not both_int:
                raise self._mismatch(op, left, right)
            if right == 0:
                raise _EvalError("integer divide by zero")
            remainder = abs(left) % abs(right)  # Go truncates: the sign follows the dividend
            return -remainder if left < 0 else remainder
        try:  # ** and ^ are always floats in expr-lang
            return math.pow(float(left), float(right))
        except OverflowError:
            raise _EvalError(f"{_describe(left)} {op} {_describe(right)} is too large") from None
        except ValueError:
            raise _EvalError(
                f"{_describe(left)} {op} {_describe(right)} is not a real number"
            ) from None

    def _time_arithmetic(self, op: str, left: Time | Duration, right: Any) -> Any:
        if isinstance(left, Time) and isinstance(right, Duration) and op in ("+", "-"):
            return left.Add(Duration(right.ns if op == "+" else -right.ns))
        if isinstance(left, Time) and isinstance(right, Time) and op == "-":
            return _time_difference(left, right)
        if isinstance(left, Duration) and isinstance(right, Duration) and op in ("+", "-"):
            return Duration(_int64(left.ns + right.ns if op == "+" else left.ns - right.ns))
        if isinstance(left, Duration) and isinstance(right, int) and op == "*":
            return Duration(_int64(left.ns * right))
        raise self._mismatch(op, left, right)

    def _range(self, left: Any, right: Any) -> list[int]:
        if (
            not (isinstance(left, int) and isinstance(right, int))
            or isinstance(left, bool)
            or isinstance(right, bool)
        ):
            raise self._mismatch("..", left, right)
        if right - left >= _MAX_RANGE:
            raise _EvalError(f"range {left}..{right} has more than {_MAX_RANGE} elements")
        self.charge(max(0, right - left + 1))
        return list(range(left, right + 1))

    def _in(self, left: Any, right: Any) -> bool:
        if right is None:
            return False
        if _is_list(right):
            return any(_equal(left, item) for item in right)
        if isinstance(right, Mapping):
            try:
                return left in right
            except TypeError:
                raise _EvalError(f"cannot use {_type_name(left)} as a map key") from None
        if not _is_plain(right) and isinstance(left, str):
            return not left.startswith("_") and hasattr(right, left)
        raise self._mismatch("in", left, right)

    def _string_operator(self, op: str, left: Any, right: Any) -> bool:
        if not (isinstance(left, str) and isinstance(right, str)):
            raise self._mismatch(op, left, right)
        if op == "contains":
            return right in left
        if op == "startsWith":
            return left.startswith(right)
        if op == "endsWith":
            return left.endswith(right)
        # matches: an unanchored search, like Go's regexp.MatchString
        return _regex(right).search(left) is not None


_HANDLERS: Mapping[type[Node], Callable[[_Interpreter, Any], Any]] = MappingProxyType(
    {
        Literal: _Interpreter._literal,
        Name: _Interpreter._name,
        Pointer: _Interpreter._pointer_node,
        Member: _Interpreter._member,
        SliceNode: _Interpreter._slice_node,
        Chain: _Interpreter._chain,
        Call: _Interpreter._call_node,
        ArrayNode: _Interpreter._array,
        MapNode: _Interpreter._map_node,
        Unary: _Interpreter._unary_node,
        Binary: _Interpreter._binary_node,
        Conditional: _Interpreter._conditional,
        Let: _Interpreter._let,
        Closure: _Interpreter._closure,
    }
)


def evaluate(expression: str, env: Mapping[str, Any]) -> Any:
    """Evaluate one bare expression (no ``${{ }}``) against ``env``.

    Names resolve in ``env`` first, then among the builtins (``len``, ``upper``,
    ``quote``, ``toJSON``, ...). Raises :class:`ExpressionError` naming the
    expression and what went wrong.
    """
    node = parse(expression)
    try:
        return _Interpreter(env).eval(node)
    except _EvalError as err:
        where = "" if err.pos is None else f" at {_location(expression, err.pos)}"
        raise ExpressionError(f"expression {_quoted(expression)}: {err}{where}") from err.__cause__
    except _NilChain:  # pragma: no cover - every optional access sits inside a Chain
        return None
    except RecursionError:
        raise ExpressionError(
            f"expression {_quoted(expression)}: too deeply nested to evaluate"
        ) from None


# --- templates -------------------------------------------------------------

_OPEN = "${{"
_CLOSE = "}}"
# Kargo's second pair of delimiters, for an expression that must contain "}}".
_OPEN_ALT = "${%"
_CLOSE_ALT = "%}"


def _segments(template: str) -> Iterator[tuple[bool, str]]:
    """Split ``template`` into (is_expression, text) parts.

    For ``${{``, the closing ``}}`` is the first one outside string literals and
    outside a map literal's braces, so ``${{ {"a": {"b": 1}} }}`` is one expression
    (Kargo cuts it at the first ``}}``; what Kargo accepts is read the same).
    For ``${%``, the closing ``%}`` is the first one, as in Kargo.
    """
    pos = 0
    while True:
        starts = [i for i in (template.find(_OPEN, pos), template.find(_OPEN_ALT, pos)) if i >= 0]
        if not starts:
            if pos < len(template):
                yield False, template[pos:]
            return
        start = min(starts)
        if start > pos:
            yield False, template[pos:start]
        alternative = template.startswith(_OPEN_ALT, start)
        opening, closing = (_OPEN_ALT, _CLOSE_ALT) if alternative else (_OPEN, _CLOSE)
        body = start + len(opening)
        end = template.find(closing, body) if alternative else _closing(template, body)
        if end < 0:
            raise ExpressionError(
                f"template {_quoted(template)}: {opening} at "
                f"{_location(template, start)} is never closed with {closing}"
            )
        yield True, template[body:end]
        pos = end + len(closing)


def _closing(template: str, pos: int) -> int:
    depth = 0
    quote = ""
    while pos < len(template):
        char = template[pos]
        if quote:
            if char == "\\" and quote != "`":
                pos += 1
            elif char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0 and template.startswith(_CLOSE, pos):
                return pos
            depth = max(0, depth - 1)
        pos += 1
    return -1


_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_GO_HEX_FLOAT = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+"
)
_GO_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_GO_TRUE = frozenset({"t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"f", "F", "FALSE", "false", "False"})


def _typed(text: str, template: str) -> Any:
    """Kargo's result typing of a rendered template (``EvaluateTemplate``).

    A trailing newline is set aside; text in double quotes loses them and stays a
    string (``quote()``); else a number (Go's ParseFloat), else a bool (Go's
    ParseBool), else any JSON value (``null``, arrays, objects), else the string.
    """
    newline = text.endswith("\n")
    body = text[:-1] if newline else text
    if len(body) > 1 and body[0] == body[-1] == '"':
        return body[1:-1] + ("\n" if newline else "")
    if _GO_FLOAT.fullmatch(body):
        if re.fullmatch(r"[+-]?[0-9]+", body):
            return int(body)  # Kargo's float64 for an integer, kept exact
        number = float(body)
        if math.isinf(number):
            raise ExpressionError(f"template {_quoted(template)}: {body} is out of range")
        return number
    if _GO_HEX_FLOAT.fullmatch(body):
        return float.fromhex(body)
    if _GO_SPECIAL_FLOAT.fullmatch(body):
        # Go reads these as a float that its JSON encoder then refuses: say so up front.
        raise ExpressionError(
            f"template {_quoted(template)}: renders {_quoted(body)}, which Kargo reads as a "
            "non-finite number; use quote() to keep it a string"
        )
    if body in _GO_TRUE:
        return True
    if body in _GO_FALSE:
        return False
    if body.strip()[:1] in tuple('[{"ntf-0123456789'):  # Go's json.Unmarshal, spaces and all
        try:
            return json.loads(body, parse_constant=_no_constant)
        except ValueError:
            pass
    return text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python reads NaN and Infinity; Go does not


def render_string(template: str, env: Mapping[str, Any]) -> Any:
    """Render one string that may hold ``${{ expr }}`` (or ``${% expr %}``) expressions.

    As Kargo's ``EvaluateTemplate``:

    - No delimiter in it: returned unchanged (``"42"`` stays a string).
    - Otherwise each expression's result is written into the text: strings as they
      are, anything else as Go's JSON encoding (nil as ``null``, bools, numbers in
      their plain form, lists and maps as compact JSON with sorted keys).
    - The whole result is then typed: text in double quotes loses them and stays a
      string (``${{ quote(42) }}`` is the string ``42``); otherwise a number, a bool
      (``true``, ``False``, ``T``...), ``null`` or any JSON array or object becomes
      that value; anything else stays a string. So ``${{ 40 + 2 }}``,
      ``${{ "42" }}`` and ``v${{ "" }}42``... ``${{ vars.list }}`` gives the list.

    Raises :class:`ExpressionError` for an unclosed delimiter or a failing expression.
    """
    if _OPEN not in template and _OPEN_ALT not in template:
        return template
    return _typed(_rendered_text(template, env), template)


def render_text(template: str, env: Mapping[str, Any]) -> str:
    """Like :func:`render_string`, but always the text, never typed: where a string is
    wanted whatever it looks like (a verification argument), ``1.10`` stays ``1.10``.
    Text in double quotes (``quote()``) still loses them."""
    if _OPEN not in template and _OPEN_ALT not in template:
        return template
    text = _rendered_text(template, env)
    newline = text.endswith("\n")
    body = text[:-1] if newline else text
    if len(body) > 1 and body[0] == body[-1] == '"':
        return body[1:-1] + ("\n" if newline else "")
    return text


def _rendered_text(template: str, env: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for is_expression, text in _segments(template):
        if not is_expression:
            parts.append(text)
            continue
        expression = text.strip()
        value = evaluate(expression, env)
        try:
            parts.append(value if isinstance(value, str) else _go_json(value))
        except _EvalError as err:
            raise ExpressionError(f"expression {_quoted(expression)}: {err}") from None
        except RecursionError:
            raise ExpressionError(
                f"expression {_quoted(expression)}: value is nested too deeply"
            ) from None
        if sum(map(len, parts)) > _MAX_SIZE:
            raise ExpressionError(
                f"template {_quoted(template[:80])}: renders more than {_MAX_SIZE} characters"
            )
    return "".join(parts)


def render(value: Any, env: Mapping[str, Any]) -> Any:
    """Render every string inside ``value`` with :func:`render_string`.

    Dicts and lists are walked recursively and rebuilt (keys are not rendered);
    other values are returned as they are.
    """
    if isinstance(value, str):
        return render_string(value, env)
    if isinstance(value, Mapping):
        return {key: render(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, env) for item in value]
    if isinstance(value, tuple):
        return tuple(render(item, env) for item in value)
    return value


def check_template(value: Any) -> None:
    """Parse every ``${{ }}`` expression in ``value`` (strings inside dicts and lists too),
    without evaluating any: ``apply`` calls it so a syntax error is refused up front.

    Raises :class:`ExpressionError` for an unclosed delimiter or an expression that
    does not parse.
    """
    if isinstance(value, str):
        if _OPEN in value or _OPEN_ALT in value:
            for is_expression, text in _segments(value):
                if is_expression:
                    parse(text.strip())
    elif isinstance(value, Mapping):
        for item in value.values():
            check_template(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_template(item)


def check_condition(text: str) -> None:
    """Parse a condition (``if:``, ``freightCreationCriteria.expression``), written as a
    template or as a bare expression, without evaluating it."""
    if _OPEN in text or _OPEN_ALT in text:
        check_template(text)
    elif text.strip():  # an empty condition is no condition
        parse(text.strip())
