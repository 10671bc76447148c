"""The credentials file in Kargo's Secret format, and ``freightline credentials check``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_cluster, apply_project, delete_resource
from freightline.errors import CredentialError
from freightline.kargo.config import group_by_project, group_cluster, load_text
from freightline.kargo.credentials import CRED_TYPE_LABEL, CredentialStore
from tests.pipelines import dump
from tests.test_git_discovery import Upstream

PASSWORD = "TOPSECRET-password-1"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nTOPSECRET-key\n-----END OPENSSH PRIVATE KEY-----\n"
HOOK = "TOPSECRET-hook-1"


def secret(
    name: str, cred_type: str | None, namespace: str | None = None, **values: str
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if cred_type:
        metadata["labels"] = {CRED_TYPE_LABEL: cred_type}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": values}


def store_of(tmp_path: Path, *documents: dict[str, Any]) -> CredentialStore:
    path = tmp_path / "creds.yaml"
    path.write_text(dump(list(documents)))
    return CredentialStore(path)


def serving_secrets() -> list[dict[str, Any]]:
    """A git regex over an org (password), an SSH deploy key and an image Secret."""
    return [
        secret(
            "org-repos",
            "git",
            repoURL=r"^https://github\.com/example/.*$",
            repoURLIsRegex="true",
            username="ada",
            password=PASSWORD,
        ),
        secret(
            "deploy-key",
            "git",
            repoURL="ssh://git@git.example.com/team/gitops.git",
            sshPrivateKey=SSH_KEY,
        ),
        secret("ghcr", "image", repoURL="ghcr.io/example/app", username="bot", password=PASSWORD),
    ]


def test_kargo_secrets_move_over_unchanged(tmp_path: Path) -> None:
    encoded = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "charts", "labels": {CRED_TYPE_LABEL: "helm"}},
        "data": {
            key: base64.b64encode(value.encode()).decode()
            for key, value in {
                "repoURL": "https://charts.example.com",
                "username": "helm",
                "password": PASSWORD,
            }.items()
        },
    }
    store = store_of(
        tmp_path,
        *serving_secrets(),
        encoded,
        secret("slack", "generic", token=PASSWORD),
        secret("hook", None, namespace="kargo-demo", secret=HOOK),
    )
    https = store.git("https://github.com/example/anything.git")
    assert https is not None and (https.username, https.password) == ("ada", PASSWORD)
    ssh = store.git("git@git.example.com:team/gitops.git")  # the same repository, scp form
    assert ssh is not None and ssh.ssh_private_key == SSH_KEY and ssh.password == ""
    assert store.basic("image", "ghcr.io/example/app") == ("bot", PASSWORD)
    assert store.basic("helm", "https://charts.example.com") == ("helm", PASSWORD)
    assert store.git("https://gitlab.com/other/repo.git") is None
    # A Secret without a cred-type label is found by name (a webhook receiver's), and one
    # with a namespace serves that project alone.
    assert store.secret("kargo-demo", "hook") == {"secret": HOOK}
    assert store.secret("other", "hook") is None
    assert store.secret("anything", "slack") == {"token": PASSWORD}
    # No value in a repr, whichever object is printed.
    shown = repr(store.entries()) + repr(https) + repr(ssh)
    assert PASSWORD not in shown and "TOPSECRET" not in shown


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (secret("a", "git", repoURL="https://x/y.git", username="u"), "missing password"),
        (secret("b", "image", repoURL="r/x", sshPrivateKey=SSH_KEY), "missing username, password"),
        (secret("c", "oci", repoURL="r/x", username="u", password=PASSWORD), "must be one of"),
        (secret("d", "git", repoURL="([", repoURLIsRegex="true", sshPrivateKey=SSH_KEY), "regular"),
        ({"kind": "Secret", "metadata": {}}, "metadata.name is missing"),
        ({"kind": "ConfigMap", "metadata": {"name": "x"}}, "expected a kind: Secret"),
    ],
)
def test_a_bad_secret_is_named_without_its_values(
    tmp_path: Path, document: dict[str, Any], message: str
) -> None:
    store = store_of(tmp_path, document)
    with pytest.raises(CredentialError) as raised:
        store.entries()
    assert message in str(raised.value) and "creds.yaml: document 1" in str(raised.value)
    assert "TOPSECRET" not in str(raised.value)


PROJECT = """
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: kargo-demo}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: ProjectConfig
metadata: {name: kargo-demo, namespace: kargo-demo}
spec:
  webhookReceivers:
    - name: gh
      github: {secretRef: {name: hook}}
    - name: hub
      dockerhub: {secretRef: {name: no-such-secret}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: app, namespace: kargo-demo}
spec:
  subscriptions:
    - image: {repoURL: ghcr.io/example/app}
    - image: {repoURL: quay.io/public/thing}
    - git: {repoURL: "git@git.example.com:team/gitops.git"}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: PromotionTask
metadata: {name: update, namespace: kargo-demo}
spec:
  vars:
    - name: repo
  steps:
    - uses: git-clone
      config:
        repoURL: ${{ vars.repo }}
        checkout: [{branch: main, path: ./src}]
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: test, namespace: kargo-demo}
spec:
  requestedFreight:
    - origin: {kind: Warehouse, name: app}
      sources: {direct: true}
  promotionTemplate:
    spec:
      vars:
        - name: gitRepo
          value: https://github.com/example/config.git
      steps:
        - uses: git-clone
          config:
            repoURL: ${{ vars.gitRepo }}
            checkout: [{branch: main, path: ./src}]
        - uses: git-open-pr
          config:
            repoURL: ${{ ctx.stage }}
            sourceBranch: a
            targetBranch: b
        - task: {name: update}
          vars:
            - name: repo
              value: ssh://git@git.example.com/team/gitops.git
        - uses: argocd-update
          config:
            apps: [{name: test}]
"""


CLOUD_IDENTITY_VARIABLES = (
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCE_METADATA_HOST",
)
"""What the worker's workload identities read: the check reads them too, so a test sets
only its own."""


def run_check(
    tmp_path: Path,
    *args: str,
    project: str | None = None,
    more_secrets: tuple[dict[str, Any], ...] = (),
    **env: str,
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "kargo.yaml").write_text(project or PROJECT)
    store_of(
        tmp_path,
        *serving_secrets(),
        secret("hook", None, namespace="kargo-demo", secret=HOOK),
        *more_secrets,
    )
    environment = {
        **os.environ,
        "FREIGHTLINE_CREDENTIALS_FILE": str(tmp_path / "creds.yaml"),
        **env,
    }
    for name in ("ARGOCD_SERVER", "ARGOCD_AUTH_TOKEN", *CLOUD_IDENTITY_VARIABLES):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "freightline",
            "credentials",
            "check",
            "-f",
            str(tmp_path / "kargo.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def test_credentials_check_says_who_has_what_without_a_secret(tmp_path: Path) -> None:
    result = run_check(tmp_path, "-o", "json", "--show-urls")
    rows = {(row["needed by"], row["for"]): row for row in json.loads(result.stdout)}
    status = {key: (row["status"], row["detail"]) for key, row in rows.items()}
    assert status[("Warehouse/app", "ghcr.io/example/app")] == (
        "ok",
        "Secret ghcr (username and password)",
    )
    assert status[("Warehouse/app", "quay.io/public/thing")][0] == "anonymous"
    assert status[("Warehouse/app", "git@git.example.com:team/gitops.git")] == (
        "ok",
        "Secret deploy-key (SSH key)",
    )
    clone = status[("Stage/test step 1 (git-clone)", "https://github.com/example/config.git")]
    assert clone[0] == "ok" and "Secret org-repos" in clone[1]
    assert status[("Stage/test step 2 (git-open-pr)", "${{ ctx.stage }}")][0] == "unknown"
    task = status[("Stage/test step 3.1 (git-clone)", "ssh://git@git.example.com/team/gitops.git")]
    assert task == ("ok", "Secret deploy-key (SSH key)")
    assert status[("Stage/test step 4 (argocd-update)", "Argo CD")][0] == "missing"
    assert (
        status[("receiver/gh", "hook")][0] == "ok"
        and "path /github/" in status[("receiver/gh", "hook")][1]
    )
    assert status[("receiver/hub", "no-such-secret")][0] == "missing"
    # Something is missing: exit 1, naming what.
    assert result.returncode == 1
    assert "receiver/hub" in result.stderr and "argocd-update" in result.stderr
    assert "TOPSECRET" not in result.stdout + result.stderr


def test_credentials_check_passes_when_nothing_is_missing(tmp_path: Path) -> None:
    global PROJECT
    original = PROJECT
    PROJECT = original.replace("{name: no-such-secret}", "{name: hook}")
    try:
        result = run_check(tmp_path, ARGOCD_SERVER="argocd.example.com", ARGOCD_AUTH_TOKEN=PASSWORD)
    finally:
        PROJECT = original
    assert result.returncode == 0, result.stderr
    assert "TOPSECRET" not in result.stdout + result.stderr
    assert "/github/" not in result.stdout  # receiver paths only with --show-urls


CLUSTER_AND_CLOUD = """
apiVersion: kargo.akuity.io/v1alpha1
kind: ClusterConfig
metadata: {name: cluster}
spec:
  webhookReceivers:
    - name: shared
      github: {secretRef: {name: cluster-hook}}
    - name: namespaced
      gitlab: {secretRef: {name: hook}}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Project
metadata: {name: kargo-demo}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: cloud, namespace: kargo-demo}
spec:
  subscriptions:
    - image: {repoURL: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app}
    - image: {repoURL: kargoexample.azurecr.io/team/app}
    - image: {repoURL: europe-west1-docker.pkg.dev/example/images/app}
    - chart: {repoURL: oci://europe-west1-docker.pkg.dev/example/charts/app}
    - image: {repoURL: quay.io/public/thing}
"""

ECR_APP = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app"
ACR_APP = "kargoexample.azurecr.io/team/app"
GAR_APP = "europe-west1-docker.pkg.dev/example/images/app"
GAR_CHART = "oci://europe-west1-docker.pkg.dev/example/charts/app"


def test_credentials_check_reports_cluster_receivers_and_workload_identities(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "gcp-key.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "puller@example.iam.gserviceaccount.com",
                "private_key_id": "k1",
                "private_key": "-----BEGIN PRIVATE KEY-----\nTOPSECRET-gcp\n-----END PRIVATE KEY-----\n",
                "token_uri": "http://127.0.0.1:9/token",  # never asked: nothing listens
            }
        )
    )
    (tmp_path / "azure-token").write_text("TOPSECRET-federated")
    result = run_check(
        tmp_path,
        "-o",
        "json",
        project=CLUSTER_AND_CLOUD,
        more_secrets=(secret("cluster-hook", None, secret=HOOK),),
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/freightline-worker",
        AWS_WEB_IDENTITY_TOKEN_FILE=str(tmp_path / "aws-token"),
        AZURE_CLIENT_ID="client-1",
        AZURE_TENANT_ID="tenant-1",
        AZURE_FEDERATED_TOKEN_FILE=str(tmp_path / "azure-token"),
        GOOGLE_APPLICATION_CREDENTIALS=str(key_file),
    )
    rows = {
        (row["project"], row["needed by"], row["for"]): row for row in json.loads(result.stdout)
    }
    status = {key: (row["status"], row["detail"]) for key, row in rows.items()}
    # The ClusterConfig's receivers: a Secret without a namespace serves them; a project's
    # (namespaced) Secret does not, as Kargo reads them from its cluster namespace.
    assert status[("(cluster)", "ClusterConfig receiver/shared", "cluster-hook")] == (
        "ok",
        "Secret cluster-hook (secret)",
    )
    namespaced = status[("(cluster)", "ClusterConfig receiver/namespaced", "hook")]
    assert namespaced == ("missing", "Secret 'hook' is not in the credentials file")
    # Registries no Secret serves: the workload identity the worker's variables give.
    cloud = {
        target: found for (_, where, target), found in status.items() if where == "Warehouse/cloud"
    }
    assert cloud[ECR_APP] == (
        "ok",
        "by workload identity IRSA (AWS_ROLE_ARN arn:aws:iam::123456789012:role/"
        "freightline-worker), assuming role kargo-project-kargo-demo",
    )
    assert cloud[ACR_APP] == (
        "ok",
        "by workload identity Azure (AZURE_CLIENT_ID client-1, tenant tenant-1)",
    )
    by_key = (
        "ok",
        "by workload identity GOOGLE_APPLICATION_CREDENTIALS "
        "(service account puller@example.iam.gserviceaccount.com)",
    )
    assert cloud[GAR_APP] == by_key and cloud[GAR_CHART] == by_key
    assert cloud["quay.io/public/thing"][0] == "anonymous"
    assert result.returncode == 1 and "ClusterConfig receiver/namespaced" in result.stderr
    assert "TOPSECRET" not in result.stdout + result.stderr


def test_credentials_check_says_when_a_workload_identity_cannot_serve(tmp_path: Path) -> None:
    (tmp_path / "gcp-key.json").write_text(json.dumps({"type": "authorized_user"}))
    gar_only = CLUSTER_AND_CLOUD.split("---", 1)[1]  # no ClusterConfig
    result = run_check(
        tmp_path,
        "-o",
        "json",
        project=gar_only,
        GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "gcp-key.json"),
    )
    rows = {row["for"]: (row["status"], row["detail"]) for row in json.loads(result.stdout)}
    assert rows[GAR_APP][0] == "missing" and "type 'authorized_user'" in rows[GAR_APP][1]
    assert rows[ECR_APP] == ("anonymous", "no Secret matches: anonymous access")  # no IRSA
    assert result.returncode == 1
    # Without a key file, only the metadata server could say whether the worker is on
    # Google Cloud: the check asks no endpoint and says so.
    result = run_check(tmp_path, "-o", "json", project=gar_only)
    rows = {row["for"]: (row["status"], row["detail"]) for row in json.loads(result.stdout)}
    assert rows[GAR_APP] == (
        "anonymous",
        "no Secret matches: workload identity Google metadata server if the worker runs on "
        "Google Cloud (service account kargo-project-kargo-demo@<gcp-project>, else the worker's own), "
        "else anonymous access",
    )
    assert result.returncode == 0, result.stderr


async def credentials_check(
    client: Client, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """``freightline credentials check ARGS`` against this Temporal, with the credentials
    file ``store_of`` wrote in ``tmp_path`` (wide enough for the table's columns)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "freightline", "credentials", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "FREIGHTLINE_CREDENTIALS_FILE": str(tmp_path / "creds.yaml"),
            "COLUMNS": "200",
        },
    )


@pytest.mark.integration
async def test_credentials_check_reads_the_applied_project(
    client: Client, worker: Worker, tmp_path: Path
) -> None:
    name = f"creds-{uuid.uuid4().hex[:8]}"
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "code", "namespace": name},
            "spec": {"interval": "1h", "subscriptions": [{"git": {"repoURL": upstream.url}}]},
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents))).values()
    await apply_project(client, resources)
    store_of(
        tmp_path, secret("local", "git", repoURL=upstream.url, username="u", password=PASSWORD)
    )
    result = await credentials_check(client, tmp_path, "-p", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    # The cluster's receivers follow (none unless a ClusterConfig is applied).
    (row,) = [row for row in json.loads(result.stdout) if row["project"] == name]
    assert (row["needed by"], row["status"], row["detail"]) == (
        "Warehouse/code",
        "ok",
        "Secret local (username and password)",
    )
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.integration
async def test_credentials_check_reads_the_applied_cluster_config(
    client: Client, worker: Worker, tmp_path: Path
) -> None:
    name = f"creds-{uuid.uuid4().hex[:8]}"
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "ClusterConfig",
            "metadata": {"name": "cluster"},
            "spec": {
                "webhookReceivers": [
                    {"name": "hub", "dockerhub": {"secretRef": {"name": "cluster-hook"}}},
                    {"name": "lab", "gitlab": {"secretRef": {"name": "absent"}}},
                ]
            },
        },
    ]
    loaded = load_text(dump(documents))
    (resources,) = group_by_project(loaded).values()
    await apply_project(client, resources)
    await apply_cluster(client, group_cluster(loaded))
    store_of(tmp_path, secret("cluster-hook", None, secret=HOOK))
    try:
        result = await credentials_check(client, tmp_path, "-p", name)
    finally:
        # One ClusterConfig per cluster: the other tests' Temporal is left without it.
        await delete_resource(client, "", "ClusterConfig", "cluster", "test")
    assert result.returncode == 1
    assert "1 credential(s) missing: ClusterConfig receiver/lab" in result.stderr
    assert "ClusterConfig receiver/hub" in result.stdout and "Secret cluster-hook" in result.stdout
    assert HOOK not in result.stdout + result.stderr
