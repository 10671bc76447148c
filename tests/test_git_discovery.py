"""Git subscriptions against real bare repositories (file:// URLs), through the git CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from activities import git_discovery
from activities.git import GitRunner
from activities.git_discovery import discover_commits, path_filter
from activities.repository_cache import RepositoryCache
from freightline.contracts.warehouse import DiscoveredCommit, DiscoveryError
from freightline.errors import ConfigError
from freightline.kargo.resources import APPLY_CHECKS, GitSubscription

pytestmark = pytest.mark.integration


class Upstream:
    """A bare repo and a work tree that commits, tags and pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "work"
        self.clock = 1_700_000_000
        subprocess.run(
            ["git", "init", "-q", "--bare", "--initial-branch=main", str(self.bare)], check=True
        )
        subprocess.run(["git", "init", "-q", "--initial-branch=main", str(self.work)], check=True)
        self.git("remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def git(self, *args: str) -> str:
        self.clock += 60  # every command a minute later: dates order commits and tags
        date = f"@{self.clock} +0000"
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Ada",
            "GIT_AUTHOR_EMAIL": "ada@example.com",
            "GIT_COMMITTER_NAME": "Bob",
            "GIT_COMMITTER_EMAIL": "bob@example.com",
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_DATE": date,
            "GIT_CONFIG_NOSYSTEM": "1",
        }
        out = subprocess.run(
            ["git", *args], cwd=self.work, env=env, check=True, capture_output=True, text=True
        )
        return out.stdout.strip()

    def commit(self, path: str, message: str | None = None) -> str:
        file = self.work / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"{file.read_text() if file.exists() else ''}{self.clock}\n")
        self.git("add", path)
        self.git("commit", "-q", "-m", message or f"change {path}")
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, annotated: bool = False, ref: str = "HEAD") -> None:
        if annotated:
            self.git("tag", "-a", name, "-m", f"release {name}", ref)
        else:
            self.git("tag", name, ref)

    def push(self, branch: str = "main") -> None:
        self.git("push", "-q", "--tags", "origin", f"HEAD:refs/heads/{branch}")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    yield Upstream(tmp_path)


_CACHE: list[RepositoryCache | None] = [None]


@pytest.fixture(autouse=True, params=["scratch", "cache"])
def with_or_without_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Every test twice: from a scratch repository, and from the worker's repository cache."""
    _CACHE[0] = RepositoryCache(tmp_path / "cache", 1 << 30) if request.param == "cache" else None
    yield
    _CACHE[0] = None


def discover(subscription: GitSubscription, credentials: None) -> list[DiscoveredCommit]:
    """Discovery on a worker that allows local repositories (these are bare repos on disk)."""
    return discover_commits(subscription, credentials, allow_local=True, cache=_CACHE[0])


def sub(upstream: Upstream, **fields: Any) -> GitSubscription:
    # As apply reads it: selectors, filters and constraints are checked.
    return GitSubscription.model_validate({"repoURL": upstream.url, **fields}, context=APPLY_CHECKS)


def test_newest_from_branch_default_branch_and_limit(upstream: Upstream) -> None:
    shas = [upstream.commit(f"file{i}.txt") for i in range(5)]
    upstream.push()
    commits = discover(sub(upstream, discoveryLimit=3), None)
    assert [c.id for c in commits] == shas[::-1][:3]
    assert commits[0].branch == "main"
    assert commits[0].subject == "change file4.txt"
    assert commits[0].author == "Ada <ada@example.com>"
    assert commits[0].committer == "Bob <bob@example.com>"
    assert commits[0].tag is None


def test_newest_from_branch_named_branch(upstream: Upstream) -> None:
    upstream.commit("a.txt")
    upstream.push()
    feature = upstream.commit("b.txt")
    upstream.push("feature/x")
    commits = discover(sub(upstream, branch="feature/x"), None)
    assert commits[0].id == feature
    assert commits[0].branch == "feature/x"


def test_path_filters_plain_glob_regex_and_deepening(upstream: Upstream) -> None:
    wanted = upstream.commit("src/app.py")
    upstream.commit("docs/readme.md")
    upstream.commit("src/app_test.py")
    # Many unrelated commits on top: the first shallow fetch cannot see `wanted`.
    for i in range(70):
        upstream.commit(f"other/{i}.txt")
    upstream.push()

    def ids(**fields: Any) -> list[str]:
        return [c.id for c in discover(sub(upstream, discoveryLimit=1, **fields), None)]

    assert ids(includePaths=["src/"], excludePaths=["glob:**/*_test.py"]) == [wanted]
    assert ids(includePaths=["regex:^src/app\\.py$"]) == [wanted]
    assert ids(includePaths=["regexp:^src/app\\.py$"]) == [wanted]
    assert ids(includePaths=["glob:src/*.py"], excludePaths=["regex:_test"]) == [wanted]
    # Excluding everything but docs: the docs commit is the newest that keeps a path.
    docs = discover(sub(upstream, excludePaths=["src/", "other/"], discoveryLimit=5), None)
    assert [c.subject for c in docs] == ["change docs/readme.md"]


def test_path_filter_semantics() -> None:
    keep = path_filter(["src/"], ["glob:**/*.md"])
    assert keep is not None
    assert keep(["src/a.py"])
    assert not keep(["src/a.md"])
    assert keep(["src/a.md", "src/b.py"])  # one included, not excluded path is enough
    assert not keep(["docs/a.py"])
    assert path_filter([], []) is None
    with pytest.raises(ConfigError, match="includePaths: invalid regular expression"):
        path_filter(["regex:("], [])


@pytest.mark.parametrize(
    ("selector", "path", "selected"),
    [
        # A plain selector is a base directory (Kargo's BaseDirMatcher), not a string prefix.
        ("src", "src/app.py", True),
        ("src", "src", True),
        ("src", "src2/app.py", False),
        ("src/", "srcx", False),
        ("./env/dev", "env/dev/kustomization.yaml", True),
        ("env/dev", "env/development/a.yaml", False),
        # glob: is doublestar: * and ? stay within a directory, ** crosses them.
        ("glob:*.md", "README.md", True),
        ("glob:*.md", "docs/README.md", False),
        ("glob:src/*.py", "src/a/b.py", False),
        ("glob:src/**/*.py", "src/a.py", True),
        ("glob:src/**/*.py", "src/a/b/c.py", True),
        ("glob:**/*.md", "docs/x/README.md", True),
        ("glob:docs/**", "docs/a/b", True),
        ("glob:docs/**", "docsx/a", False),
        ("glob:env/?/a", "env/x/a", True),
        ("glob:env/?/a", "env/xy/a", False),
        ("glob:*.{yaml,yml}", "a.yml", True),
        ("glob:[!a]*.txt", "b.txt", True),
        ("glob:[!a]*.txt", "a.txt", False),
        # regex: and regexp: search anywhere in the path.
        ("regex:_test\\.py$", "src/a_test.py", True),
        ("regexp:^charts/", "charts/app/Chart.yaml", True),
        ("regexp:^charts/", "x/charts/Chart.yaml", False),
    ],
)
def test_path_selectors_as_kargo(selector: str, path: str, selected: bool) -> None:
    keep = path_filter([selector], [])
    assert keep is not None
    assert keep([path]) is selected


def test_expression_filter_on_branch_commits(upstream: Upstream) -> None:
    upstream.commit("a.txt", "feat: one")
    skipped = upstream.commit("b.txt", "chore: skip me")
    wanted = upstream.commit("c.txt", "feat: two")
    upstream.push()
    found = discover(sub(upstream, expressionFilter="!(subject startsWith 'chore')"), None)
    assert wanted == found[0].id and skipped not in [c.id for c in found]
    assert len(found) == 2
    by_author = discover(
        sub(upstream, expressionFilter="author == 'Ada <ada@example.com>' && id != ''"), None
    )
    assert len(by_author) == 3
    # commitDate is a time: compared with date(), as Kargo's filter would.
    assert discover(sub(upstream, expressionFilter="commitDate > date('2100-01-01')"), None) == []
    with pytest.raises(ConfigError, match="expected a boolean"):
        discover(sub(upstream, expressionFilter="subject"), None)


def test_expression_filter_on_tags(upstream: Upstream) -> None:
    upstream.commit("a.txt")
    upstream.tag("v1.0.0", annotated=True)
    upstream.commit("b.txt")
    upstream.tag("v1.1.0")
    upstream.commit("c.txt")
    upstream.tag("v1.2.0", annotated=True)
    upstream.push()
    annotated = discover(
        sub(upstream, commitSelectionStrategy="SemVer", expressionFilter="annotation != ''"),
        None,
    )
    assert [c.tag for c in annotated] == ["v1.2.0", "v1.0.0"]
    tagger = discover(
        sub(
            upstream,
            commitSelectionStrategy="Lexical",
            expressionFilter="tagger contains 'bob@example.com' && tag != 'v1.2.0'",
        ),
        None,
    )
    assert [c.tag for c in tagger] == ["v1.0.0"]


def test_since_stops_at_older_commits(upstream: Upstream) -> None:
    upstream.commit("old.txt")  # committed at 1_700_000_000 + a few minutes
    upstream.clock += 86_400
    newer = [upstream.commit(f"new{i}.txt") for i in range(3)]
    upstream.push()
    cutoff = datetime.fromtimestamp(upstream.clock - 86_000, tz=UTC).isoformat()
    found = discover(sub(upstream, since=cutoff), None)
    assert [c.id for c in found] == newer[::-1]
    # With a filter too (the deepening loop ends at `since`, never past it).
    assert [
        c.id for c in discover(sub(upstream, since=cutoff, includePaths=["old.txt"]), None)
    ] == []


def test_bad_selectors_and_filters_are_refused_at_apply() -> None:
    for fields in (
        {"includePaths": ["glob:[a"]},
        {"excludePaths": ["regexp:("]},
        {"expressionFilter": "subject contains"},
        {"allowTagsRegexes": ["("]},
    ):
        with pytest.raises(ValidationError):
            GitSubscription.model_validate(
                {"repoURL": "https://example.com/x.git", **fields}, context=APPLY_CHECKS
            )


def test_semver_tags_with_constraint_and_limit(upstream: Upstream) -> None:
    for tag in ["v1.0.0", "v1.2.0", "v1.10.0", "v2.0.0", "v1.11.0-rc.1", "nightly", "1.3"]:
        upstream.commit(f"{tag}.txt")
        upstream.tag(tag, annotated=tag == "v1.10.0")
    upstream.push()
    commits = discover(
        sub(upstream, commitSelectionStrategy="SemVer", semverConstraint="^1.0", discoveryLimit=2),
        None,
    )
    assert [c.tag for c in commits] == ["v1.10.0", "v1.2.0"]
    # The annotated tag is peeled to its commit.
    head_of_tag = upstream.git("rev-parse", "v1.10.0^{commit}")
    assert commits[0].id == head_of_tag
    assert commits[0].subject == "change v1.10.0.txt"
    loose = discover(
        sub(upstream, commitSelectionStrategy="SemVer", strictSemvers=False, discoveryLimit=10),
        None,
    )
    assert [c.tag for c in loose] == [
        "v2.0.0",
        "v1.11.0-rc.1",
        "v1.10.0",
        "1.3",
        "v1.2.0",
        "v1.0.0",
    ]


def test_lexical_and_tag_regexes(upstream: Upstream) -> None:
    for tag in ["build-001", "build-003", "build-002", "release-9", "build-004-bad"]:
        upstream.commit(f"{tag}.txt")
        upstream.tag(tag)
    upstream.push()
    commits = discover(
        sub(
            upstream,
            commitSelectionStrategy="Lexical",
            allowTagsRegexes=["^build-"],
            ignoreTagsRegexes=["bad$"],
        ),
        None,
    )
    assert [c.tag for c in commits] == ["build-003", "build-002", "build-001"]


def test_newest_tag_by_creation_date(upstream: Upstream) -> None:
    first = upstream.commit("a.txt")
    upstream.commit("b.txt")
    upstream.tag("zeta")  # lightweight: the commit's date
    upstream.tag("alpha", annotated=True, ref=first)  # annotated later: the tagger's date
    upstream.push()
    commits = discover(sub(upstream, commitSelectionStrategy="NewestTag"), None)
    assert [c.tag for c in commits] == ["alpha", "zeta"]
    assert commits[0].id == first


def test_tag_strategy_with_path_filter(upstream: Upstream) -> None:
    upstream.commit("charts/app/values.yaml")
    upstream.tag("v1.0.0")
    upstream.commit("docs/x.md")
    upstream.tag("v1.1.0")
    upstream.push()
    commits = discover(
        sub(upstream, commitSelectionStrategy="SemVer", includePaths=["charts/"]), None
    )
    assert [c.tag for c in commits] == ["v1.0.0"]


def test_errors_are_clear(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit("a.txt")
    upstream.push()
    missing = GitSubscription.model_validate({"repoURL": (tmp_path / "nope.git").as_uri()})
    with pytest.raises(DiscoveryError, match=r"nope\.git"):
        discover(missing, None)
    with pytest.raises(DiscoveryError, match="branch 'gone' does not exist"):
        discover(sub(upstream, branch="gone"), None)
    # A bad regex or constraint never reaches discovery: the subscription refuses it (at apply).
    with pytest.raises(ValidationError, match="invalid regular expression"):
        sub(upstream, commitSelectionStrategy="Lexical", allowTagsRegexes=["("])
    with pytest.raises(ValidationError, match="invalid semver constraint"):
        sub(upstream, commitSelectionStrategy="SemVer", semverConstraint="^^1")


def test_insecure_skip_tls_verify_reaches_git(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.commit("a.txt")
    upstream.push()
    seen: list[dict[str, str]] = []

    class Recording(GitRunner):
        def __call__(self, *args: str, check: bool = True) -> str:
            seen.append(dict(self.env))
            return super().__call__(*args, check=check)

    monkeypatch.setattr(git_discovery, "GitRunner", Recording)
    discover(sub(upstream), None)
    assert seen and all("GIT_SSL_NO_VERIFY" not in env for env in seen)
    seen.clear()
    discover(sub(upstream, insecureSkipTLSVerify=True), None)
    assert seen and all(env.get("GIT_SSL_NO_VERIFY") == "1" for env in seen)
