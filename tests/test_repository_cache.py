"""The worker's repository cache (``activities/repository_cache.py``) on local bare repos:
promotions through it, concurrent leases from two processes, eviction under a tiny bound,
a corrupt mirror, a restarted worker, sparse checkouts, and no credentials on its disk."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from activities.git import Clone, git_environment
from activities.repository_cache import RepositoryCache, _flock, _upgrade
from freightline.errors import GitCommandError
from freightline.kargo.credentials import GitCredentials
from sandbox.gitops import branch_head, commit_count, create_bare_repo, git, show_file
from sandbox.workers import REPO_ROOT
from tests.test_file_steps import CLONE_SRC_AND_OUT, COMMIT_AND_PUSH, run_steps
from tests.test_git_steps import repo as repo  # the fixture: kargo-demo, sparse dirs, overlay

GIGABYTE = 1 << 30

COPY_TO_OUT = {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out/base"}}


def add_to_main(upstream: Path, path: str, text: str) -> None:
    """Someone else's commit on ``main``."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(upstream), str(work))
        (work / path).write_text(text)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", f"add {path}", cwd=work)
        git("push", "--quiet", "origin", "main", cwd=work)


def files_on(upstream: Path, branch: str) -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", f"refs/heads/{branch}", cwd=upstream).split())


def lease_count(cache: RepositoryCache) -> int:
    return len(list(cache.root.glob("*.git")))


def test_promotions_through_the_cache_push_and_reuse_one_mirror(
    tmp_path: Path,
    repo: Path,
) -> None:
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    run_steps(
        tmp_path, repo, [CLONE_SRC_AND_OUT, COPY_TO_OUT, *COMMIT_AND_PUSH], repository_cache=cache
    )
    first = branch_head(repo, "stage/test")
    mirror = cache.mirror_path(repo.as_uri())
    marker = mirror / "freightline-test-marker"
    marker.write_text("the same mirror\n")
    # Someone else moves main; the next promotion sees it (the mirror fetched what was new)
    # and its new commit lands on top of the first promotion's.
    add_to_main(repo, "base/extra.yaml", "kind: Extra\n")
    steps = [
        CLONE_SRC_AND_OUT,
        {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out/base"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps, repository_cache=cache)
    assert marker.exists(), "the mirror was made again instead of fetched into"
    assert "base/extra.yaml" in files_on(repo, "stage/test")
    assert git("rev-parse", "stage/test~1", cwd=repo) == first
    assert git("rev-parse", "refs/heads/stage/test", cwd=mirror) == first  # pushes go upstream
    assert lease_count(cache) == 1


def test_sparse_checkout_from_the_cache_has_only_its_directories(
    tmp_path: Path,
    repo: Path,
) -> None:
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [
                    {"branch": "main", "path": "./src", "sparse": ["charts/my-app"]},
                    {"branch": "stage/test", "create": True, "path": "./out"},
                ],
            },
        },
        {"uses": "copy", "config": {"inPath": "./src", "outPath": "./out/copied"}},
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, steps, repository_cache=cache)
    # Cone mode: the directory asked for, and the files at the top.
    assert files_on(repo, "stage/test") == {"copied/README.md", "copied/charts/my-app/file.txt"}


def test_tags_commits_and_other_branches_check_out_from_the_mirror(
    tmp_path: Path,
    repo: Path,
) -> None:
    git("tag", "v1", "main", cwd=repo)
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    steps = [
        {
            "uses": "git-clone",
            "as": "clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [
                    {"tag": "v1", "path": "./tagged"},
                    {"fromFreight": True, "path": "./src"},
                    {"branch": "overlay", "path": "./overlay"},
                    {"branch": "stage/test", "create": True, "path": "./out"},
                ],
            },
        },
        {
            "uses": "copy",
            "config": {"inPath": "./overlay/stages/test", "outPath": "./out/overlay"},
        },
        *COMMIT_AND_PUSH,
    ]
    outcomes = run_steps(tmp_path, repo, steps, repository_cache=cache)
    commits = next(o for o in outcomes if o.alias == "clone").outputs["commits"]
    main = branch_head(repo, "main")
    assert commits == {
        "./tagged": main,
        "./src": main,
        "./overlay": branch_head(repo, "overlay"),
        "./out": "",
    }
    assert "namePrefix: overlaid-" in show_file(repo, "stage/test", "overlay/kustomization.yaml")


def test_no_credential_reaches_the_mirror(tmp_path: Path) -> None:
    upstream = create_bare_repo(tmp_path / "private.git")
    password = "s3cr3t-t0ken"
    credentials = GitCredentials(username="robot", password=password)
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    url = upstream.as_uri()
    with (
        git_environment(credentials, allow_local=True) as env,
        cache.lease(url, env, credentials) as mirror,
    ):
        assert mirror is not None
        clone = Clone.from_mirror(
            url, mirror, tmp_path / "clone", env, (password,), allow_local=True
        )
        assert clone.run("remote", "get-url", "origin") == url  # pushes go to the real remote
    config = (mirror / "config").read_text()
    assert "remote" not in config and "robot" not in config and password not in config
    for path in cache.root.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_two_processes_share_one_mirror(tmp_path: Path) -> None:
    """Two worker processes, two threads in each, lease one mirror, clone, commit and push to
    main at once (rebasing when rejected): every commit lands, the mirror stays whole."""
    upstream = create_bare_repo(tmp_path / "gitops.git")
    script = textwrap.dedent(
        """
        import sys, threading
        from pathlib import Path
        from activities.git import Clone, git_environment
        from activities.repository_cache import RepositoryCache, _flock, _upgrade

        root, url, name, scratch = sys.argv[1:5]
        cache = RepositoryCache(Path(root), 1 << 30)
        errors = []

        def promote(thread):
            try:
                for n in range(3):
                    work = Path(scratch) / f"{name}-{thread}-{n}"
                    with git_environment(None, allow_local=True) as env:
                        with cache.lease(url, env) as mirror:
                            assert mirror is not None
                            clone = Clone.from_mirror(url, mirror, work / "repo", env, allow_local=True)
                            tree = clone.add_worktree(work / "tree", branch="main")
                            (work / "tree" / f"{name}-{thread}-{n}.txt").write_text("x")
                            tree.commit(f"{name} {thread} {n}", "t", "t@x")
                            tree.push("main")
            except BaseException as err:
                errors.append(repr(err))

        threads = [threading.Thread(target=promote, args=(t,)) for t in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        if errors:
            sys.exit("; ".join(errors))
        """
    )
    root = tmp_path / "cache"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), upstream.as_uri(), name, str(tmp_path)],
            cwd=REPO_ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    assert commit_count(upstream, "main") == 1 + 2 * 2 * 3
    assert lease_count(RepositoryCache(root, GIGABYTE)) == 1
    git("fsck", "--connectivity-only", "--no-progress", cwd=root / next(root.glob("*.git")).name)


def test_eviction_keeps_the_bound_and_never_a_mirror_in_use(tmp_path: Path) -> None:
    repos = [create_bare_repo(tmp_path / f"r{n}.git") for n in range(3)]
    cache = RepositoryCache(tmp_path / "cache", 1)  # a byte: only mirrors in use may stay
    with git_environment(None, allow_local=True) as env:
        with cache.lease(repos[0].as_uri(), env) as held:
            assert held is not None
            with cache.lease(repos[1].as_uri(), env):
                pass
            # The second lease evicted nothing it could not: the first is held.
            assert held.is_dir()
            with cache.lease(repos[2].as_uri(), env) as third:
                assert third is not None and third.is_dir()
                assert not cache.mirror_path(repos[1].as_uri()).exists()  # idle: evicted
                assert held.is_dir()
        # Nothing held now: the next lease leaves only its own mirror.
        with cache.lease(repos[1].as_uri(), env) as again:
            assert again is not None
        assert [p.name for p in cache.root.glob("*.git")] == [again.name]
    bounded = RepositoryCache(tmp_path / "cache", GIGABYTE)
    assert 0 < bounded.size() < GIGABYTE


def test_a_corrupt_mirror_is_made_again(tmp_path: Path) -> None:
    upstream = create_bare_repo(tmp_path / "gitops.git")
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    url = upstream.as_uri()
    with git_environment(None, allow_local=True) as env:
        with cache.lease(url, env) as mirror:
            assert mirror is not None
        (mirror / "refs" / "heads" / "main").write_text("0" * 40 + "\n")  # names no object
        add_to_main(upstream, "new.txt", "new\n")
        # In use by another lease, it cannot be rebuilt: the lease says so (the caller
        # clones directly), and marks it for the next.
        holder = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with cache.lease(url, env):
                holder.set()
                release.wait(30)

        # The holder's own lease finds it corrupt and rebuilds it (nobody else holds it).
        thread = threading.Thread(target=hold)
        thread.start()
        assert holder.wait(30)
        assert git("rev-parse", "main", cwd=mirror) == branch_head(upstream, "main")
        (mirror / "refs" / "heads" / "main").write_text("0" * 40 + "\n")
        with cache.lease(url, env) as unusable:
            assert unusable is None
        release.set()
        thread.join()
        meta = json.loads(next(cache.root.glob("*.json")).read_text())
        assert meta["corrupt"] is True
        with cache.lease(url, env) as rebuilt:
            assert rebuilt is not None
            assert git("rev-parse", "main", cwd=rebuilt) == branch_head(upstream, "main")


def test_a_corrupt_mirror_in_use_does_not_stop_a_promotion(
    tmp_path: Path,
    repo: Path,
) -> None:
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    steps = [CLONE_SRC_AND_OUT, COPY_TO_OUT, *COMMIT_AND_PUSH]
    run_steps(tmp_path, repo, steps, repository_cache=cache)
    mirror = cache.mirror_path(repo.as_uri())
    (mirror / "refs" / "heads" / "main").write_text("0" * 40 + "\n")
    add_to_main(repo, "base/extra.yaml", "kind: Extra\n")
    with git_environment(None, allow_local=True) as env:
        release = threading.Event()
        held = threading.Event()

        def hold() -> None:
            with cache.lease(repo.as_uri(), env):
                held.set()
                release.wait(30)

        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(30)  # (this lease rebuilt it)
        (mirror / "refs" / "heads" / "main").write_text("0" * 40 + "\n")
        try:
            run_steps(tmp_path, repo, steps, repository_cache=cache)  # a direct clone
        finally:
            release.set()
            thread.join()
    assert "base/extra.yaml" in files_on(repo, "stage/test")


def test_a_restarted_worker_reuses_its_mirrors(tmp_path: Path) -> None:
    upstream = create_bare_repo(tmp_path / "gitops.git")
    url = upstream.as_uri()
    root = tmp_path / "cache"
    with git_environment(None, allow_local=True) as env:
        with RepositoryCache(root, GIGABYTE).lease(url, env) as mirror:
            assert mirror is not None
        marker = mirror / "freightline-test-marker"
        marker.write_text("kept\n")
        # A worker killed mid-fetch leaves git's lock files behind.
        (mirror / "packed-refs.lock").write_text("")
        (mirror / "refs" / "heads" / "main.lock").write_text("")
        add_to_main(upstream, "new.txt", "new\n")
        # A new process: a new cache object (and a new credential-fingerprint key) on the disk.
        script = textwrap.dedent(
            """
            import sys
            from pathlib import Path
            from activities.git import git_environment
            from activities.repository_cache import RepositoryCache, _flock, _upgrade
            with git_environment(None, allow_local=True) as env:
                with RepositoryCache(Path(sys.argv[1]), 1 << 30).lease(sys.argv[2], env) as m:
                    print(m)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(root), url],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    assert done.stdout.strip() == str(mirror)
    assert marker.exists()
    assert git("rev-parse", "main", cwd=mirror) == branch_head(upstream, "main")
    assert not (mirror / "packed-refs.lock").exists()


def test_a_missing_repository_is_an_error_and_leaves_no_mirror(tmp_path: Path) -> None:
    cache = RepositoryCache(tmp_path / "cache", GIGABYTE)
    with (
        git_environment(None, allow_local=True) as env,
        pytest.raises(GitCommandError, match="git clone"),
        cache.lease((tmp_path / "nope.git").as_uri(), env),
    ):
        pass
    assert lease_count(cache) == 0
    assert not list(cache.root.glob("*.new"))


def test_a_refused_upgrade_keeps_the_shared_lock(tmp_path: Path) -> None:
    """Linux drops a flock before converting it: a lease whose upgrade another lease
    refused must still hold its shared lock (or an evictor could delete its mirror)."""
    path = tmp_path / "x.lock"
    with _flock(path, fcntl.LOCK_SH) as mine:
        with _flock(path, fcntl.LOCK_SH):
            assert not _upgrade(mine)
        # The other lease is gone; ours still stops an exclusive lock.
        with pytest.raises(BlockingIOError), _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB):
            pass
        assert _upgrade(mine)  # alone now: granted
