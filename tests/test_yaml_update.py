"""yaml-update, as Kargo v1.11's: every example on its reference page
(``tests/reference/kargo-steps/yaml-update.md``) through the worktree runner against a real
bare repository, then Kargo's edge cases: only the changed lines change, Kargo's key paths,
and its errors.

The page's example runs unchanged but for ``gitRepo`` (a local bare repository, not
``https://github.com/example/repo.git``); a copy, commit and push follow it so that the
result can be read back.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.yaml_files import yaml_scalar
from freightline.errors import ConfigError
from freightline.kargo.keypaths import split_key
from sandbox.gitops import KARGO_DEMO, create_bare_repo
from tests.test_file_steps import CLONE_SRC_AND_OUT, outcome_of, run_steps

VALUES = """\

# the chart's values; the blank line above stays
image:
  repository: my/image
  tag: v1.0.0 # updated by Kargo
example.com/version: v1.0.0
containers:
- name: my-app
  image: my-app:v1.0
quoted: "42"
single: 'kept'
long: this line is much longer than eighty characters, and a YAML dumper would fold it onto two lines
port: 8080
nested: {a: 1}
anchor: &shared v1
alias: *shared
"""

COMMIT_SRC_TO_OUT = [
    {"uses": "copy", "config": {"inPath": "./src/charts", "outPath": "./out"}},
    {"uses": "git-commit", "as": "commit", "config": {"path": "./out", "message": "m"}},
    {"uses": "git-push", "as": "push", "config": {"path": "./out"}},
]


def seeded(tmp_path: Path, values: str | bytes = VALUES) -> Path:
    """The kargo-demo repository plus ``charts/my-chart/values.yaml``."""
    seed = tmp_path / "seed"
    shutil.copytree(KARGO_DEMO, seed)
    (seed / "charts/my-chart").mkdir(parents=True)
    file = seed / "charts/my-chart/values.yaml"
    file.write_bytes(values if isinstance(values, bytes) else values.encode())
    return create_bare_repo(tmp_path / "gitops.git", seed=seed)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return seeded(tmp_path)


def raw_file(repo: Path, branch: str, path: str) -> str:
    """The file's exact text on ``branch`` (``show_file`` strips it)."""
    return subprocess.run(
        ["git", "show", f"refs/heads/{branch}:{path}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def update(*updates: tuple[str, Any], path: str = "./src/charts/my-chart/values.yaml") -> Any:
    return {
        "uses": "yaml-update",
        "as": "update",
        "config": {"path": path, "updates": [{"key": k, "value": v} for k, v in updates]},
    }


def updated(tmp_path: Path, repo: Path, *updates: tuple[str, Any]) -> tuple[str, dict[str, Any]]:
    """The values file after ``updates``, and the step's outputs."""
    steps = [CLONE_SRC_AND_OUT, update(*updates), *COMMIT_SRC_TO_OUT]
    outcomes = run_steps(tmp_path, repo, steps, images=("my/image:v2.0.0",))
    (step,) = [o for o in outcomes if o.alias == "update"]
    return raw_file(repo, "stage/test", "my-chart/values.yaml"), step.outputs


def refusal(tmp_path: Path, repo: Path, step: dict[str, Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, step])
    return caught.value


# --- the reference page ------------------------------------------------------------------


def test_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "git-clear", "config": {"path": "./out"}},
        {
            "uses": "yaml-update",
            "as": "update",
            "config": {
                "path": "./src/charts/my-chart/values.yaml",
                "updates": [{"key": "image.tag", "value": '${{ imageFrom("my/image").Tag }}'}],
            },
        },
        *COMMIT_SRC_TO_OUT,
    ]
    outcomes = run_steps(tmp_path, repo, steps, images=("my/image:v2.0.0",))
    (step,) = [o for o in outcomes if o.alias == "update"]
    assert step.outputs == {
        "commitMessage": "Updated ./src/charts/my-chart/values.yaml\n\n- image.tag: v2.0.0"
    }
    # Kargo rewrites the value's line from the value on: the comment after it goes too.
    expected = VALUES.replace("  tag: v1.0.0 # updated by Kargo", "  tag: v2.0.0")
    assert raw_file(repo, "stage/test", "my-chart/values.yaml") == expected


@pytest.mark.parametrize(
    ("key", "line", "new_line"),
    [
        ("image.tag", "  tag: v1.0.0 # updated by Kargo", "  tag: v9"),
        (r"example\.com/version", "example.com/version: v1.0.0", "example.com/version: v9"),
        ("containers.0.image", "  image: my-app:v1.0", "  image: v9"),
    ],
    ids=["nested", "literal-dots", "sequence"],
)
def test_reference_page_key_syntax(
    tmp_path: Path, repo: Path, key: str, line: str, new_line: str
) -> None:
    text, outputs = updated(tmp_path, repo, (key, "v9"))
    assert text == VALUES.replace(line, new_line)
    assert outputs == {"commitMessage": f"Updated ./src/charts/my-chart/values.yaml\n\n- {key}: v9"}


# --- only the changed lines change ---------------------------------------------------------


def test_every_other_byte_is_kept(tmp_path: Path, repo: Path) -> None:
    # The leading blank line, the comments, "42"'s and 'kept''s quotes, the long line
    # (unfolded), the flow map, the anchor and the alias: all as they were.
    text, _ = updated(tmp_path, repo, ("port", 9090))
    assert text == VALUES.replace("port: 8080", "port: 9090")


def test_values_are_written_as_kargo_writes_them(tmp_path: Path, repo: Path) -> None:
    text, outputs = updated(
        tmp_path,
        repo,
        ("quoted", "43"),  # reads as a number: quoted
        ("single", "plain"),  # a plain string: bare (the old quotes go with the old value)
        ("port", 1.5),
        ("image.repository", "true"),  # reads as a bool: quoted
        ("containers.0.name", True),
        ("anchor", '{"a": 1}'),  # reads as JSON: quoted (the anchor goes with the old value)
    )
    expected = (
        VALUES.replace('quoted: "42"', 'quoted: "43"')
        .replace("single: 'kept'", "single: plain")
        .replace("port: 8080", "port: 1.5")
        .replace("  repository: my/image", '  repository: "true"')
        .replace("- name: my-app", "- name: true")
        .replace("anchor: &shared v1", 'anchor: "{\\"a\\": 1}"')
    )
    assert text == expected
    assert outputs["commitMessage"].splitlines()[2:] == [
        '- quoted: "43"',
        "- single: plain",
        "- port: 1.5",
        '- image.repository: "true"',
        "- containers.0.name: true",
        '- anchor: "{\\"a\\": 1}"',
    ]


def test_scalar_formatting_follows_go() -> None:
    numbers = [yaml_scalar(v) for v in (42, 1e21, 1e16, 0.00001, 2.50, False)]
    assert numbers == ["42", "1e+21", "10000000000000000", "1e-05", "2.5", "false"]
    # Go's ParseFloat, ParseBool or json.Valid would read these as something else: quoted.
    for text in ("0", "1", "t", "False", "1e3", "-2.5", ".5", "Inf", "NaN", "null", "[1]"):
        assert yaml_scalar(text) == f'"{text}"'
    assert yaml_scalar('"x"') == '"\\"x\\""'
    # ... and these not (YAML 1.1's yes/on included: Kargo checks Go's rules, not YAML's).
    for text in ("yes", "on", "v1.0", "1_000", "0x10", "a: b"):
        assert yaml_scalar(text) == text


def test_crlf_lines_and_a_missing_final_newline_become_kargos(tmp_path: Path) -> None:
    # Kargo reads the file line by line (Go's ScanLines drops "\r") and ends every line
    # with "\n": so does Freightline.
    repo = seeded(tmp_path, b"a: 1\r\nb: 2")
    text, _ = updated(tmp_path, repo, ("a", 3))
    assert text == "a: 3\nb: 2\n"


# --- key paths ---------------------------------------------------------------------------


def test_kargo_key_paths() -> None:
    assert split_key(r"a.b\.c") == ["a", "b.c"]
    assert split_key(r"foo.bar\:bat.baz") == ["foo", "bar:bat", "baz"]
    assert split_key("foo.bar.:2.baz") == ["foo", "bar", "2", "baz"]
    assert split_key("  a.b  ") == ["a", "b"]
    for bad, reason in [
        ("", "empty key"),
        (".a", "empty key part"),
        ("a.", "empty key part"),
        ("a..b", "empty key part"),
        (r"a\nb", "invalid escape sequence"),
        ("a:b", "unexpected colon"),
    ]:
        with pytest.raises(ConfigError, match=reason):
            split_key(bad)


def test_a_dotted_key_and_a_colon_hint(tmp_path: Path) -> None:
    repo = seeded(tmp_path, "a:\n  b.c: 1\nports:\n  '80': http\nlist:\n- x\n")
    text, _ = updated(tmp_path, repo, (r"a.b\.c", 2), ("ports.:80", "web"), ("list.0", "y"))
    assert text == "a:\n  b.c: 2\nports:\n  '80': web\nlist:\n- y\n"


# --- errors, as Kargo's ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("image.digest", "key path not found"),  # Kargo never adds a key
        ("image", "does not address a scalar node"),  # a map
        ("containers", "does not address a scalar node"),  # a list
        ("nested", "does not address a scalar node"),  # a flow map
        ("alias", "does not address a scalar node"),  # an alias, as Go's yaml sees it
        ("containers.1.image", "no list item 1"),
        ("containers.name", '"name" is not a list index'),
        ("image.tag.x", "key path not found"),  # inside a scalar
        (r"a\b", "invalid escape sequence"),
    ],
)
def test_a_key_kargo_cannot_update_is_an_error(
    tmp_path: Path, repo: Path, key: str, reason: str
) -> None:
    err = refusal(tmp_path, repo, update((key, "v9")))
    assert outcome_of(err) == "Errored"
    assert reason in str(err)
    assert f'error finding key "{key}"' in str(err)


def test_a_value_that_is_not_a_scalar_is_refused(tmp_path: Path, repo: Path) -> None:
    # Kargo's page: "Supports strings, numbers, and booleans" (its code would write Go's
    # debugging form of a map, `map[a:1]`, into the file).
    err = refusal(tmp_path, repo, update(("image.tag", {"a": 1})))
    assert outcome_of(err) == "Errored"
    assert "strings, numbers and bools only" in str(err)


def test_a_missing_file_is_an_error(tmp_path: Path, repo: Path) -> None:
    err = refusal(tmp_path, repo, update(("a", 1), path="./src/nope.yaml"))
    assert outcome_of(err) == "Errored"
    assert 'error reading file "./src/nope.yaml"' in str(err)
