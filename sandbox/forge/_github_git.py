"""GitHub's git database API (``/repos/{owner}/{repo}/git/...``): blobs, trees, commits and
refs, written as real objects into the emulator's bare repository (``git hash-object``,
``read-tree``/``write-tree``, ``commit-tree``, compare-and-swap ``update-ref``).

What GitHub does that matters to ``github-push``: a commit created without ``author`` and
``committer`` is attributed to the token's account and signed by GitHub, so GitHub reports it
``verification.verified``. The emulator has no GitHub key: it writes the commit unsigned and
remembers that it would have signed it (:attr:`GitData.signed`), which its answers report as
``verified: true`` with ``signature``/``payload`` null. A commit given an author keeps it and
is ``unsigned``, as on GitHub.

Refs in paths are one percent-encoded segment (``heads%2Fmain``), as Octokit sends them and
GitHub's description matches them; the emulator reads the decoded path.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.api_emulator import json_response
from sandbox.forge._common import Access, Account
from sandbox.forge._store import GitFailure, git

__all__ = ["GitData"]

_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ZERO = "0" * 40
_DOCS = "https://docs.github.com/rest/git"


def _error(status: int, message: str) -> Response:
    return json_response(
        status, {"message": message, "documentation_url": _DOCS, "status": str(status)}
    )


def _git_input(repo: Path, data: bytes, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        input=data,
        capture_output=True,
        check=False,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", **(env or {})},
        timeout=60,
    )
    if done.returncode != 0:
        raise GitFailure(f"git {' '.join(args)}: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip()


def _object_type(repo: Path, sha: str) -> str | None:
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        return None
    try:
        return git(repo, "cat-file", "-t", sha)
    except GitFailure:
        return None


def _ref_target(repo: Path, ref: str) -> str | None:
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", ref) or None
    except GitFailure:
        return None


def _utc(text: str) -> str:
    """git's strict ISO 8601 (``+00:00`` or another offset) as GitHub's UTC ``...Z``."""
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GitData:
    """The git database routes of one GitHub flavour (``flavour.route`` registers them)."""

    def __init__(self, flavour: Any) -> None:
        self.flavour = flavour
        self.signed: set[str] = set()
        """Commits created without author and committer: GitHub would have signed them."""
        flavour.route("POST", f"{_REPO}/git/blobs", self._blob)
        flavour.route("POST", f"{_REPO}/git/trees", self._tree)
        flavour.route("POST", f"{_REPO}/git/commits", self._commit)
        flavour.route("GET", rf"{_REPO}/git/ref/(?P<ref>.+)", self._get_ref)
        flavour.route("POST", f"{_REPO}/git/refs", self._create_ref)
        flavour.route("PATCH", rf"{_REPO}/git/refs/(?P<ref>.+)", self._update_ref)
        flavour.route("DELETE", rf"{_REPO}/git/refs/(?P<ref>.+)", self._delete_ref)

    # --- shared ---------------------------------------------------------------

    def _repo(self, params: dict[str, str], account: Account, access: Access) -> tuple[str, Path]:
        """The project and its bare repository, past the flavour's 404 and 403 guards."""
        project: str = self.flavour.project_for(params, account, access)
        return project, self.flavour.store.repos[project]

    def _api(self, project: str) -> str:
        return f"{self.flavour.forge.api_url}/repos/{project}"

    def ref_body(self, project: str, ref: str, sha: str) -> dict[str, Any]:
        repo = self.flavour.store.repos[project]
        kind = _object_type(repo, sha) or "commit"
        api = self._api(project)
        return {
            "ref": ref,
            "node_id": f"REF_{uuid.uuid5(uuid.NAMESPACE_URL, project + ref).hex[:16]}",
            "url": f"{api}/git/{ref}",
            "object": {"type": kind, "sha": sha, "url": f"{api}/git/{kind}s/{sha}"},
        }

    def commit_body(self, project: str, sha: str) -> dict[str, Any]:
        repo = self.flavour.store.repos[project]
        fields = git(
            repo, "log", "-1", "--format=%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI", sha
        ).split("\x00")
        tree, parents, an, ae, ad, cn, ce, cd = fields
        message = _git_input(repo, b"", "cat-file", "commit", sha).split("\n\n", 1)[1]
        api, web = self._api(project), f"{self.flavour.forge.url}/{project}"
        signed = sha in self.signed
        return {
            "sha": sha,
            "node_id": f"C_{sha[:16]}",
            "url": f"{api}/git/commits/{sha}",
            "html_url": f"{web}/commit/{sha}",
            "author": {"name": an, "email": ae, "date": _utc(ad)},
            "committer": {"name": cn, "email": ce, "date": _utc(cd)},
            "tree": {"sha": tree, "url": f"{api}/git/trees/{tree}"},
            "message": message,
            "parents": [
                {"sha": p, "url": f"{api}/git/commits/{p}", "html_url": f"{web}/commit/{p}"}
                for p in parents.split()
            ],
            "verification": {
                "verified": signed,
                "reason": "valid" if signed else "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": _utc(cd) if signed else None,
            },
        }

    # --- blobs and trees ------------------------------------------------------

    def _blob(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project, repo = self._repo(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        encoding = data.get("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            return _error(422, f"encoding must be utf-8 or base64, not {encoding}")
        content = str(data["content"])
        raw = base64.b64decode(content) if encoding == "base64" else content.encode()
        sha = _git_input(repo, raw, "hash-object", "-w", "--stdin")
        return json_response(201, {"url": f"{self._api(project)}/git/blobs/{sha}", "sha": sha})

    def _tree(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        """Entries over ``base_tree`` (or nothing) in a scratch index: a path with slashes
        lands in its subdirectory, a ``sha`` of null deletes the path, as GitHub does."""
        project, repo = self._repo(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        index = {"GIT_INDEX_FILE": str(repo / f"index-{uuid.uuid4().hex}")}
        try:
            base = data.get("base_tree")
            if base:
                if _object_type(repo, str(base)) != "tree":
                    return _error(422, "base_tree is not a valid tree oid")
                git(repo, "read-tree", str(base), env=index)
            else:
                git(repo, "read-tree", "--empty", env=index)
            for entry in data["tree"]:
                path, mode, kind = str(entry["path"]), str(entry["mode"]), str(entry["type"])
                if "content" in entry and entry.get("sha") is not None:
                    return _error(422, "tree.sha and tree.content are mutually exclusive")
                if "content" in entry:
                    text = str(entry["content"]).encode()
                    sha = _git_input(repo, text, "hash-object", "-w", "--stdin")
                elif entry.get("sha") is None:
                    # Mode 0 removes the entry (``--force-remove`` needs a work tree).
                    removal = f"0 {_ZERO}\t{path}\n".encode()
                    _git_input(repo, removal, "update-index", "--index-info", env=index)
                    continue
                else:
                    sha = str(entry["sha"])
                    if _object_type(repo, sha) != kind:
                        return _error(422, f"tree.sha {sha} is not a valid {kind}")
                if kind == "tree":
                    git(repo, "read-tree", f"--prefix={path.rstrip('/')}/", sha, env=index)
                else:
                    info = f"{mode},{sha},{path}"
                    git(repo, "update-index", "--add", "--cacheinfo", info, env=index)
            tree = git(repo, "write-tree", env=index)
        finally:
            Path(index["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        api = self._api(project)
        entries = []
        for line in git(repo, "ls-tree", "-l", tree).splitlines():
            meta, path = line.split("\t", 1)
            mode, kind, sha, size = meta.split()
            listed: dict[str, Any] = {
                "path": path,
                "mode": mode,
                "type": kind,
                "sha": sha,
                "url": f"{api}/git/{kind}s/{sha}",
            }
            if size != "-":
                listed["size"] = int(size)
            entries.append(listed)
        body = {"sha": tree, "url": f"{api}/git/trees/{tree}", "truncated": False, "tree": entries}
        return json_response(201, body)

    # --- commits --------------------------------------------------------------

    def _commit(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project, repo = self._repo(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        tree = str(data.get("tree", ""))
        if _object_type(repo, tree) != "tree":
            return _error(422, "Tree SHA does not exist")
        parents = [str(p) for p in data.get("parents") or []]
        for parent in parents:
            if _object_type(repo, parent) != "commit":
                return _error(422, "Parent SHA does not exist or is not a commit object")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        author, committer = data.get("author"), data.get("committer")
        web_flow = author is None and committer is None
        if web_flow:
            # GitHub's web-flow: the token's account authors it, GitHub commits (and signs) it.
            login = account.user
            author = {
                "name": login,
                "email": f"{sum(map(ord, login))}+{login}@users.noreply.github.com",
            }
            committer = {"name": "GitHub", "email": "noreply@github.com"}
        committer = committer or author
        env: dict[str, str] = {}
        for role, who in (("AUTHOR", author), ("COMMITTER", committer)):
            env[f"GIT_{role}_NAME"] = str(who["name"])
            env[f"GIT_{role}_EMAIL"] = str(who["email"])
            env[f"GIT_{role}_DATE"] = str(who.get("date") or now)
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        sha = _git_input(repo, str(data.get("message", "")).encode(), *args, env=env)
        if web_flow:
            self.signed.add(sha)
        body = self.commit_body(project, sha)
        return Response(
            json.dumps(body),
            status=201,
            mimetype="application/json",
            headers={"Location": body["url"]},
        )

    # --- refs -----------------------------------------------------------------

    def _get_ref(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project, repo = self._repo(params, account, "read")
        ref = f"refs/{params['ref']}"
        sha = _ref_target(repo, ref)
        if sha is None:
            return _error(404, "Not Found")
        return json_response(200, self.ref_body(project, ref, sha))

    def _create_ref(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        project, repo = self._repo(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        ref, sha = str(data["ref"]), str(data["sha"])
        if not ref.startswith("refs/") or ref.count("/") < 2:
            return _error(422, f"{ref} is not a valid ref name.")
        if _object_type(repo, sha) is None:
            return _error(422, "Object does not exist")
        try:
            git(repo, "update-ref", ref, sha, _ZERO)  # create only: an existing ref fails
        except GitFailure:
            return _error(422, "Reference already exists")
        return json_response(201, self.ref_body(project, ref, sha))

    def _update_ref(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        """Fast-forward only unless ``force``; the move is a compare-and-swap on the old
        value, so of two updates racing one loses."""
        project, repo = self._repo(params, account, "write")
        data = json.loads(request.get_data() or b"{}")
        ref, sha, force = f"refs/{params['ref']}", str(data["sha"]), bool(data.get("force"))
        old = _ref_target(repo, ref)
        if old is None:
            return _error(422, "Reference does not exist")
        if _object_type(repo, sha) != "commit":
            return _error(422, "Object does not exist")
        if not force and old != sha:
            try:
                git(repo, "merge-base", "--is-ancestor", old, sha)
            except GitFailure:
                return _error(422, "Update is not a fast forward")
        try:
            git(repo, "update-ref", ref, sha, old)
        except GitFailure:
            return _error(422, "Update is not a fast forward")
        return json_response(200, self.ref_body(project, ref, sha))

    def _delete_ref(self, request: Request, account: Account, params: dict[str, str]) -> Response:
        _, repo = self._repo(params, account, "write")
        ref = f"refs/{params['ref']}"
        old = _ref_target(repo, ref)
        if old is None:
            return _error(422, "Reference does not exist")
        git(repo, "update-ref", "-d", ref, old)
        return Response(status=204)
