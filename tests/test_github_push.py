"""github-push, as Kargo v1.11's: the checkout's new commits replayed through GitHub's git
database API (the forge emulator's, over a real bare repository), the examples of its
reference page (``tests/reference/kargo-steps/github-push.md``) run as written after a
clone and a file change ("Clone, prepare the contents of ./out, etc..."), and a promotion
on the real Temporal dev server whose history holds no token."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from werkzeug.wrappers import Request, Response

from activities.forges import forge_for
from activities.forges.github import GitHub
from activities.github_push import MAX_REPLAYED_COMMITS, GitHubPushConfig
from activities.worktree import WorktreeActivities
from freightline.contracts.promotion import (
    PromotionPhase,
    StepOutcome,
    WorktreeBatch,
    plan_promotion,
)
from freightline.contracts.steps import parse_config
from freightline.errors import ConfigError, CredentialError
from freightline.kargo.credentials import CredentialStore
from freightline.settings import load_settings
from sandbox.forge import ForgeEmulator
from sandbox.forge._common import Account
from sandbox.forge._store import git
from tests.conftest import recorded_text
from tests.kargo_pages import assert_all_covered, example
from tests.pipelines import commit_freight, dump, single_stage_project, with_freight
from tests.test_git_steps import signing_key  # noqa: F401 - a fixture
from tests.test_pull_requests import REPO, TOKEN, ForgeRepo, _forge, credentials, start

CLONE = {
    "uses": "git-clone",
    "config": {"repoURL": "${{ vars.gitRepo }}", "checkout": [{"branch": "main", "path": "./out"}]},
}


def write(text: str, name: str = "release.txt") -> dict[str, Any]:
    return {
        "uses": "file-write",
        "config": {"path": f"./out/{name}", "contents": text, "overwrite": True},
    }


@pytest.fixture
def github(tmp_path: Path) -> Iterator[ForgeEmulator]:
    """The GitHub emulator (Enterprise-style, ``/api/v3``) with repository ``org/app``; every
    request and answer checked against GitHub's OpenAPI description."""
    emulator = ForgeEmulator("github", tmp_path / "forge", token=TOKEN)
    try:
        emulator.add_repo(REPO)
        yield emulator
        assert emulator.violations == []
    finally:
        emulator.stop()


def run(
    tmp_path: Path,
    github: ForgeEmulator,
    steps: list[dict[str, Any]],
    *,
    signing_key_file: Path | None = None,
    store: CredentialStore | None = None,
) -> list[StepOutcome]:
    """Plan ``steps`` (``vars.gitRepo``: the emulator's repository) and run them in the worktree
    activity with ``store`` (else the forge token) as the worker's credentials."""
    repo_url = github.repo_url(REPO)
    store = store or CredentialStore(credentials(tmp_path / "creds.yaml", repo_url))
    bare = github.store.repos[REPO]
    freight = commit_freight(bare, github.store.branch_head(REPO, "main") or "")
    variables = [{"name": "gitRepo", "value": repo_url}]
    resources = single_stage_project(bare, steps, variables=variables)
    plan = plan_promotion(with_freight(resources, freight), "test", freight.metadata.name, "p:x")
    batch = WorktreeBatch(plan=plan, step_indexes=tuple(range(len(plan.steps))))
    activities = WorktreeActivities(
        git_credentials=store.git,
        scratch_root=tmp_path,
        signing_key_file=signing_key_file,
        credential_store=store,
    )
    outcomes: list[StepOutcome] = ActivityEnvironment().run(activities.run_worktree_steps, batch)
    return outcomes


def outputs(outcomes: list[StepOutcome], alias: str = "push") -> dict[str, Any]:
    (outcome,) = [o for o in outcomes if o.alias == alias]
    return dict(outcome.outputs)


def page_steps(heading: str, *, change: str = "v1\n") -> list[dict[str, Any]]:
    """The page's example after a clone of main and a change to ./out; its github-push named
    ``push`` (the first example leaves it unnamed)."""
    steps = example("github-push", heading).steps
    for step in steps:
        if step["uses"] == "github-push":
            step["as"] = "push"
    return [CLONE, write(change), *steps]


def show(github: ForgeEmulator, ref: str, path: str) -> str:
    return git(github.store.repos[REPO], "show", f"{ref}:{path}")


def staging_refs(github: ForgeEmulator) -> str:
    return git(github.store.repos[REPO], "for-each-ref", "refs/kargo")


def commit_url(github: ForgeEmulator, sha: str) -> str:
    # As Kargo's GitHub provider links it: https, whatever the API's scheme.
    return f"https://{github.url.split('://', 1)[1]}/{REPO}/commit/{sha}"


EXAMPLES = ["Common usage", "For use with a pull request"]


def test_every_example_on_the_page_is_covered() -> None:
    assert_all_covered("github-push", EXAMPLES)


def test_reference_example_common_usage_and_a_retry_converges(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    before = github.store.branch_head(REPO, "main")
    outcomes = run(tmp_path, github, page_steps("Common usage"))
    head = github.store.branch_head(REPO, "main")
    assert head != before
    assert outputs(outcomes) == {
        "commit": head,
        "branch": "main",
        "commitURL": commit_url(github, head or ""),
    }
    assert show(github, "refs/heads/main", "release.txt") == "v1"
    bare = github.store.repos[REPO]
    assert (
        git(bare, "log", "-1", "--format=%s|%P", "main") == f"rendered updated manifests|{before}"
    )
    # Unsigned locally, so replayed with its author and committer kept: not verified.
    assert git(bare, "log", "-1", "--format=%an", "main") != "GitHub"
    assert head not in github.verified_commits
    assert staging_refs(github) == ""  # the staging ref is gone

    # A retried batch (an empty disk, the same change): the remote has it, nothing happens.
    again = run(tmp_path, github, page_steps("Common usage"))
    assert outputs(again)["commit"] == head
    assert github.store.branch_head(REPO, "main") == head


def test_reference_example_for_use_with_a_pull_request(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    main = github.store.branch_head(REPO, "main")
    outcomes = run(tmp_path, github, page_steps("For use with a pull request"))
    branch = "kargo/promotion/p-x"  # the promotion "p:x" (":" is no branch character)
    head = github.store.branch_head(REPO, branch)
    assert outputs(outcomes) == {
        "commit": head,
        "branch": branch,
        "commitURL": commit_url(github, head or ""),
    }
    assert git(github.store.repos[REPO], "rev-parse", f"{head}^") == main
    assert github.store.branch_head(REPO, "main") == main
    # The branch is the promotion's own (forced): a retry with another change replaces it.
    again = run(tmp_path, github, page_steps("For use with a pull request", change="v2\n"))
    replaced = github.store.branch_head(REPO, branch)
    assert outputs(again)["commit"] == replaced != head
    assert git(github.store.repos[REPO], "rev-parse", f"{replaced}^") == main
    assert show(github, f"refs/heads/{branch}", "release.txt") == "v2"


def test_commits_the_worker_signed_are_replayed_for_github_to_sign(
    tmp_path: Path,
    github: ForgeEmulator,
    signing_key: tuple[Path, str, Path],  # noqa: F811 - the fixture imported above
) -> None:
    key, _, _ = signing_key
    steps = page_steps("Common usage")
    run(tmp_path, github, steps, signing_key_file=key)
    head = github.store.branch_head(REPO, "main") or ""
    assert head in github.verified_commits
    bare = github.store.repos[REPO]
    # Attributed to the token's account; the commit's own author (not the key's owner) kept
    # as a co-author, as Kargo does.
    assert git(bare, "log", "-1", "--format=%an|%cn", head) == "freightline-bot|GitHub"
    message = git(bare, "log", "-1", "--format=%B", head)
    assert message.startswith("rendered updated manifests\n")
    assert "Co-authored-by: " in message and "signer@example.com" not in message


def test_a_github_app_pushes_and_github_signs_as_the_app(
    tmp_path: Path,
    github: ForgeEmulator,
    signing_key: tuple[Path, str, Path],  # noqa: F811 - the fixture imported above
) -> None:
    """The case github-push exists for: a GitHub App (no GPG key of its own) as the worker's
    credential, the worker's key signing locally; GitHub signs the replay as the App."""
    app_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = app_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    github.add_github_app("12345", 678, app_key.public_key())
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "app", "labels": {"kargo.akuity.io/cred-type": "git"}},
        "stringData": {
            "repoURL": github.repo_url(REPO),
            "githubAppID": "12345",
            "githubAppInstallationID": "678",
            "githubAppPrivateKey": pem,
        },
    }
    (tmp_path / "app.yaml").write_text(dump([secret]))
    store = CredentialStore(tmp_path / "app.yaml")
    outcomes = run(
        tmp_path, github, page_steps("Common usage"), signing_key_file=signing_key[0],
        store=store,
    )  # fmt: skip
    head = github.store.branch_head(REPO, "main") or ""
    assert outputs(outcomes)["commit"] == head and head in github.verified_commits
    assert git(github.store.repos[REPO], "log", "-1", "--format=%an", head) == "freightline[bot]"
    (minted,) = set(github.minted_tokens)
    assert minted not in json.dumps([o.outputs for o in outcomes])


def intercept(
    github: ForgeEmulator, handler_name: str, before: Callable[[], None], times: int = 1
) -> None:
    """Run ``before`` (another writer) ahead of the next ``times`` calls of one of the git
    database routes: what a push racing ours looks like to the forge."""
    routes = github._flavour.routes
    for index, (method, pattern, handler) in enumerate(routes):
        if getattr(handler, "__name__", "") == handler_name:
            left = [times]

            def wrapped(
                request: Request,
                account: Account,
                params: dict[str, str],
                handler: Any = handler,
                left: list[int] = left,
            ) -> Response:
                if left[0] > 0:
                    left[0] -= 1
                    before()
                response: Response = handler(request, account, params)
                return response

            routes[index] = (method, pattern, wrapped)
            return
    raise AssertionError(handler_name)


def test_a_branch_that_moved_is_refused_then_integrated(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    """Someone pushes to main between our read of it and our update: GitHub refuses the update
    (422, not a fast-forward); the next attempt rebases onto theirs and replays again."""
    theirs: list[str] = []
    intercept(
        github,
        "_update_ref",
        lambda: theirs.append(github.commit_to(REPO, "main", {"other.txt": "theirs\n"})),
    )
    outcomes = run(tmp_path, github, page_steps("Common usage"))
    head = github.store.branch_head(REPO, "main")
    assert outputs(outcomes)["commit"] == head
    bare = github.store.repos[REPO]
    assert git(bare, "rev-parse", f"{head}^") == theirs[0]
    assert show(github, "refs/heads/main", "other.txt") == "theirs"
    assert show(github, "refs/heads/main", "release.txt") == "v1"
    assert staging_refs(github) == ""


def test_a_conflicting_change_fails_and_pushes_nothing(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    theirs: list[str] = []
    intercept(
        github,
        "_update_ref",
        lambda: theirs.append(github.commit_to(REPO, "main", {"release.txt": "theirs\n"})),
    )
    with pytest.raises(ApplicationError) as caught:
        run(tmp_path, github, page_steps("Common usage"))
    assert "conflicts" in str(caught.value)
    assert github.store.branch_head(REPO, "main") == theirs[0]
    assert staging_refs(github) == ""
    assert TOKEN not in json.dumps(caught.value.details, default=str)


def test_a_read_only_token_is_refused_without_the_token(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    github.add_token(TOKEN, "reader", write=False)
    main = github.store.branch_head(REPO, "main")
    with pytest.raises(ApplicationError) as caught:
        run(tmp_path, github, page_steps("Common usage"))
    # git's own push of the staging ref is allowed to any valid token; the API's write is not.
    assert "may not" in str(caught.value) and TOKEN not in str(caught.value)
    assert github.store.branch_head(REPO, "main") == main


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            {"path": "./out", "targetBranch": "x", "generateTargetBranch": True},
            "mutually exclusive",
        ),
        ({"path": "./out", "provider": "github"}, "provider"),
        ({"path": "./out", "maxAttempts": 0}, "maxAttempts"),
        ({"path": ""}, "path"),
    ],
)
def test_config_refuses_what_kargo_refuses(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(GitHubPushConfig, config)


@pytest.fixture
def forge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ForgeRepo]:
    """The pull-request tests' GitHub, its token in the worker's credentials file."""
    yield from _forge("github", tmp_path, monkeypatch, None)


@pytest.mark.integration
async def test_a_promotion_github_pushes_and_its_history_holds_no_token(
    client: Client, task_queue: str, forge: ForgeRepo
) -> None:
    from worker import build_worker

    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": forge.repo_url,
                "checkout": [{"branch": "main", "path": "./out"}],
            },
        },
        write("${{ ctx.targetFreight.name }}\n"),
        {"uses": "git-commit", "config": {"path": "./out", "message": "Promote"}},
        {"uses": "github-push", "as": "push", "config": {"path": "./out"}},
    ]
    async with build_worker(client, load_settings(), queue=task_queue):
        handle = await start(client, forge, steps)
        result = await handle.result()
    assert result.phase is PromotionPhase.SUCCEEDED
    (push,) = [step for step in result.steps if step.uses == "github-push"]
    assert push.outputs["commit"] == forge.branch_head("main")
    assert TOKEN not in await recorded_text(handle)


# --- the emulator's git database, as GitHub answers --------------------------------------------


async def test_the_git_database_writes_real_objects(tmp_path: Path, github: ForgeEmulator) -> None:
    """Blobs, trees (over a base tree, a path in a subdirectory), commits and refs through the
    API, with the client github-push uses; every answer checked against GitHub's description."""
    repo_url = github.repo_url(REPO)
    store = CredentialStore(credentials(tmp_path / "creds.yaml", repo_url))
    client = forge_for(repo_url, "github", credentials=store)
    assert isinstance(client, GitHub)
    main = await client.ref_head("heads/main")
    assert main == github.store.branch_head(REPO, "main")
    assert await client.ref_head("heads/nope") is None
    bare = github.store.repos[REPO]
    api = f"{github.api_url}/repos/{REPO}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers) as http:
        blob = await http.post(f"{api}/git/blobs", json={"content": "aGk=", "encoding": "base64"})
        assert blob.status_code == 201
        base_tree = git(bare, "rev-parse", "main^{tree}")
        tree = await http.post(
            f"{api}/git/trees",
            json={
                "base_tree": base_tree,
                "tree": [
                    {
                        "path": "new/hi.txt",
                        "mode": "100644",
                        "type": "blob",
                        "sha": blob.json()["sha"],
                    },
                    {"path": "base/service.yaml", "mode": "100644", "type": "blob", "sha": None},
                ],
            },
        )
        assert tree.status_code == 201
    tree_sha = tree.json()["sha"]
    signed = await client.create_commit(tree=tree_sha, parents=[main or ""], message="API")
    assert signed["verification"]["verified"] is True
    kept = await client.create_commit(
        tree=tree_sha,
        parents=[main or ""],
        message="API, authored",
        author={"name": "A", "email": "a@example.com", "date": "2026-01-01T00:00:00Z"},
    )
    assert kept["verification"] == {
        "verified": False, "reason": "unsigned", "signature": None, "payload": None,
        "verified_at": None,
    }  # fmt: skip
    assert await client.update_ref("heads/main", signed["sha"], force=False)
    assert git(bare, "show", "main:new/hi.txt") == "hi"
    assert "base/service.yaml" not in git(bare, "ls-tree", "-r", "--name-only", "main")
    # Not a fast-forward: refused unless forced.
    assert not await client.update_ref("heads/main", kept["sha"], force=False)
    assert await client.update_ref("heads/main", kept["sha"], force=True)
    assert github.store.branch_head(REPO, "main") == kept["sha"]
    assert await client.create_ref("refs/heads/copy", signed["sha"])
    assert not await client.create_ref("refs/heads/copy", kept["sha"])  # exists
    await client.delete_ref("heads/copy")
    await client.delete_ref("heads/copy")  # already gone: GitHub's 422, fine
    assert github.store.branch_head(REPO, "copy") is None


async def test_a_read_only_token_may_not_write_git_objects(
    tmp_path: Path, github: ForgeEmulator
) -> None:
    reader = "reader-token-0123456789"
    github.add_token(reader, "reader", write=False)
    repo_url = github.repo_url(REPO)
    path = credentials(tmp_path / "creds.yaml", repo_url)
    path.write_text(path.read_text().replace(TOKEN, reader))
    client = forge_for(repo_url, "github", credentials=CredentialStore(path))
    assert isinstance(client, GitHub)
    main = github.store.branch_head(REPO, "main") or ""
    tree = git(github.store.repos[REPO], "rev-parse", "main^{tree}")
    with pytest.raises(CredentialError) as caught:
        await client.create_commit(tree=tree, parents=[main], message="no")
    assert reader not in str(caught.value)
    with pytest.raises(CredentialError):
        await client.update_ref("heads/main", main, force=True)


def test_a_detached_checkout_pushes_to_a_new_branch(tmp_path: Path, github: ForgeEmulator) -> None:
    """A checkout of a commit (on no branch) has no branch to compare with: the commits it
    made after what it cloned are replayed, onto that commit."""
    main = github.store.branch_head(REPO, "main")
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [{"commit": main, "path": "./out"}],
            },
        },
        write("detached\n"),
        {"uses": "git-commit", "config": {"path": "./out", "message": "one"}},
        write("detached, twice\n"),
        {"uses": "git-commit", "config": {"path": "./out", "message": "two"}},
        {"uses": "github-push", "as": "push", "config": {"path": "./out", "targetBranch": "new"}},
    ]
    outcomes = run(tmp_path, github, steps)
    head = github.store.branch_head(REPO, "new")
    assert outputs(outcomes)["commit"] == head
    bare = github.store.repos[REPO]
    assert git(bare, "log", "--format=%s", f"{main}..new").split() == ["two", "one"]
    assert git(bare, "rev-parse", "new~2") == main


def test_more_commits_than_the_cap_are_refused(tmp_path: Path, github: ForgeEmulator) -> None:
    """Kargo's guard (GITHUB_PUSH_MAX_REVISIONS, 10): a push that would replay more fails
    before GitHub is asked to write anything."""
    main = github.store.branch_head(REPO, "main")
    commits: list[dict[str, Any]] = []
    for number in range(MAX_REPLAYED_COMMITS + 1):
        commits += [
            write(f"{number}\n"),
            {"uses": "git-commit", "config": {"path": "./out", "message": f"c{number}"}},
        ]
    push = {"uses": "github-push", "config": {"path": "./out"}}
    with pytest.raises(ApplicationError) as caught:
        run(tmp_path, github, [CLONE, *commits, push])
    assert f"more than the {MAX_REPLAYED_COMMITS}" in str(caught.value)
    assert github.store.branch_head(REPO, "main") == main
    assert staging_refs(github) == ""
