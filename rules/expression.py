"""Safe arithmetic expressions for derived points.

A site defines some of its points as arithmetic on other points and on its configured
characteristic levels, for example (reference §2.2 and §2.4):

* freeboard (超高) = crest − reservoir level: ``crest - {level-1/water_level}``;
* hydraulic gradient J = (H₁ − H₂)/L between two piezometers:
  ``({pz-1/head} - {pz-2/head}) / 12.5``;
* exit gradient J_exit = (H_p − z_exit)/L_exit and the safety factor J_cr/J.

The text comes from site configuration, so it is parsed with :mod:`ast` and only a
whitelist of node types is accepted. Nothing of the user's text is ever passed to
``eval``, ``exec`` or ``compile``; the accepted tree is converted to a small private
tree that this module evaluates itself.

Syntax
------
* Numbers: ``126``, ``0.5``, ``1e-3``. All arithmetic is in floating point.
* Point references in braces: ``{level-1/water_level}``. Point ids contain ``-`` and
  ``/``, which are operators, so the braces delimit them. The id is the text between
  the braces with surrounding whitespace removed; it may not be empty, contain a brace
  or a control character.
* Bare names are named constants, such as the site's characteristic levels (``crest``,
  ``flood_limit``), supplied as a mapping at evaluation time. They are ASCII letters,
  digits and ``_``, and may not start with ``_``.
* Operators ``+ - * / **``, unary ``-`` and ``+``, parentheses.
* Functions: ``abs(x)``, ``min(a, b, ...)``, ``max(a, b, ...)``, ``sqrt(x)``, ``log(x)``
  (natural), ``log10(x)``, ``exp(x)``, ``clamp(x, low, high)``.

Comparisons, attribute access, subscripts, strings, lambdas, keyword arguments and any
other Python construct are rejected. :class:`ExpressionError` carries a 1-based
character column into the original text so that ``edge check`` can point at the fault.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import NoReturn

__all__ = ["FUNCTIONS", "MAX_LENGTH", "Expression", "ExpressionError", "find_cycle"]

MAX_LENGTH = 1000
"""Longest accepted expression, in characters; it bounds parsing and evaluation depth."""

# Python names its own placeholder; a single underscore cannot clash with a constant
# because constant names may not start with "_".
_PLACEHOLDER = "_"
_CONSTANT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class ExpressionError(ValueError):
    """An expression that cannot be parsed or evaluated.

    ``column`` is the 1-based character position in the expression text of the part at
    fault, or ``None`` when no single position is to blame.
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        super().__init__(message if column is None else f"{message} (column {column})")


def _clamp(value: float, low: float, high: float) -> float:
    if low > high:
        raise ValueError(f"clamp bounds are reversed: low {low} > high {high}")
    return min(max(value, low), high)


@dataclass(frozen=True, slots=True)
class _Function:
    min_args: int
    max_args: int | None
    apply: Callable[..., float]


FUNCTIONS: Mapping[str, _Function] = {
    "abs": _Function(1, 1, abs),
    "min": _Function(2, None, min),
    "max": _Function(2, None, max),
    "sqrt": _Function(1, 1, math.sqrt),
    "log": _Function(1, 1, math.log),
    "log10": _Function(1, 1, math.log10),
    "exp": _Function(1, 1, math.exp),
    "clamp": _Function(3, 3, _clamp),
}
"""The only callable names, with their arity."""


# The private tree. Columns are 1-based positions in the original text.


@dataclass(frozen=True, slots=True)
class _Number:
    value: float
    column: int


@dataclass(frozen=True, slots=True)
class _PointRef:
    point: str
    column: int


@dataclass(frozen=True, slots=True)
class _ConstantRef:
    name: str
    column: int


@dataclass(frozen=True, slots=True)
class _Unary:
    negate: bool
    operand: _Node
    column: int


@dataclass(frozen=True, slots=True)
class _Chain:
    """``first op₁ x₁ op₂ x₂ …`` evaluated left to right.

    A run of same-precedence operators is held flat rather than as a left-deep tree, so
    a long sum of points cannot exhaust the interpreter stack when built or evaluated.
    """

    first: _Node
    steps: tuple[tuple[str, _Node], ...]
    column: int


@dataclass(frozen=True, slots=True)
class _Call:
    function: str
    args: tuple[_Node, ...]
    column: int


_Node = _Number | _PointRef | _ConstantRef | _Unary | _Chain | _Call

_BINARY_OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
}

_PRECEDENCE_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"+", "-"}),
    frozenset({"*", "/"}),
    frozenset({"**"}),
)

_REJECTED_OPERATORS: dict[type[ast.operator], str] = {
    ast.Mod: "%",
    ast.FloorDiv: "//",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}

_REJECTED_NODES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "'and'/'or' are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.NamedExpr: "assignment expressions are not allowed",
    ast.Starred: "starred arguments are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.List: "lists are not allowed",
    ast.Tuple: "tuples are not allowed",
    ast.Set: "sets are not allowed",
    ast.Dict: "dictionaries are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.Slice: "slices are not allowed",
}


def _substitute_point_refs(text: str) -> tuple[str, dict[int, str]]:
    """Replace each ``{point}`` with a placeholder name of the same width.

    Keeping every character in place means a column reported by :mod:`ast` is also the
    column in the user's text. The placeholder is padded with a space on both sides so
    that ``crest{a}`` cannot fuse into one identifier and is rejected as a syntax error
    instead. Returns the Python source and the point id at each placeholder's 0-based
    column.
    """
    out: list[str] = []
    refs: dict[int, str] = {}
    i = 0
    while i < len(text):
        char = text[i]
        if char == "{":
            close = text.find("}", i + 1)
            if close < 0:
                raise ExpressionError("unclosed '{' of a point reference", i + 1)
            inner = text[i + 1 : close]
            nested = inner.find("{")
            if nested >= 0:
                raise ExpressionError("'{' inside a point reference", i + 2 + nested)
            point = inner.strip()
            if not point:
                raise ExpressionError("empty point reference", i + 1)
            for offset, inner_char in enumerate(inner):
                if not inner_char.isprintable():
                    raise ExpressionError(
                        f"control character {inner_char!r} in a point reference", i + 2 + offset
                    )
            width = close - i + 1
            out.append(" " + _PLACEHOLDER + " " * (width - 2))
            refs[i + 1] = point
            i = close + 1
            continue
        if char == "}":
            raise ExpressionError("'}' without a matching '{'", i + 1)
        if char in "\t\r\n":
            # Newlines would make ast report per-line columns; as spaces they keep the
            # column a plain offset into the text, and YAML block scalars stay usable.
            out.append(" ")
        elif not char.isascii() or not char.isprintable():
            # ast reports UTF-8 byte offsets; an all-ASCII source makes them characters.
            raise ExpressionError(
                f"character {char!r} is not allowed outside a point reference", i + 1
            )
        else:
            out.append(char)
        i += 1
    return "".join(out), refs


class _Builder:
    """Walks a parsed tree, accepting only the whitelisted constructs."""

    def __init__(self, source: str, indent: int, refs: Mapping[int, str]) -> None:
        # ast rejects leading spaces in eval mode, so the parsed text starts ``indent``
        # characters into ``source``; every ast offset is shifted back by it.
        self._source = source
        self._indent = indent
        self._refs = refs

    def _column(self, node: ast.AST) -> int:
        return node.col_offset + self._indent + 1

    def _column_after(self, node: ast.expr) -> int:
        """Column of the first non-blank character after ``node``: an operator, '.' or '['."""
        end = node.end_col_offset
        if end is None:
            return self._column(node)
        index = end + self._indent
        while index < len(self._source) and self._source[index] == " ":
            index += 1
        return index + 1

    def build(self, node: ast.expr) -> _Node:
        column = self._column(node)
        if isinstance(node, ast.Constant):
            return self._number(node, column)
        if isinstance(node, ast.Name):
            return self._name(node, column)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub | ast.UAdd):
                return _Unary(isinstance(node.op, ast.USub), self.build(node.operand), column)
            raise ExpressionError(f"operator '{_unary_symbol(node.op)}' is not allowed", column)
        if isinstance(node, ast.BinOp):
            return self._binary(node, column)
        if isinstance(node, ast.Call):
            return self._call(node, column)
        if isinstance(node, ast.Attribute | ast.Subscript):
            # ast places these at the start of the object; point at the '.' or '[' instead.
            raise ExpressionError(_REJECTED_NODES[type(node)], self._column_after(node.value))
        message = _REJECTED_NODES.get(type(node), f"'{type(node).__name__}' is not allowed")
        raise ExpressionError(message, column)

    def _number(self, node: ast.Constant, column: int) -> _Number:
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise ExpressionError(f"'{value}' is not a number", column)
        if isinstance(value, str | bytes):
            raise ExpressionError("strings are not allowed", column)
        if isinstance(value, complex):
            raise ExpressionError("complex numbers are not allowed", column)
        try:
            number = float(value)
        except OverflowError:
            raise ExpressionError("number is too large", column) from None
        if not math.isfinite(number):
            raise ExpressionError("number is too large", column)
        return _Number(number, column)

    def _name(self, node: ast.Name, column: int) -> _PointRef | _ConstantRef:
        point = self._refs.get(column - 1) if node.id == _PLACEHOLDER else None
        if point is not None:
            # Report the brace, which is where the user sees the reference begin.
            return _PointRef(point, column - 1)
        if node.id.startswith("_"):
            raise ExpressionError(f"names starting with '_' are not allowed: {node.id!r}", column)
        if node.id in FUNCTIONS:
            raise ExpressionError(f"function '{node.id}' must be called", column)
        if not _CONSTANT_NAME.fullmatch(node.id):
            raise ExpressionError(f"invalid constant name {node.id!r}", column)
        return _ConstantRef(node.id, column)

    def _operator(self, node: ast.BinOp) -> str:
        symbol = _BINARY_OPERATORS.get(type(node.op))
        if symbol is None:
            rejected = _REJECTED_OPERATORS.get(type(node.op), type(node.op).__name__)
            raise ExpressionError(
                f"operator '{rejected}' is not allowed", self._column_after(node.left)
            )
        return symbol

    def _binary(self, node: ast.BinOp, column: int) -> _Chain:
        group = next(g for g in _PRECEDENCE_GROUPS if self._operator(node) in g)
        # ast nests a run like a - b + c to the left: ((a - b) + c). Walking down the
        # left spine collects it; evaluating the steps left to right is the same fold.
        steps: list[tuple[str, ast.expr]] = []
        current: ast.expr = node
        while isinstance(current, ast.BinOp):
            symbol = self._operator(current)
            if symbol not in group:
                break
            steps.append((symbol, current.right))
            current = current.left
        first = self.build(current)
        return _Chain(
            first, tuple((symbol, self.build(right)) for symbol, right in reversed(steps)), column
        )

    def _call(self, node: ast.Call, column: int) -> _Call:
        if not isinstance(node.func, ast.Name):
            # e.g. os.system(...) or f()(): reject what is being called, not the call.
            return self._reject_callee(node.func)
        name = node.func.id
        function = FUNCTIONS.get(name)
        if function is None and name == _PLACEHOLDER:
            callee = self._name(node.func, self._column(node.func))
            raise ExpressionError("a point reference cannot be called", callee.column)
        if function is None:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ExpressionError(f"unknown function '{name}' (allowed: {allowed})", column)
        if node.keywords:
            keyword = node.keywords[0]
            raise ExpressionError("keyword arguments are not allowed", self._column(keyword))
        count = len(node.args)
        if count < function.min_args or (
            function.max_args is not None and count > function.max_args
        ):
            raise ExpressionError(
                f"{name}() takes {_arity(function)} argument(s), got {count}", column
            )
        return _Call(name, tuple(self.build(arg) for arg in node.args), column)

    def _reject_callee(self, callee: ast.expr) -> NoReturn:
        self.build(callee)
        # A callee that builds (a number, a point) is still not a function.
        raise ExpressionError("only the built-in functions can be called", self._column(callee))


def _unary_symbol(op: ast.unaryop) -> str:
    return {ast.Not: "not", ast.Invert: "~"}.get(type(op), type(op).__name__)


def _arity(function: _Function) -> str:
    if function.max_args is None:
        return f"at least {function.min_args}"
    if function.max_args == function.min_args:
        return str(function.min_args)
    return f"{function.min_args} to {function.max_args}"


def _collect(node: _Node, points: set[str], constants: set[str]) -> None:
    match node:
        case _PointRef(point=point):
            points.add(point)
        case _ConstantRef(name=name):
            constants.add(name)
        case _Unary(operand=operand):
            _collect(operand, points, constants)
        case _Chain(first=first, steps=steps):
            _collect(first, points, constants)
            for _, operand in steps:
                _collect(operand, points, constants)
        case _Call(args=args):
            for arg in args:
                _collect(arg, points, constants)


def _finite(value: float, what: str, column: int) -> float:
    if isinstance(value, complex) or not math.isfinite(value):
        raise ExpressionError(f"{what} is not a finite real number", column)
    return value


def _lookup(values: Mapping[str, float], key: str, kind: str, column: int) -> float:
    try:
        raw = values[key]
    except KeyError:
        raise ExpressionError(f"no value for {kind} {key!r}", column) from None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ExpressionError(f"{kind} {key!r} is not a number: {raw!r}", column) from None
    return _finite(value, f"{kind} {key!r}", column)


def _evaluate(node: _Node, points: Mapping[str, float], constants: Mapping[str, float]) -> float:
    match node:
        case _Number(value=value):
            return value
        case _PointRef(point=point, column=column):
            return _lookup(points, point, "point", column)
        case _ConstantRef(name=name, column=column):
            return _lookup(constants, name, "constant", column)
        case _Unary(negate=negate, operand=operand):
            value = _evaluate(operand, points, constants)
            return -value if negate else value
        case _Chain(first=first, steps=steps, column=column):
            value = _evaluate(first, points, constants)
            for operator, operand in steps:
                right = _evaluate(operand, points, constants)
                value = _apply_binary(operator, value, right, column, operand.column)
            return value
        case _Call(function=name, args=arg_nodes, column=column):
            args = [_evaluate(arg, points, constants) for arg in arg_nodes]
            try:
                result = FUNCTIONS[name].apply(*args)
            except (ValueError, OverflowError) as exc:
                raise ExpressionError(f"{name}() failed: {exc}", column) from None
            return _finite(result, f"result of {name}()", column)
    raise AssertionError(f"unexpected node {node!r}")


def _apply_binary(
    operator: str, left: float, right: float, column: int, right_column: int
) -> float:
    if operator == "/" and right == 0.0:
        raise ExpressionError("division by zero", right_column)
    try:
        if operator == "+":
            result = left + right
        elif operator == "-":
            result = left - right
        elif operator == "*":
            result = left * right
        elif operator == "/":
            result = left / right
        else:
            result = left**right
    except ZeroDivisionError:
        raise ExpressionError("zero raised to a negative power", column) from None
    except OverflowError:
        raise ExpressionError(f"result of '{operator}' is too large", column) from None
    # Float overflow in + - * yields inf and a negative base to a fractional power yields
    # a complex number; neither is a value a dam-safety rule can compare.
    return _finite(result, f"result of '{operator}'", column)


class Expression:
    """A parsed, validated derived-point expression; immutable and reusable."""

    __slots__ = ("_constant_refs", "_point_refs", "_root", "_text")

    def __init__(self, text: str, root: _Node) -> None:
        points: set[str] = set()
        constants: set[str] = set()
        _collect(root, points, constants)
        self._text = text
        self._root = root
        self._point_refs = frozenset(points)
        self._constant_refs = frozenset(constants)

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Parse ``text``; raise :class:`ExpressionError` naming the fault and its column."""
        if len(text) > MAX_LENGTH:
            raise ExpressionError(
                f"expression is longer than {MAX_LENGTH} characters", MAX_LENGTH + 1
            )
        if not text.strip():
            raise ExpressionError("expression is empty", 1)
        source, refs = _substitute_point_refs(text)
        indent = len(source) - len(source.lstrip(" "))
        try:
            tree = ast.parse(source[indent:], mode="eval")
        except SyntaxError as exc:
            column = min(max((exc.offset or 1) + indent, 1), len(text) + 1)
            raise ExpressionError(f"syntax error: {exc.msg}", column) from None
        except (RecursionError, MemoryError):
            raise ExpressionError("expression is nested too deeply", 1) from None
        try:
            root = _Builder(source, indent, refs).build(tree.body)
        except RecursionError:
            raise ExpressionError("expression is nested too deeply", 1) from None
        return cls(text, root)

    @property
    def text(self) -> str:
        """The expression as written."""
        return self._text

    @property
    def point_refs(self) -> frozenset[str]:
        """Ids of the points the expression reads."""
        return self._point_refs

    @property
    def constant_refs(self) -> frozenset[str]:
        """Names of the constants the expression reads."""
        return self._constant_refs

    def evaluate(self, points: Mapping[str, float], constants: Mapping[str, float]) -> float:
        """Compute the value from current point values and the site's constants.

        A missing or non-finite input, a division by zero and a non-finite or complex
        result raise :class:`ExpressionError` with the column of the part at fault.
        """
        try:
            return _evaluate(self._root, points, constants)
        except RecursionError:
            raise ExpressionError("expression is nested too deeply", 1) from None

    def __repr__(self) -> str:
        return f"Expression.parse({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other._root == self._root

    def __hash__(self) -> int:
        return hash(self._root)


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Find a circular dependency among derived points.

    ``graph`` maps each derived point to the points its expression reads; names that are
    not keys are raw points with no dependencies. Returns one cycle as a path that starts
    and ends on the same point (``["a", "b", "a"]``; a self-reference is ``["a", "a"]``),
    or ``None`` when the graph is acyclic. Iterative, so deep chains cannot overflow the
    interpreter stack, and deterministic in the mapping's order.
    """
    edges = {node: list(targets) for node, targets in graph.items()}
    finished: set[str] = set()
    for root in edges:
        if root in finished:
            continue
        path = [root]
        on_path = {root}
        stack = [iter(edges[root])]
        while stack:
            for target in stack[-1]:
                if target in on_path:
                    return [*path[path.index(target) :], target]
                if target not in finished:
                    path.append(target)
                    on_path.add(target)
                    stack.append(iter(edges.get(target, ())))
                    break
            else:
                finished.add(path[-1])
                on_path.discard(path.pop())
                stack.pop()
    return None
