"""Which of a project's Warehouses, steps and webhook receivers have the credentials they need.

``freightline credentials check`` prints these rows. A row names what needs a
credential, the repository (or Secret) it is for, and what the worker would use:
the name of the Secret that matches (and its kind: password, SSH key), the one
git identity of ``FREIGHTLINE_GIT_USERNAME``, the worker's workload identity for a
cloud registry (told by the edge from the environment, never by asking the cloud), or
nothing (anonymous access, fine for a public repository). Never a value.

A step's ``repoURL`` is rendered with the Stage's and the step's static
``vars``; one that needs Freight or outputs (``${{ ctx... }}``, ``outputs``)
cannot be told before a promotion runs, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from freightline.errors import ExpressionError
from freightline.kargo.credentials import CredentialEntry, CredentialStore
from freightline.kargo.expressions import render_string
from freightline.kargo.resources import (
    ClusterConfig,
    ProjectResources,
    PromotionStep,
    Stage,
    Var,
)
from freightline.kargo.webhooks import (
    SECRET_KEYS,
    BoundReceiver,
    bind_cluster_receivers,
    bind_receivers,
)

__all__ = ["CredentialNeed", "WorkloadCover", "Workloads", "check_cluster", "check_project"]

Status = Literal["ok", "anonymous", "missing", "unknown"]


@dataclass(frozen=True)
class CredentialNeed:
    """One thing that needs (or may need) a credential, and what the worker has for it."""

    where: str
    kind: str
    target: str
    status: Status
    detail: str


@dataclass(frozen=True)
class WorkloadCover:
    """What the worker's workload identity does for a registry no Secret serves: ``ok``
    (it logs in: ``detail`` names it), ``anonymous`` (only where the worker runs, e.g. on
    Google Cloud: ``detail`` says so) or ``missing`` (it is configured and cannot work)."""

    status: Status
    detail: str


Workloads = Callable[[str, str], WorkloadCover | None]
"""``(repo_url, project)``: the workload identity that would log in, or None."""

# Steps that reach a git repository (or its forge) with the worker's credentials.
_GIT_STEPS = ("git-clone", "git-open-pr", "git-wait-for-pr", "git-merge-pr")


def check_project(
    resources: ProjectResources,
    store: CredentialStore,
    *,
    argocd_configured: bool,
    receiver_urls: bool = False,
    workloads: Workloads | None = None,
) -> list[CredentialNeed]:
    """Every credential the project needs, in order: Warehouses, steps, receivers."""
    lookup = _Lookup(store, resources.name, workloads)
    needs: list[CredentialNeed] = []
    for name, warehouse in sorted(resources.warehouses.items()):
        for subscription in warehouse.spec.subscriptions:
            if subscription.git is not None:
                needs.append(lookup(f"Warehouse/{name}", "git", subscription.git.repo_url))
            elif subscription.image is not None:
                needs.append(lookup(f"Warehouse/{name}", "image", subscription.image.repo_url))
            elif subscription.chart is not None:
                needs.append(lookup(f"Warehouse/{name}", "helm", subscription.chart.repo_url))
    for name, stage in sorted(resources.stages.items()):
        needs.extend(_stage_needs(resources, lookup, name, stage, argocd_configured))
    needs.extend(_receiver_needs(bind_receivers(resources, store.secret), receiver_urls))
    return needs


def check_cluster(
    config: ClusterConfig | None, store: CredentialStore, *, receiver_urls: bool = False
) -> list[CredentialNeed]:
    """The ClusterConfig's webhook receivers: each one's Secret (one serving every project,
    no ``namespace``), present with its key or missing."""
    bound = bind_cluster_receivers(config, store.secret)
    return _receiver_needs(bound, receiver_urls, "ClusterConfig ")


def _receiver_needs(
    receivers: Iterable[BoundReceiver], urls: bool, prefix: str = ""
) -> list[CredentialNeed]:
    needs = []
    for bound in receivers:
        receiver = bound.receiver
        where = f"{prefix}receiver/{receiver.name}"
        secret = receiver.config.secret_ref.name
        if bound.problem:
            needs.append(
                CredentialNeed(where, receiver.receiver_type, secret, "missing", bound.problem)
            )
            continue
        detail = f"Secret {secret} ({SECRET_KEYS[receiver.receiver_type]})"
        if urls and bound.path:
            detail += f"; path {bound.path}"
        needs.append(CredentialNeed(where, receiver.receiver_type, secret, "ok", detail))
    return needs


@dataclass(frozen=True)
class _Lookup:
    """What serves a repository: a Secret, the worker's git identity, its workload identity
    (for a registry: images and OCI charts), or nothing."""

    store: CredentialStore
    project: str
    workloads: Workloads | None

    def __call__(self, where: str, kind: str, repo_url: str) -> CredentialNeed:
        entry = self.store.find(kind, repo_url)
        if entry is not None:
            return CredentialNeed(where, kind, repo_url, "ok", _describe(entry))
        if kind == "git" and self.store.git_fallback is not None:
            return CredentialNeed(
                where, kind, repo_url, "ok", "the worker's git identity (FREIGHTLINE_GIT_USERNAME)"
            )
        cover = None
        if kind in ("image", "helm") and self.workloads is not None:
            cover = self.workloads(repo_url, self.project)
        if cover is not None:
            return CredentialNeed(where, kind, repo_url, cover.status, cover.detail)
        return CredentialNeed(
            where, kind, repo_url, "anonymous", "no Secret matches: anonymous access"
        )


def _describe(entry: CredentialEntry) -> str:
    if entry.values.get("githubAppPrivateKey"):
        how = "GitHub App installation token"
    elif entry.values.get("awsAccessKeyID"):
        how = "ECR access key"
    elif entry.values.get("gcpServiceAccountKey"):
        how = "GCP service account key"
    elif entry.values.get("sshPrivateKey"):
        how = "SSH key"
    else:
        how = "username and password"
    regex = ", repoURL is a regular expression" if entry.is_regex else ""
    return f"Secret {entry.name} ({how}{regex})"


def _vars(*groups: Iterable[Var] | None) -> dict[str, Any]:
    """Static ``vars`` (later groups override); each may use the ones before it."""
    values: dict[str, Any] = {}
    for group in groups:
        for var in group or ():
            if var.value is None:
                continue
            try:
                values[var.name] = render_string(var.value, {"vars": values})
            except ExpressionError:
                continue  # needs ctx or Freight: a step using it cannot be told
    return values


def _stage_needs(
    resources: ProjectResources,
    lookup: _Lookup,
    name: str,
    stage: Stage,
    argocd_configured: bool,
) -> list[CredentialNeed]:
    template = stage.spec.promotion_template
    if template is None:
        return []
    stage_vars = _vars(template.spec.vars, stage.spec.vars)
    needs = []
    for number, step in enumerate(template.spec.steps or (), start=1):
        steps: list[tuple[str, PromotionStep | Any, dict[str, Any]]] = []
        if step.task is not None:
            task = resources.promotion_tasks.get(step.task.name)
            if task is None:
                continue  # apply refuses this; nothing to check
            task_vars = {**_vars(task.spec.vars), **stage_vars, **_vars(step.vars)}
            for inner, leaf in enumerate(task.spec.steps, start=1):
                label = f"Stage/{name} step {number}.{inner} ({leaf.uses})"
                steps.append((label, leaf, {**task_vars, **_vars(leaf.vars)}))
        else:
            steps.append(
                (
                    f"Stage/{name} step {number} ({step.uses})",
                    step,
                    {**stage_vars, **_vars(step.vars)},
                )
            )
        for label, leaf, variables in steps:
            needs.extend(
                _step_needs(
                    lookup, label, leaf.uses or "", leaf.config or {}, variables, argocd_configured
                )
            )
    return needs


def _step_needs(
    lookup: _Lookup,
    label: str,
    uses: str,
    config: Mapping[str, Any],
    variables: Mapping[str, Any],
    argocd_configured: bool,
) -> list[CredentialNeed]:
    if uses in _GIT_STEPS and isinstance(config.get("repoURL"), str):
        return [_rendered(lookup, label, "git", config["repoURL"], variables)]
    if uses == "helm-update-chart":
        charts = config.get("charts")
        if not isinstance(charts, list):
            return []
        return [
            _rendered(lookup, label, "helm", chart["repository"], variables)
            for chart in charts
            if isinstance(chart, dict) and isinstance(chart.get("repository"), str)
        ]
    if uses == "argocd-update":
        if argocd_configured:
            return [
                CredentialNeed(
                    label, "argocd", "Argo CD", "ok", "ARGOCD_SERVER and ARGOCD_AUTH_TOKEN"
                )
            ]
        return [
            CredentialNeed(
                label, "argocd", "Argo CD", "missing", "set ARGOCD_SERVER and ARGOCD_AUTH_TOKEN"
            )
        ]
    return []


def _rendered(
    lookup: _Lookup, label: str, kind: str, template: str, variables: Mapping[str, Any]
) -> CredentialNeed:
    try:
        url = render_string(template, {"vars": dict(variables)})
    except ExpressionError:
        url = None
    if not isinstance(url, str) or "${{" in url:
        return CredentialNeed(
            label, kind, template, "unknown", "depends on the promotion (ctx, Freight or outputs)"
        )
    return lookup(label, kind, url)
