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
        'expression "imageFrom(vars.name).Tag": imageFrom: no image found for repo nginx at column 1'
    )
    assert info.value.__cause__ is cause


def test_callers_can_prefix_the_step() -> None:
    try:
        evaluate("foo", {})
    except ExpressionError as err:
        wrapped = ExpressionError(f"step update: {err}")
    assert str(wrapped) == 'step update: expression "foo": unknown name "foo" at column 1'


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
        "filter(", "map(", "reduce(", "sortBy(", "groupBy(", "count(", "#acc", "#index",
        "let x = ", "x", ";", "if ", " else ", "$env", "now()", "duration(", "date(",
        "semverParse(", ".IncMinor()", ".Tag", "${%", "%}", "1..3", "unsafeQuote(",
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


# --- conformance: expr-lang's language definition -----------------------------------------
# Each row is an example of expr-lang's docs/language-definition.md (v1.17, the version Kargo
# v1.11 embeds), with the value the page gives.

_USER = {"Name": "John Smith", "Age": 30}
_TWEETS = [{"Size": 100, "Content": "short"}, {"Size": 300, "Content": "x" * 300}]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # literals and operators
        ("0x2A", 42),
        ("0o52", 42),
        ("0b101010", 42),
        (".5", 0.5),
        ("`Hello\nWorld`", "Hello\nWorld"),
        ('"Hello\\nWorld"', "Hello\nWorld"),
        ('"John" in ["John", "Jane"]', True),
        ('"name" in {"name": "John", "age": 30}', True),
        ("[1, 2, 3, 4, 5][1:4]", [2, 3, 4]),
        ("[1, 2, 3, 4, 5][1:-1]", [2, 3, 4]),
        ("[1, 2, 3, 4, 5][:3]", [1, 2, 3]),
        ("[1, 2, 3, 4, 5][3:]", [4, 5]),
        ("[1, 2, 3][-1]", 3),
        ("1..3 == [1, 2, 3]", True),
        ("user?.Name", "John Smith"),
        ("nobody?.Name", None),
        ('nobody?.Name ?? "Anonymous"', "Anonymous"),
        ('user.Name | lower() | split(" ")', ["john", "smith"]),
        ("let x = 42; x * 2", 84),
        ("let x = 42;\nlet y = 2;\nx * y", 84),
        ('let name = user.Name | lower() | split(" ");\n"Hello, " + name[0] + "!"', "Hello, john!"),
        ('user.Name == $env["user"].Name', True),
        ("user.Name == user['Name']", True),
        ("'user' in $env", True),
        ('"foo" matches "^f"', True),
        ('"foobar" contains "oba"', True),
        ('"foobar" startsWith "foo"', True),
        ('"foobar" endsWith "bar"', True),
        ('"a" not in ["b"]', True),
        ("2 ** 10", 1024.0),
        ("7 % 3", 1),
        ("1 < 2 ? 'yes' : 'no'", "yes"),
        ('if user.Age > 18 { "adult" } else { "minor" }', "adult"),
        # predicates
        ("filter(0..9, {# % 2 == 0})", [0, 2, 4, 6, 8]),
        ("filter(tweets, {len(.Content) > 240})", [_TWEETS[1]]),
        ("filter(tweets, len(.Content) > 240)", [_TWEETS[1]]),
        ("all(tweets, {.Size < 280})", False),
        ("any(tweets, {.Size > 280})", True),
        ("one(tweets, {.Size > 280})", True),
        ("none(tweets, {.Size > 280})", False),
        ("map(tweets, {.Size})", [100, 300]),
        ("map([1, 2, 3], # * 2)", [2, 4, 6]),
        ("map([10, 20], #index)", [0, 1]),
        ("find([1, 2, 3, 4], # > 2)", 3),
        ("findIndex([1, 2, 3, 4], # > 2)", 2),
        ("findLast([1, 2, 3, 4], # > 2)", 4),
        ("findLastIndex([1, 2, 3, 4], # > 2)", 3),
        ("find([1, 2], # > 5)", None),
        ("groupBy([1, 2, 3, 4], # % 2)", {1: [1, 3], 0: [2, 4]}),
        ("count([1, 2, 3], # > 1)", 2),
        ("count([true, false, true])", 2),
        ("len(filter([1, 2, 3], # > 1))", 2),
        ("reduce(1..9, #acc + #)", 45),
        ("reduce(1..9, #acc + #, 0)", 45),
        ("reduce([1, 2, 3], #acc + #index, 10)", 13),
        ("sum([1, 2, 3])", 6),
        ("sum([1, 2, 3], # * 2)", 12),
        ("mean([1, 2, 3])", 2.0),
        ("median([1, 2, 3])", 2.0),
        ("sortBy(tweets, .Size, 'desc')[0].Size", 300),
        ("sortBy([3, 1, 2], #)", [1, 2, 3]),
        ("[1, 2, 3] | map(# + 1) | filter(# > 2)", [3, 4]),
        # strings
        ('trim("  Hello  ")', "Hello"),
        ('trim("__Hello__", "_")', "Hello"),
        ('trimPrefix("HelloWorld", "Hello")', "World"),
        ('trimSuffix("HelloWorld", "World")', "Hello"),
        ('upper("hello")', "HELLO"),
        ('lower("HELLO")', "hello"),
        ('split("apple,orange,grape", ",")', ["apple", "orange", "grape"]),
        ('split("apple,orange,grape", ",", 2)', ["apple", "orange,grape"]),
        ('splitAfter("apple,orange,grape", ",")', ["apple,", "orange,", "grape"]),
        ('splitAfter("apple,orange,grape", ",", 2)', ["apple,", "orange,grape"]),
        ('replace("Hello World", "World", "Universe")', "Hello Universe"),
        ('repeat("Hi", 3)', "HiHiHi"),
        ('indexOf("apple pie", "pie")', 6),
        ('lastIndexOf("apple pie apple", "apple")', 10),
        ('hasPrefix("HelloWorld", "Hello")', True),
        ('hasSuffix("HelloWorld", "World")', True),
        # numbers
        ("max(5, 7)", 7),
        ("min(5, 7)", 5),
        ("max([1, 9, 3])", 9),
        ("abs(-5)", 5),
        ("ceil(1.5)", 2.0),
        ("floor(1.5)", 1.0),
        ("round(1.5)", 2.0),
        ("round(2.5)", 3.0),
        ("round(-2.5)", -3.0),
        # arrays and maps
        ("first([1, 2, 3])", 1),
        ("last([1, 2, 3])", 3),
        ("first([])", None),
        ("take([1, 2, 3, 4], 2)", [1, 2]),
        ("sort([3, 1, 4])", [1, 3, 4]),
        ('sort([3, 1, 4], "desc")', [4, 3, 1]),
        ("reverse([1, 2, 3])", [3, 2, 1]),
        ("uniq([1, 2, 2, 3, 1])", [1, 2, 3]),
        ("concat([1, 2], [3], [])", [1, 2, 3]),
        ("flatten([1, [2, [3, [4]]]])", [1, 2, 3, 4]),
        ('join(["apple", "orange", "grape"], ",")', "apple,orange,grape"),
        ('join(["apple", "orange", "grape"])', "appleorangegrape"),
        ('keys({"name": "John", "age": 30})', ["name", "age"]),
        ('values({"name": "John", "age": 30})', ["John", 30]),
        ('toPairs({"name": "John", "age": 30})', [["name", "John"], ["age", 30]]),
        ('fromPairs([["name", "John"], ["age", 30]])', {"name": "John", "age": 30}),
        ("len([1, 2, 3])", 3),
        ('len({"name": "John", "age": 30})', 2),
        ('len("Hello")', 5),
        ("get([1, 2, 3], 1)", 2),
        ("get([1, 2, 3], 9)", None),
        ('get({"name": "John", "age": 30}, "name")', "John"),
        # conversions
        ("type(42)", "int"),
        ('type("hello")', "string"),
        ("type(1.5)", "float"),
        ("type(nil)", "nil"),
        ("type([1])", "array"),
        ("type({})", "map"),
        ('type(date("2023-08-14"))', "time.Time"),
        ('int("123")', 123),
        ('float("123.45")', 123.45),
        ("string(123)", "123"),
        ('toJSON({"name": "John", "age": 30})', '{\n  "age": 30,\n  "name": "John"\n}'),
        ('fromJSON(\'{"name": "John", "age": 30}\')', {"name": "John", "age": 30}),
        ('toBase64("Hello World")', "SGVsbG8gV29ybGQ="),
        ('fromBase64("SGVsbG8gV29ybGQ=")', "Hello World"),
        # bits
        ("bitand(0b1010, 0b1100)", 0b1000),
        ("bitor(0b1010, 0b1100)", 0b1110),
        ("bitxor(0b1010, 0b1100)", 0b110),
        ("bitnand(0b1010, 0b1100)", 0b10),
        ("bitnot(0b1010)", -0b1011),
        ("bitshl(0b101101, 2)", 0b10110100),
        ("bitshr(0b101101, 2)", 0b1011),
        ("bitushr(-0b101, 2)", 4611686018427387902),
        # dates and durations
        ('duration("1h").Seconds()', 3600.0),
        ('duration("1h30m").String()', "1h30m0s"),
        ('duration("1.5s").String()', "1.5s"),
        ('duration("100ms").Milliseconds()', 100),
        ('duration("1h") > duration("59m")', True),
        ('date("2023-08-14").Year()', 2023),
        ('date("2023-08-14T10:30:00Z").Hour()', 10),
        ('date("2023-08-14 00:00:00").Day()', 14),
        ('date("15:04:05").Minute()', 4),
        ('date("2023-08-14", "2006-01-02").Month()', 8),
        ('date("14/08/2023", "02/01/2006").Format("2006-01-02")', "2023-08-14"),
        ('date("2023-08-14 00:00:00", "2006-01-02 15:04:05", "Europe/Zurich").UTC().Hour()', 22),
        ('(date("2023-08-15") - date("2023-08-14")).Hours()', 24.0),
        ('(date("2023-08-14") + duration("36h")).Day()', 15),
        ('date("2023-08-14") < date("2023-08-15")', True),
        ("now().Year()", 2026),
        ('now().In(timezone("Europe/Zurich")).Hour()', 21),
        ('now() - duration("1h") < now()', True),
        ('now().Format("2006-01-02T15:04:05Z07:00")', "2026-12-02T20:00:00Z"),
    ],
)
def test_expr_lang_language_definition(expression: str, expected: Any) -> None:
    import datetime

    from freightline.kargo.expressions import NOW

    env = {
        "user": _USER,
        "tweets": _TWEETS,
        "nobody": None,
        NOW: datetime.datetime(2026, 12, 2, 20, 0, tzinfo=datetime.UTC),
    }
    assert evaluate(expression, env) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("# > 1", "can only be used inside a predicate"),
        ("filter([1, 2], # + 1)", "the predicate must give a bool"),
        ("map(1, # + 1)", "first argument must be an array"),
        ("let = 1; 2", "expected a variable name after let"),
        ("let x = 1 x", 'unexpected token "x" at column 11'),
        ("1 | 2", "expected a function name after |"),
        ("reduce([], #acc + #)", "reduce of an empty array needs an initial value"),
        ('repeat("x", 10000000)', "longer than 1000000 characters"),
        ("map(1..1000000, map(1..1000000, #))", "more than 1000000 evaluation steps"),
        ("now()", "now() is not available here"),
        ('duration("5 minutes")', "invalid duration"),
        ('date("yesterday")', 'cannot parse "yesterday" as a date'),
        ('secret("slack").token', "secret() is only available in the config of a step"),
        ('sharedSecret("slack").token', "sharedSecret() is only available in the config"),
        ('configMap("settings").repoURL', "configMap() is not available here"),
        ('sharedConfigMap("settings").repoURL', "no shared resources namespace"),
        ("if 1 { 2 } else { 3 }", "condition of ?: must be a bool"),
        ('"ab" matches "(?<=a)b"', "invalid regular expression"),
    ],
)
def test_expr_lang_errors_name_the_expression(expression: str, message: str) -> None:
    text = error_of(expression)
    assert message in text
    assert text.startswith(f'expression "{expression}"')


def test_matches_is_re2_like_go() -> None:
    # A backtracking engine takes minutes on this; Go's engine (RE2), and ours, do not.
    assert evaluate('repeat("a", 5000) + "!" matches "(a+)+$"', {}) is False
    assert evaluate(r'"v1.2.3" matches `^v[0-9]+\.[0-9]+`', {}) is True


def test_hostile_expressions_stop_within_the_budget() -> None:
    # Each would take minutes or gigabytes unbounded; each fails with a message instead.
    for expression in [
        "reduce(1..1000000, #acc + [#], [])",
        'reduce(1..100, #acc + #acc, "xx")',
        "len(flatten(map(1..2000, 1..1000)))",
        "sortBy(1..1000000, -#)[0]",
    ]:
        with pytest.raises(ExpressionError, match=r"steps|longer than|more than"):
            evaluate(expression, {})


# --- conformance: Kargo's expressions reference ----------------------------------------------
# The examples of Kargo v1.11's docs/.../40-expressions.md and pkg/expressions' typing rules.


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('${{ "Hello, world!" }}', "Hello, world!"),
        ("${{ 40 + 2 }}", 42),
        ("${{ quote(40 + 2) }}", "42"),
        ('${{ quote("string") }}', "string"),
        ("${{ unsafeQuote(40 + 2) }}", "42"),
        ('${{ unsafeQuote("string") }}', '"string"'),
        ('${% {"labels": {"app": "nginx"}} %}', {"labels": {"app": "nginx"}}),
        ('${{ {"labels": {"app": "nginx"}} }}', {"labels": {"app": "nginx"}}),
        # a rendered "true", "42", "null" is typed as Kargo types it
        ('${{ "true" }}', True),
        ('${{ "False" }}', False),
        ('${{ "42" }}', 42),
        ('${{ "1.5" }}', 1.5),
        ('${{ "null" }}', None),
        ('${{ "[1, 2]" }}', [1, 2]),
        ("${{ true }}", True),
        ("${{ nil }}", None),
        ("${{ 1 }}.${{ 5 }}", 1.5),
        ("v${{ 1 }}", "v1"),
        ('${{ "1.29.1" }}', "1.29.1"),
        ('${{ quote("true") }}', "true"),
        ('${{ "line" }}\n', "line\n"),
        ('${{ quote("a\\"b") }}', 'a\\"b'),
        ("${{ semverParse('1.2.3').IncMinor().String() }}", "1.3.0"),
        ("${{ semverParse('v1.2.3-rc.1+build').Prerelease() }}", "rc.1"),
        ("${{ semverParse('1.2.3-rc.1').IncPatch().String() }}", "1.2.3"),
        ("${{ semverParse('1.2').Patch() }}", 0),
        ("${{ semverParse('1.2.3').IncMajor().String() }}", "2.0.0"),
        ("${{ semverDiff('1.2.3', '2.0.0') }}", "Major"),
        ("${{ semverDiff('1.2.3', '1.3.0') }}", "Minor"),
        ("${{ semverDiff('1.2.3', '1.2.4') }}", "Patch"),
        ("${{ semverDiff('1.2.3+a', '1.2.3+b') }}", "Metadata"),
        ("${{ semverDiff('1.2.3', 'v1.2.3') }}", "None"),
        ("${{ semverDiff('1.2.3', 'latest') }}", "Incomparable"),
        ("${{ asJSON({'a': 1}) }}", '{\n  "a": 1\n}\n'),
    ],
)
def test_kargo_expressions_reference(template: str, expected: Any) -> None:
    value = render(template, {})
    assert value == expected and type(value) is type(expected)


def test_kargo_artifact_functions_use_kargo_field_names() -> None:
    from freightline.kargo.freight import artifact_functions
    from freightline.kargo.resources import (
        ArtifactReference,
        Chart,
        Freight,
        FreightOrigin,
        GitCommit,
        Image,
    )

    def freight(name: str, warehouse: str, **artifacts: Any) -> Freight:
        return Freight(
            metadata={"name": name, "namespace": "p"},
            origin=FreightOrigin(kind="Warehouse", name=warehouse),
            **artifacts,
        )

    front = freight(
        "f1",
        "front",
        images=[Image(repo_url="ghcr.io/example/app", tag="1.2.3", digest="sha256:1")],
        commits=[
            GitCommit(repo_url="https://github.com/example/app.git", id="abc", message="Fix it")
        ],
        charts=[Chart(repo_url="oci://example.com/charts/app", version="0.1.0")],
        artifacts=[ArtifactReference(subscription_name="bin", version="v9")],
    )
    back = freight(
        "f2",
        "back",
        images=[Image(repo_url="ghcr.io/example/app", tag="2.0.0", digest="sha256:2")],
    )
    env = artifact_functions([front, back])
    url = "https://github.com/example/app.git"
    assert evaluate(f"commitFrom('{url}').Subject", env) == "Fix it"
    assert evaluate(f"commitFrom('{url}').Message", env) == "Fix it"
    assert evaluate(f"commitFrom('{url}').ID", env) == "abc"
    # Two origins have the image: Kargo asks for the origin rather than pick one.
    with pytest.raises(ExpressionError, match=r"could provide .* \(back, front\): name the origin"):
        evaluate("imageFrom('ghcr.io/example/app').Tag", env)
    assert evaluate("imageFrom('ghcr.io/example/app', warehouse('back')).Tag", env) == "2.0.0"
    assert evaluate("imageFrom('ghcr.io/example/app', warehouse('front')).Tag", env) == "1.2.3"
    assert evaluate("imageFrom('ghcr.io/example/app', warehouse('none'))", env) is None
    assert evaluate("imageFrom('ghcr.io/example/other')?.Tag ?? 'none'", env) == "none"
    assert evaluate("chartFrom('oci://example.com/charts/app').Version", env) == "0.1.0"
    assert evaluate("artifactFrom('bin').Version", env) == "v9"
    assert evaluate("warehouse('back').Name", env) == "back"
    with pytest.raises(ExpressionError, match='has no field "Messages"'):
        evaluate(f"commitFrom('{url}').Messages", env)
    with pytest.raises(ExpressionError, match="must come from warehouse"):
        evaluate("imageFrom('ghcr.io/example/app', 'back')", env)
    # Rendered whole, an artifact is its JSON form, with Kargo's json field names.
    assert render("${{ imageFrom('ghcr.io/example/app', warehouse('front')) }}", env) == {
        "repoURL": "ghcr.io/example/app",
        "tag": "1.2.3",
        "digest": "sha256:1",
        "annotations": {},
    }


def test_check_template_parses_without_evaluating() -> None:
    from freightline.kargo.expressions import check_condition, check_template

    check_template({"a": ["${{ nobody.knows() }}", "plain"], "b": "x-${% {'a': 1} %}"})
    check_condition("success() && status('x') == 'Succeeded'")
    check_condition("${{ always() }}")
    check_condition("  ")
    with pytest.raises(ExpressionError, match="unexpected end of expression"):
        check_template({"a": ["${{ 1 + }}"]})
    with pytest.raises(ExpressionError, match="never closed"):
        check_condition("${{ true")


# --- the promotion scope: if, status(), ctx, now() -----------------------------------------


def test_step_scope_follows_kargo(tmp_path: Any) -> None:
    import datetime

    from freightline.contracts.promotion import (
        StepOutcome,
        StepScope,
        StepStatus,
        plan_promotion,
    )
    from freightline.kargo.config import group_by_project, load_text
    from tests.pipelines import dump, freight_for, with_freight

    steps = [
        {"uses": "compose-output", "as": "first", "config": {}},
        {"task": {"name": "t"}, "as": "task"},
        {"uses": "compose-output", "as": "last", "if": "${{ 'false' }}", "config": {}},
        {"uses": "compose-output", "as": "odd", "if": "${{ 'yes' }}", "config": {}},
        {"uses": "compose-output", "as": "bare", "if": "status('first') == 'Succeeded'"},
    ]
    task = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "PromotionTask",
        "metadata": {"name": "t", "namespace": "p"},
        "spec": {
            "steps": [
                {"uses": "compose-output", "as": "first", "config": {}},
                {
                    "uses": "compose-output",
                    "as": "second",
                    "if": "${{ status('first') == 'Errored' }}",
                    "config": {
                        "now": "${{ now().Format('2006-01-02') }}",
                        "repo": "${{ configMap('settings').repoURL }}",
                        "missing": "${{ configMap('nothing') }}",
                    },
                },
            ]
        },
    }
    stage = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "test", "namespace": "p"},
        "spec": {
            "requestedFreight": [
                {"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": True}}
            ],
            "promotionTemplate": {"spec": {"steps": steps}},
        },
    }
    warehouse = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Warehouse",
        "metadata": {"name": "w", "namespace": "p"},
        "spec": {"subscriptions": [{"image": {"repoURL": "nginx"}}]},
    }
    project = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "p"},
    }
    config_maps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "p"},
            "data": {"repoURL": f"https://example.com/{name}.git"},
        }
        for name in ("settings", "unused")
    ]
    text = dump([project, warehouse, task, stage, *config_maps])
    (resources,) = group_by_project(load_text(text, source="test")).values()
    freight = freight_for("1.0.0", warehouse="w")
    resources = with_freight(resources, freight)
    planned_at = datetime.datetime(2026, 12, 2, 21, 0, tzinfo=datetime.UTC)
    plan = plan_promotion(
        resources,
        "test",
        freight.metadata.name,
        "promotion:p:test:x",
        planned_at=planned_at,
        actor="auto-rollback",
        ui_base_url="http://ui",
    )
    by_alias = {step.alias: step for step in plan.steps}
    scope = StepScope(
        plan,
        [
            StepOutcome(alias="first", uses="compose-output", status=StepStatus.SUCCEEDED),
            StepOutcome(alias="task::first", uses="compose-output", status=StepStatus.ERRORED),
        ],
    )
    second = by_alias["task::second"]
    # status() inside a task names the task's own steps; outside, the top-level ones.
    assert scope.should_run(second) is True
    assert scope.should_run(by_alias["bare"]) is True
    # if: is typed as Kargo types templates: "false" is false; a non-bool is an error.
    assert scope.should_run(by_alias["last"]) is False
    with pytest.raises(ExpressionError, match="must evaluate to a bool"):
        scope.should_run(by_alias["odd"])
    # now() is the plan's time: the same wherever and whenever the scope is rebuilt.
    assert scope.render_config(second) == {
        "now": "2026-12-02",
        "repo": "https://example.com/settings.git",
        "missing": {},
    }
    # The plan (in the promotion's history) carries only the ConfigMaps the steps name.
    assert set(plan.config_maps) == {"settings"}
    ctx = scope.env(second)["ctx"]
    assert ctx["uiBaseUrl"] == "http://ui"
    assert ctx["meta"] == {
        "promotion": {"actor": "auto-rollback", "rollback": True},
        "step": {"alias": "task::second"},
    }


def test_apply_refuses_bad_expressions_constraints_and_json_paths() -> None:
    from freightline.kargo.config import load_text

    text = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: w, namespace: p}
spec:
  subscriptions:
  - image: {repoURL: nginx, constraint: '^^1', strictSemvers: 'yes'}
  - git: {repoURL: 'https://github.com/example/repo.git', semverConstraint: '>= banana'}
  freightCreationCriteria:
    expression: commitFrom('https://github.com/example/repo.git').Subject ==
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: s, namespace: p}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: w}
    sources: {direct: true}
  verification:
    analysisTemplates: [{name: a}]
    args:
    - {name: tag, value: '${{ imageFrom("nginx").Tag | }}'}
  promotionTemplate:
    spec:
      vars:
      - {name: v, value: '${{ ctx.stage + }}'}
      steps:
      - uses: compose-output
        if: ${{ success( }}
        config:
          x: '${{ [1, 2 }}'
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: a, namespace: p}
spec:
  metrics:
  - name: m
    provider:
      web: {url: 'http://example.com', jsonPath: '$.data.value'}
"""
    with pytest.raises(FreightlineError) as info:
        load_text(text, source="kargo.yaml")
    message = str(info.value)
    for expected in [
        'kargo.yaml:6: document 1 (Warehouse "w"): spec.subscriptions[0].image.strictSemvers',
        "spec.subscriptions[0].image.constraint: invalid semver constraint '^^1'",
        "spec.subscriptions[1].git.semverConstraint: invalid semver constraint",
        "spec.freightCreationCriteria.expression: expression",
        'document 2 (Stage "s"): spec.promotionTemplate.spec.vars[0].value: expression',
        "spec.verification.args[0].value: expression",
        'spec.promotionTemplate.spec.steps[0].if: expression "success("',
        'spec.promotionTemplate.spec.steps[0].config: expression "[1, 2"',
        'document 3 (AnalysisTemplate "a"): spec.metrics[0].provider.web.jsonPath: jsonPath '
        "'$.data.value' must be in braces",
    ]:
        assert expected in message, message


def test_evaluation_errors_name_the_position() -> None:
    assert error_of('vars.n + "x"').endswith("invalid operation: int + string at column 8")
    assert error_of("vars.nested.a.b.c.d").endswith('has no field "c" at column 16')
    assert error_of("map([1], # + 'a')").endswith("at column 12")
    assert "at line 2, column 13" in error_of("[\n  vars.name * 2]")


def test_verification_args_see_kargo_functions_and_the_workflow_clock() -> None:
    import datetime

    from freightline.contracts.verification import verification_request
    from freightline.kargo.config import group_by_project, load_text
    from tests.pipelines import dump, freight_for

    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "w", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": "nginx"}}]},
        },
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "a", "namespace": "p"},
            "spec": {
                "args": [{"name": "day"}, {"name": "tag"}],
                "metrics": [
                    {
                        "name": "m",
                        "successCondition": "result == 1",
                        "provider": {
                            "web": {
                                "url": "http://127.0.0.1:9/{{args.day}}/{{args.tag}}",
                                "jsonPath": "{$.v}",
                            }
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "s", "namespace": "p"},
            "spec": {
                "requestedFreight": [
                    {"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": True}}
                ],
                "verification": {
                    "analysisTemplates": [{"name": "a"}],
                    "args": [
                        {"name": "day", "value": "${{ now().Format('2006-01-02') }}"},
                        {"name": "tag", "value": "${{ imageFrom('nginx').Tag | upper() }}"},
                    ],
                },
            },
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    now = datetime.datetime(2026, 12, 2, 21, 0, tzinfo=datetime.UTC)
    request = verification_request(
        "p",
        resources.stages["s"],
        freight_for("v1.0.0", image="nginx", warehouse="w"),
        resources.analysis_templates,
        now=now,
    )
    assert request is not None
    web = request.metrics[0].provider.web
    assert web is not None and web.url == "http://127.0.0.1:9/2026-12-02/V1.0.0"


def test_kargo_reference_promotion_example() -> None:
    # The promotion template of Kargo's expressions reference ("Pre-Defined Variables"),
    # and its semverDiff example, rendered step by step.
    from freightline.contracts.promotion import StepOutcome, StepScope, StepStatus, plan_promotion
    from freightline.kargo.config import group_by_project, load_text
    from tests.pipelines import dump, freight_for, with_freight

    template = {
        "vars": [
            {"name": "gitRepo", "value": "https://github.com/example/repo.git"},
            {"name": "srcPath", "value": "./src"},
            {"name": "outPath", "value": "./out"},
            {"name": "targetBranch", "value": "stage/${{ ctx.stage }}"},
            {"name": "imageRepo", "value": "public.ecr.aws/nginx/nginx"},
        ],
        "steps": [
            {
                "uses": "kustomize-set-image",
                "as": "update-image",
                "config": {
                    "path": "${{ vars.srcPath }}/base",
                    "images": [{"image": "public.ecr.aws/nginx/nginx"}],
                },
            },
            {
                "uses": "git-commit",
                "as": "commit",
                "config": {
                    "path": "${{ vars.outPath }}",
                    "message": "${{ outputs['update-image'].commitMessage }}",
                },
            },
            {
                "uses": "git-push",
                "as": "direct-push",
                "if": "${{ semverDiff(imageFrom(vars.imageRepo).Tag, "
                "outputs['update-image'].currentVersion) != 'Major' }}",
                "config": {
                    "path": "${{ vars.outPath }}",
                    "targetBranch": "${{ vars.targetBranch }}",
                    "message": "${{ semverDiff(imageFrom(vars.imageRepo).Tag, "
                    "outputs['update-image'].currentVersion) }} update of ${{ vars.imageRepo }}",
                },
            },
            {
                "uses": "argocd-update",
                "config": {
                    "apps": [
                        {
                            "name": "example-${{ ctx.stage }}",
                            "sources": [
                                {
                                    "repoURL": "${{ vars.gitRepo }}",
                                    "desiredRevision": "${{ outputs.commit.commit }}",
                                }
                            ],
                        }
                    ]
                },
            },
        ],
    }
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "w", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": "public.ecr.aws/nginx/nginx"}}]},
        },
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "uat", "namespace": "p"},
            "spec": {
                "requestedFreight": [
                    {"origin": {"kind": "Warehouse", "name": "w"}, "sources": {"direct": True}}
                ],
                "promotionTemplate": {"spec": template},
            },
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents), source="test")).values()
    freight = freight_for("1.29.1", warehouse="w")
    plan = plan_promotion(with_freight(resources, freight), "uat", freight.metadata.name, "p1")
    steps = {step.alias: step for step in plan.steps}
    scope = StepScope(
        plan,
        [
            StepOutcome(
                alias="update-image",
                uses="kustomize-set-image",
                status=StepStatus.SUCCEEDED,
                outputs={"commitMessage": "Updated nginx to 1.29.1", "currentVersion": "1.28.0"},
            ),
            StepOutcome(
                alias="commit",
                uses="git-commit",
                status=StepStatus.SUCCEEDED,
                outputs={"commit": "3f2c1a9e"},
            ),
        ],
    )
    assert scope.render_config(steps["update-image"])["path"] == "./src/base"
    assert scope.render_config(steps["commit"]) == {
        "path": "./out",
        "message": "Updated nginx to 1.29.1",
    }
    assert scope.should_run(steps["direct-push"]) is True
    assert scope.render_config(steps["direct-push"]) == {
        "path": "./out",
        "targetBranch": "stage/uat",
        "message": "Minor update of public.ecr.aws/nginx/nginx",
    }
    assert scope.render_config(steps["step-3"])["apps"] == [
        {
            "name": "example-uat",
            "sources": [
                {"repoURL": "https://github.com/example/repo.git", "desiredRevision": "3f2c1a9e"}
            ],
        }
    ]


def test_render_text_keeps_what_only_looks_like_a_number() -> None:
    from freightline.kargo.expressions import render_text

    assert render("${{ '1.10' }}", {}) == 1.1  # typed, as Kargo types step config
    assert render_text("${{ '1.10' }}", {}) == "1.10"
    assert render_text("${{ 3 }}-${{ true }}", {}) == "3-true"
    assert render_text("${{ quote('x') }}", {}) == "x"
    assert render_text("plain", {}) == "plain"


def test_config_maps_are_applied_updated_and_deleted_like_other_kinds() -> None:
    from freightline.contracts.project import merge_resources, remove_resource
    from freightline.kargo.config import group_by_project, load_text
    from freightline.kargo.resources import ProjectResources
    from tests.pipelines import dump

    def resources(value: str) -> ProjectResources:
        document = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "p"},
            "data": {"repoURL": value},
        }
        (group,) = group_by_project(load_text(dump([document]), source="cm.yaml")).values()
        return group

    merged, result = merge_resources(ProjectResources(name="p"), resources("a"))
    assert result.created == ("ConfigMap/settings",)
    merged, result = merge_resources(merged, resources("b"))
    assert result.updated == ("ConfigMap/settings",)
    assert merged.config_maps["settings"].data == {"repoURL": "b"}
    assert remove_resource(merged, "ConfigMap", "settings").config_maps == {}
