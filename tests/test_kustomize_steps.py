"""kustomize-set-image and kustomize-build, as Kargo v1.11's: every example on their
reference pages (``tests/reference/kargo-steps/kustomize-*.md``) through the worktree runner
against a real bare repository and real kustomize, then Kargo's edge cases.

The examples run unchanged but for ``gitRepo`` (a local bare repository, not
``https://github.com/example/repo.git``) and a commit and push after them, so that the
result can be read back. One example cannot run, in Kargo either: "Changing an Image
Name" gives neither ``tag`` nor ``digest``, which Kargo's own schema requires (exactly one);
it is refused here as there, and a variant with a tag runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from freightline.kargo.resources import Image
from sandbox.gitops import KARGO_DEMO, branch_head, create_bare_repo, show_file
from tests.pipelines import commit_freight
from tests.test_file_steps import (
    CLONE_SRC_AND_OUT,
    COMMIT_AND_PUSH,
    GIT_REPO,
    add_to_main,
    files_on,
    outcome_of,
    run_steps,
)

VARS = [*GIT_REPO, {"name": "imageRepo", "value": "my/image"}]
CLEAR = {"uses": "git-clear", "config": {"path": "./out"}}
COPY_BASE = {"uses": "copy", "config": {"inPath": "./src/base", "outPath": "./out"}}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return create_bare_repo(tmp_path / "gitops.git")


def set_image(*images: dict[str, Any] | None, path: str = "./src/base") -> dict[str, Any]:
    config: dict[str, Any] = {"path": path}
    if images != (None,):
        config["images"] = list(images)
    return {"uses": "kustomize-set-image", "as": "update", "config": config}


def outputs_of(outcomes: list[Any], alias: str) -> dict[str, Any]:
    (outcome,) = [o for o in outcomes if o.alias == alias]
    return dict(outcome.outputs)


def kustomization_after(
    tmp_path: Path, repo: Path, step: dict[str, Any], **kwargs: Any
) -> tuple[str, dict[str, Any]]:
    """The base kustomization after ``step`` (copied to ./out and pushed), and its outputs."""
    steps = [CLONE_SRC_AND_OUT, CLEAR, step, COPY_BASE, *COMMIT_AND_PUSH]
    kwargs.setdefault("images", ("my/image:v2.0.0",))
    outcomes = run_steps(tmp_path, repo, steps, variables=VARS, **kwargs)
    return show_file(repo, "stage/test", "kustomization.yaml"), outputs_of(outcomes, "update")


def refusal(tmp_path: Path, repo: Path, step: dict[str, Any], **kwargs: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, step], variables=VARS, **kwargs)
    assert outcome_of(caught.value) == "Errored"
    return caught.value


BASE = (KARGO_DEMO / "base/kustomization.yaml").read_text().strip()


# --- kustomize-set-image: the reference page ---------------------------------------------


def test_set_image_reference_example_common_usage(tmp_path: Path, repo: Path) -> None:
    step = {
        "uses": "kustomize-set-image",
        "as": "update",
        "config": {
            "path": "./src/base",
            "images": [
                {"image": "${{ vars.imageRepo }}", "tag": "${{ imageFrom(vars.imageRepo).Tag }}"}
            ],
        },
    }
    text, outputs = kustomization_after(tmp_path, repo, step)
    assert text == BASE + "\nimages:\n- name: my/image\n  newTag: v2.0.0"
    assert outputs == {"commitMessage": "Updated ./src/base to use new image\n\n- my/image:v2.0.0"}


def test_set_image_reference_example_changing_an_image_name(tmp_path: Path, repo: Path) -> None:
    ecr = "123456789012.dkr.ecr.{}.amazonaws.com/my-image"
    as_on_the_page = {"image": ecr.format("us-east-1"), "newName": ecr.format("us-west-2")}
    err = refusal(tmp_path, repo, set_image(as_on_the_page))
    assert "set either tag or digest (exactly one)" in str(err)
    # With the tag Kargo's schema asks for, the substitution is made.
    text, outputs = kustomization_after(tmp_path, repo, set_image({**as_on_the_page, "tag": "v1"}))
    assert text.endswith(
        f"images:\n- name: {ecr.format('us-east-1')}\n  newName: {ecr.format('us-west-2')}\n"
        "  newTag: v1"
    )
    assert outputs["commitMessage"].endswith(f"\n\n- {ecr.format('us-west-2')}:v1")


# --- kustomize-set-image: Kargo's edge cases ---------------------------------------------


def test_name_sets_the_kustomization_image_of_that_name(tmp_path: Path, repo: Path) -> None:
    step = set_image({"image": "my/image", "name": "app", "digest": "sha256:abc"})
    text, outputs = kustomization_after(tmp_path, repo, step)
    assert text.endswith("images:\n- name: app\n  digest: sha256:abc")
    assert outputs["commitMessage"] == "Updated ./src/base to use new image\n\n- app@sha256:abc"


def test_without_images_every_image_of_the_freight_is_set(tmp_path: Path, repo: Path) -> None:
    freight = commit_freight(repo, branch_head(repo, "main") or "").model_copy(
        update={
            "images": [
                Image.model_validate({"repoURL": "z/redis", "tag": "6.2.5"}),
                Image.model_validate({"repoURL": "nginx", "tag": "1.21", "digest": "sha256:1"}),
            ]
        }
    )
    text, outputs = kustomization_after(tmp_path, repo, set_image(None), freight=freight)
    # Sorted by name; Kargo sets a Freight image's tag and digest both.
    assert text.endswith(
        "images:\n- name: nginx\n  newTag: '1.21'\n  digest: sha256:1\n- name: z/redis\n"
        "  newTag: 6.2.5"
    )
    assert outputs == {
        "commitMessage": "Updated ./src/base to use new images\n\n"
        "- nginx:1.21@sha256:1\n- z/redis:6.2.5"
    }


def test_two_freight_images_from_one_repository_are_ambiguous(tmp_path: Path, repo: Path) -> None:
    freight = commit_freight(repo, branch_head(repo, "main") or "", images=("a:1", "a:2"))
    err = refusal(tmp_path, repo, set_image(None), freight=freight)
    assert "manual configuration required due to ambiguous result" in str(err)


def test_existing_images_are_merged_sorted_and_star_keeps_a_value(
    tmp_path: Path, repo: Path
) -> None:
    add_to_main(
        repo,
        {
            "base/kustomization.yaml": "resources:\n- deploy.yaml\nimages:\n"
            "- name: zz/kept\n  newTag: '1'\n"
            "- name: my/image\n  newName: mirror/image\n  newTag: old\n"
            "- name: other\n  newName: other-mirror\n  newTag: '3'\n"
        },
        {},
    )
    step = set_image(
        {"image": "my/image", "newName": "*", "tag": "new"},  # keeps newName
        {"image": "other", "tag": "4"},  # replaces the entry whole: newName goes
        {"image": "aa/new", "tag": "*"},  # nothing to keep: no newTag
    )
    text, outputs = kustomization_after(tmp_path, repo, step)
    assert text.endswith(
        "images:\n- name: aa/new\n- name: my/image\n  newName: mirror/image\n  newTag: new\n"
        "- name: other\n  newTag: '4'\n- name: zz/kept\n  newTag: '1'"
    )
    # As Kargo's, the message lists every image the kustomization now sets ("*" kept as
    # given for an image the file did not have).
    assert outputs["commitMessage"] == (
        "Updated ./src/base to use new images\n\n"
        "- aa/new:*\n- mirror/image:new\n- other:4\n- zz/kept:1"
    )


def test_two_kustomization_files_are_ambiguous(tmp_path: Path, repo: Path) -> None:
    add_to_main(repo, {"base/Kustomization": "resources: []\n"}, {})
    err = refusal(tmp_path, repo, set_image({"image": "my/image", "tag": "v2"}))
    assert 'ambiguous result: found multiple Kustomization files in "./src/base"' in str(err)
    assert "kustomization.yaml, Kustomization" in str(err)


def test_no_kustomization_file_is_an_error(tmp_path: Path, repo: Path) -> None:
    err = refusal(tmp_path, repo, set_image({"image": "x", "tag": "1"}, path="./src"))
    assert 'could not find any Kustomization files in "./src"' in str(err)


def test_tag_and_digest_together_are_refused(tmp_path: Path, repo: Path) -> None:
    err = refusal(tmp_path, repo, set_image({"image": "x", "tag": "1", "digest": "sha256:1"}))
    assert "set either tag or digest (exactly one)" in str(err)


# --- kustomize-build: the reference page -------------------------------------------------


def build(out_path: str, **config: Any) -> dict[str, Any]:
    return {
        "uses": "kustomize-build",
        "config": {"path": "./src/stages/${{ ctx.stage }}", "outPath": out_path, **config},
    }


def test_build_reference_example_rendering_to_a_file(tmp_path: Path, repo: Path) -> None:
    run_steps(
        tmp_path, repo, [CLONE_SRC_AND_OUT, CLEAR, build("./out/manifests.yaml"), *COMMIT_AND_PUSH]
    )
    assert files_on(repo, "stage/test") == {"manifests.yaml"}
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KARGO_DEMO / "stages/test")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert show_file(repo, "stage/test", "manifests.yaml") == rendered.strip()


def test_build_reference_example_rendering_to_a_directory(tmp_path: Path, repo: Path) -> None:
    run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, CLEAR, build("./out"), *COMMIT_AND_PUSH])
    assert files_on(repo, "stage/test") == {
        "configmap-kargo-demo-content.yaml",
        "deployment-kargo-demo.yaml",
        "service-kargo-demo.yaml",
    }
    # Each resource as Kargo writes it (sigs.k8s.io/yaml): keys sorted.
    service = show_file(repo, "stage/test", "service-kargo-demo.yaml")
    assert service.startswith("apiVersion: v1\nkind: Service\nmetadata:\n  name: kargo-demo\nspec:")
    assert "- nodePort: 30081\n    port: 3000\n    protocol: TCP" in service


def test_build_reference_example_kustomize_output_format(tmp_path: Path, repo: Path) -> None:
    steps = [CLONE_SRC_AND_OUT, CLEAR, build("./out", outputFormat="kustomize"), *COMMIT_AND_PUSH]
    run_steps(tmp_path, repo, steps)
    assert files_on(repo, "stage/test") == {
        "v1_configmap_kargo-demo-content.yaml",
        "apps_v1_deployment_kargo-demo.yaml",
        "v1_service_kargo-demo.yaml",
    }


# --- kustomize-build: names with namespaces, unsafe names, an unknown format ------------


def test_namespaces_in_file_names(tmp_path: Path, repo: Path) -> None:
    add_to_main(
        repo,
        {
            "stages/test/kustomization.yaml": "resources:\n- a.yaml\n- b.yaml\n- ns.yaml\n",
            "stages/test/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: One\n  namespace: east\n",
            "stages/test/b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: two\n  namespace: west\n",
            "stages/test/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: east\n",
        },
        {},
    )
    kargo = [
        CLONE_SRC_AND_OUT,
        CLEAR,
        build("./out/kargo"),
        build("./out/kustomize", outputFormat="kustomize"),
        *COMMIT_AND_PUSH,
    ]
    run_steps(tmp_path, repo, kargo)
    assert files_on(repo, "stage/test") == {
        "kargo/east-configmap-one.yaml",
        "kargo/west-configmap-two.yaml",
        "kargo/namespace-east.yaml",
        # Several namespaces: kustomize's names carry them (a Namespace is cluster-scoped).
        "kustomize/east_v1_configmap_one.yaml",
        "kustomize/west_v1_configmap_two.yaml",
        "kustomize/v1_namespace_east.yaml",
    }


def test_a_resource_name_that_is_no_plain_file_name_is_refused(tmp_path: Path, repo: Path) -> None:
    add_to_main(
        repo,
        {
            "stages/test/kustomization.yaml": "resources:\n- a.yaml\n",
            "stages/test/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../x\n",
        },
        {},
    )
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, build("./out")])
    assert outcome_of(caught.value) == "Errored"
    assert 'unsafe generated resource filename "configmap-../../x.yaml"' in str(caught.value)


def test_an_unknown_output_format_is_refused(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, build("./out", outputFormat="helm")])
    assert outcome_of(caught.value) == "Errored"
    assert "outputFormat" in str(caught.value)


def test_the_helm_chart_inflator_is_on_as_in_kargo(tmp_path: Path, repo: Path) -> None:
    # Kargo's kustomize-build inflates helmCharts with helm; this machine has no helm, so
    # kustomize runs the inflator and says so (plugin.helm passes its versions along).
    add_to_main(
        repo,
        {
            "stages/test/kustomization.yaml": "helmCharts:\n- name: nginx\n"
            "  repo: https://charts.example.invalid\n  version: 1.0.0\n"
        },
        {},
    )
    plugin = {"helm": {"apiVersions": ["monitoring.coreos.com/v1"], "kubeVersion": "1.30.0"}}
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, build("./out", plugin=plugin)])
    assert "is 'helm' installed?" in str(caught.value)
    with pytest.raises(ApplicationError) as caught:
        run_steps(tmp_path, repo, [CLONE_SRC_AND_OUT, build("./out", plugin={"kustomize": {}})])
    assert outcome_of(caught.value) == "Errored"
    assert "plugin.kustomize" in str(caught.value)
