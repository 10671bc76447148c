"""Each layer imports only downward (docs/architecture.md, "Layers"), read from the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

FOUNDATION = {"freightline.errors", "freightline.logging", "freightline.settings"}
# layer -> the package prefixes it may import (besides itself and the foundation)
ALLOWED = {
    "freightline.kargo": set(),
    "freightline.contracts": {"freightline.kargo"},
    "workflows": {"freightline.kargo", "freightline.contracts", "activities"},
    "activities": {"freightline.kargo", "freightline.contracts"},
    # worker.py and the sandbox (``dev``, ``demo``) are the edge's own.
    "freightline.app": {
        "freightline.kargo",
        "freightline.contracts",
        "workflows",
        "activities",
        "worker",
        "sandbox",
    },
}
OURS = ("freightline", "workflows", "activities", "worker", "sandbox")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    if module in FOUNDATION:
        return "foundation"
    for layer in ALLOWED:
        if module == layer or module.startswith(layer + "."):
            return layer
    top = module.split(".")[0]
    return top if top in ("worker", "sandbox") else None


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "freightline":
                names.update(f"freightline.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return {n for n in names if n.split(".")[0] in OURS}


SOURCES = sorted(
    p for top in ("freightline", "workflows", "activities") for p in (REPO_ROOT / top).rglob("*.py")
)


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(REPO_ROOT)) for p in SOURCES])
def test_imports_only_downward(path: Path) -> None:
    module = module_name(path)
    layer = layer_of(module)
    if module in ("freightline", "freightline.__main__"):
        return  # the package's own entry point runs the CLI
    assert layer is not None, f"{module} belongs to no layer: put it in one"
    allowed = ALLOWED.get(layer, set())
    for name in imported(path):
        target = layer_of(name)
        if target in ("foundation", layer):
            continue
        if layer == "foundation":
            raise AssertionError(f"{module} (foundation) imports {name}")
        assert target in allowed, f"{module} ({layer}) imports {name} ({target}), a layer above"


def test_the_kargo_layer_does_no_temporal() -> None:
    for path in (REPO_ROOT / "freightline" / "kargo").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                assert not any(n.startswith("temporalio") for n in names), path


def test_settings_are_read_only_at_the_edge() -> None:
    """``load_settings()`` runs in the worker's main, the CLI and the sandbox, never below."""
    for path in SOURCES:
        if layer_of(module_name(path)) == "freightline.app" or path.name == "settings.py":
            continue
        assert "load_settings(" not in path.read_text(), path
