"""``helm-update-chart`` and ``helm-template``, as Kargo's: every example on their Kargo
reference pages (``tests/reference/kargo-steps/helm-update-chart.md``, ``helm-template.md``,
and the last example of ``oci-download.md``) runs through the worktree runner against a
real bare git repository, a real HTTP chart repository (a static ``index.yaml`` on a
loopback server) and a real OCI registry, then the edge cases.

What differs from the pages, and why: repository hosts are the local ones; the
``# Render manifests to ./out, commit, push, etc...`` the pages leave out is a ``copy`` of
the updated chart into ``./out`` then ``git-commit`` and ``git-push``, so the test reads the
result from the pushed branch; the first ``helm-update-chart`` example's
``${{ chartRepo }}`` / ``chartFrom(chartRepo)`` name no variable (Kargo fails on them too)
and are written ``vars.chartRepo`` here. ``helm`` cannot be installed on these machines:
the ``helm-template`` examples run once without it (they end Errored, naming it) and once
with a fake ``helm`` on the PATH that records its arguments and prints a manifest, which
checks what Freightline passes. The first ``helm-template`` example gives no
``releaseName``, which Kargo's schema requires: it is refused here as in Kargo, then run
with one.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from activities.helm_steps import HelmUpdateChartConfig, helm_update_chart, lock_digest
from freightline.errors import ConfigError, PathEscapeError, StepError
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from sandbox.gitops import branch_head, create_bare_repo, git, show_file
from tests.registry_fixture import Registry, start_registry
from tests.step_runs import HELM_CHART, context, outcome_of, push_artifact, refused, run
from tests.step_server import StepServer, step_server

pytestmark = pytest.mark.integration

CHART_PATH = "charts/my-chart"


def chart_archive(name: str, version: str) -> bytes:
    """A chart archive as ``helm package`` lays it out: ``<name>/Chart.yaml`` and a template."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in (
            (f"{name}/Chart.yaml", f"apiVersion: v2\nname: {name}\nversion: {version}\n"),
            (f"{name}/templates/cm.yaml", "kind: ConfigMap\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


VERSIONS = ("1.2.3", "1.3.0", "2.0.0")


@pytest.fixture
def chart_repo() -> Iterator[StepServer]:
    """An HTTP chart repository: index.yaml (relative URLs, as ``helm repo index`` writes)."""
    with step_server() as server:
        entries = [
            f"  - name: some-chart\n    version: {v}\n    urls:\n    - some-chart-{v}.tgz\n"
            for v in VERSIONS
        ]
        index = "apiVersion: v1\nentries:\n  some-chart:\n" + "".join(entries)
        server.routes["/index.yaml"] = (200, {"Content-Type": "text/yaml"}, index.encode())
        for version in VERSIONS:
            archive = chart_archive("some-chart", version)
            server.routes[f"/some-chart-{version}.tgz"] = (200, {}, archive)
        yield server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(tmp_path_factory.mktemp("helm-steps-registry"))
    try:
        for version in VERSIONS:
            layers = [(HELM_CHART, chart_archive("some-chart", version))]
            push_artifact(reg, "some-chart", version, layers)
        yield reg
    finally:
        reg.stop()


def chart_yaml(repository: str, version: str) -> str:
    return (
        "apiVersion: v2\nname: example\ntype: application\nversion: 0.1.0\nappVersion: 0.1.0\n"
        f"dependencies:\n- repository: {repository}\n  name: some-chart\n  version: {version}\n"
    )


def gitops_repo(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = create_bare_repo(tmp_path / "gitops.git")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        git("clone", "--quiet", str(repo), str(work))
        for name, text in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(text)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", "chart", cwd=work)
        git("push", "--quiet", "origin", "main", cwd=work)
    return repo


def freight(repo: Path, charts: list[dict[str, str]]) -> Freight:
    commit = branch_head(repo, "main") or ""
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": "kargo-demo"},
        "commits": [{"repoURL": repo.as_uri(), "id": commit, "branch": "main"}],
        "charts": charts,
    }
    name = freight_id(Freight.model_validate(body))
    body["metadata"]["name"] = name
    body["alias"] = freight_alias(name)
    return Freight.model_validate(body)


CLONE_SRC_AND_OUT = {
    "uses": "git-clone",
    "config": {
        "repoURL": "${{ vars.gitRepo }}",
        "checkout": [
            {"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"},
            {"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"},
        ],
    },
}
CLEAR_OUT = {"uses": "git-clear", "config": {"path": "./out"}}
COPY_COMMIT_PUSH = [
    {"uses": "copy", "config": {"inPath": f"./src/{CHART_PATH}", "outPath": "./out"}},
    {"uses": "git-commit", "config": {"path": "./out", "message": "updated"}},
    {"uses": "git-push", "config": {"path": "./out"}},
]


def pushed(repo: Path, path: str) -> str:
    return show_file(repo, "stage/test", path)


def pushed_files(repo: Path) -> set[str]:
    out = git("ls-tree", "-r", "--name-only", "refs/heads/stage/test", cwd=repo)
    return set(out.split())


def lock_of(repo: Path) -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load(pushed(repo, "Chart.lock"))
    return document


# --- helm-update-chart: the reference examples -------------------------------------------------


def test_update_from_an_http_repository(tmp_path: Path, chart_repo: StepServer) -> None:
    repo = gitops_repo(tmp_path, {f"{CHART_PATH}/Chart.yaml": chart_yaml(chart_repo.url, "1.2.3")})
    variables = [
        {"name": "gitRepo", "value": repo.as_uri()},
        {"name": "chartRepo", "value": chart_repo.url},
    ]
    update = {
        "uses": "helm-update-chart",
        "as": "update",
        "config": {
            "path": f"./src/{CHART_PATH}",
            "charts": [
                {
                    "repository": "${{ vars.chartRepo }}",
                    "name": "some-chart",
                    "version": "${{ chartFrom(vars.chartRepo).Version }}",
                }
            ],
        },
    }
    source = freight(repo, [{"repoURL": chart_repo.url, "name": "some-chart", "version": "1.3.0"}])
    outcomes = run(
        tmp_path, [CLONE_SRC_AND_OUT, CLEAR_OUT, update, *COPY_COMMIT_PUSH],
        variables=variables, freight=source, repo=repo,
    )  # fmt: skip
    assert outcomes[2].outputs == {
        "commitMessage": f"Updated chart dependencies for ./src/{CHART_PATH}\n\n"
        "- some-chart: 1.3.0"  # no Chart.lock before: the dependency is new to it
    }
    assert "version: 1.3.0" in pushed(repo, "Chart.yaml")
    lock = lock_of(repo)
    assert lock["dependencies"] == [
        {"name": "some-chart", "repository": chart_repo.url, "version": "1.3.0"}
    ]
    assert lock["digest"].startswith("sha256:") and lock["generated"].endswith("Z")
    assert pushed_files(repo) >= {"Chart.yaml", "Chart.lock", "charts/some-chart-1.3.0.tgz"}


def test_update_from_an_oci_repository(tmp_path: Path, registry: Registry) -> None:
    chart_reg = f"oci://{registry.host}"
    repo = gitops_repo(tmp_path, {f"{CHART_PATH}/Chart.yaml": chart_yaml(chart_reg, "1.2.3")})
    variables = [
        {"name": "gitRepo", "value": repo.as_uri()},
        {"name": "chartReg", "value": chart_reg},
    ]
    update = {
        "uses": "helm-update-chart",
        "config": {
            "path": f"./src/{CHART_PATH}",
            "charts": [
                {
                    "repository": "${{ vars.chartReg }}",
                    "name": "some-chart",
                    "version": '${{ chartFrom(vars.chartReg + "/some-chart").Version }}',
                }
            ],
        },
    }
    # Kargo records an OCI chart by its whole repository and no name.
    source = freight(repo, [{"repoURL": f"{chart_reg}/some-chart", "version": "2.0.0"}])
    outcomes = run(
        tmp_path, [CLONE_SRC_AND_OUT, CLEAR_OUT, update, *COPY_COMMIT_PUSH],
        variables=variables, freight=source, repo=repo,
    )  # fmt: skip
    assert outcomes[2].outputs["commitMessage"].endswith("- some-chart: 2.0.0")
    assert lock_of(repo)["dependencies"] == [
        {"name": "some-chart", "repository": chart_reg, "version": "2.0.0"}
    ]
    assert "charts/some-chart-2.0.0.tgz" in pushed_files(repo)


def test_update_resolves_a_version_range(tmp_path: Path, chart_repo: StepServer) -> None:
    repo = gitops_repo(tmp_path, {f"{CHART_PATH}/Chart.yaml": chart_yaml(chart_repo.url, "^1.0.0")})
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [{"commit": "${{ commitFrom(vars.gitRepo).ID }}", "path": "./src"}],
            },
        },
        {"uses": "helm-update-chart", "config": {"path": f"./src/{CHART_PATH}"}},
    ]
    variables = [{"name": "gitRepo", "value": repo.as_uri()}]
    source = freight(repo, [{"repoURL": chart_repo.url, "name": "some-chart", "version": "1.3.0"}])
    _, updated = run(tmp_path, steps, variables=variables, freight=source, repo=repo)
    # The highest 1.x (2.0.0 is out of range); Chart.yaml keeps its range.
    assert updated.outputs["commitMessage"].endswith("- some-chart: 1.3.0")


# --- helm-update-chart: edge cases (the step itself, to look at the files) ---------------------


def chart_in_workspace(tmp_path: Path, chart: str, **files: str) -> Any:
    ctx = context(tmp_path)
    directory = ctx.workspace.root / "chart"
    directory.mkdir(parents=True)
    (directory / "Chart.yaml").write_text(chart)
    for name, text in files.items():
        (directory / name).write_text(text)
    return ctx


def test_update_writes_helms_lock_and_replaces_old_archives(
    tmp_path: Path, chart_repo: StepServer
) -> None:
    # Helm's own indentation style, a comment on the line, quotes: all kept by the update.
    chart = (
        "# my chart\napiVersion: v2\nname: example\nversion: 0.1.0\ndependencies:\n"
        f"  - name: some-chart   # the one\n    version: '1.2.3'  # pinned\n"
        f"    repository: {chart_repo.url}\n# trailing comment\n"
    )
    ctx = chart_in_workspace(tmp_path, chart)
    config = HelmUpdateChartConfig(path="chart")
    first = helm_update_chart(ctx, config)
    charts = ctx.workspace.root / "chart" / "charts"
    assert [p.name for p in charts.iterdir()] == ["some-chart-1.2.3.tgz"]
    lock_text = (ctx.workspace.root / "chart" / "Chart.lock").read_text()
    assert lock_text.startswith(
        f"dependencies:\n- name: some-chart\n  repository: {chart_repo.url}\n  version: 1.2.3\n"
        "digest: sha256:"
    )
    assert first["commitMessage"].endswith("- some-chart: 1.2.3")
    # Nothing new: no output, and Chart.lock keeps its bytes (its timestamp too).
    assert helm_update_chart(ctx, config) == {}
    assert (ctx.workspace.root / "chart" / "Chart.lock").read_text() == lock_text
    # An update: Chart.yaml's one line changes (comments kept), the old archive goes.
    (charts / "notes.txt").write_text("not a chart: kept")
    update = {"repository": chart_repo.url, "name": "some-chart", "version": "1.3.0"}
    changed = helm_update_chart(ctx, HelmUpdateChartConfig(path="chart", charts=[update]))
    assert changed["commitMessage"] == (
        "Updated chart dependencies for chart\n\n- some-chart: 1.2.3 -> 1.3.0"
    )
    text = (ctx.workspace.root / "chart" / "Chart.yaml").read_text()
    assert text == chart.replace("version: '1.2.3'", "version: '1.3.0'")
    assert sorted(p.name for p in charts.iterdir()) == ["notes.txt", "some-chart-1.3.0.tgz"]


def test_the_lock_digest_is_helms() -> None:
    # A Chart.lock Helm wrote (github.com/8gears/n8n-helm-chart): its Chart.yaml dependency
    # has a condition, which the digest covers; the lock's entry is name/repository/version.
    requested = [
        {
            "name": "redis",
            "version": "17.2.0",
            "repository": "https://charts.bitnami.com/bitnami",
            "condition": "redis.enabled",
        }
    ]
    locked = [{"name": "redis", "repository": "https://charts.bitnami.com/bitnami",
               "version": "17.2.0"}]  # fmt: skip
    assert lock_digest(requested, locked) == (
        "sha256:989a8e3f05d54b04db15e782bd24ca5a5872a36f5dc02b7882b25491a5a5ddde"
    )


def test_update_refusals(tmp_path: Path, chart_repo: StepServer) -> None:
    ctx = chart_in_workspace(tmp_path, chart_yaml(chart_repo.url, "1.2.3"))
    wrong = {"repository": "https://elsewhere", "name": "some-chart", "version": "1.3.0"}
    with pytest.raises(ConfigError, match=r"no dependency in Chart\.yaml matches"):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="chart", charts=[wrong]))
    missing = {"repository": chart_repo.url, "name": "some-chart", "version": "9.9.9"}
    with pytest.raises(ConfigError, match="can't get a valid version"):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="chart", charts=[missing]))
    with pytest.raises(PathEscapeError):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="../chart"))
    (ctx.workspace.root / "chart" / "charts").symlink_to(tmp_path)
    with pytest.raises(PathEscapeError):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="chart"))
    chart_repo.routes["/some-chart-1.2.3.tgz"] = (200, {}, b"<html>login</html>")
    broken = chart_in_workspace(tmp_path / "c", chart_yaml(chart_repo.url, "1.2.3"))
    with pytest.raises(StepError, match="not a Helm chart archive"):
        helm_update_chart(broken, HelmUpdateChartConfig(path="chart"))


def test_update_packages_a_local_dependency(tmp_path: Path) -> None:
    chart = (
        "apiVersion: v2\nname: example\nversion: 0.1.0\ndependencies:\n"
        "- name: sub\n  version: ^0.1.0\n  repository: file://../sub\n"
    )
    ctx = chart_in_workspace(tmp_path, chart)
    sub = ctx.workspace.root / "sub"
    (sub / "templates").mkdir(parents=True)
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.1.2\n")
    (sub / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    (sub / "README.md").write_text("ignored")
    (sub / ".helmignore").write_text("# docs\n*.md\n")
    charts = ctx.workspace.root / "chart" / "charts"
    charts.mkdir()
    (charts / "sub-0.1.0.tgz").write_bytes(chart_archive("sub", "0.1.0"))  # outdated
    result = helm_update_chart(ctx, HelmUpdateChartConfig(path="chart"))
    assert result["commitMessage"].endswith("- sub: 0.1.2")
    assert [p.name for p in charts.iterdir()] == ["sub-0.1.2.tgz"]
    with tarfile.open(charts / "sub-0.1.2.tgz") as tar:
        assert tar.getnames() == ["sub/.helmignore", "sub/Chart.yaml", "sub/templates/cm.yaml"]
    lock = YAML(typ="safe").load((ctx.workspace.root / "chart" / "Chart.lock").read_text())
    assert lock["dependencies"] == [
        {"name": "sub", "repository": "file://../sub", "version": "0.1.2"}
    ]
    archive = (charts / "sub-0.1.2.tgz").read_bytes()
    (ctx.workspace.root / "chart" / "Chart.lock").unlink()
    helm_update_chart(ctx, HelmUpdateChartConfig(path="chart"))
    assert (charts / "sub-0.1.2.tgz").read_bytes() == archive  # the same bytes on a retry

    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.2.0\n")
    with pytest.raises(ConfigError, match=r'the chart there is "0\.2\.0"'):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="chart"))
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.1.2\n")
    (tmp_path / "secret.txt").write_text("outside")
    (sub / "templates" / "leak.yaml").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PathEscapeError, match="leads out of the work tree"):
        helm_update_chart(ctx, HelmUpdateChartConfig(path="chart"))
    outside = chart_in_workspace(tmp_path / "b", chart.replace("../sub", "../../../sub"))
    with pytest.raises(PathEscapeError):
        helm_update_chart(outside, HelmUpdateChartConfig(path="chart"))


def test_update_through_the_runner_is_errored_for_a_bad_config(tmp_path: Path) -> None:
    err = refused(tmp_path, [{"uses": "helm-update-chart", "config": {"path": "x", "charts": []}}])
    assert outcome_of(err) == "Errored" and "charts" in str(err)


# --- helm-template -----------------------------------------------------------------------------

FAKE_HELM = """#!/bin/sh
printf '%s\\n' "$@" "===" >> "$FAKE_HELM_ARGS"
if [ "$1" = dependency ]; then exit 0; fi
out=""; previous=""
for argument in "$@"; do
  if [ "$previous" = "--output-dir" ]; then out="$argument"; fi
  previous="$argument"
done
manifest='---
# Source: my-chart/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
  namespace: test
'
if [ -n "$out" ]; then
  mkdir -p "$out/my-chart/templates"
  printf '%s' "$manifest" > "$out/my-chart/templates/cm.yaml"
else
  printf '%s' "$manifest"
fi
"""


@pytest.fixture
def fake_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``helm`` on the PATH that records its arguments (one a line) in the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helm = bin_dir / "helm"
    helm.write_text(FAKE_HELM)
    helm.chmod(helm.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "helm-args"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_HELM_ARGS", str(record))
    return record


@pytest.fixture
def chart_src(tmp_path: Path) -> Path:
    return gitops_repo(
        tmp_path,
        {
            f"{CHART_PATH}/Chart.yaml": "apiVersion: v2\nname: my-chart\nversion: 0.1.0\n",
            f"{CHART_PATH}/test-values.yaml": "replicas: 2\n",
        },
    )


def template_steps(out_path: str, release: str | None) -> list[dict[str, Any]]:
    config: dict[str, Any] = {
        "path": f"./src/{CHART_PATH}",
        "valuesFiles": [f"./src/{CHART_PATH}/${{{{ ctx.stage }}}}-values.yaml"],
        "outPath": out_path,
    }
    if release:
        config["releaseName"] = release
    return [
        CLONE_SRC_AND_OUT,
        CLEAR_OUT,
        {"uses": "helm-template", "config": config},
        {"uses": "git-commit", "config": {"path": "./out", "message": "rendered"}},
        {"uses": "git-push", "config": {"path": "./out"}},
    ]


def calls(record: Path, workdir_marker: str = "/work/") -> list[list[str]]:
    """Each recorded helm call's arguments, work-tree paths shortened to ``<work>/...``."""
    result: list[list[str]] = [[]]
    for line in record.read_text().splitlines():
        if line == "===":
            result.append([])
            continue
        head, found, tail = line.partition(workdir_marker)
        result[-1].append(f"<work>/{tail}" if found and head.startswith("/") else line)
    return result[:-1]


def arguments(record: Path) -> list[str]:
    """The last helm call's arguments."""
    return calls(record)[-1]


def test_template_without_helm_is_errored(
    tmp_path: Path, chart_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever this machine has: no directory on the PATH holds a helm.
    path = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "helm").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(path))
    variables = [{"name": "gitRepo", "value": chart_src.as_uri()}]
    source = freight(chart_src, [])
    for out_path in ("./out/manifests.yaml", "./out"):
        err = refused(
            tmp_path, template_steps(out_path, "my-chart"),
            variables=variables, freight=source, repo=chart_src,
        )  # fmt: skip
        assert outcome_of(err) == "Errored"
        assert "needs the helm binary" in str(err) and "PATH" in str(err)


def test_template_to_one_file(tmp_path: Path, chart_src: Path, fake_helm: Path) -> None:
    variables = [{"name": "gitRepo", "value": chart_src.as_uri()}]
    source = freight(chart_src, [])
    err = refused(
        tmp_path, template_steps("./out/manifests.yaml", None),
        variables=variables, freight=source, repo=chart_src,
    )  # fmt: skip
    assert outcome_of(err) == "Errored" and "releaseName" in str(err)  # Kargo's schema too
    run(
        tmp_path, template_steps("./out/manifests.yaml", "my-chart"),
        variables=variables, freight=source, repo=chart_src,
    )  # fmt: skip
    assert arguments(fake_helm) == [
        "template", "my-chart", f"<work>/src/{CHART_PATH}",
        "--namespace", "p",
        "--values", f"<work>/src/{CHART_PATH}/test-values.yaml",
    ]  # fmt: skip
    assert pushed(chart_src, "manifests.yaml").startswith("---\n# Source: my-chart/templates")


def test_template_to_a_directory(tmp_path: Path, chart_src: Path, fake_helm: Path) -> None:
    variables = [{"name": "gitRepo", "value": chart_src.as_uri()}]
    source = freight(chart_src, [])
    run(
        tmp_path, template_steps("./out", "my-chart"),
        variables=variables, freight=source, repo=chart_src,
    )  # fmt: skip
    assert arguments(fake_helm)[-2:] == ["--output-dir", "<work>/out"]
    assert "my-chart/templates/cm.yaml" in pushed_files(chart_src)


def test_template_passes_every_option_as_kargo_does(
    tmp_path: Path, chart_src: Path, fake_helm: Path
) -> None:
    config = {
        "path": f"./src/{CHART_PATH}",
        "outPath": "./out",
        "outLayout": "flat",
        "releaseName": "rel",
        "useReleaseName": True,
        "namespace": "ns",
        "valuesFiles": [f"./src/{CHART_PATH}/test-values.yaml", "./src/missing.yaml"],
        "ignoreMissingValueFiles": True,
        "setValues": [{"key": "a", "value": "1"}, {"key": "b", "value": "x,y", "literal": True}],
        "buildDependencies": True,
        "includeCRDs": True,
        "disableHooks": True,
        "skipTests": True,
        "kubeVersion": "1.30.0",
        "apiVersions": ["monitoring.coreos.com/v1"],
    }
    steps = [CLONE_SRC_AND_OUT, CLEAR_OUT, {"uses": "helm-template", "config": config},
             {"uses": "git-commit", "config": {"path": "./out", "message": "flat"}},
             {"uses": "git-push", "config": {"path": "./out"}}]  # fmt: skip
    variables = [{"name": "gitRepo", "value": chart_src.as_uri()}]
    run(tmp_path, steps, variables=variables, freight=freight(chart_src, []), repo=chart_src)
    assert calls(fake_helm) == [
        ["dependency", "build", f"<work>/src/{CHART_PATH}"],  # buildDependencies, first
        [
            "template", "rel", f"<work>/src/{CHART_PATH}",
            "--namespace", "ns",
            "--values", f"<work>/src/{CHART_PATH}/test-values.yaml",
            "--set", "a=1", "--set-literal", "b=x,y",
            "--include-crds", "--no-hooks", "--skip-tests",
            "--kube-version", "1.30.0", "--api-versions", "monitoring.coreos.com/v1",
        ],
    ]  # fmt: skip
    assert pushed_files(chart_src) == {"configmap-test-cm.yaml"}  # flat: kind-namespace-name


def test_oci_download_then_template(
    tmp_path: Path, registry: Registry, chart_src: Path, fake_helm: Path
) -> None:
    # oci-download.md's last example: fetch a chart, render it, commit and push.
    push_artifact(
        registry, "charts/my-app", "1.0.0", [(HELM_CHART, chart_archive("my-app", "1.0.0"))]
    )
    steps = [
        {
            "uses": "git-clone",
            "config": {
                "repoURL": "${{ vars.gitRepo }}",
                "checkout": [{"branch": "stage/${{ ctx.stage }}", "create": True, "path": "./out"}],
            },
        },
        CLEAR_OUT,
        {"uses": "oci-download", "config": {"imageRef": "${{ vars.chart }}:1.0.0", "outPath": "./chart.tgz"}},
        {
            "uses": "helm-template",
            "config": {"path": "./chart.tgz", "releaseName": "my-app",
                       "namespace": "${{ ctx.stage }}", "outPath": "./out"},
        },
        {"uses": "git-commit", "config": {"path": "./out",
                                          "message": "Update manifests for ${{ ctx.stage }} stage"}},
        {"uses": "git-push", "config": {"path": "./out"}},
    ]  # fmt: skip
    variables = [
        {"name": "gitRepo", "value": chart_src.as_uri()},
        {"name": "chart", "value": f"oci://{registry.host}/charts/my-app"},
    ]
    run(tmp_path, steps, variables=variables, freight=freight(chart_src, []), repo=chart_src)
    assert arguments(fake_helm) == [
        "template", "my-app", "<work>/chart.tgz", "--namespace", "test",
        "--output-dir", "<work>/out",
    ]  # fmt: skip
    assert "my-chart/templates/cm.yaml" in pushed_files(chart_src)
    message = git("log", "-1", "--format=%s", "refs/heads/stage/test", cwd=chart_src).strip()
    assert message == "Update manifests for test stage"
