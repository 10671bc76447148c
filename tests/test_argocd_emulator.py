"""The Argo CD API emulator against real bare git repositories and real ``kubectl kustomize``.

Every JSON body is validated against Argo CD's swagger (``v1alpha1Application``,
``v1alpha1ApplicationList``, ``runtimeError``), strictly: no field the swagger does not define.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from sandbox.argocd import ArgoCDEmulator, EmulatorConfigError, Timing, load_apps_file
from sandbox.argocd._patch import PatchError, json_patch, merge_patch
from sandbox.argocd._selector import SelectorError, matches, parse_selector
from sandbox.gitops import KARGO_DEMO, KARGO_QUICKSTART

SWAGGER = Path(__file__).resolve().parent / "reference" / "argocd-swagger.json"
DEMO_REPO = KARGO_DEMO
APPSET = KARGO_QUICKSTART / "argocd-applicationset.yaml"
TOKEN = "test-token"
IMAGE = "public.ecr.aws/nginx/nginx"

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("kubectl") is None,
    reason="needs git and kubectl on PATH",
)


# --- schema validation ------------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """The swagger with additionalProperties: false on every object that lists its properties."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


_DEFINITIONS = _strict(json.loads(SWAGGER.read_text())["definitions"])


def validate(body: Any, definition: str) -> None:
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _DEFINITIONS}
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)


# --- a real GitOps repository -----------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(cwd),
            "PATH": "/usr/bin:/bin:/usr/local/bin",
        },
    )
    return done.stdout.strip()


@dataclass
class GitOpsRepo:
    """A bare origin plus a working clone, seeded from the kargo-demo fixture."""

    origin: Path
    work: Path

    @property
    def url(self) -> str:
        return self.origin.as_uri()

    def head(self, branch: str) -> str:
        return git(self.origin, "rev-parse", f"refs/heads/{branch}")

    def set_image_tag(self, tag: str) -> None:
        kustomization = self.work / "base" / "kustomization.yaml"
        text = kustomization.read_text().split("\nimages:")[0].rstrip("\n")
        kustomization.write_text(f"{text}\nimages:\n- name: {IMAGE}\n  newTag: {tag}\n")

    def commit_main(self, message: str) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "main")
        return self.head("main")

    def render_stage(self, stage: str, tag: str, annotations: dict[str, str] | None = None) -> str:
        """Commit the rendered stage (as Kargo's kustomize-build does) to stage/<stage>."""
        git(self.work, "checkout", "-q", "main")
        self.set_image_tag(tag)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", f"set {tag}")
        git(self.work, "push", "-q", "origin", "main")
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(self.work / "stages" / stage)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        if annotations:
            lines = "".join(f"    {k}: {v}\n" for k, v in annotations.items())
            rendered = rendered.replace(
                "kind: Deployment\nmetadata:\n",
                f"kind: Deployment\nmetadata:\n  annotations:\n{lines}",
            )
        branch = f"stage/{stage}"
        existing = git(self.work, "ls-remote", "--heads", "origin", branch)
        if existing:
            git(self.work, "checkout", "-q", branch)
            git(self.work, "pull", "-q", "origin", branch)
        else:
            git(self.work, "checkout", "-q", "--orphan", branch)
        for path in self.work.iterdir():
            if path.name != ".git":
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        (self.work / "manifests.yaml").write_text(rendered)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", f"render {stage} at {tag}")
        git(self.work, "push", "-q", "origin", branch)
        git(self.work, "checkout", "-q", "-f", "main")
        return self.head(branch)


@pytest.fixture
def repo(tmp_path: Path) -> GitOpsRepo:
    origin = tmp_path / "origin.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    shutil.copytree(DEMO_REPO, work)
    git(work, "init", "-q", "-b", "main")
    git(work, "remote", "add", "origin", str(origin))
    gitops = GitOpsRepo(origin, work)
    gitops.set_image_tag("1.29.0")
    gitops.commit_main("kargo-demo")
    for stage in ("test", "uat", "prod"):
        gitops.render_stage(stage, "1.29.0")
    return gitops


def application(
    name: str, repo_url: str, revision: str, path: str = ".", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "argocd", "labels": labels or {}},
        "spec": {
            "project": "default",
            "source": {"repoURL": repo_url, "targetRevision": revision, "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


FAST = Timing(sync_duration=0.2, progressing_duration=0.4, reconcile_interval=0, tick=0.02)


@pytest.fixture
def emulator(repo: GitOpsRepo) -> Iterator[ArgoCDEmulator]:
    apps = [
        {
            "apiVersion": "emulator.freightline.dev/v1alpha1",
            "kind": "EmulatorConfig",
            "spec": {"errorRatioByTag": {"1.29.9": 0.5}, "requestsPerSecond": 200},
        },
        *(
            application(
                f"kargo-demo-{s}", repo.url, f"stage/{s}", labels={"stage": s, "demo": "yes"}
            )
            for s in ("test", "uat")
        ),
        application(
            "kargo-demo-kustomize", repo.url, "main", "stages/prod", labels={"stage": "prod"}
        ),
    ]
    with ArgoCDEmulator(apps, TOKEN, timing=FAST) as emu:
        yield emu


@pytest.fixture
def client(emulator: ArgoCDEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=30) as c:
        yield c


def wait_for(
    probe: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    """Poll ``probe`` until ``done`` holds; return the last observation."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not met within {timeout}s; last: {json.dumps(value)[:2000]}"
            )
        time.sleep(0.02)


def get_app(client: httpx.Client, name: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/applications/{name}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    validate(body, "v1alpha1Application")
    return body


def sync(client: httpx.Client, name: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/applications/{name}/sync", json={"name": name, **body})


def error_of(response: httpx.Response, status: int, code: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    validate(body, "runtimeError")
    assert body["code"] == code and body["error"] == body["message"]
    return str(body["message"])


# --- auth and lookup --------------------------------------------------------------------------


def test_requests_without_or_with_a_wrong_token_are_unauthenticated(
    emulator: ArgoCDEmulator,
) -> None:
    with httpx.Client(base_url=emulator.base_url) as anonymous:
        response = anonymous.get("/api/v1/applications/kargo-demo-test")
        assert error_of(response, 401, 16) == "no session information"
        response = anonymous.get("/api/v1/applications", headers={"Authorization": "Bearer nope"})
        assert error_of(response, 401, 16).startswith("invalid session: ")
        response = anonymous.post("/api/v1/applications/kargo-demo-test/sync", json={})
        assert response.status_code == 401
        cookie = anonymous.get(
            "/api/v1/applications/kargo-demo-test", headers={"Cookie": f"argocd.token={TOKEN}"}
        )
        assert cookie.status_code == 200


def test_unknown_app_is_denied_or_not_found_as_argo_cd_answers(client: httpx.Client) -> None:
    # Without a project Argo CD answers 403 so as not to reveal whether the app exists.
    response = client.get("/api/v1/applications/nope")
    assert error_of(response, 403, 7) == "permission denied"
    response = client.get("/api/v1/applications/nope", params={"project": "default"})
    assert error_of(response, 404, 5) == 'applications.argoproj.io "nope" not found'
    response = client.get("/api/v1/applications/kargo-demo-test", params={"project": "other"})
    assert error_of(response, 404, 5) == 'applications.argoproj.io "kargo-demo-test" not found'
    assert sync(client, "nope", project="default").status_code == 404
    assert client.patch("/api/v1/applications/nope", json={"patch": "{}"}).status_code == 403


# --- get and list -----------------------------------------------------------------------------


def test_fresh_app_is_out_of_sync_and_missing_at_the_branch_head(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    app = get_app(client, "kargo-demo-test")
    assert app["metadata"]["name"] == "kargo-demo-test"
    assert app["status"]["sync"]["status"] == "OutOfSync"
    assert app["status"]["sync"]["revision"] == repo.head("stage/test")
    assert app["status"]["health"]["status"] == "Missing"
    assert "operation" not in app and "operationState" not in app["status"]
    kinds = {r["kind"]: r for r in app["status"]["resources"]}
    assert set(kinds) == {"ConfigMap", "Service", "Deployment"}
    assert kinds["Deployment"]["status"] == "OutOfSync"
    assert kinds["Deployment"]["health"]["status"] == "Missing"


def test_list_with_label_selectors(client: httpx.Client) -> None:
    def names(selector: str) -> list[str]:
        response = client.get("/api/v1/applications", params={"selector": selector})
        assert response.status_code == 200, response.text
        body = response.json()
        validate(body, "v1alpha1ApplicationList")
        return [item["metadata"]["name"] for item in body["items"]]

    everything = ["kargo-demo-kustomize", "kargo-demo-test", "kargo-demo-uat"]
    assert names("") == everything
    assert names("stage=test") == ["kargo-demo-test"]
    assert names("stage!=test") == ["kargo-demo-kustomize", "kargo-demo-uat"]
    assert names("demo") == ["kargo-demo-test", "kargo-demo-uat"]
    assert names("!demo") == ["kargo-demo-kustomize"]
    assert names("demo=yes,stage!=uat") == ["kargo-demo-test"]
    assert names("stage in (uat,prod)") == ["kargo-demo-kustomize", "kargo-demo-uat"]
    assert names("stage=nothing") == []
    response = client.get("/api/v1/applications", params={"selector": "a=(b"})
    assert error_of(response, 500, 2).startswith("error parsing the selector")


# --- patch ------------------------------------------------------------------------------------


def test_merge_and_json_patches_change_the_target_revision(client: httpx.Client) -> None:
    merge = {"spec": {"source": {"targetRevision": "stage/uat"}}}
    response = client.patch(
        "/api/v1/applications/kargo-demo-test",
        json={"name": "kargo-demo-test", "patch": json.dumps(merge), "patchType": "merge"},
    )
    assert response.status_code == 200, response.text
    validate(response.json(), "v1alpha1Application")
    assert response.json()["spec"]["source"]["targetRevision"] == "stage/uat"
    assert get_app(client, "kargo-demo-test")["spec"]["source"]["path"] == "."

    ops = [
        {"op": "test", "path": "/spec/source/targetRevision", "value": "stage/uat"},
        {"op": "replace", "path": "/spec/source/targetRevision", "value": "stage/test"},
        {"op": "add", "path": "/metadata/annotations", "value": {"note": "patched"}},
    ]
    response = client.patch(
        "/api/v1/applications/kargo-demo-test",
        json={"name": "kargo-demo-test", "patch": json.dumps(ops), "patchType": "json"},
    )
    assert response.status_code == 200, response.text
    app = get_app(client, "kargo-demo-test")
    assert app["spec"]["source"]["targetRevision"] == "stage/test"
    assert app["metadata"]["annotations"] == {"note": "patched"}

    bad_type = client.patch(
        "/api/v1/applications/kargo-demo-test", json={"patch": "{}", "patchType": "x"}
    )
    assert error_of(bad_type, 400, 3) == "Patch type 'x' is not supported"
    failing_test = [{"op": "test", "path": "/spec/project", "value": "other"}]
    response = client.patch(
        "/api/v1/applications/kargo-demo-test",
        json={"patch": json.dumps(failing_test), "patchType": "json"},
    )
    assert error_of(response, 500, 2).startswith("error applying patch")


# --- sync -------------------------------------------------------------------------------------


def test_sync_runs_then_succeeds_synced_progressing_then_healthy(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    commit = repo.head("stage/test")
    response = sync(
        client, "kargo-demo-test", prune=True, syncOptions={"items": ["CreateNamespace=true"]}
    )
    assert response.status_code == 200, response.text
    started = response.json()
    validate(started, "v1alpha1Application")
    assert started["operation"]["sync"]["revision"] == commit
    assert started["operation"]["sync"]["syncOptions"] == ["CreateNamespace=true"]
    assert started["status"]["operationState"]["phase"] == "Running"

    seen: set[str] = set()

    def observe() -> dict[str, Any]:
        app = get_app(client, "kargo-demo-test")
        seen.add(app["status"]["health"]["status"])
        return app

    app = wait_for(observe, lambda a: a["status"]["operationState"]["phase"] != "Running")
    state = app["status"]["operationState"]
    assert state["phase"] == "Succeeded", state
    assert state["syncResult"]["revision"] == commit
    assert state["startedAt"] and state["finishedAt"]
    assert state["operation"]["sync"]["prune"] is True
    assert {r["message"] for r in state["syncResult"]["resources"]} == {
        "configmap/kargo-demo-content created",
        "service/kargo-demo created",
        "deployment.apps/kargo-demo created",
    }
    assert "operation" not in app
    app = wait_for(observe, lambda a: a["status"]["health"]["status"] == "Healthy")
    assert "Progressing" in seen
    assert app["status"]["sync"] == {
        "status": "Synced",
        "revision": commit,
        "comparedTo": {"source": app["spec"]["source"], "destination": app["spec"]["destination"]},
    }
    assert app["status"]["summary"]["images"] == [f"{IMAGE}:1.29.0"]
    assert app["status"]["sourceType"] == "Directory"
    assert [h["revision"] for h in app["status"]["history"]] == [commit]
    assert app["status"]["history"][0]["id"] == 0
    assert app["status"]["reconciledAt"]
    assert all(r["status"] == "Synced" for r in app["status"]["resources"])


def test_kustomize_source_renders_with_image_override(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    patch = {"spec": {"source": {"kustomize": {"images": [f"{IMAGE}:1.29.7"]}}}}
    response = client.patch(
        "/api/v1/applications/kargo-demo-kustomize",
        json={"patch": json.dumps(patch), "patchType": "merge"},
    )
    assert response.status_code == 200, response.text
    assert sync(client, "kargo-demo-kustomize").status_code == 200
    app = wait_for(
        lambda: get_app(client, "kargo-demo-kustomize"),
        lambda a: (
            a["status"]["health"]["status"] == "Healthy"
            and a["status"]["sync"]["status"] == "Synced"
        ),
    )
    assert app["status"]["sourceType"] == "Kustomize"
    assert app["status"]["summary"]["images"] == [f"{IMAGE}:1.29.7"]
    assert app["status"]["operationState"]["syncResult"]["revision"] == repo.head("main")
    service = next(r for r in app["status"]["resources"] if r["kind"] == "Service")
    assert service["namespace"] == "kargo-demo-kustomize"


def test_branch_moving_makes_the_app_out_of_sync_after_a_hard_refresh(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    assert sync(client, "kargo-demo-test").status_code == 200
    wait_for(
        lambda: get_app(client, "kargo-demo-test"),
        lambda a: a["status"]["sync"]["status"] == "Synced",
    )
    new_commit = repo.render_stage("test", "1.29.9")
    app = get_app(client, "kargo-demo-test", refresh="hard")
    assert app["status"]["sync"]["status"] == "OutOfSync"
    assert app["status"]["sync"]["revision"] == new_commit
    deployment = next(r for r in app["status"]["resources"] if r["kind"] == "Deployment")
    assert deployment["status"] == "OutOfSync"

    assert sync(client, "kargo-demo-test", revision=new_commit).status_code == 200
    app = wait_for(
        lambda: get_app(client, "kargo-demo-test"),
        lambda a: (
            a["status"]["sync"]["status"] == "Synced"
            and a["status"]["health"]["status"] == "Healthy"
        ),
    )
    assert app["status"]["sync"]["revision"] == new_commit
    assert app["status"]["operationState"]["syncResult"]["revision"] == new_commit
    messages = {r["message"] for r in app["status"]["operationState"]["syncResult"]["resources"]}
    assert "deployment.apps/kargo-demo configured" in messages
    assert "service/kargo-demo unchanged" in messages
    assert [h["id"] for h in app["status"]["history"]] == [0, 1]


def test_a_sync_while_one_runs_is_refused_as_argo_cd_refuses_it(repo: GitOpsRepo) -> None:
    slow = Timing(sync_duration=60, progressing_duration=0, reconcile_interval=0, tick=0.02)
    apps = [application("kargo-demo-test", repo.url, "stage/test")]
    with (
        ArgoCDEmulator(apps, TOKEN, timing=slow) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        assert sync(client, "kargo-demo-test").status_code == 200
        response = sync(client, "kargo-demo-test")
        assert error_of(response, 400, 9) == "another operation is already in progress"
        assert get_app(client, "kargo-demo-test")["status"]["operationState"]["phase"] == "Running"


def test_unresolvable_revision_and_closed_sync_window_are_refused(
    client: httpx.Client, emulator: ArgoCDEmulator
) -> None:
    response = sync(client, "kargo-demo-test", revision="no-such-branch")
    assert "unable to resolve 'no-such-branch' to a commit SHA" in error_of(response, 400, 9)
    assert (
        client.post("/admin/apps/kargo-demo-test/sync-window", json={"open": False}).status_code
        == 200
    )
    assert (
        error_of(sync(client, "kargo-demo-test"), 403, 7) == "cannot sync: blocked by sync window"
    )


# --- failure knobs ----------------------------------------------------------------------------


def test_degraded_annotation_in_the_manifests_makes_the_app_degraded(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    repo.render_stage("test", "1.29.1", {"emulator.freightline.dev/health": "Degraded"})
    get_app(client, "kargo-demo-test", refresh="normal")
    assert sync(client, "kargo-demo-test").status_code == 200
    app = wait_for(
        lambda: get_app(client, "kargo-demo-test"),
        lambda a: a["status"]["health"]["status"] == "Degraded",
    )
    assert app["status"]["operationState"]["phase"] == "Succeeded"
    deployment = next(r for r in app["status"]["resources"] if r["kind"] == "Deployment")
    assert deployment["health"] == {
        "status": "Degraded",
        "message": 'Deployment "kargo-demo" exceeded its progress deadline',
    }


def test_admin_health_override_and_failed_syncs(client: httpx.Client) -> None:
    response = client.post(
        "/admin/apps/kargo-demo-uat/health", json={"status": "Degraded", "message": "boom"}
    )
    assert response.status_code == 200
    health = get_app(client, "kargo-demo-uat")["status"]["health"]
    assert (health["status"], health["message"]) == ("Degraded", "boom")
    client.post("/admin/apps/kargo-demo-uat/health", json={"status": None})
    assert get_app(client, "kargo-demo-uat")["status"]["health"]["status"] == "Missing"

    client.post(
        "/admin/apps/kargo-demo-uat/fail-sync", json={"count": 1, "message": "quota exceeded"}
    )
    assert sync(client, "kargo-demo-uat").status_code == 200
    app = wait_for(
        lambda: get_app(client, "kargo-demo-uat"),
        lambda a: a["status"]["operationState"]["phase"] != "Running",
    )
    state = app["status"]["operationState"]
    assert state["phase"] == "Failed"
    assert state["message"] == "one or more objects failed to apply, reason: quota exceeded"
    assert "history" not in app["status"]
    assert sync(client, "kargo-demo-uat").status_code == 200  # the next one succeeds
    wait_for(
        lambda: get_app(client, "kargo-demo-uat"),
        lambda a: a["status"]["operationState"]["phase"] == "Succeeded",
    )


def test_faults_answer_errors_or_hang_for_the_next_calls(
    client: httpx.Client, emulator: ArgoCDEmulator
) -> None:
    client.post("/admin/apps/kargo-demo-test/fault", json={"mode": "503", "count": 2})
    assert error_of(client.get("/api/v1/applications/kargo-demo-test"), 503, 14)
    assert get_app(client, "kargo-demo-uat")  # other apps are unaffected
    assert error_of(sync(client, "kargo-demo-test"), 503, 14)
    assert get_app(client, "kargo-demo-test")

    client.post("/admin/fault", json={"mode": "500", "count": 1})
    assert error_of(client.get("/api/v1/applications"), 500, 13)
    assert client.get("/api/v1/applications").status_code == 200

    client.post(
        "/admin/apps/kargo-demo-test/fault", json={"mode": "hang", "count": 1, "hangSeconds": 5}
    )
    with pytest.raises(httpx.TimeoutException):
        client.get("/api/v1/applications/kargo-demo-test", timeout=0.5)
    assert get_app(client, "kargo-demo-test")


# --- metrics ----------------------------------------------------------------------------------


def scrape(client: httpx.Client) -> dict[str, float]:
    response = client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_metrics_error_ratio_follows_the_deployed_tag(
    client: httpx.Client, repo: GitOpsRepo
) -> None:
    ok, errors = (
        'emulator_http_requests_total{app="kargo-demo-test",code="200"}',
        'emulator_http_requests_total{app="kargo-demo-test",code="500"}',
    )
    assert scrape(client)[ok] == 0 and scrape(client)[errors] == 0  # not deployed: no traffic
    repo.render_stage("test", "1.29.9")
    get_app(client, "kargo-demo-test", refresh="hard")
    assert sync(client, "kargo-demo-test").status_code == 200
    wait_for(lambda: get_app(client, "kargo-demo-test"), lambda a: "summary" in a["status"])
    first = scrape(client)
    later = wait_for(
        lambda: scrape(client), lambda s: s[ok] + s[errors] >= first[ok] + first[errors] + 200
    )
    served = (later[ok] - first[ok]) + (later[errors] - first[errors])
    assert (later[errors] - first[errors]) / served == pytest.approx(0.5, abs=0.05)
    info = [k for k in later if k.startswith('emulator_app_info{app="kargo-demo-test"')]
    assert len(info) == 1
    assert f'image="{IMAGE}:1.29.9",tag="1.29.9",revision="{repo.head("stage/test")}"' in info[0]
    assert later['emulator_error_ratio{app="kargo-demo-test"}'] == 0.5

    client.post("/admin/apps/kargo-demo-test/traffic", json={"errorRatio": 0.0})
    steady = scrape(client)
    after = wait_for(lambda: scrape(client), lambda s: s[ok] >= steady[ok] + 100)
    assert after[errors] - steady[errors] <= 1  # only the floor of the part accrued before


# --- ApplicationSet and the apps file ---------------------------------------------------------


def test_quickstart_applicationset_expands_to_three_authorized_apps(
    repo: GitOpsRepo, tmp_path: Path
) -> None:
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(APPSET.read_text())
    with (
        ArgoCDEmulator(
            apps_file,
            TOKEN,
            variables={"GITOPS_REPO_URL": "https://github.com/example/kargo-demo.git"},
            repo_map={"https://github.com/example/kargo-demo.git": repo.url},
            timing=Timing.instant(),
        ) as emu,
        httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        body = client.get("/api/v1/applications").json()
        validate(body, "v1alpha1ApplicationList")
        by_name = {item["metadata"]["name"]: item for item in body["items"]}
        assert sorted(by_name) == ["kargo-demo-prod", "kargo-demo-test", "kargo-demo-uat"]
        for stage in ("test", "uat", "prod"):
            app = by_name[f"kargo-demo-{stage}"]
            assert app["metadata"]["annotations"] == {
                "kargo.akuity.io/authorized-stage": f"kargo-demo:{stage}"
            }
            assert app["metadata"]["finalizers"] == ["resources-finalizer.argocd.argoproj.io"]
            assert app["metadata"]["ownerReferences"][0]["kind"] == "ApplicationSet"
            assert app["spec"]["source"] == {
                "repoURL": "https://github.com/example/kargo-demo.git",
                "targetRevision": f"stage/{stage}",
                "path": ".",
            }
            assert app["spec"]["destination"]["namespace"] == f"kargo-demo-{stage}"
            assert app["status"]["sync"]["revision"] == repo.head(f"stage/{stage}")
        assert sync(client, "kargo-demo-prod").status_code == 200
        app = wait_for(
            lambda: get_app(client, "kargo-demo-prod"),
            lambda a: (
                a["status"]["health"]["status"] == "Healthy"
                and a["status"]["sync"]["status"] == "Synced"
            ),
        )
        assert app["status"]["operationState"]["syncResult"]["revision"] == repo.head("stage/prod")


def test_apps_file_errors_say_what_and_where(tmp_path: Path) -> None:
    bad = tmp_path / "apps.yaml"
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(
        EmulatorConfigError, match=r"apps.yaml: document 1: unsupported kind v1/ConfigMap"
    ):
        load_apps_file(bad)
    bad.write_text(
        "apiVersion: argoproj.io/v1alpha1\nkind: ApplicationSet\nmetadata: {name: s}\n"
        "spec: {generators: [{git: {}}], template: {metadata: {name: x}, spec: {}}}\n"
    )
    with pytest.raises(EmulatorConfigError, match="only the list generator"):
        load_apps_file(bad)


def test_cli_prints_the_url_and_serves(repo: GitOpsRepo, tmp_path: Path) -> None:
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(json.dumps(application("kargo-demo-test", repo.url, "stage/test")))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox.argocd",
            "--apps",
            str(apps_file),
            "--port",
            "0",
            "--token",
            TOKEN,
            "--instant",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(
            f"{url}/api/v1/applications/kargo-demo-test",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 200
        validate(response.json(), "v1alpha1Application")
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


# --- the small parts, against their specs -----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_json_patch_rfc6902() -> None:
    doc = {"foo": ["bar", "baz"], "a~b": 1, "c/d": 2}
    assert json_patch(doc, [{"op": "add", "path": "/foo/1", "value": "qux"}])["foo"] == [
        "bar",
        "qux",
        "baz",
    ]
    assert json_patch(doc, [{"op": "add", "path": "/foo/-", "value": "z"}])["foo"][-1] == "z"
    assert json_patch(doc, [{"op": "remove", "path": "/a~0b"}]) == {"foo": ["bar", "baz"], "c/d": 2}
    assert json_patch(doc, [{"op": "replace", "path": "/c~1d", "value": 3}])["c/d"] == 3
    moved = json_patch(doc, [{"op": "move", "from": "/foo/0", "path": "/first"}])
    assert moved["first"] == "bar" and moved["foo"] == ["baz"]
    assert json_patch(doc, [{"op": "copy", "from": "/foo", "path": "/bar"}])["bar"] == [
        "bar",
        "baz",
    ]
    assert doc == {"foo": ["bar", "baz"], "a~b": 1, "c/d": 2}  # the target is untouched
    for bad in (
        [{"op": "test", "path": "/foo/0", "value": "nope"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "add", "path": "/foo/9", "value": 1}],
        [{"op": "remove", "path": "/foo/01"}],
        [{"op": "frobnicate", "path": "/foo"}],
    ):
        with pytest.raises(PatchError):
            json_patch(doc, bad)


def test_label_selector_grammar() -> None:
    labels = {"env": "prod", "tier": "web", "replicas": "3"}
    assert matches(parse_selector("env=prod,tier==web"), labels)
    assert matches(parse_selector("env notin (dev, test), !missing, replicas>2"), labels)
    assert not matches(parse_selector("env in (dev,test)"), labels)
    assert not matches(parse_selector("replicas<3"), labels)
    assert matches(parse_selector("missing!=x"), labels)
    for bad in ("env=(", "=x", "env in (a", "a b"):
        with pytest.raises(SelectorError):
            parse_selector(bad)
