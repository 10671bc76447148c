"""The settings: read once from the environment, one line naming a bad variable, secrets hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from freightline.app.temporal import ui_url
from freightline.errors import ConfigError
from freightline.settings import (
    METRIC_HEADER_ENV_PREFIX,
    Settings,
    environment_variables,
    load_settings,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No Freightline variable set: what a fresh container starts with."""
    for name in environment_variables():
        if not name.endswith("*"):
            monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith(METRIC_HEADER_ENV_PREFIX):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.temporal.task_queue == "freightline"
    assert settings.temporal.ui_url is None  # derived from the frontend address
    assert (settings.worker.role, settings.worker.shard) == ("all", None)
    assert settings.worker.max_cached_workflows == 1000  # the SDK's own default
    # Loopback unless told: a laptop's worker exposes nothing (deploy/ sets 0.0.0.0).
    assert settings.listen.metrics_address == "127.0.0.1:9464"
    assert settings.listen.health_address == "127.0.0.1:8080"
    hooks = settings.webhooks
    assert (hooks.port, hooks.host, hooks.secret_value(), hooks.github_secret_value()) == (
        None,
        "127.0.0.1",
        "",
        "",
    )
    assert settings.git.author == ("Freightline", "freightline@localhost")
    assert (settings.git.username, settings.git.password, settings.git.credentials_file) == (
        None,
        None,
        None,
    )
    argocd = settings.argocd
    assert (argocd.server, argocd.token, argocd.insecure) == (None, None, False)
    assert settings.notify.urls == ()
    assert settings.registry.mirrors == {}
    assert settings.metrics.header_values == {}
    assert (settings.cli.project, settings.cli.user) == (None, "cli")
    assert settings == Settings()  # load_settings is Settings() with one-line errors


ENVIRONMENT: list[tuple[str, str, str, Any]] = [
    ("FREIGHTLINE_TASK_QUEUE", "q1", "temporal.task_queue", "q1"),
    ("FREIGHTLINE_UI_URL", "http://ui:8233", "temporal.ui_url", "http://ui:8233"),
    ("FREIGHTLINE_SHARD", "eu-prod", "worker.shard", "eu-prod"),
    ("FREIGHTLINE_MAX_CACHED_WORKFLOWS", "250", "worker.max_cached_workflows", 250),
    ("FREIGHTLINE_MAX_CACHED_WORKFLOWS", "0", "worker.max_cached_workflows", 0),
    ("FREIGHTLINE_METRICS_ADDRESS", "127.0.0.1:1", "listen.metrics_address", "127.0.0.1:1"),
    ("FREIGHTLINE_METRICS_ADDRESS", "", "listen.metrics_address", None),
    ("FREIGHTLINE_HEALTH_ADDRESS", "[::1]:8081", "listen.health_address", "[::1]:8081"),
    ("FREIGHTLINE_HEALTH_ADDRESS", "", "listen.health_address", None),
    ("FREIGHTLINE_WEBHOOK_PORT", "8090", "webhooks.port", 8090),
    ("FREIGHTLINE_WEBHOOK_PORT", "", "webhooks.port", None),
    ("FREIGHTLINE_WEBHOOK_HOST", "127.0.0.1", "webhooks.host", "127.0.0.1"),
    ("FREIGHTLINE_GIT_AUTHOR_NAME", "Kargo Bot", "git.author_name", "Kargo Bot"),
    ("FREIGHTLINE_GIT_AUTHOR_EMAIL", "bot@example.com", "git.author_email", "bot@example.com"),
    (
        "FREIGHTLINE_CREDENTIALS_FILE",
        "/creds/c.yaml",
        "git.credentials_file",
        Path("/creds/c.yaml"),
    ),
    ("ARGOCD_SERVER", " argocd.example.com ", "argocd.server", "argocd.example.com"),
    ("ARGOCD_INSECURE", "true", "argocd.insecure", True),
    ("ARGOCD_INSECURE", "0", "argocd.insecure", False),
    ("FREIGHTLINE_REGISTRY_MIRRORS", "a=b, c = d", "registry.mirrors", {"a": "b", "c": "d"}),
    ("FREIGHTLINE_PROJECT", "kargo-demo", "cli.project", "kargo-demo"),
    ("USER", "alice", "cli.user", "alice"),
]


@pytest.mark.parametrize(("name", "value", "field", "expected"), ENVIRONMENT)
def test_each_variable_sets_its_field(
    clean_env: pytest.MonkeyPatch, name: str, value: str, field: str, expected: Any
) -> None:
    clean_env.setenv(name, value)
    if name == "FREIGHTLINE_SHARD":
        clean_env.setenv("FREIGHTLINE_WORKER_ROLE", "argocd")
    group, attribute = field.split(".")
    assert getattr(getattr(load_settings(), group), attribute) == expected
    assert environment_variables()[name] == field


def test_secrets_are_secret_strings(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "FREIGHTLINE_WEBHOOK_SECRET": "hook-s3cret",
        "FREIGHTLINE_GITHUB_WEBHOOK_SECRET": "gh-s3cret",
        "FREIGHTLINE_GIT_USERNAME": "bot",
        "FREIGHTLINE_GIT_PASSWORD": "git-s3cret",
        "ARGOCD_AUTH_TOKEN": "argo-s3cret",
        "FREIGHTLINE_NOTIFY_URLS": "https://hooks.example/T0/tok-s3cret, https://b.example/x",
        "FREIGHTLINE_METRIC_TOKEN": "metric-s3cret",
    }
    for name, value in values.items():
        clean_env.setenv(name, value)
    settings = load_settings()
    for secret in (
        settings.webhooks.secret,
        settings.webhooks.github_secret,
        settings.git.password,
        settings.argocd.token,
        *settings.notify.urls,
        *settings.metrics.header_values.values(),
    ):
        assert isinstance(secret, SecretStr)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "s3cret" not in shown
    # The parts that send them get the values, and only they.
    assert settings.webhooks.secret_value() == "hook-s3cret"
    assert settings.webhooks.github_secret_value() == "gh-s3cret"
    assert settings.argocd.token_value() == "argo-s3cret"
    assert [u.get_secret_value() for u in settings.notify.urls][1] == "https://b.example/x"
    assert settings.metrics.plain() == {"FREIGHTLINE_METRIC_TOKEN": "metric-s3cret"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "FREIGHTLINE_WORKER_ROLE",
            "bogus",
            "FREIGHTLINE_WORKER_ROLE='bogus': expected all or argocd",
        ),
        (
            "FREIGHTLINE_METRICS_ADDRESS",
            "9464",
            "FREIGHTLINE_METRICS_ADDRESS='9464': not HOST:PORT (e.g. 0.0.0.0:9464)",
        ),
        ("FREIGHTLINE_HEALTH_ADDRESS", "host:http", "FREIGHTLINE_HEALTH_ADDRESS='host:http': not"),
        ("FREIGHTLINE_WEBHOOK_PORT", "http", "FREIGHTLINE_WEBHOOK_PORT='http': Input should be"),
        ("FREIGHTLINE_WEBHOOK_PORT", "70000", "FREIGHTLINE_WEBHOOK_PORT='70000': Input should be"),
        ("ARGOCD_INSECURE", "maybe", "ARGOCD_INSECURE='maybe': Input should be a valid boolean"),
        (
            "FREIGHTLINE_MAX_CACHED_WORKFLOWS",
            "-1",
            "FREIGHTLINE_MAX_CACHED_WORKFLOWS='-1': Input should be greater than or equal to 0",
        ),
        (
            "FREIGHTLINE_REGISTRY_MIRRORS",
            "public.ecr.aws",
            "FREIGHTLINE_REGISTRY_MIRRORS='public.ecr.aws': 'public.ecr.aws' is not registry=mirror",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_every_problem_at_once_and_never_a_secret(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FREIGHTLINE_WORKER_ROLE", "argocd")  # without a shard
    clean_env.setenv("FREIGHTLINE_GIT_PASSWORD", "git-s3cret")  # without a username
    clean_env.setenv("FREIGHTLINE_WEBHOOK_PORT", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert "FREIGHTLINE_WORKER_ROLE=argocd needs FREIGHTLINE_SHARD" in message
    assert "FREIGHTLINE_GIT_PASSWORD is set without FREIGHTLINE_GIT_USERNAME" in message
    assert "FREIGHTLINE_WEBHOOK_PORT='-1'" in message


def test_replace_sets_fields_without_touching_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    before = dict(os.environ)
    settings = load_settings().replace(
        temporal={"ui_url": "http://127.0.0.1:18233"},
        argocd={"server": "http://127.0.0.1:1", "token": "t0ken"},
        webhooks={"port": 9000, "secret": "hook"},
    )
    assert settings.temporal.ui_url == "http://127.0.0.1:18233"
    assert settings.temporal.task_queue == "freightline"  # the rest as loaded
    assert isinstance(settings.argocd.token, SecretStr) and settings.argocd.token_value() == "t0ken"
    assert (settings.webhooks.port, settings.webhooks.secret_value()) == (9000, "hook")
    assert dict(os.environ) == before
    with pytest.raises(ConfigError, match="Input should be less than or equal to 65535"):
        settings.replace(webhooks={"port": 70000})


@pytest.mark.parametrize("doc", ["docs/configuration.md", "deploy/README.md"])
def test_the_docs_list_every_variable(doc: str) -> None:
    text = (REPO / doc).read_text()
    for name in environment_variables():
        if name in ("USER", "LOGNAME"):
            continue  # the login's own, not Freightline's
        if doc == "deploy/README.md" and name == "FREIGHTLINE_PROJECT":
            assert name in text
            continue
        assert f"`{name}`" in text, f"{doc} does not document {name}"


def test_the_worker_stops_on_a_bad_variable_with_one_line() -> None:
    env = {**os.environ, "FREIGHTLINE_WORKER_ROLE": "bogus", "FREIGHTLINE_HEALTH_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: FREIGHTLINE_WORKER_ROLE='bogus': expected all or argocd"
    )


def test_a_command_stops_on_a_bad_variable_with_one_line() -> None:
    env = {**os.environ, "FREIGHTLINE_METRICS_ADDRESS": "nowhere"}
    done = subprocess.run(
        [sys.executable, "-m", "freightline", "get", "stages", "-p", "kargo-demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: FREIGHTLINE_METRICS_ADDRESS='nowhere': not HOST:PORT (e.g. 0.0.0.0:9464), "
        "or empty for off"
    )


@pytest.mark.parametrize(
    ("configured", "address", "expected"),
    [
        ("https://ui.example.com/", "temporal:7233", "https://ui.example.com"),
        (None, "localhost:7233", "http://localhost:8233"),  # freightline dev's default
        (None, "127.0.0.1:17233", "http://127.0.0.1:18233"),  # freightline dev --port 17233
        (None, "ns.acct.tmprl.cloud:7233", "https://cloud.temporal.io"),
        (None, "", "http://localhost:8233"),
    ],
)
def test_ui_url_is_the_setting_or_derived_from_the_frontend(
    configured: str | None, address: str, expected: str
) -> None:
    assert ui_url(configured, address) == expected
