"""Bad input: every document, expression, tag, branch or path gives a result or a typed
``FreightlineError``, never a crash, and nothing is written outside the work tree.

Property tests (hypothesis) over the config loader and the expression engine; hostile tag
and branch names through the real git steps and the tag selection; symlinks committed
into the repository that point out of the work tree.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ruamel.yaml import YAML
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.worktree import WorktreeActivities
from freightline import errors
from freightline.contracts.promotion import StepOutcome, WorktreeBatch, plan_promotion
from freightline.errors import ExpressionError, FreightlineError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.expressions import evaluate, render
from freightline.kargo.gitrefs import branch_problem
from freightline.kargo.selection import ImageSelectionPolicy, select_tags
from sandbox.gitops import branch_head, create_bare_repo, git
from tests.pipelines import IMAGE, freight_for, single_stage_project, with_freight

pytestmark = pytest.mark.reliability

FUZZ = settings(
    max_examples=150,
    deadline=2000,  # an input that makes the engine spin is a bug too
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# What an activity may fail with: a FreightlineError's class name (see errors.py).
TYPED_ERRORS = {
    name
    for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, FreightlineError)
}


# --- the config loader ----------------------------------------------------------------------

KINDS = [
    "Project",
    "ProjectConfig",
    "Warehouse",
    "Stage",
    "PromotionTask",
    "Freight",
    "AnalysisTemplate",
    "Secret",
    "Promotion",
    "ConfigMap",
]
API_VERSIONS = ["kargo.akuity.io/v1alpha1", "argoproj.io/v1alpha1", "v1", "nonsense/v9"]
FIELDS = [
    "metadata", "name", "namespace", "labels", "annotations", "spec", "subscriptions", "image",
    "git", "chart", "repoURL", "imageSelectionStrategy", "constraint", "semverConstraint",
    "allowTagsRegexes", "ignoreTagsRegexes", "platform", "discoveryLimit", "interval",
    "freightCreationPolicy", "freightCreationCriteria", "expression", "requestedFreight",
    "origin", "kind", "sources", "direct", "stages", "requiredSoakTime", "promotionTemplate",
    "steps", "uses", "as", "if", "config", "vars", "value", "task", "verification",
    "analysisTemplates", "args", "metrics", "provider", "prometheus", "web", "address", "query",
    "url", "jsonPath", "successCondition", "failureCondition", "count", "failureLimit",
    "promotionPolicies", "stageSelector", "autoPromotionEnabled", "stringData", "password",
    "images", "commits", "charts", "tag", "digest", "id", "version", "alias",
]  # fmt: skip

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
keys = st.sampled_from(FIELDS) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


@st.composite
def kargo_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": draw(st.sampled_from(API_VERSIONS)),
        "kind": draw(st.sampled_from(KINDS) | st.text(max_size=10)),
        "metadata": draw(
            st.fixed_dictionaries(
                {"name": st.text(max_size=20) | st.sampled_from(["p", "test", "wh"])},
                optional={"namespace": st.sampled_from(["p", "", "q"]) | st.text(max_size=8)},
            )
        ),
    }
    if draw(st.booleans()):
        document["spec"] = draw(st.dictionaries(keys, values, max_size=6))
    if draw(st.booleans()):
        del document[draw(st.sampled_from(sorted(document)))]
    return document


def dump(documents: list[Any]) -> str:
    buffer = io.StringIO()
    YAML(typ="safe").dump_all(documents, buffer)
    return buffer.getvalue()


def load_or_typed_error(text: str) -> None:
    try:
        resources = load_text(text, source="fuzz.yaml")
        group_by_project(resources)
    except FreightlineError as err:
        assert str(err).strip(), "an error says what was wrong"


@FUZZ
@given(st.lists(kargo_documents(), max_size=4))
def test_config_loader_over_kargo_shaped_documents(documents: list[dict[str, Any]]) -> None:
    load_or_typed_error(dump(documents))


YAMLISH = st.sampled_from(
    ["---\n", "kind: Stage\n", "apiVersion: kargo.akuity.io/v1alpha1\n", "metadata:\n",
     "  name: x\n", "spec:\n", "  - a\n", "&a [*a]\n", "*a\n", "? \n", ": :\n", "{", "}",
     "[", "]", "\t", '"', "'", "!!python/object:os.system\n", "!!binary |\n", "%TAG ! x\n",
     "key: &anchor\n", "<<: *anchor\n", "\x00", "\ufeff", "# c\n", "|\n", ">-\n"]
)  # fmt: skip


@FUZZ
@given(st.lists(YAMLISH | st.text(max_size=10), max_size=30).map("".join))
def test_config_loader_over_yamlish_text(text: str) -> None:
    load_or_typed_error(text)


# --- the expression engine ----------------------------------------------------------------

TOKENS = st.sampled_from(
    ["ctx", "vars", "outputs", "task", "imageFrom", "commitFrom", "len", "quote", "lower",
     "split", "toJSON", "fromJSON", "int", "float", "max", "nosuch", ".", "?.", "[", "]", "(",
     ")", "{", "}", ",", ":", "?", "??", "+", "-", "*", "/", "%", "**", "^", "==", "!=", "<",
     "<=", ">", ">=", "&&", "||", "!", "not", "and", "or", "in", "matches", "contains", "..",
     "nil", "true", "false", "0", "1", "-1", "1.5", "1e308", "9223372036854775807", "'a'",
     '"b"', "'", '"', "`", "\\", "${{", "}}", "#", "\n", " "]
)  # fmt: skip
expressions = st.lists(TOKENS | st.text(max_size=4), max_size=20).map(" ".join) | st.text(
    max_size=40
)
environments = st.dictionaries(
    st.sampled_from(["ctx", "vars", "outputs", "x"]) | st.text(max_size=5), values, max_size=4
)


@FUZZ
@given(expressions, environments)
def test_evaluate_gives_a_value_or_an_expression_error(
    expression: str, env: dict[str, Any]
) -> None:
    with contextlib.suppress(ExpressionError):
        evaluate(expression, env)


templates = st.lists(
    st.text(max_size=8) | expressions.map(lambda e: "${{ " + e + " }}"), max_size=4
).map("".join)


@FUZZ
@given(
    st.recursive(templates, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=5), inner, max_size=3), max_leaves=8),
    environments,
)  # fmt: skip
def test_render_gives_a_value_or_an_expression_error(value: Any, env: dict[str, Any]) -> None:
    with contextlib.suppress(ExpressionError):
        render(value, env)


# --- hostile tags and branches -----------------------------------------------------------


def hostile_names(sentinel: Path) -> list[str]:
    """Names a shell, git's option parser or a path join would misread."""
    return [
        "-rf",
        f"--upload-pack=touch {sentinel}",
        f"--output={sentinel}",
        f"x;touch {sentinel}",
        f"$(touch {sentinel})",
        f"`touch {sentinel}`",
        f"x|touch {sentinel}",
        "line\nbreak",
        "..",
        "../../escape",
        "a..b",
        "refs/heads/../../x",
        "@{-1}",
        "x.lock",
        "sp ace",
        "",
    ]


def run_steps(repo: Path, steps: list[dict[str, Any]], tag: str = "1.0.0") -> list[StepOutcome]:
    """The worktree activity, in this process, on a single-Stage project's steps."""
    freight = freight_for(tag)
    resources = with_freight(single_stage_project(repo, steps), freight)
    plan = plan_promotion(resources, "test", freight.metadata.name, "promotion:p:test:fuzz")
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(s.index for s in plan.steps), previous=())
    outcomes: list[StepOutcome] = ActivityEnvironment().run(
        WorktreeActivities().run_worktree_steps, batch
    )
    return outcomes


def result_or_typed_error(repo: Path, steps: list[dict[str, Any]], tag: str = "1.0.0") -> str:
    try:
        run_steps(repo, steps, tag)
    except ApplicationError as err:
        assert err.type in TYPED_ERRORS, f"{err.type}: {err.message}"
        assert err.non_retryable
        return err.message
    return "ok"


def assert_refs_sane(repo: Path) -> None:
    for ref in git("for-each-ref", "--format=%(refname)", cwd=repo).splitlines():
        git("check-ref-format", ref)
        assert ref.startswith(("refs/heads/", "refs/tags/")), ref


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Path]:
    path = Path(tempfile.gettempdir()) / f"freightline-pwned-{uuid.uuid4().hex}"
    yield path
    assert not path.exists(), "a hostile name ran a command or wrote a file"


CLONE_MAIN = {
    "uses": "git-clone",
    "config": {"repoURL": "REPO_URL", "checkout": [{"branch": "main", "path": "./src"}]},
}
EDIT = {
    "uses": "yaml-update",
    "config": {"path": "./src/base/deploy.yaml", "updates": [{"key": "spec.replicas", "value": 3}]},
}


def commit_and_push(path: str, branch: str | None = None) -> list[dict[str, Any]]:
    push: dict[str, Any] = {"path": path}
    if branch is not None:
        push["targetBranch"] = branch
    return [
        {"uses": "git-commit", "config": {"path": path, "message": "m"}},
        {"uses": "git-push", "config": push},
    ]


def test_hostile_branch_names_in_clone_and_push(gitops_repo: Path, sentinel: Path) -> None:
    main = branch_head(gitops_repo, "main")
    for name in hostile_names(sentinel):
        clone = {
            "uses": "git-clone",
            "config": {
                "repoURL": "REPO_URL",
                "checkout": [{"branch": name, "create": True, "path": "./out"}],
            },
        }
        write = {"uses": "yaml-update", "config": {"path": "./out/f.yaml", "updates": []}}
        result_or_typed_error(gitops_repo, [clone, write, *commit_and_push("./out")])
        if name:  # an empty targetBranch means "the checked-out branch", as in Kargo
            steps = [CLONE_MAIN, EDIT, *commit_and_push("./src", name)]
            result_or_typed_error(gitops_repo, steps)
        assert_refs_sane(gitops_repo)
        assert branch_head(gitops_repo, "main") == main, f"{name!r} pushed to main"


def test_an_invalid_branch_name_is_a_configuration_mistake(
    gitops_repo: Path, sentinel: Path
) -> None:
    """Refused before git runs, as ConfigError: the promotion ends Errored, not Failed."""
    invalid = [n for n in hostile_names(sentinel) if n and branch_problem(n)]
    assert len(invalid) >= 10
    write = {"uses": "yaml-update", "config": {"path": "./out/f.yaml", "updates": []}}
    for name in invalid:
        clone = {
            "uses": "git-clone",
            "config": {
                "repoURL": "REPO_URL",
                "checkout": [{"branch": name, "create": True, "path": "./out"}],
            },
        }
        for steps in (
            [clone, write, *commit_and_push("./out")],
            [CLONE_MAIN, EDIT, *commit_and_push("./src", name)],
        ):
            with pytest.raises(ApplicationError) as refused:
                run_steps(gitops_repo, steps)
            assert refused.value.type == "ConfigError", (name, refused.value.message)
            assert "is not a valid git branch name" in refused.value.message


def test_hostile_image_tags_in_set_image(gitops_repo: Path, sentinel: Path) -> None:
    for tag in hostile_names(sentinel):
        steps = [
            CLONE_MAIN,
            {
                "uses": "kustomize-set-image",
                "config": {"path": "./src/base", "images": [{"image": IMAGE, "tag": tag}]},
            },
            {"uses": "kustomize-build", "config": {"path": "./src/base", "outPath": "./out.yaml"}},
        ]
        result_or_typed_error(gitops_repo, steps)


@FUZZ
@given(
    st.lists(st.text(max_size=20) | st.sampled_from(["1.0.0", "v2.0.0", "-1", "1.0.0-rc.1+b"])),
    st.sampled_from(["SemVer", "Lexical", "Digest"]),
    st.text(max_size=12) | st.sampled_from(["", "^1", ">=1.0.0 <2", "~1.2", "1.x", "*"]),
    st.lists(st.text(max_size=6), max_size=2),
)
def test_tag_selection_over_hostile_tags(
    tags: list[str], strategy: str, constraint: str, regexes: list[str]
) -> None:
    try:
        policy = ImageSelectionPolicy.model_validate(
            {
                "imageSelectionStrategy": strategy,
                "constraint": constraint,
                "allowTagsRegexes": regexes,
            }
        )
    except ValidationError as err:  # the loader turns this into a ConfigError naming the field
        assert err.errors()
        return
    selected = select_tags(policy, tags)
    assert set(selected) <= set(tags)


# --- paths escaping through symlinks ---------------------------------------------------------


@pytest.fixture
def booby_trapped_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repo whose main holds symlinks out of the work tree; the directory they point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.yaml").write_text("owner: outside\n")
    (outside / "kustomization.yaml").write_text("resources: []\n")
    repo = create_bare_repo(tmp_path / "trapped.git")
    work = tmp_path / "work"
    git("clone", "--quiet", repo.as_uri(), str(work))
    (work / "abs").symlink_to(outside)
    (work / "up").symlink_to("../../../../../../../../" + str(outside).lstrip("/"))
    (work / "base" / "victim.yaml").symlink_to(outside / "victim.yaml")
    (work / "sneaky").mkdir()
    (work / "sneaky" / "kustomization.yaml").write_text("resources:\n- secret.yaml\n")
    (work / "sneaky" / "secret.yaml").symlink_to(outside / "victim.yaml")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "symlinks", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    return repo, outside


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def overwrite(path: str) -> dict[str, Any]:
    return {
        "uses": "yaml-update",
        "config": {"path": path, "updates": [{"key": "owner", "value": "us"}]},
    }


def build(path: str, out: str) -> dict[str, Any]:
    return {"uses": "kustomize-build", "config": {"path": path, "outPath": out}}


@pytest.mark.parametrize(
    "step",
    [
        overwrite("./src/abs/victim.yaml"),
        overwrite("./src/up/victim.yaml"),
        overwrite("./src/base/victim.yaml"),
        {"uses": "git-clear", "config": {"path": "./src/abs"}},
        {
            "uses": "kustomize-set-image",
            "config": {"path": "./src/abs", "images": [{"image": "x", "tag": "1"}]},
        },
        build("./src/abs", "./out.yaml"),
        build("./src/base", "./src/abs/out.yaml"),
        build("./src/sneaky", "./out.yaml"),
    ],
    ids=[
        "yaml-update-absolute-link",
        "yaml-update-relative-link",
        "yaml-update-linked-file",
        "git-clear-linked-dir",
        "set-image-linked-dir",
        "build-from-linked-dir",
        "build-into-linked-dir",
        "build-linked-resource",
    ],
)  # fmt: skip
def test_symlinks_out_of_the_work_tree_are_refused(
    booby_trapped_repo: tuple[Path, Path], step: dict[str, Any]
) -> None:
    repo, outside = booby_trapped_repo
    before = snapshot(outside)
    message = result_or_typed_error(repo, [CLONE_MAIN, step])
    assert message != "ok", "a step went through a symlink out of the work tree"
    assert snapshot(outside) == before
    assert sorted(os.listdir(outside)) == ["kustomization.yaml", "victim.yaml"]


def test_fuzz_settings_are_meaningful() -> None:
    assert FUZZ.max_examples >= 100 and not math.isnan(0.0)
