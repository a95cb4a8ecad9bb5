"""Derived-point expressions: known answers, rejection with columns, cycles."""

from __future__ import annotations

import math

import pytest

from rules.expression import MAX_LENGTH, Expression, ExpressionError, find_cycle

LEVEL = "level-1/water_level"


def error_of(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        Expression.parse(text)
    return caught.value


# --- known answers --------------------------------------------------------------------


def test_freeboard_is_crest_minus_level() -> None:
    freeboard = Expression.parse("crest - {level-1/water_level}")
    assert freeboard.point_refs == frozenset({LEVEL})
    assert freeboard.constant_refs == frozenset({"crest"})
    # 126.00 − 123.45 = 2.55 m
    value = freeboard.evaluate({LEVEL: 123.45}, {"crest": 126.0})
    assert value == pytest.approx(2.55, abs=1e-12)


def test_hydraulic_gradient_between_two_piezometers() -> None:
    gradient = Expression.parse("({pz-1/head} - {pz-2/head}) / path_length")
    # J = (104.20 − 101.70)/12.5 = 2.50/12.5 = 0.2
    value = gradient.evaluate({"pz-1/head": 104.2, "pz-2/head": 101.7}, {"path_length": 12.5})
    assert value == pytest.approx(0.2, abs=1e-12)
    assert gradient.point_refs == frozenset({"pz-1/head", "pz-2/head"})


def test_safety_factor_and_functions() -> None:
    # J_cr = (G_s − 1)/(1 + e) = (2.70 − 1)/(1 + 0.7) = 1.0; J = 0.25 → factor 4.0
    factor = Expression.parse("((gs - 1) / (1 + e)) / {pz-1/exit_gradient}")
    assert factor.evaluate({"pz-1/exit_gradient": 0.25}, {"gs": 2.7, "e": 0.7}) == pytest.approx(
        4.0
    )
    assert Expression.parse("abs(-2) + max(1, 3, 2) - min(4, 5)").evaluate({}, {}) == 1.0
    assert Expression.parse("sqrt(16) * 2 ** 3").evaluate({}, {}) == 32.0
    assert Expression.parse("clamp(7, 0, 5) + clamp(-1, 0, 5)").evaluate({}, {}) == 5.0
    assert Expression.parse("log(exp(2)) + log10(1000)").evaluate({}, {}) == pytest.approx(5.0)
    # Python precedence: -2 ** 2 is -(2 ** 2).
    assert Expression.parse("-2 ** 2").evaluate({}, {}) == -4.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 - 2 - 3", 5.0),
        ("8 / 2 / 2", 2.0),
        ("1 + 2 * 3 - 4", 3.0),
        ("2 ** 3 ** 2", 512.0),
        ("(2 ** 3) ** 2", 64.0),
        ("-(1 - 4) * +2", 6.0),
        ("12 / 4 * 3", 9.0),
    ],
)
def test_precedence_and_associativity(text: str, expected: float) -> None:
    assert Expression.parse(text).evaluate({}, {}) == expected


def test_point_reference_syntax_details() -> None:
    expression = Expression.parse("  { level-1/water_level } +\n {渗压-1/head}")
    assert expression.point_refs == frozenset({LEVEL, "渗压-1/head"})
    assert expression.evaluate({LEVEL: 1.5, "渗压-1/head": 2.0}, {}) == 3.5
    # The same point twice is one reference.
    assert Expression.parse("{a} * {a}").point_refs == frozenset({"a"})


def test_parsed_expression_is_reusable() -> None:
    freeboard = Expression.parse("crest - {L}")
    assert freeboard.evaluate({"L": 120.0}, {"crest": 126.0}) == 6.0
    assert freeboard.evaluate({"L": 125.5}, {"crest": 126.0}) == 0.5


# --- evaluation errors ----------------------------------------------------------------


def test_missing_point_names_it_and_its_column() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression.parse("crest - {level-1/water_level}").evaluate({}, {"crest": 126.0})
    assert "level-1/water_level" in caught.value.message
    assert caught.value.column == 9


def test_missing_constant() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression.parse("crest - {L}").evaluate({"L": 1.0}, {})
    assert "'crest'" in caught.value.message
    assert caught.value.column == 1


def test_division_by_zero_points_at_the_divisor() -> None:
    with pytest.raises(ExpressionError) as caught:
        Expression.parse("({a} - {b}) / {len}").evaluate({"a": 2.0, "b": 1.0, "len": 0.0}, {})
    assert caught.value.message == "division by zero"
    assert caught.value.column == 15


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("sqrt({a})", {"a": -1.0}),
        ("log({a})", {"a": 0.0}),
        ("exp({a})", {"a": 1000.0}),
        ("{a} ** 0.5", {"a": -8.0}),  # complex in Python
        ("{a} * 1e308", {"a": 10.0}),  # inf
        ("0 ** -1", {}),
        ("clamp(1, 5, 0)", {}),
        ("{a} + 1", {"a": math.nan}),
        ("{a} + 1", {"a": "high"}),
    ],
)
def test_non_finite_or_undefined_results_are_errors(text: str, points: dict[str, object]) -> None:
    with pytest.raises(ExpressionError):
        Expression.parse(text).evaluate(points, {})  # type: ignore[arg-type]


# --- rejection at parse time, with columns ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ("__import__('os')", "unknown function '__import__'", 1),
        ("{a}.real", "attribute access", 4),
        ("crest + {a}  .__class__", "attribute access", 14),
        ("lambda: 1", "lambda", 1),
        ("crest + (lambda x: x)(1)", "lambda", 10),
        ("{a}[0]", "subscripts", 4),
        ("1 + foo(2)", "unknown function 'foo'", 5),
        ("max(1, b=2)", "keyword arguments", 8),
        ("1 < 2", "comparisons", 1),
        ("1 if crest else 2", "conditional", 1),
        ("1 + 'x'", "strings", 5),
        ("1 + True", "not a number", 5),
        ("7 % 2", "operator '%'", 3),
        ("crest // 2", "operator '//'", 7),
        ("not crest", "operator 'not'", 1),
        ("[1, 2]", "lists", 1),
        ("sqrt", "must be called", 1),
        ("sqrt(1, 2)", "takes 1 argument", 1),
        ("min(1)", "at least 2", 1),
        ("_hidden + 1", "'_'", 1),
        ("{a}(2)", "cannot be called", 1),
        ("(1)(2)", "only the built-in functions", 2),
        ("1j + 1", "complex", 1),
        ("1e400", "too large", 1),
    ],
)
def test_rejected_constructs(text: str, fragment: str, column: int) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.column == column


@pytest.mark.parametrize(
    ("text", "fragment", "column"),
    [
        ("crest - {level", "unclosed '{'", 9),
        ("crest - level}", "'}' without", 14),
        ("1 + {}", "empty point reference", 5),
        ("{a {b}", "'{' inside", 4),
        ("{a\x01}", "control character", 3),
        ("坝顶 - 1", "not allowed outside a point reference", 1),
        ("", "empty", 1),
        ("   ", "empty", 1),
    ],
)
def test_point_reference_and_character_errors(text: str, fragment: str, column: int) -> None:
    error = error_of(text)
    assert fragment in error.message
    assert error.column == column


def test_syntax_errors_carry_a_column() -> None:
    error = error_of("crest - - ")
    assert error.message.startswith("syntax error")
    assert error.column is not None
    # A point reference glued to a name must not fuse into one constant name.
    assert error_of("crest{a}").message.startswith("syntax error")
    assert error_of("2{a}").message.startswith("syntax error")


def test_length_limit() -> None:
    assert Expression.parse("+".join(["1"] * (MAX_LENGTH // 2))).evaluate({}, {}) == 500.0
    assert "longer than" in error_of("1" + " " * MAX_LENGTH).message


def test_deep_nesting_is_an_expression_error() -> None:
    depth = MAX_LENGTH // 2 - 1
    with pytest.raises(ExpressionError):
        Expression.parse("(" * depth + "1" + ")" * depth)


def test_error_string_includes_column() -> None:
    assert str(error_of("1 + foo(2)")).endswith("(column 5)")


# --- cycles ---------------------------------------------------------------------------


def test_find_cycle_reports_the_path() -> None:
    graph = {
        "dam/freeboard": ["level-1/water_level"],
        "a": ["b"],
        "b": ["c", "raw-1"],
        "c": ["a"],
    }
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def test_find_cycle_self_reference_and_acyclic() -> None:
    assert find_cycle({"x": ["x"]}) == ["x", "x"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": ["raw"]}) is None
    assert find_cycle({}) is None


def test_find_cycle_only_returns_the_cycle_not_the_lead_in() -> None:
    graph = {"entry": ["x"], "x": ["y"], "y": ["z"], "z": ["x"]}
    assert find_cycle(graph) == ["x", "y", "z", "x"]


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    chain = {f"p{i}": [f"p{i + 1}"] for i in range(5000)}
    assert find_cycle(chain) is None
    chain["p5000"] = ["p0"]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert cycle[0] == cycle[-1] == "p0"
    assert len(cycle) == 5002


def test_cycle_detection_from_parsed_expressions() -> None:
    derived = {
        "dam/freeboard": Expression.parse("crest - {dam/level_corrected}"),
        "dam/level_corrected": Expression.parse("{level-1/water_level} + {dam/offset}"),
        "dam/offset": Expression.parse("{dam/freeboard} * 0"),
    }
    graph = {name: expression.point_refs for name, expression in derived.items()}
    cycle = find_cycle(graph)
    assert cycle == ["dam/freeboard", "dam/level_corrected", "dam/offset", "dam/freeboard"]
