"""Pipelines for tests: the Kargo quickstart fixture pointed at a local repo, and small variants."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from freightline.kargo.config import ProjectResources, group_by_project, load_text, substitute_env
from freightline.kargo.freight import freight_alias, freight_id
from freightline.kargo.resources import Freight
from sandbox.gitops import KARGO_QUICKSTART

IMAGE = "public.ecr.aws/nginx/nginx"


def quickstart_documents(repo: Path) -> list[dict[str, Any]]:
    """The quickstart's documents with its shell variables substituted (Secret included)."""
    text = substitute_env(
        (KARGO_QUICKSTART / "kargo.yaml").read_text(),
        {"GITOPS_REPO_URL": repo.as_uri(), "GITHUB_USERNAME": "octocat", "GITHUB_PAT": "ghp_x"},
    )
    return [d for d in YAML(typ="safe").load_all(text) if d]


def dump(documents: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    YAML(typ="safe").dump_all(documents, buffer)
    return buffer.getvalue()


def up_to_push_documents(repo: Path) -> list[dict[str, Any]]:
    """The quickstart's documents, Secret removed, its PromotionTask cut after git-push (no
    Argo CD here)."""
    documents = [d for d in quickstart_documents(repo) if d["kind"] != "Secret"]
    for document in documents:
        if document["kind"] == "PromotionTask":
            steps = document["spec"]["steps"]
            document["spec"]["steps"] = steps[: [s["uses"] for s in steps].index("git-push") + 1]
    return documents


def project_of(documents: list[dict[str, Any]], source: str) -> ProjectResources:
    """The one project ``documents`` make, loaded as ``freightline apply`` loads a file."""
    (resources,) = group_by_project(load_text(dump(documents), source=source)).values()
    return resources


def gated_at_test(repo: Path, source: str = "gated") -> ProjectResources:
    """The quickstart up to git-push, with an approval gate (alice) on Stage test, as a
    ProjectConfig's promotion policy."""
    policy = {"stage": "test", "approval": {"approvers": ["alice"], "timeout": "1h"}}
    config = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "ProjectConfig",
        "metadata": {"name": "kargo-demo", "namespace": "kargo-demo"},
        "spec": {"promotionPolicies": [policy]},
    }
    return project_of([*up_to_push_documents(repo), config], source)


def quickstart_up_to_push(repo: Path) -> ProjectResources:
    """The quickstart, Secret removed, its PromotionTask cut after git-push (no Argo CD here)."""
    return quickstart_auto(repo, auto=False)


def freight_for(tag: str, image: str = IMAGE, warehouse: str = "kargo-demo") -> Freight:
    """A Freight for one image tag, ID and alias computed by the real rule."""
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "kargo-demo"},
        "origin": {"kind": "Warehouse", "name": warehouse},
        "images": [{"repoURL": image, "tag": tag}],
    }
    name = freight_id(Freight.model_validate(body))
    body["metadata"]["name"] = name
    body["alias"] = freight_alias(name)
    return Freight.model_validate(body)


def with_freight(resources: ProjectResources, *freight: Freight) -> ProjectResources:
    return resources.model_copy(
        update={"freight": {**resources.freight, **{f.metadata.name: f for f in freight}}}
    )


def commit_freight(
    repo: Path, commit: str, warehouse: str = "kargo-demo", images: tuple[str, ...] = ()
) -> Freight:
    """A Freight for one commit of a local repository (and ``repo:tag`` images), ID and
    alias computed by the real rule."""
    body: dict[str, Any] = {
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "pending", "namespace": "p"},
        "origin": {"kind": "Warehouse", "name": warehouse},
        "commits": [{"repoURL": repo.as_uri(), "id": commit, "branch": "main"}],
    }
    if images:
        body["images"] = [
            {"repoURL": image.rpartition(":")[0], "tag": image.rpartition(":")[2]}
            for image in images
        ]
    name = freight_id(Freight.model_validate(body))
    body["metadata"]["name"] = name
    body["alias"] = freight_alias(name)
    return Freight.model_validate(body)


def single_stage_project(
    repo: Path,
    steps: list[dict[str, Any]],
    *,
    stages: tuple[str, ...] = ("test",),
    variables: list[dict[str, Any]] | None = None,
) -> ProjectResources:
    """A project whose Stages run ``steps`` directly (``REPO_URL`` in them names ``repo``)."""
    documents: list[dict[str, Any]] = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "kargo-demo", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": IMAGE}}]},
        },
    ]
    for stage in stages:
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": stage, "namespace": "p"},
                "spec": {
                    "requestedFreight": [
                        {
                            "origin": {"kind": "Warehouse", "name": "kargo-demo"},
                            "sources": {"direct": True},
                        }
                    ],
                    "promotionTemplate": {
                        "spec": {"steps": steps, **({"vars": variables} if variables else {})}
                    },
                },
            }
        )
    text = dump(documents).replace("REPO_URL", repo.as_uri())
    (resources,) = group_by_project(load_text(text, source="test")).values()
    return resources


AUTO_PROMOTE_ALL = {
    "apiVersion": "kargo.akuity.io/v1alpha1",
    "kind": "ProjectConfig",
    "metadata": {"name": "kargo-demo", "namespace": "kargo-demo"},
    "spec": {
        "promotionPolicies": [{"stageSelector": {"name": "glob:*"}, "autoPromotionEnabled": True}]
    },
}


def quickstart_auto(repo: Path, *, auto: bool = True) -> ProjectResources:
    """The quickstart up to git-push, with auto-promotion on for every Stage."""
    documents = up_to_push_documents(repo)
    if auto:
        documents.append(AUTO_PROMOTE_ALL)
    return project_of(documents, "quickstart")
