"""The docs site (mkdocs.yml, docs/): it builds strictly, its links resolve, every step in
the registry has its page, and every configuration example in it applies.

The site is built once into a temporary directory with ``mkdocs build --strict``, as
``scripts/docs`` builds it; its hook (``docs/hooks.py``) generates the step field tables
and the CLI reference and refuses a registry step without a page. The examples are
read from the Markdown sources: each fenced ``yaml`` block is applied through what
``freightline apply`` uses (``load_text``, ``group_by_project``, the Project workflow's
``merge_resources``), the worker's credentials file parser, or the UI's users file
parser; a step snippet is applied as a Stage's promotion template, its steps' configs
checked against the registry's models. A block that is deliberately a fragment says so
on the line before it: ``<!-- partial: why -->``. Getting started's first pipeline is
also run as a reader runs it, against the suite's Temporal and a real worker.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from pydantic import BaseModel, Field
from ruamel.yaml import YAML
from temporalio.client import Client
from temporalio.worker import Worker

from freightline.app.client import apply_project
from freightline.app.ui_auth import UserDirectory
from freightline.contracts.project import merge_resources
from freightline.contracts.steps import STEPS, StepDefinition, StepRunner, parse_config
from freightline.errors import ConfigError
from freightline.kargo.config import group_by_project, load_text
from freightline.kargo.credentials import parse_credentials_file
from freightline.kargo.resources import ProjectResources
from sandbox.gitops import branch_head, show_file
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def _hooks() -> ModuleType:
    """docs/hooks.py, imported by path as mkdocs imports it."""
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _hooks()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stderr[-5000:]}"
    return out


# ---------------------------------------------------------------- links


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if values.get("name") and tag == "a":
            self.ids.add(str(values["name"]))
        for attribute in ("href", "src"):
            link = values.get(attribute)
            if link and tag in ("a", "img", "link", "script"):
                self.links.append(link)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    broken = []
    for path, page in pages.items():
        base = "/" + path.relative_to(site).as_posix()
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # external
            target_url = urljoin(base, unquote(parts.path)) if parts.path else base
            target = site / target_url.lstrip("/")
            if target_url.endswith("/") or target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{base}: {link} (no {target.relative_to(site)})")
            elif parts.fragment and target.suffix == ".html":
                ids = (pages.get(target) or _parse(target)).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{base}: {link} (no #{parts.fragment} there)")
    assert not broken, "broken links:\n" + "\n".join(sorted(set(broken)))


def test_the_readme_links_into_existing_files() -> None:
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?:)([^)#\s]+)", readme)
    assert targets
    assert [t for t in targets if not (REPO / t).exists()] == []


# ---------------------------------------------------------------- step pages


def test_every_registry_step_has_its_page_with_generated_fields(site: Path) -> None:
    assert hooks.step_page_problems(DOCS) == []
    for name, step in STEPS.items():
        html = (site / "steps" / name / "index.html").read_text()
        model = step.config_model()
        if model is not None and "root" not in model.model_fields:
            for field_name, field in model.model_fields.items():
                assert f"<code>{field.alias or field_name}</code>" in html, (name, field_name)
        if (hooks.KARGO_PAGES / f"{name}.md").exists():
            assert "the conformance tests run each one" in html, name
    nav = (site / "index.html").read_text()
    assert all(f'href="steps/{name}/"' in nav for name in STEPS)


class _Described(BaseModel):
    path: str = Field(description="Where | it goes.")
    depth: int = Field(default=2, ge=1)


def test_the_field_table_is_read_from_the_model() -> None:
    step = StepDefinition("x", StepRunner.WORKTREE, "x:y", f"{__name__}:_Described")
    assert hooks.field_table(step).splitlines() == [
        "Runs in the clone-to-push worktree activity, with the steps around it.",
        "",
        "| field | type | required | default | constraints | what |",
        "|---|---|---|---|---|---|",
        "| `path` | string | yes |  |  | Where \\| it goes. |",
        "| `depth` | integer |  | `2` | ≥ 1 |  |",
    ]


def test_a_new_step_without_a_page_is_named(tmp_path: Path) -> None:
    new = StepDefinition("git-open-pr", StepRunner.WORKTREE, "activities.x:y", None)
    problems = hooks.step_page_problems(tmp_path, {"git-open-pr": new})
    assert len(problems) == 1
    assert problems[0].startswith("docs/steps/git-open-pr.md is missing")
    assert "## Configuration, ## Outputs, ## Examples" in problems[0]


def test_a_step_page_without_its_prose_is_told_what_to_write(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "git-tag.md").write_text("# `git-tag`\n\n## Configuration\n\nfields\n")
    problems = hooks.step_page_problems(tmp_path, {"git-tag": STEPS["git-tag"]})
    assert problems == [
        "docs/steps/git-tag.md: no ## Outputs, ## Examples section",
        "docs/steps/git-tag.md: no prose under the title saying what the step does",
        "docs/steps/git-tag.md: the Configuration section has no <!-- step-fields --> "
        "(the generated fields)",
        "docs/steps/git-tag.md: the Outputs section is empty (say 'None.' if the step has none)",
        "docs/steps/git-tag.md: the Examples section has no <!-- kargo-examples -->, though "
        "Kargo's page tests/reference/kargo-steps/git-tag.md has examples the tests run",
    ]


def test_the_build_refuses_a_step_without_a_page(tmp_path: Path) -> None:
    """The real build, on a copy of the docs missing one step page: mkdocs stops and names it."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "steps" / "git-tag.md").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode != 0
    assert "docs/steps/git-tag.md is missing" in done.stderr


# ---------------------------------------------------------------- the CLI


def test_the_cli_page_lists_every_command(site: Path) -> None:
    import typer.main

    from freightline.app.cli import app

    html = (site / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(root, "commands", {})
    for name, command in commands.items():
        subcommands: dict[str, Any] = getattr(command, "commands", {})
        for full in [f"freightline {name}"] + [f"freightline {name} {s}" for s in subcommands]:
            assert f"<code>{full}</code></h3>" in html or f"<code>{full}</code><a" in html, full


# ---------------------------------------------------------------- examples


@dataclass(frozen=True)
class Block:
    source: str
    line: int
    text: str
    partial: str | None
    """The reason a ``<!-- partial: why -->`` line before the block gives, or None."""

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)")
_PARTIAL = re.compile(r"^\s*<!-- partial: (?P<why>.+?) -->\s*$")


def yaml_blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text().splitlines()
    source = path.relative_to(REPO).as_posix()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if fence.group("language") in ("yaml", "yml"):
            indent = len(fence.group("indent"))
            body = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
            before = lines[index - 1] if index else ""
            marker = _PARTIAL.match(before) if before.strip() else None
            yield Block(source, index + 2, body, marker.group("why") if marker else None)
        index = end + 1


def _documented() -> list[Path]:
    """The README and every page of the site, the included READMEs among them."""
    included = [REPO / "deploy" / "README.md", REPO / "bench" / "README.md"]
    return [REPO / "README.md", *included, *sorted(DOCS.rglob("*.md"))]


ALL_BLOCKS = [block for path in _documented() for block in yaml_blocks(path)]


def _documents(block: Block) -> list[Any]:
    return [d for d in YAML(typ="safe", pure=True).load_all(block.text) if d is not None]


def _apply_kargo(text: str, where: str) -> None:
    """What ``freightline apply`` checks before and as the Project workflow records it."""
    projects = group_by_project(load_text(text, source=where))
    for name, resources in projects.items():
        merge_resources(ProjectResources(name=name), resources)


_STAGE = """\
apiVersion: kargo.akuity.io/v1alpha1
kind: Warehouse
metadata: {name: docs, namespace: docs}
spec:
  subscriptions:
  - image: {repoURL: ghcr.io/example/app}
---
apiVersion: kargo.akuity.io/v1alpha1
kind: Stage
metadata: {name: docs, namespace: docs}
spec:
  requestedFreight:
  - origin: {kind: Warehouse, name: docs}
    sources: {direct: true}
"""


def _apply_steps(document: dict[str, Any], where: str) -> None:
    """A ``steps:`` snippet, applied as a Stage's promotion template; each step named in
    the registry, and a config without expressions valid for its model."""
    yaml = YAML(typ="safe", pure=True)
    stage = list(yaml.load_all(_STAGE))
    stage[1]["spec"]["promotionTemplate"] = {"spec": document}
    buffer = StringIO()
    YAML(typ="safe", pure=True).dump_all(stage, buffer)
    _apply_kargo(buffer.getvalue(), where)
    for step in document["steps"]:
        uses = step.get("uses")
        assert uses in STEPS, f"{where}: step {uses!r} is not in the registry"
        model = STEPS[uses].config_model()
        config = step.get("config") or {}
        if model is not None and "${{" not in repr(config):
            parse_config(model, config)


def apply_block(block: Block, tmp_path: Path) -> None:
    documents = _documents(block)
    assert documents, f"{block.where}: an empty YAML block"
    secrets = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Secret"]
    kargo = [d for d in documents if isinstance(d, dict) and "apiVersion" in d and d not in secrets]
    others = [d for d in documents if d not in secrets and d not in kargo]
    if secrets:
        path = tmp_path / "credentials.yaml"
        YAML(typ="safe", pure=True).dump_all(secrets, path)
        assert len(parse_credentials_file(path)) == len(secrets)
    if kargo:
        # The block as written (line numbers and all), minus the worker's Secrets.
        text = block.text
        if secrets:
            kept = [t for t in re.split(r"^---\s*$", text, flags=re.M) if "kind: Secret" not in t]
            text = "---\n".join(kept)
        _apply_kargo(text, block.where)
    for document in others:
        if isinstance(document, dict) and "steps" in document:
            _apply_steps(document, block.where)
        elif isinstance(document, dict) and ("users" in document or "oidc" in document):
            UserDirectory.parse(document, where=block.where)
        else:
            pytest.fail(
                f"{block.where}: this YAML is neither Kargo resources, the worker's Secrets, "
                "a steps snippet nor a users file: make it one, or mark a deliberate fragment "
                "with <!-- partial: why --> on the line before it"
            )


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.partial is None], ids=lambda b: b.where
)
def test_every_config_example_applies(block: Block, tmp_path: Path) -> None:
    apply_block(block, tmp_path)


@pytest.mark.parametrize(
    "block", [b for b in ALL_BLOCKS if b.partial is not None], ids=lambda b: b.where
)
def test_a_partial_example_is_still_yaml(block: Block, tmp_path: Path) -> None:
    """A fragment parses as YAML once its elisions (lines of ``...``) are left out."""
    text = "".join(line for line in block.text.splitlines(True) if line.strip() != "...")
    documents = [d for d in YAML(typ="safe", pure=True).load_all(text) if d is not None]
    assert documents, f"{block.where}: an empty YAML block"
    if "groups" in documents[0] and shutil.which("promtool"):
        rules = tmp_path / "rules.yaml"
        rules.write_text(block.text)
        done = subprocess.run(
            ["promtool", "check", "rules", str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_examples_are_found() -> None:
    """The collector sees the examples it should (a change to it cannot silently skip all)."""
    sources = {b.source for b in ALL_BLOCKS}
    assert {"docs/getting-started.md", "docs/steps/copy.md", "docs/webhooks.md"} <= sources
    assert sum(b.partial is None for b in ALL_BLOCKS) >= 15


def test_a_broken_example_fails(tmp_path: Path) -> None:
    broken = Block("x.md", 1, "steps:\n- uses: copy\n  config: {inPath: a}\n", None)
    with pytest.raises(ConfigError, match="outPath"):
        apply_block(broken, tmp_path)
    bogus = Block("x.md", 1, "apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nspec: 1\n", None)
    with pytest.raises(ConfigError, match=r"x\.md:1"):
        apply_block(bogus, tmp_path)


# ---------------------------------------------------------------- the guide, run


@pytest.mark.integration
async def test_the_first_pipeline_guide_runs(
    client: Client, worker: Worker, tmp_path: Path
) -> None:
    """Getting started's "your first pipeline", as a reader runs it: its shell block makes
    the repository, its YAML is applied, and the test Stage renders its branch."""
    page = DOCS / "getting-started.md"
    here = str(tmp_path / "first-pipeline")
    guide = page.read_text().replace("/tmp/first-pipeline", here)
    shell = re.search(r"directory\):\n\n```sh\n(.*?)```", guide, re.S)
    assert shell is not None, "the guide's first shell block moved"
    identity = {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "reader"), ("EMAIL", "reader@example.com"))
    }
    subprocess.run(
        ["bash", "-euc", shell.group(1)],
        cwd=tmp_path,
        env={**os.environ, **identity},
        capture_output=True,
        timeout=60,
        check=True,
    )
    (pipeline,) = [b for b in yaml_blocks(page) if "kind: Stage" in b.text]
    (resources,) = group_by_project(
        load_text(pipeline.text.replace("/tmp/first-pipeline", here))
    ).values()
    await apply_project(client, resources)

    repo = Path(here) / "app.git"
    await wait_for(lambda: branch_head(repo, "stage/test"), timeout=60)
    assert "greeting: hello" in show_file(repo, "stage/test", "manifests.yaml")
