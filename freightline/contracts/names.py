"""The names every Freightline process shares with Temporal.

The public interface of DESIGN.md lives here: the task queue, workflow type
names, workflow-ID rules, search attributes, and the signals, updates and
queries Freightline's workflows send each other. How a client connects is
``freightline.app.temporal``.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

from temporalio.common import SearchAttributeKey

from freightline.settings import TemporalSettings

CLUSTER_WORKFLOW = "Cluster"
CLUSTER_WORKFLOW_ID = "cluster"
"""The one workflow holding the cluster-scoped resources (ClusterAnalysisTemplates)."""
PROJECT_WORKFLOW = "Project"
PROMOTION_WORKFLOW = "Promotion"
STAGE_WORKFLOW = "Stage"
WAREHOUSE_WORKFLOW = "Warehouse"

SA_PROJECT = SearchAttributeKey.for_keyword("FreightlineProject")
SA_STAGE = SearchAttributeKey.for_keyword("FreightlineStage")
SA_FREIGHT = SearchAttributeKey.for_keyword("FreightlineFreight")
SA_WAREHOUSE = SearchAttributeKey.for_keyword("FreightlineWarehouse")
SA_PULL_REQUEST = SearchAttributeKey.for_keyword("FreightlinePullRequest")
"""Set on a Promotion while a ``git-wait-for-pr`` step waits: the pull request's web URL, as
the forge gives it (what its webhooks name), so a webhook finds the promotions to wake."""
SEARCH_ATTRIBUTES = (SA_PROJECT, SA_STAGE, SA_FREIGHT, SA_WAREHOUSE, SA_PULL_REQUEST)


def task_queue(settings: TemporalSettings | None = None) -> str:
    """The task queue workers poll and clients start workflows on (``FREIGHTLINE_TASK_QUEUE``).

    The client helpers (``freightline.app.client``) call it without settings; it then
    reads that one variable through the settings module, so a caller that set
    no queue of its own follows the process's environment.
    """
    return (settings or TemporalSettings()).task_queue


def argocd_task_queue(queue: str, shard: str | None) -> str | None:
    """The task queue of a sharded Stage's Argo CD activities; None keeps ``queue``.

    A Stage with Kargo's ``spec.shard`` has its ``argocd-update``, ``argocd-wait``
    and health checks run by the workers next to that cluster's Argo CD
    (``FREIGHTLINE_WORKER_ROLE=argocd``, ``FREIGHTLINE_SHARD``), which poll
    ``<queue>-argocd-<shard>``. Workflows derive it from their own task queue, so
    the shared workers need no setting for it.
    """
    return f"{queue}-argocd-{shard}" if shard else None


RESYNC_SIGNAL = "resync"
"""Sent to every Project workflow when a cluster-scoped resource changes: reconcile now."""


def project_workflow_id(project: str) -> str:
    """The ID of a project's configuration workflow."""
    return f"project:{project}"


def stage_workflow_id(project: str, stage: str) -> str:
    """The ID of a Stage's entity workflow."""
    return f"stage:{project}:{stage}"


def warehouse_workflow_id(project: str, warehouse: str) -> str:
    """The ID of a Warehouse's reconciliation workflow."""
    return f"warehouse:{project}:{warehouse}"


# Signals and queries between Freightline's own workflows (and from scripts).
FREIGHT_AVAILABLE_SIGNAL = "freight_available"
"""Sent to a Stage: Freight it may take (payload ``freightline.contracts.stage.FreightAvailable``)."""
REFRESH_SIGNAL = "refresh"
"""Sent to a Warehouse: discover now."""
ASSEMBLE_UPDATE = "assemble"
"""Sent to a Warehouse: make Freight of discovered artifacts
(``freightline.contracts.warehouse.AssembleRequest``)."""
FREIGHT_QUERY = "freight"
"""Asked of a Warehouse: its Freight, newest first (``list[Freight]``)."""
FREIGHT_NAMED_QUERY = "freight_named"
"""Asked of a Warehouse: its Freight with these IDs or aliases (``list[str]`` →
``list[Freight]``), for a promotion's plan, instead of all of it."""
PLAN_RESOURCES_QUERY = "plan_resources"
"""Asked of a Project: only what planning one promotion reads
(``freightline.contracts.promotion.PlanResourcesRequest`` → ``ProjectResources``), so
resolving a plan does not transfer and parse every Stage, Freight and template."""
APPLIED_FREIGHT_QUERY = "applied_freight"
"""Asked of a Project: its applied Freight with these IDs or aliases (``list[str]`` →
``list[Freight]``)."""
CURRENT_COLLECTION_QUERY = "current_collection"
"""Asked of a Stage: the IDs of its current Freight, one per origin (``list[str]``)."""
PULL_REQUEST_SIGNAL = "pull_request_closed"
"""Sent to a Promotion waiting in ``git-wait-for-pr``: the forge says the pull request was
merged or closed (``freightline.contracts.pull_request_wait.PullRequestClosed``); the
promotion then reads the pull request's state from the forge itself."""


def promotion_workflow_id(project: str, stage: str, freight_alias: str) -> str:
    """A new, unique ID for one promotion attempt (Kargo names them stage.ulid.freight)."""
    return f"promotion:{project}:{stage}:{freight_alias}:{uuid.uuid4().hex[:8]}"


def workflow_ui_url(
    ui_url: str, namespace: str, workflow_id: str, run_id: str | None = None
) -> str:
    """A link to one workflow run in the Temporal UI at ``ui_url`` (``TemporalSettings.ui_url``)."""
    url = f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}"
    return f"{url}/{run_id}/history" if run_id else url
