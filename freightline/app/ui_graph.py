"""A project's pipeline as a graph: Warehouses → Stages, laid out in layers, drawn as SVG.

The layout is deterministic (the same project draws the same picture, so a
live update only moves what changed): Warehouses form the first layer; each
Stage sits one layer right of its furthest upstream (a longest-path
layering); within a layer nodes are ordered by the mean position of their
upstreams (one barycentre pass, ties by name), which keeps edges short and
mostly uncrossed for the pipelines people draw; short columns are centred, and
in a tall graph every column starts at the top, where the eye (and the
window) starts. Every text in the picture is
escaped here, since names, aliases and messages come from users.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from freightline.kargo.config import ProjectResources

__all__ = ["GraphNode", "Layout", "layout", "node_keys", "pipeline_edges", "render_svg"]

NODE_WIDTH = 232
NODE_HEIGHT = 96
GAP_X = 64
GAP_Y = 18
MARGIN = 8
CENTRE_UP_TO = 6
"""Columns are centred vertically while the tallest has at most this many nodes."""
TEXT_CHARS = 30
"""How many characters of a line fit in a node (the rest is cut, the whole shown on hover)."""


@dataclass(frozen=True)
class GraphNode:
    """One box: a Warehouse or a Stage, what it says, where it links, how it is coloured."""

    key: str
    """``warehouse:<name>`` or ``stage:<name>``."""
    title: str
    lines: Sequence[tuple[str, str]] = ()
    """Up to four lines under the title: (text, CSS class)."""
    href: str = ""
    css: str = ""


@dataclass(frozen=True)
class Layout:
    """Where each node is (top-left corner) and the picture's size."""

    positions: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    width: int = 0
    height: int = 0


def pipeline_edges(resources: ProjectResources) -> list[tuple[str, str]]:
    """Each (from, to) of the project: Warehouse → Stage (``direct``), Stage → Stage."""
    edges = []
    for name in sorted(resources.stages):
        for request in resources.stages[name].spec.requested_freight:
            if request.sources.direct:
                edges.append((f"warehouse:{request.origin.name}", f"stage:{name}"))
            for upstream in request.sources.stages or ():
                edges.append((f"stage:{upstream}", f"stage:{name}"))
    return sorted(set(edges))


def layout(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> Layout:
    """Layered positions for ``nodes`` (keys) joined by ``edges``; cycles are broken by name."""
    upstream: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        if source in upstream and target in upstream and source != target:
            upstream[target].append(source)
    layer: dict[str, int] = {}
    remaining = sorted(nodes)
    while remaining:
        ready = [n for n in remaining if all(u in layer for u in upstream[n])]
        if not ready:  # a cycle (configuration validation refuses these): take the first
            ready = remaining[:1]
        for node in ready:
            layer[node] = 1 + max((layer[u] for u in upstream[node] if u in layer), default=-1)
            if node.startswith("stage:") and not upstream[node]:
                layer[node] = max(layer[node], 1)  # a Stage never sits among the Warehouses
            remaining.remove(node)
    layers: dict[int, list[str]] = {}
    for node in sorted(nodes):
        layers.setdefault(layer[node], []).append(node)
    index: dict[str, float] = {}
    for number in sorted(layers):

        def barycentre(node: str) -> tuple[float, str]:
            placed = [index[u] for u in upstream[node] if u in index]
            return (sum(placed) / len(placed) if placed else float("inf"), node)

        layers[number].sort(key=barycentre)
        for position, node in enumerate(layers[number]):
            index[node] = position
    tallest = max((len(column) for column in layers.values()), default=0)
    height = tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y + 2 * MARGIN if tallest else 0
    positions = {}
    for number, column in layers.items():
        # Short columns are centred on the tallest; in a tall graph (a wide fan-out) that would
        # put the Warehouses and the first Stages screens below the top, so they align top.
        centred = tallest <= CENTRE_UP_TO
        offset = (tallest - len(column)) * (NODE_HEIGHT + GAP_Y) // 2 if centred else 0
        for position, node in enumerate(column):
            positions[node] = (
                MARGIN + number * (NODE_WIDTH + GAP_X),
                MARGIN + offset + position * (NODE_HEIGHT + GAP_Y),
            )
    columns = max(layers, default=-1) + 1
    width = columns * (NODE_WIDTH + GAP_X) - GAP_X + 2 * MARGIN if columns else 0
    return Layout(positions=positions, width=width, height=height)


def render_svg(nodes: Sequence[GraphNode], edges: Sequence[tuple[str, str]]) -> str:
    """The graph as an inline SVG element (every text escaped)."""
    keys = [node.key for node in nodes]
    placed = layout(keys, edges)
    parts = [
        f'<svg class="pipeline" xmlns="http://www.w3.org/2000/svg" width="{placed.width}" '
        f'height="{placed.height}" viewBox="0 0 {placed.width} {placed.height}" role="img" '
        'aria-label="pipeline graph">'
    ]
    for source, target in edges:
        if source not in placed.positions or target not in placed.positions:
            continue
        x1, y1 = placed.positions[source]
        x2, y2 = placed.positions[target]
        start = (x1 + NODE_WIDTH, y1 + NODE_HEIGHT // 2)
        end = (x2, y2 + NODE_HEIGHT // 2)
        bend = (end[0] - start[0]) // 2
        parts.append(
            f'<path class="edge" data-from="{escape(source)}" data-to="{escape(target)}" '
            f'd="M{start[0]},{start[1]} C{start[0] + bend},{start[1]} '
            f'{end[0] - bend},{end[1]} {end[0]},{end[1]}"/>'
        )
    for node in nodes:
        x, y = placed.positions[node.key]
        kind = node.key.partition(":")[0]
        body = [
            f'<rect class="node {kind} {escape(node.css)}" x="{x}" y="{y}" width="{NODE_WIDTH}" '
            f'height="{NODE_HEIGHT}" rx="6"/>',
            f'<text class="title" x="{x + 10}" y="{y + 20}">{_text(node.title)}</text>',
        ]
        for number, (line, css) in enumerate(node.lines[:4]):
            body.append(
                f'<text class="line {escape(css)}" x="{x + 10}" y="{y + 38 + 16 * number}">'
                f"{_text(line)}</text>"
            )
        hover = "\n".join([node.title, *(line for line, _ in node.lines)])
        group = (
            f'<g class="graph-node" data-node="{escape(node.key)}"><title>{escape(hover)}</title>'
        )
        group += "".join(body) + "</g>"
        if node.href:
            group = f'<a href="{escape(node.href)}">{group}</a>'
        parts.append(group)
    parts.append("</svg>")
    return "".join(parts)


def _text(line: str) -> str:
    line = " ".join(line.split())
    return escape(line if len(line) <= TEXT_CHARS else line[: TEXT_CHARS - 1] + "…")


def node_keys(resources: ProjectResources) -> list[str]:
    """Every node of the project's graph."""
    return [f"warehouse:{w}" for w in sorted(resources.warehouses)] + [
        f"stage:{s}" for s in sorted(resources.stages)
    ]
