"""The expression evaluator: expr-lang syntax and semantics, Kargo's ${{ }} rendering."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freightline.errors import ExpressionError, FreightlineError
from freightline.kargo.expressions import (
    ArrayNode,
    Binary,
    Call,
    Chain,
    Literal,
    MapNode,
    Member,
    Name,
    Node,
    Unary,
    evaluate,
    parse,
    render,
    render_string,
)


@dataclass(frozen=True)
class Image:
    RepoURL: str
    Tag: str
    _secret: str = "hidden"


def _env(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "vars": {
            "imageRepo": "public.ecr.aws/nginx/nginx",
            "gitopsRepo": "https://github.com/example/kargo-demo.git",
            "list": [1, 2, 3],
            "n": 7,
            "f": 2.5,
            "name": "nginx",
            "empty": None,
            "flag": True,
            "nested": {"a": {"b": "deep"}},
        },
        "ctx": {"project": "kargo-demo", "stage": "test", "promotion": "test.01abc"},
        "task": {
            "outputs": {
                "update": {"commitMessage": "Updated image to 1.29.1"},
                "commit": {"commit": "3f2c1a9"},
            }
        },
        "outputs": {},
        "image": Image("nginx", "1.29.1"),
    }
    env.update(extra)
    return env


def ev(expression: str, **extra: Any) -> Any:
    return evaluate(expression, _env(**extra))


def error_of(expression: str, **extra: Any) -> str:
    with pytest.raises(ExpressionError) as info:
        ev(expression, **extra)
    return str(info.value)


# --- literals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("42", 42),
        ("1_000", 1000),
        ("0x1F", 31),
        ("0o17", 15),
        ("0b101", 5),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5e-1", 0.25),
        ("true", True),
        ("false", False),
        ("nil", None),
        ('"double"', "double"),
        ("'single'", "single"),
        ("`raw \\n`", "raw \\n"),
        (r'"tab\tnew\nquote\"back\\"', 'tab\tnew\nquote"back\\'),
        (r"'it\'s'", "it's"),
        (r'"\x41\u00e9\U0001F600\101"', "Aé\U0001f600A"),
        ("[]", []),
        ("[1, 'a', nil, [true]]", [1, "a", None, [True]]),
        ("[1, 2,]", [1, 2]),
        ("{}", {}),
        ('{a: 1, "b": 2, 3: "c", (1 + 1): "two"}', {"a": 1, "b": 2, "3": "c", 2: "two"}),
        ("{a: {b: [1]},}", {"a": {"b": [1]}}),
        ("1 // a comment", 1),
        ("1 /* inline */ + 2", 3),
    ],
)
def test_literals(expression: str, expected: Any) -> None:
    result = ev(expression)
    assert result == expected
    assert type(result) is type(expected)


# --- names, members, indexes, calls ----------------------------------------


def test_member_access_on_maps_and_objects() -> None:
    assert ev("vars.name") == "nginx"
    assert ev("vars.nested.a.b") == "deep"
    assert ev('vars["name"]') == "nginx"
    assert ev('vars.nested["a"].b') == "deep"
    assert ev("image.Tag") == "1.29.1"
    assert ev("ctx.stage") == "test"


def test_missing_map_key_is_nil_so_coalescing_works() -> None:
    assert ev("outputs.x") is None
    assert ev('outputs.x ?? "d"') == "d"
    assert ev('vars.missing ?? vars.name ?? "d"') == "nginx"
    assert ev('vars.name ?? "d"') == "nginx"
    assert ev("vars.flag ?? false") is True
    # a bare unknown name on the left of ?? is nil, as in Kargo
    assert ev('undefinedThing ?? "fallback"') == "fallback"


def test_optional_chaining() -> None:
    assert ev("vars.empty?.x") is None
    assert ev("vars.empty?.x.y.z") is None
    assert ev("vars.empty?.[0]") is None
    assert ev("vars?.nested?.a.b") == "deep"
    assert ev('vars.empty?.x ?? "d"') == "d"
    assert ev("vars.nested?.a") == {"b": "deep"}


def test_index_and_slices() -> None:
    assert ev("vars.list[0]") == 1
    assert ev("vars.list[-1]") == 3
    assert ev("vars.list[1 + 1]") == 3
    assert ev("vars.list[1:]") == [2, 3]
    assert ev("vars.list[:2]") == [1, 2]
    assert ev("vars.list[:]") == [1, 2, 3]
    assert ev("vars.list[-2:]") == [2, 3]
    assert ev("vars.list[1:3]") == [2, 3]
    assert ev("vars.list[5:9]") == []
    assert ev('"nginx"[0]') == "n"
    assert ev('"nginx"[1:3]') == "gi"
    assert ev("[[1, 2], [3]][0][1]") == 2
    assert ev("{a: 1}.a") == 1
    assert ev("{a: 1}['a']") == 1


def test_env_callable_gets_evaluated_arguments_and_its_result_is_addressable() -> None:
    calls: list[tuple[Any, ...]] = []

    def image_from(*args: Any) -> dict[str, str]:
        calls.append(args)
        return {"RepoURL": args[0], "Tag": "1.29.1", "Digest": "sha256:abc"}

    env = _env(imageFrom=image_from)
    assert evaluate("imageFrom(vars.imageRepo).Tag", env) == "1.29.1"
    assert evaluate('imageFrom(vars.imageRepo, "w" + "h").Digest', env) == "sha256:abc"
    assert calls == [
        ("public.ecr.aws/nginx/nginx",),
        ("public.ecr.aws/nginx/nginx", "wh"),
    ]


def test_method_calls_on_maps_and_objects() -> None:
    class Greeter:
        def greet(self, who: str) -> str:
            return f"hello {who}"

    env = _env(helpers={"twice": lambda x: x * 2}, greeter=Greeter())
    assert evaluate("helpers.twice(21)", env) == 42
    assert evaluate('greeter.greet("kargo")', env) == "hello kargo"


def test_env_shadows_builtins() -> None:
    assert ev("len('abc')") == 3
    assert ev("len('abc')", len=lambda _: "mine") == "mine"
    assert ev("upper", upper="a value") == "a value"


def test_private_attributes_are_not_reachable() -> None:
    assert "cannot index Image" in error_of("image._secret")
    assert "cannot index Image" in error_of("image.__class__")


# --- operators -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # arithmetic
        ("1 + 2", 3),
        ("1 + 2.5", 3.5),
        ("'a' + 'b'", "ab"),
        ("[1] + [2, 3]", [1, 2, 3]),
        ("5 - 7", -2),
        ("3 * 4", 12),
        ("2 * 1.5", 3.0),
        ("7 / 2", 3.5),
        ("6 / 3", 2.0),
        ("7 % 3", 1),
        ("-7 % 3", -1),  # Go: the remainder takes the dividend's sign
        ("7 % -3", 1),
        ("2 ** 10", 1024.0),
        ("2 ^ 3", 8.0),
        ("9223372036854775807 + 1", -9223372036854775808),  # int64 wraps, as in Go
        # unary
        ("-vars.n", -7),
        ("+vars.f", 2.5),
        ("--1", 1),
        ("!true", False),
        ("not false", True),
        ("!!vars.flag", True),
        # comparison
        ("1 == 1", True),
        ("1 == 1.0", True),
        ("1 == true", False),
        ("0 == false", False),
        ("nil == nil", True),
        ("vars.empty == nil", True),
        ("'a' == 'a'", True),
        ("'1' == 1", False),
        ("[1, 2] == [1, 2]", True),
        ("{a: 1} == {a: 1.0}", True),
        ("1 != 2", True),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2.5", True),
        ("2 >= 3", False),
        ("'abc' < 'abd'", True),
        ("1 < 2 < 3", True),  # chained: 1 < 2 && 2 < 3
        ("3 > 2 > 2", False),
        # logic
        ("true && false", False),
        ("true and true", True),
        ("false || true", True),
        ("false or false", False),
        # membership and strings
        ("2 in vars.list", True),
        ("2.0 in vars.list", True),
        ("5 in vars.list", False),
        ("'name' in vars", True),
        ("'nope' in vars", False),
        ("5 not in vars.list", True),
        ("'Tag' in image", True),
        ("1 in nil", False),
        ("'nginx' contains 'gin'", True),
        ("'nginx' not contains 'z'", True),
        ("'nginx' startsWith 'ng'", True),
        ("'nginx' not startsWith 'x'", True),
        ("'nginx' endsWith 'inx'", True),
        ("'nginx' not endsWith 'ng'", True),
        ("'v1.29.1' matches '^v[0-9]+\\\\.'", True),
        ("'1.29.1' matches 'x'", False),
        ("'1.29.1' not matches 'x'", True),
        # range, nil coalescing, ternary
        ("1..4", [1, 2, 3, 4]),
        ("3..1", []),
        ("nil ?? 1", 1),
        ("false ?? 1", False),
        ("true ? 'y' : 'n'", "y"),
        ("false ? 'y' : 'n'", "n"),
        ("false ? 1 : true ? 2 : 3", 2),
        ("(1 + 2) * 3", 9),
    ],
)
def test_operators(expression: str, expected: Any) -> None:
    result = ev(expression)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),  # * (60) over + (30)
        ("10 - 4 - 3", 3),  # left associative
        ("2 ** 3 ** 2", 512.0),  # ** is right associative
        ("-2 ** 2", -4.0),  # ** (100) over unary - (90)
        ("2 * 3 ** 2", 18.0),
        ("1 + 2 == 3", True),  # + (30) over == (20)
        ("1 == 1 && 2 == 2", True),  # == (20) over && (15)
        ("true || false && false", True),  # && (15) over || (10)
        ("(true || false) && false", False),
        ("!true == false", True),  # unary ! (50) binds tighter than == (20)
        ("!false && false", False),
        ("1 + 1..3", [2, 3]),  # + (30) over .. (25)
        ("1 in [1] == true", False),  # comparisons chain: 1 in [1] && [1] == true
        ("vars.missing ?? nil ?? 2", 2),
        ("1 + vars.missing ?? 2", 3),
        ("true ? 1 : 2 + 10", 1),  # ternary is lowest
        ("false ? 1 : 2 + 10", 12),
        ("1 < 2 ? 'lt' : 'ge'", "lt"),
        ("vars.list[0] + vars.list[1] * vars.list[2]", 7),
    ],
)
def test_precedence(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


def test_logic_short_circuits() -> None:
    def boom() -> bool:
        raise AssertionError("must not be called")

    assert ev("false && boom()", boom=boom) is False
    assert ev("true || boom()", boom=boom) is True
    assert ev("vars.name ?? boom()", boom=boom) == "nginx"
    assert ev("true ? 1 : boom()", boom=boom) == 1


def test_parse_builds_small_ast() -> None:
    assert parse("a.b") == Member(Name("a"), Literal("b"))
    assert parse("a?.b") == Chain(Member(Name("a"), Literal("b"), optional=True))
    assert parse("f(1, x)") == Call(Name("f"), (Literal(1), Name("x")))
    assert parse("1 + 2 * 3") == Binary("+", Literal(1), Binary("*", Literal(2), Literal(3)))
    assert parse("a not in b") == Unary("not", Binary("in", Name("a"), Name("b")))
    assert parse("[1]") == ArrayNode((Literal(1),))
    assert parse("{a: 1}") == MapNode(((Literal("a"), Literal(1)),))
    assert isinstance(parse("x ? 1 : 2"), Node)


def test_parse_is_cached() -> None:
    assert parse("vars.a + 1") is parse("vars.a + 1")


def test_evaluate_does_not_touch_env() -> None:
    env = _env()
    before = copy.deepcopy(env)
    evaluate("vars.list + [4]", env)
    evaluate("{a: vars.nested}", env)
    assert env == before


# --- builtins --------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("len('héllo')", 5),
        ("len(vars.list)", 3),
        ("len(vars.nested)", 1),
        ("upper('a')", "A"),
        ("lower('A')", "a"),
        ("trim('  a ')", "a"),
        ("trim('xxaxx', 'x')", "a"),
        ("trimPrefix('v1.2', 'v')", "1.2"),
        ("trimSuffix('a.yaml', '.yaml')", "a"),
        ("split('a,b,c', ',')", ["a", "b", "c"]),
        ("split('a,b,c', ',', 2)", ["a", "b,c"]),
        ("split('abc', '')", ["a", "b", "c"]),
        ("join(['a', 'b'], '-')", "a-b"),
        ("join(['a', 'b'])", "ab"),
        ("replace('a-b-c', '-', '/')", "a/b/c"),
        ("replace('a-b-c', '-', '/', 1)", "a/b-c"),
        ("indexOf('nginx', 'g')", 1),
        ("lastIndexOf('aXbX', 'X')", 3),
        ("hasPrefix('nginx', 'ng')", True),
        ("hasSuffix('nginx', 'x')", True),
        ("string(1)", "1"),
        ("string(2.0)", "2"),
        ("string(true)", "true"),
        ("string(nil)", "null"),
        ("string([1, 'a'])", '[1,"a"]'),
        ("int('42')", 42),
        ("int(-3.9)", -3),
        ("int(7)", 7),
        ("float('1.5')", 1.5),
        ("float(2)", 2.0),
        ("abs(-3)", 3),
        ("max(1, 5, 3)", 5),
        ("min([4, 2.5])", 2.5),
        ("toJSON({b: 1, a: [true, nil]})", '{\n  "a": [\n    true,\n    null\n  ],\n  "b": 1\n}'),
        ("fromJSON('{\"a\": [1, 2.5]}')", {"a": [1, 2.5]}),
        ("toBase64('kargo')", "a2FyZ28="),
        ("fromBase64('a2FyZ28=')", "kargo"),
        ("keys({a: 1, b: 2})", ["a", "b"]),
        ("values({a: 1, b: 2})", [1, 2]),
        ("first(vars.list)", 1),
        ("last(vars.list)", 3),
        ("first([])", None),
        ("get(vars.list, 9)", None),
        ("get(vars, 'name')", "nginx"),
        ("quote('x')", '"x"'),
        ("quote(1.0)", '"1"'),
        ("quote(true)", '"true"'),
    ],
)
def test_builtins(expression: str, expected: Any) -> None:
    result = ev(expression)
    assert result == expected
    assert type(result) is type(expected)


# --- rendering -------------------------------------------------------------


def test_render_whole_string_returns_the_raw_value() -> None:
    env = _env()
    assert render("${{ 3 }}", env) == 3
    assert render("${{ vars.list }}", env) == [1, 2, 3]
    assert render("  ${{ vars.flag }}  ", env) is True
    assert render("${{ vars.empty }}", env) is None
    assert render("${{ vars.nested }}", env) == {"a": {"b": "deep"}}
    assert render("${{ {'a': {'b': 1}} }}", env) == {"a": {"b": 1}}


def test_render_interpolates_text() -> None:
    env = _env()
    assert render("stage/${{ ctx.stage }}", env) == "stage/test"
    # Kargo types the whole rendered text: "12" is the number 12.
    assert render("${{ 1 }}${{ 2 }}", env) == 12
    assert render("n=${{ vars.n }} f=${{ vars.f }} x=${{ 6 / 3 }}", env) == "n=7 f=2.5 x=2"
    assert render("b=${{ vars.flag }} none=${{ vars.empty }}", env) == "b=true none=null"
    assert render("l=${{ vars.list }} m=${{ {'b': 1, 'a': [nil]} }}", env) == (
        'l=[1,2,3] m={"a":[null],"b":1}'
    )
    assert render("${{ 'a' }}-${{ 'b' }}", env) == "a-b"
    assert render("x ${{ 'y' }} ", env) == "x y "


def test_render_quote_forces_a_string_like_kargo() -> None:
    env = _env()
    assert render("${{ quote(true) }}", env) == "true"
    assert render("${{ quote(vars.n) }}", env) == "7"
    assert render("${{ quote(ctx.stage) }}", env) == "test"
    assert render("say ${{ quote(ctx.stage) }}", env) == 'say "test"'


def test_render_leaves_text_without_expressions_alone() -> None:
    env = _env()
    for text in ["", "plain", "${GITOPS_REPO_URL}", "{{ not ours }}", "$ {{ x }}", '"quoted"']:
        assert render(text, env) == text
    assert render(42, env) == 42
    assert render(None, env) is None


def test_render_walks_containers_and_returns_new_ones() -> None:
    env = _env()
    config = {
        "path": "./src/stages/${{ ctx.stage }}",
        "${{ keys.are.not.rendered }}": ["${{ 1 + 1 }}", {"deep": "${{ vars.name }}"}, 5],
        "count": 3,
        "tuple": ("${{ ctx.stage }}",),
    }
    rendered = render(config, env)
    assert rendered == {
        "path": "./src/stages/test",
        "${{ keys.are.not.rendered }}": [2, {"deep": "nginx"}, 5],
        "count": 3,
        "tuple": ("test",),
    }
    assert config["path"] == "./src/stages/${{ ctx.stage }}"
    assert rendered is not config


def test_render_string_handles_braces_inside_expressions() -> None:
    env = _env()
    assert render_string("${{ {'a': {'b': 1}}.a.b }}", env) == 1
    assert render_string("${{ '}}' }}x", env) == "}}x"
    assert render_string('a${{ "x}}y" }}b', env) == "ax}}yb"


def test_quickstart_promotion_task_renders() -> None:
    """The expressions of Kargo's quickstart (fixtures/kargo-quickstart/kargo.yaml)."""

    def image_from(repo_url: str) -> dict[str, str]:
        assert repo_url == "public.ecr.aws/nginx/nginx"
        return {"RepoURL": repo_url, "Tag": "1.29.1", "Digest": "sha256:0123"}

    env = _env(imageFrom=image_from)
    steps = [
        {"repoURL": "${{ vars.gitopsRepo }}", "checkout": [{"branch": "stage/${{ ctx.stage }}"}]},
        {
            "images": [
                {"image": "${{ vars.imageRepo }}", "tag": "${{ imageFrom(vars.imageRepo).Tag }}"}
            ]
        },
        {"path": "./src/stages/${{ ctx.stage }}", "outPath": "./out"},
        {"message": "${{ task.outputs.update.commitMessage }}"},
        {
            "apps": [
                {
                    "name": "kargo-demo-${{ ctx.stage }}",
                    "sources": [
                        {
                            "repoURL": "${{ vars.gitopsRepo }}",
                            "desiredRevision": "${{ task.outputs.commit.commit }}",
                        }
                    ],
                }
            ]
        },
    ]
    assert render(steps, env) == [
        {
            "repoURL": "https://github.com/example/kargo-demo.git",
            "checkout": [{"branch": "stage/test"}],
        },
        {"images": [{"image": "public.ecr.aws/nginx/nginx", "tag": "1.29.1"}]},
        {"path": "./src/stages/test", "outPath": "./out"},
        {"message": "Updated image to 1.29.1"},
        {
            "apps": [
                {
                    "name": "kargo-demo-test",
                    "sources": [
                        {
                            "repoURL": "https://github.com/example/kargo-demo.git",
                            "desiredRevision": "3f2c1a9",
                        }
                    ],
                }
            ]
        },
    ]


# --- errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("vars.a +", 'expression "vars.a +": unexpected end of expression at column 8'),
        ("a b", 'expression "a b": unexpected token "b" at column 3'),
        ("a ? (1+2) c", 'expression "a ? (1+2) c": unexpected token "c" at column 11'),
        ("[a b]", 'unexpected token "b" at column 4'),
        ("foo.", "unexpected end of expression at column 4"),
        ("f(1", "unexpected end of expression at column 3"),
        ("'abc", "string literal not terminated at column 1"),
        ('"\\q"', "invalid escape in string at column 2"),
        ("1 @ 2", 'unrecognized character "@" at column 3'),
        ("1abc", 'bad number syntax "1a" at column 1'),
        ("99999999999999999999", "integer literal"),
        ("a ?? b + 1", 'operator "+" and "??" cannot be mixed'),
        ("a not b", 'unexpected token "b" at column 7'),
        ("{-1: 2}", "a map key must be"),
        ("a.1", "unexpected"),
        ("", "unexpected end of expression at column 1"),
        ("1 +\n  * 2", 'unexpected token "*" at line 2, column 3'),
        ("(" * 200 + "1" + ")" * 200, "nested too deeply"),
    ],
)
def test_parse_errors_name_expression_and_position(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(expression)
    assert message in str(info.value)
    assert str(info.value).startswith("expression ")
    assert isinstance(info.value, FreightlineError)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("foo", 'expression "foo": unknown name "foo"'),
        ("foo(1)", 'unknown name "foo"'),
        ("vars.list['a']", 'expression "vars.list[\'a\']": cannot index list with "a"'),
        ("vars.list[3]", "index 3 out of range for list of length 3"),
        ("vars.list[-4]", "index -4 out of range"),
        ("vars.list.x", '"vars.list" (list) has no field "x"'),
        ("vars.n.x", '"vars.n" (int) has no field "x"'),
        ("vars.empty.x", '"vars.empty" is nil, so it has no field "x"'),
        ("vars.empty[0]", "cannot index nil"),
        ("image.Digest", '"image" has no field "Digest"'),
        ("vars.name()", '"vars.name" is not a function (it is string)'),
        ("vars.missing()", '"vars.missing" is not a function (it is nil)'),
        ("len(1)", "len: invalid argument (type int)"),
        ("len()", "len: expected 1 argument, got 0"),
        ("upper(1)", "upper: argument must be a string, not int"),
        ("int('x')", 'int: cannot convert "x" to int'),
        ("fromJSON('{')", "fromJSON: invalid JSON"),
        ("1 + 'a'", "invalid operation: int + string"),
        ("'a' - 'b'", "invalid operation: string - string"),
        ("1 < 'a'", "invalid operation: int < string"),
        ("1.5 % 2", "invalid operation: float % int"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "integer divide by zero"),
        ("10 ** 400", "is too large"),
        ("(-8) ** 0.5", "is not a real number"),
        ("!1", "invalid operation: ! on int"),
        ("-'a'", "invalid operation: - on string"),
        ("1 && true", "invalid operation: && on int"),
        ("false || 'x'", "invalid operation: || on string"),
        ("1 ? 2 : 3", "condition of ?: must be a bool, not int"),
        ("'a' matches '('", "invalid regular expression"),
        ("1 contains 'a'", "invalid operation: int contains string"),
        ("'a' in 'abc'", "invalid operation: string in string"),
        ("0..10000000", "more than"),
        ("{([1]): 2}", "cannot use list as a map key"),
        ("vars[[1]]", "cannot index map with list"),
        ("vars.list[1:'a']", "slice bounds must be ints"),
        ("string(image)", "string: cannot encode object as JSON"),
    ],
)
def test_evaluation_errors_say_what_went_wrong(expression: str, message: str) -> None:
    text = error_of(expression, image=object())
    assert message in text
    assert text.startswith(f'expression "{expression}": ')


def test_attribute_error_names_the_field() -> None:
    assert '"image" has no field "Digest"' in error_of("image.Digest")


def test_failing_callable_is_named_and_chained() -> None:
    cause = LookupError("no image found for repo nginx")

    def image_from(repo_url: str) -> dict[str, str]:
        raise cause

    with pytest.raises(ExpressionError) as info:
        evaluate("imageFrom(vars.name).Tag", _env(imageFrom=image_from))
    assert str(info.value) == (
        'expression "imageFrom(vars.name).Tag": imageFrom: no image found for repo nginx'
    )
    assert info.value.__cause__ is cause


def test_callers_can_prefix_the_step() -> None:
    try:
        evaluate("foo", {})
    except ExpressionError as err:
        wrapped = ExpressionError(f"step update: {err}")
    assert str(wrapped) == 'step update: expression "foo": unknown name "foo"'


def test_render_errors() -> None:
    env = _env()
    with pytest.raises(ExpressionError, match=r"never closed with \}\} *"):
        render("stage/${{ ctx.stage", env)
    with pytest.raises(ExpressionError, match='unknown name "nope"'):
        render({"a": ["x ${{ nope }}"]}, env)
    with pytest.raises(ExpressionError, match="cannot encode NaN"):
        render("x ${{ [float('NaN')] }}", env)


# --- properties ------------------------------------------------------------

_EXPRESSION_PIECES = st.sampled_from(
    [
        "vars", "ctx", "outputs", "nil", "true", "1", "2.5", "0x1", "'s'", '"t"', "`r`",
        ".", "?.", "[", "]", "(", ")", "{", "}", ":", ",", "?", "??", "+", "-", "*", "/",
        "%", "**", "^", "!", "not", "in", "and", "or", "&&", "||", "==", "!=", "<", ">=",
        "..", "matches", "contains", "startsWith", "len", "upper", "quote", "split",
        "name", "list", "nested", "a", " ", "\\", "'", '"', "#", "|", "${{", "}}",
    ]
)  # fmt: skip
_EXPRESSION_TEXT = st.lists(_EXPRESSION_PIECES, max_size=25).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=60), _EXPRESSION_TEXT))
def test_parse_returns_a_node_or_raises_expression_error(text: str) -> None:
    try:
        node = parse(text)
    except ExpressionError:
        return
    assert isinstance(node, Node)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        _EXPRESSION_TEXT.map(lambda text: "${{ " + text + " }}"),
        st.tuples(st.text(max_size=10), _EXPRESSION_TEXT).map(lambda p: f"{p[0]}${{{{{p[1]}}}}}"),
    )
)
def test_render_raises_nothing_but_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        render({"value": [text]}, _env(len=len))


# --- imageFrom / commitFrom / chartFrom: one implementation for steps, criteria, verification ---


def _bundle() -> Any:
    from freightline.kargo.resources import Freight

    return Freight.model_validate(
        {
            "metadata": {"name": "f" * 40},
            "origin": {"kind": "Warehouse", "name": "wh"},
            "images": [
                {"repoURL": "docker.io/library/nginx", "tag": "1.2.3", "digest": "sha256:0"}
            ],
            "commits": [{"repoURL": "https://github.com/Example/App.git", "id": "abc123"}],
            "charts": [
                {"repoURL": "oci://ghcr.io/example/charts", "name": "app", "version": "4.5.6"}
            ],
        }
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('${{ imageFrom("nginx").Tag }}', "1.2.3"),
        ('${{ imageFrom("docker.io/library/nginx", warehouse("wh")).Digest }}', "sha256:0"),
        ('${{ commitFrom("https://github.com/example/app/").ID }}', "abc123"),
        ('${{ commitFrom("https://github.com/example/app", warehouse("wh")).ID }}', "abc123"),
        ('${{ chartFrom("ghcr.io/example/charts", "app").Version }}', "4.5.6"),
        ('${{ chartFrom("oci://ghcr.io/example/charts", warehouse("wh")).Version }}', "4.5.6"),
        ('${{ chartFrom("oci://ghcr.io/example/charts", "app", warehouse("wh")).Name }}', "app"),
        ('${{ imageFrom("nginx", warehouse("other")) == nil }}', True),
        ('${{ chartFrom("oci://ghcr.io/example/charts", "other") == nil }}', True),
    ],
)
def test_artifact_functions_compare_urls_in_kargos_normal_form(
    expression: str, expected: Any
) -> None:
    from freightline.kargo.freight import artifact_functions

    assert render(expression, artifact_functions(_bundle())) == expected


def test_as_yaml_and_as_json_render_a_value_as_kargo_writes_it() -> None:
    value = {"b": [1, {"y": True, "x": None}], "a": "text"}
    env = {"v": value}
    assert render_string("${{ asYAML(v) }}", env) == (
        "a: text\nb:\n    - 1\n    - x: null\n      y: true\n"
    )
    assert render_string("${{ asJSON(v) }}", env) == (
        '{\n  "a": "text",\n  "b": [\n    1,\n    {\n      "x": null,\n      "y": true\n'
        "    }\n  ]\n}\n"
    )
    assert render_string("${{ asYAML('x') }}", {}) == "x\n"
    assert render_string("${{ asJSON(42) }}", {}) == "42\n"
