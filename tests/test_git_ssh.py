"""Git over SSH with a private key and known_hosts, against a real sshd on loopback."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from temporalio.client import Client
from temporalio.worker import Worker

from activities.git import GitRunner, git_environment
from activities.git_discovery import discover_commits
from freightline.app.client import apply_project
from freightline.contracts.names import FREIGHT_QUERY, warehouse_workflow_id
from freightline.errors import DiscoveryError, GitCommandError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.credentials import CRED_TYPE_LABEL, CredentialStore, GitCredentials
from freightline.kargo.resources import Freight, GitSubscription
from freightline.settings import GitSettings
from tests.conftest import recorded_text, wait_for
from tests.pipelines import dump
from tests.ssh_fixture import SshServer, keypair, start_sshd
from tests.test_git_discovery import Upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    upstream = Upstream(tmp_path)
    upstream.commit("a.txt")
    upstream.push()
    return upstream


def subscription(url: str) -> GitSubscription:
    return GitSubscription.model_validate({"repoURL": url, "branch": "main"})


def head(upstream: Upstream) -> str:
    return subprocess.run(
        ["git", "-C", str(upstream.bare), "rev-parse", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_discovery_over_ssh_with_a_key_from_the_credentials_file(
    sshd: SshServer, upstream: Upstream, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "deploy-key", "labels": {CRED_TYPE_LABEL: "git"}},
                    "stringData": {
                        "repoURL": sshd.url(upstream.bare),
                        "sshPrivateKey": sshd.client_key.private,
                    },
                }
            ]
        )
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts)
    store = CredentialStore.from_settings(
        GitSettings(credentials_file=creds, ssh_known_hosts=known_hosts)
    )
    credentials = store.git(sshd.url(upstream.bare))
    assert credentials is not None and credentials.ssh_private_key
    (commit,) = discover_commits(subscription(sshd.url(upstream.bare)), credentials)
    assert commit.id == head(upstream)


def test_clone_commit_and_push_over_ssh(
    sshd: SshServer, upstream: Upstream, tmp_path: Path
) -> None:
    credentials = GitCredentials(
        ssh_private_key=sshd.client_key.private, known_hosts=sshd.known_hosts
    )
    work = tmp_path / "clone"
    with git_environment(credentials, ("Ada", "ada@example.com")) as env:
        git = GitRunner(tmp_path, env)
        git("clone", "--quiet", sshd.url(upstream.bare), str(work))
        (work / "b.txt").write_text("b\n")
        in_clone = GitRunner(work, env)
        in_clone("add", "b.txt")
        in_clone("commit", "--quiet", "-m", "b")
        in_clone("push", "--quiet", "origin", "main")
        pushed = in_clone("rev-parse", "HEAD")
    assert head(upstream) == pushed
    # The key lived in the environment's temporary directory only, and is gone with it.
    key_file = Path(env["GIT_SSH_COMMAND"].split(" -i ")[1].split()[0])
    assert not key_file.exists()
    assert sshd.client_key.private not in env["GIT_SSH_COMMAND"]


@pytest.mark.parametrize("known", ["another host's key", "none"])
def test_an_unknown_host_key_is_refused(
    sshd: SshServer, upstream: Upstream, tmp_path: Path, known: str
) -> None:
    impostor = keypair(tmp_path / "impostor")
    known_hosts = f"[127.0.0.1]:{sshd.port} {impostor.public}\n" if known != "none" else None
    credentials = GitCredentials(ssh_private_key=sshd.client_key.private, known_hosts=known_hosts)
    with pytest.raises(DiscoveryError) as raised:
        discover_commits(subscription(sshd.url(upstream.bare)), credentials)
    assert "Host key verification failed" in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)


def test_a_key_the_server_does_not_accept_is_refused(
    sshd: SshServer, upstream: Upstream, tmp_path: Path
) -> None:
    stranger = keypair(tmp_path / "stranger")
    credentials = GitCredentials(ssh_private_key=stranger.private, known_hosts=sshd.known_hosts)
    with (
        git_environment(credentials) as env,
        pytest.raises(GitCommandError) as raised,
    ):
        GitRunner(tmp_path, env, credentials.secrets)("ls-remote", sshd.url(upstream.bare))
    assert "Permission denied" in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value)


def test_the_forced_command_serves_git_only(sshd: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text(sshd.client_key.private)
    key.chmod(0o600)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts)
    shell = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "BatchMode=yes",
            "-p",
            str(sshd.port),
            f"{sshd.user}@127.0.0.1",
            "id",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert shell.returncode != 0  # git-shell refuses anything but git's own commands


@pytest.fixture
def ssh_credentials_env(
    sshd: SshServer, upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The worker's credentials file holds the deploy key; its known_hosts the server's key."""
    creds = tmp_path / "creds.yaml"
    creds.write_text(
        dump(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "deploy-key", "labels": {CRED_TYPE_LABEL: "git"}},
                    "stringData": {
                        "repoURL": sshd.url(upstream.bare),
                        "sshPrivateKey": sshd.client_key.private,
                    },
                }
            ]
        )
    )
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts)
    monkeypatch.setenv("FREIGHTLINE_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("FREIGHTLINE_SSH_KNOWN_HOSTS", str(known_hosts))
    return creds


async def test_a_warehouse_discovers_over_ssh_and_records_no_key(
    sshd: SshServer,
    upstream: Upstream,
    ssh_credentials_env: Path,
    client: Client,
    worker: Worker,
) -> None:
    name = f"ssh-{uuid.uuid4().hex[:8]}"
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": name}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "code", "namespace": name},
            "spec": {
                "interval": "1h",
                "subscriptions": [{"git": {"repoURL": sshd.url(upstream.bare), "branch": "main"}}],
            },
        },
    ]
    (resources,) = group_by_project(load_text(dump(documents))).values()
    with capture_logs() as logs:
        await apply_project(client, resources)
        handle = client.get_workflow_handle(warehouse_workflow_id(name, "code"))

        async def discovered() -> bool:
            freight = await handle.query(FREIGHT_QUERY, result_type=list[Freight])
            return len(freight) == 1

        await wait_for(discovered)
    freight = await handle.query(FREIGHT_QUERY, result_type=list[Freight])
    assert freight[0].commits[0].id == head(upstream)
    # Neither the key nor anything of it is in the Warehouse's history or the worker's logs.
    history = await recorded_text(handle)
    key_lines = [line for line in sshd.client_key.private.splitlines() if "PRIVATE KEY" not in line]
    for text in (history, json.dumps(logs, default=str)):
        assert "PRIVATE KEY" not in text
        assert not any(line in text for line in key_lines if len(line) > 20)
    assert sshd.url(upstream.bare) in history  # the reference is what is recorded
