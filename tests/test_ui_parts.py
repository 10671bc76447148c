"""The web UI's pure parts: the graph layout and its SVG, the users file, roles, passwords."""

from __future__ import annotations

import re

import pytest

from freightline.app.ui_auth import (
    Role,
    Signer,
    User,
    UserDirectory,
    hash_password,
    verify_password,
)
from freightline.app.ui_graph import (
    GAP_X,
    NODE_WIDTH,
    GraphNode,
    layout,
    pipeline_edges,
    render_svg,
)
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from tests.pipelines import dump


def project(stages: dict[str, list[str]]) -> object:
    """Warehouse ``w``; each Stage requests from ``w`` directly (no upstream) or from its
    upstream Stages."""
    documents = [
        {"apiVersion": "kargo.akuity.io/v1alpha1", "kind": "Project", "metadata": {"name": "p"}},
        {
            "apiVersion": "kargo.akuity.io/v1alpha1",
            "kind": "Warehouse",
            "metadata": {"name": "w", "namespace": "p"},
            "spec": {"subscriptions": [{"image": {"repoURL": "example.com/app"}}]},
        },
    ]
    for name, upstream in stages.items():
        sources = {"stages": upstream} if upstream else {"direct": True}
        documents.append(
            {
                "apiVersion": "kargo.akuity.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": name, "namespace": "p"},
                "spec": {
                    "requestedFreight": [
                        {"origin": {"kind": "Warehouse", "name": "w"}, "sources": sources}
                    ],
                    "promotionTemplate": {"spec": {"steps": [{"uses": "git-clone"}]}},
                },
            }
        )
    (resources,) = group_by_project(load_text(dump(documents), source="graph")).values()
    return resources


def test_layers_follow_the_longest_path_and_the_layout_is_deterministic() -> None:
    resources = project(
        {"test": [], "uat-a": ["test"], "uat-b": ["test"], "prod": ["uat-a", "uat-b"], "dr": []}
    )
    edges = pipeline_edges(resources)  # type: ignore[arg-type]
    assert ("warehouse:w", "stage:test") in edges and ("stage:uat-a", "stage:prod") in edges
    nodes = ["warehouse:w", *(f"stage:{s}" for s in ("test", "uat-a", "uat-b", "prod", "dr"))]
    placed = layout(nodes, edges)
    column = {node: x // (NODE_WIDTH + GAP_X) for node, (x, _) in placed.positions.items()}
    assert column == {
        "warehouse:w": 0,
        "stage:test": 1,
        "stage:dr": 1,
        "stage:uat-a": 2,
        "stage:uat-b": 2,
        "stage:prod": 3,
    }
    assert layout(list(reversed(nodes)), list(reversed(edges))) == placed
    assert placed.width == 4 * (NODE_WIDTH + GAP_X) - GAP_X + 16


def test_fifty_stages_fit_in_a_few_columns_when_they_fan_out() -> None:
    stages: dict[str, list[str]] = {"test": []}
    stages.update({f"uat-{i:02}": ["test"] for i in range(24)})
    stages.update({f"prod-{i:02}": [f"uat-{i:02}"] for i in range(24)})
    stages["canary"] = ["uat-00"]
    resources = project(stages)
    nodes = ["warehouse:w", *(f"stage:{s}" for s in stages)]
    placed = layout(nodes, pipeline_edges(resources))  # type: ignore[arg-type]
    assert len(placed.positions) == 51  # and the Warehouse
    assert len({x for x, _ in placed.positions.values()}) == 4
    # A tall graph starts at the top: the Warehouse and the first Stage are in view.
    assert placed.positions["warehouse:w"][1] == placed.positions["stage:test"][1] == 8
    # Each prod sits level with its uat (the barycentre order), so no edge crosses.
    for i in range(24):
        assert placed.positions[f"stage:prod-{i:02}"][1] >= placed.positions[f"stage:uat-{i:02}"][1]


def test_every_text_in_the_svg_is_escaped() -> None:
    hostile = '<script>alert(1)</script>"onload="x'
    svg = render_svg(
        [
            GraphNode(key="warehouse:w", title=hostile, lines=[(hostile, "bad")]),
            GraphNode(key="stage:s", title="s", href=f'/x"{hostile}'),
        ],
        [("warehouse:w", "stage:s")],
    )
    assert "<script>" not in svg and '"onload="' not in svg
    assert "&lt;script&gt;" in svg
    assert len(re.findall(r"<path class=\"edge\"", svg)) == 1


def test_users_file_roles_by_name_group_and_everyone() -> None:
    directory = UserDirectory.parse(
        {
            "users": {
                "alice": {"password": hash_password("a"), "groups": ["release"]},
                "bob": {"password": hash_password("b")},
            },
            "roles": {
                "shop": {"approver": ["group:release"], "promoter": ["bob"]},
                "*": {"viewer": ["*"]},
            },
        }
    )
    alice = User("alice", ("release",))
    assert directory.role(alice, "shop") is Role.APPROVER
    assert directory.role(alice, "other") is Role.VIEWER
    assert directory.role(User("bob"), "shop") is Role.PROMOTER
    assert directory.role(User("mallory"), "shop") is Role.VIEWER


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"users": {"a": {"password": "plain"}}}, "users.a.password: expected a scrypt hash"),
        ({"roles": {"p": {"owner": ["a"]}}}, 'unknown role "owner"'),
        ({"roles": {"p": {"viewer": "a"}}}, "roles.p.viewer: expected a list"),
    ],
)
def test_a_bad_users_file_is_refused_naming_the_field(body: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        UserDirectory.parse(body)


def test_passwords_and_signatures() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("correct horse", "scrypt$garbage")
    signer = Signer("k")
    token = signer.sign({"user": "alice"})
    assert signer.unsign(token) == {"user": "alice"}
    assert Signer("other").unsign(token) is None
    assert signer.csrf_token("alice", "n1") != signer.csrf_token("bob", "n1")
    assert signer.csrf_token("alice", "n1") != signer.csrf_token("alice", "n2")
