"""deploy/: the Kubernetes manifests build with real kustomize and hold what production needs;
the Dockerfile is checked statically (no Docker engine here)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from temporalio.envconfig import ClientConfig

from activities.kustomize_steps import render_kustomization
from freightline.contracts.names import argocd_task_queue
from freightline.settings import DEFAULT_HEALTH_ADDRESS, DEFAULT_METRICS_ADDRESS
from worker import GRACEFUL_SHUTDOWN

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATIONS = [
    KUBERNETES / "base",
    *sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir()),
]
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the manifests must say
SECRET_LOOKING = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY|PRIVATE|CREDENTIAL", re.IGNORECASE)

Document = dict[str, Any]


def build(directory: Path) -> list[Document]:
    return [d for d in YAML(typ="safe").load_all(render_kustomization(directory)) if d]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> list[Document]:
    directory: Path = request.param
    return build(directory)


def of_kind(documents: list[Document], kind: str) -> list[Document]:
    return [d for d in documents if d["kind"] == kind]


def config_data(documents: list[Document], name: str) -> dict[str, str]:
    (config,) = [d for d in of_kind(documents, "ConfigMap") if d["metadata"]["name"] == name]
    data: dict[str, str] = config["data"]
    return data


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def container_env(deployment: Document, documents: list[Document]) -> dict[str, Any]:
    """What the worker container's environment holds: ConfigMap values, then ``env`` entries."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(config_data(documents, source["configMapRef"]["name"]))
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def test_every_kustomization_is_covered() -> None:
    names = {p.name for p in KUSTOMIZATIONS}
    assert {"base", "temporal-cloud", "temporal-cloud-mtls", "per-cluster"} <= names


def test_deployments_are_replicated_probed_and_drain_in_time(rendered: list[Document]) -> None:
    deployments = of_kind(rendered, "Deployment")
    assert deployments
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        assert spec["replicas"] >= 2, name
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, name
        assert pod["terminationGracePeriodSeconds"] > GRACEFUL_SHUTDOWN.total_seconds(), name
        (container,) = pod["containers"]
        env = container_env(deployment, rendered)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The defaults are loopback: a pod must bind every interface, explicitly.
        assert env["FREIGHTLINE_HEALTH_ADDRESS"].startswith(ALL_INTERFACES), name
        assert env["FREIGHTLINE_METRICS_ADDRESS"].startswith(ALL_INTERFACES), name
        assert env["FREIGHTLINE_WEBHOOK_HOST"] == ALL_INTERFACES, name
        health_port = port_of(env["FREIGHTLINE_HEALTH_ADDRESS"])
        metrics_port = port_of(env["FREIGHTLINE_METRICS_ADDRESS"])
        assert ports == {"health": health_port, "metrics": metrics_port}, name
        for probe, path in (
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ):
            assert container[probe]["httpGet"] == {"path": path, "port": "health"}, (name, probe)
        annotations = spec["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(metrics_port)
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name
        assert "memory" in resources["limits"], name
        image = container["image"]
        assert "/" in image and ":" in image.rsplit("/", 1)[1], f"{name}: unpinned image {image}"


def test_pods_run_as_non_root_on_a_read_only_root(rendered: list[Document]) -> None:
    for deployment in of_kind(rendered, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["automountServiceAccountToken"] is False, name
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        # The worktree activity clones into temporary directories.
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_no_secret_values_only_references(rendered: list[Document]) -> None:
    assert not of_kind(rendered, "Secret")
    for config in of_kind(rendered, "ConfigMap"):
        for key in config.get("data", {}):
            assert not SECRET_LOOKING.search(key) or key.endswith(("_PATH", "_FILE")), key
    for deployment in of_kind(rendered, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            for entry in container.get("env", []):
                if SECRET_LOOKING.search(entry["name"]):
                    assert "value" not in entry, entry["name"]
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}, entry["name"]
        for volume in pod["volumes"]:
            assert set(volume) <= {"name", "emptyDir", "secret", "configMap"}, volume
            if "secret" in volume:
                assert set(volume["secret"]) <= {"secretName", "defaultMode", "optional"}


def test_base_mounts_git_credentials_and_reads_argocd_token_from_secrets() -> None:
    documents = build(KUBERNETES / "base")
    (deployment,) = of_kind(documents, "Deployment")
    env = container_env(deployment, documents)
    assert env["ARGOCD_AUTH_TOKEN"] == {
        "secretKeyRef": {"name": "freightline-argocd", "key": "token"}
    }
    credentials = Path(env["FREIGHTLINE_CREDENTIALS_FILE"])
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(credentials.parent))
    assert "subPath" not in mount  # so an updated Secret reaches the running worker
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "freightline-git-credentials"
    assert env["FREIGHTLINE_TASK_QUEUE"] == "freightline"
    assert env["TEMPORAL_ADDRESS"] and env["TEMPORAL_NAMESPACE"]


def envconfig_of(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, **extra: str) -> Any:
    """The connect options Temporal's envconfig derives from a container's environment."""
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
    for key, value in {**env, **extra}.items():
        if key.startswith("TEMPORAL_") and isinstance(value, str):
            monkeypatch.setenv(key, value)
    return ClientConfig.load_client_connect_config()


def test_temporal_cloud_api_key_overlay_configures_envconfig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents = build(KUBERNETES / "overlays" / "temporal-cloud")
    (deployment,) = of_kind(documents, "Deployment")
    env = container_env(deployment, documents)
    assert env["TEMPORAL_API_KEY"] == {
        "secretKeyRef": {"name": "freightline-temporal-cloud", "key": "api-key"}
    }
    config = envconfig_of(env, monkeypatch, TEMPORAL_API_KEY="from-the-secret")
    assert config["target_host"] == env["TEMPORAL_ADDRESS"]
    assert config["namespace"] == env["TEMPORAL_NAMESPACE"]
    assert config["api_key"] == "from-the-secret"
    assert config["tls"]  # an API key turns TLS on


def test_temporal_cloud_mtls_overlay_configures_envconfig(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    documents = build(KUBERNETES / "overlays" / "temporal-cloud-mtls")
    (deployment,) = of_kind(documents, "Deployment")
    env = container_env(deployment, documents)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cert, key = (
        Path(env["TEMPORAL_TLS_CLIENT_CERT_PATH"]),
        Path(env["TEMPORAL_TLS_CLIENT_KEY_PATH"]),
    )
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(cert.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "freightline-temporal-mtls"
    assert key.parent == cert.parent and {cert.name, key.name} == {"tls.crt", "tls.key"}

    # The same variables, pointing at files that exist here.
    (tmp_path / "tls.crt").write_bytes(b"CERT")
    (tmp_path / "tls.key").write_bytes(b"KEY")
    local = {
        **env,
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / cert.name),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / key.name),
    }
    config = envconfig_of(local, monkeypatch)
    assert config["target_host"] == env["TEMPORAL_ADDRESS"]
    assert config["tls"].client_cert == b"CERT"
    assert config["tls"].client_private_key == b"KEY"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_per_cluster_overlay_adds_a_worker_on_its_own_queue() -> None:
    documents = build(KUBERNETES / "overlays" / "per-cluster")
    deployments = {d["metadata"]["name"]: d for d in of_kind(documents, "Deployment")}
    shared, cluster = deployments["freightline-worker"], deployments["freightline-argocd-eu-prod"]
    shared_env, cluster_env = container_env(shared, documents), container_env(cluster, documents)
    assert shared_env["FREIGHTLINE_TASK_QUEUE"] == "freightline"
    assert (cluster_env["FREIGHTLINE_WORKER_ROLE"], cluster_env["FREIGHTLINE_SHARD"]) == (
        "argocd",
        "eu-prod",
    )
    # The queue the worker polls is the one sharded Stages' workflows send to.
    queue = argocd_task_queue(
        cluster_env["FREIGHTLINE_TASK_QUEUE"], cluster_env["FREIGHTLINE_SHARD"]
    )
    assert queue == "freightline-argocd-eu-prod"
    assert cluster_env["TEMPORAL_ADDRESS"] == shared_env["TEMPORAL_ADDRESS"]
    assert cluster_env["ARGOCD_AUTH_TOKEN"]["secretKeyRef"]["name"] == "freightline-argocd-eu-prod"

    # Each Deployment, Service and PodDisruptionBudget selects only its own pods.
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert [n for n, labels in pod_labels.items() if selects(selector, labels)] == [name]
    for other in [*of_kind(documents, "Service"), *of_kind(documents, "PodDisruptionBudget")]:
        selector = other["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert len([n for n, labels in pod_labels.items() if selects(selector, labels)]) == 1


def test_podmonitor_component_scrapes_every_worker(tmp_path: Path) -> None:
    # Kustomize wants relative paths: an overlay of our own in a copy of the tree.
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    overlay = tree / "overlays" / "with-podmonitor"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "namespace: freightline\n"
        "resources: [../per-cluster]\n"
        "components: [../../components/podmonitor]\n"
    )
    documents = build(overlay)
    (monitor,) = of_kind(documents, "PodMonitor")
    assert monitor["metadata"]["namespace"] == "freightline"
    for deployment in of_kind(documents, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(monitor["spec"]["selector"]["matchLabels"], labels)
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


# --- Dockerfile (static: there is no Docker engine on these machines) ---


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends in a continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_builds_on_python_slim_and_installs_the_project() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert all(a.split()[0] == "${PYTHON_IMAGE}" for k, a in instructions if k == "FROM")
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "pip install ." in runs
    assert "apt-get install" in runs and " git " in runs
    assert "sha256sum -c" in runs  # the kustomize download is checked
    copied = {
        source.rstrip("/")
        for k, a in instructions
        if k == "COPY" and "--from" not in a
        for source in a.split()[:-1]
    }
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = {f"{m}.py" for m in setuptools["py-modules"]}
    # Every top-level package pyproject ships is in the image (a new one must be copied too).
    packages = {p.split(".")[0].rstrip("*") for p in setuptools["packages"]["find"]["include"]}
    assert {*packages, *modules, "pyproject.toml"} <= copied
    assert "sandbox" not in copied  # stand-ins and the demo stay out of the worker's image
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert all(f"!{path}" in ignore or f"!{path}/" in ignore for path in copied)


def test_dockerfile_runs_the_worker_as_non_root_with_a_healthcheck() -> None:
    stage = final_stage()
    keywords = [k for k, _ in stage]
    (user,) = [a for k, a in stage if k == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
    (entrypoint,) = [json.loads(a) for k, a in stage if k == "ENTRYPOINT"]
    assert entrypoint[-2:] == ["freightline", "worker"]
    (healthcheck,) = [a for k, a in stage if k == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    (stopsignal,) = [a for k, a in stage if k == "STOPSIGNAL"]
    assert stopsignal == "SIGTERM"
    exposed = {int(p) for k, a in stage if k == "EXPOSE" for p in a.split()}
    assert exposed == {port_of(DEFAULT_METRICS_ADDRESS), port_of(DEFAULT_HEALTH_ADDRESS)}
    env = dict(
        pair.split("=", 1) for k, a in stage if k == "ENV" for pair in shlex.split(a) if "=" in pair
    )
    assert (
        env["FREIGHTLINE_METRICS_ADDRESS"] == f"{ALL_INTERFACES}:{port_of(DEFAULT_METRICS_ADDRESS)}"
    )
    assert (
        env["FREIGHTLINE_HEALTH_ADDRESS"] == f"{ALL_INTERFACES}:{port_of(DEFAULT_HEALTH_ADDRESS)}"
    )
    assert env["FREIGHTLINE_WEBHOOK_HOST"] == ALL_INTERFACES
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert any(k == "COPY" and "kustomize" in a for k, a in stage)
