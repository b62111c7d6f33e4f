"""A run's DAG drawn from its Mermaid definition, as SVG geometry (layered top-down, like Mermaid's ``flowchart TD``).

:func:`parse_flowchart` reads the subset of Mermaid's flowchart syntax that
:func:`server.workflows.model.mermaid` writes (Mermaid reference, "Flowcharts — basic syntax"): a ``flowchart TD``
header, nodes ``s0["id<br/>kind"]`` (rectangles) or ``s1{{"id<br/>kind"}}`` (hexagons: approvals), and edges
``a --> b`` or ``a -.->|when| b`` (dashed: conditional). Anything else is refused, so a drawing never
silently leaves a step out.

:func:`layout` places each node on the layer of its longest path from a root (the first phase of Sugiyama,
Tagawa & Toda, IEEE SMC 11(2), 1981) and orders each layer once by the mean position of its parents (the
barycenter heuristic), which keeps the small DAGs of workflows readable without a layout library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

NODE_W, NODE_H, GAP_X, GAP_Y, MARGIN = 150, 46, 28, 46, 12
MAX_NODES = 2000
_HEADER = re.compile(r"^flowchart\s+TD$")
_NODE = re.compile(r'^(\w+)(\["|\{\{")(.*?)("\]|"\}\})$')
_EDGE = re.compile(r"^(\w+)\s*(-->|-\.->\|when\|)\s*(\w+)$")


class FlowchartError(ValueError):
    """The text is not a flowchart of the form the workflow model writes."""


@dataclass(frozen=True, slots=True)
class Node:
    key: str
    step_id: str
    kind: str
    shape: str  # "box" or "hexagon"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    conditional: bool


@dataclass(frozen=True, slots=True)
class PlacedNode:
    step_id: str
    kind: str
    shape: str
    status: str
    x: float
    y: float
    points: str  # the hexagon's outline ("" for boxes)


@dataclass(frozen=True, slots=True)
class PlacedEdge:
    path: str
    conditional: bool


@dataclass(frozen=True)
class Drawing:
    nodes: list[PlacedNode]
    edges: list[PlacedEdge]
    width: float
    height: float
    node_w: int = NODE_W
    node_h: int = NODE_H


def parse_flowchart(text: str) -> tuple[list[Node], list[Edge]]:
    """Nodes (in order) and edges of a ``flowchart TD``.

    Raises:
        FlowchartError: a line of another form, an edge to an unknown node, or more than 2,000 nodes.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not _HEADER.match(lines[0]):
        raise FlowchartError("not a Mermaid `flowchart TD`")
    nodes: dict[str, Node] = {}
    edges: list[Edge] = []
    for number, line in enumerate(lines[1:], start=2):
        if match := _NODE.match(line):
            key, opener, label, _ = match.groups()
            step_id, _, kind = label.partition("<br/>")
            nodes[key] = Node(key, step_id, kind, "hexagon" if opener == "{{\"" else "box")
            if len(nodes) > MAX_NODES:
                raise FlowchartError(f"more than {MAX_NODES} nodes")
        elif match := _EDGE.match(line):
            source, arrow, target = match.groups()
            if source not in nodes or target not in nodes:
                raise FlowchartError(f"line {number}: an edge to an undeclared node")
            edges.append(Edge(source, target, arrow != "-->"))
        else:
            raise FlowchartError(f"line {number}: not a node or an edge")
    return list(nodes.values()), edges


def layout(nodes: list[Node], edges: list[Edge], statuses: Mapping[str, str]) -> Drawing:
    """Place ``nodes`` in layers (top-down) and route ``edges`` as curves; ``statuses`` maps step id -> status."""
    parents: dict[str, list[str]] = {n.key: [] for n in nodes}
    children: dict[str, list[str]] = {n.key: [] for n in nodes}
    for edge in edges:
        parents[edge.target].append(edge.source)
        children[edge.source].append(edge.target)
    waiting = {key: len(keys) for key, keys in parents.items()}
    ready = [n.key for n in nodes if not waiting[n.key]]
    layer: dict[str, int] = {}
    while ready:  # Kahn's order: each node after all its parents
        key = ready.pop()
        layer[key] = 1 + max((layer[p] for p in parents[key]), default=-1)
        for child in children[key]:
            waiting[child] -= 1
            if not waiting[child]:
                ready.append(child)
    if len(layer) < len(nodes):
        raise FlowchartError("the flowchart has a cycle")
    rows: list[list[Node]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in nodes:
        rows[layer[node.key]].append(node)
    position: dict[str, float] = {}
    for row in rows:
        given = {node.key: float(index) for index, node in enumerate(row)}

        def barycenter(node: Node, given: dict[str, float] = given) -> float:
            placed = [position[p] for p in parents[node.key] if p in position]
            return sum(placed) / len(placed) if placed else given[node.key]

        row.sort(key=barycenter)
        for index, node in enumerate(row):
            position[node.key] = float(index)
    widest = max((len(row) for row in rows), default=0)
    width = MARGIN * 2 + widest * NODE_W + max(widest - 1, 0) * GAP_X
    height = MARGIN * 2 + len(rows) * NODE_H + max(len(rows) - 1, 0) * GAP_Y
    corner: dict[str, tuple[float, float]] = {}
    placed_nodes = []
    for depth_index, row in enumerate(rows):
        row_w = len(row) * NODE_W + max(len(row) - 1, 0) * GAP_X
        left = (width - row_w) / 2
        for index, node in enumerate(row):
            x, y = left + index * (NODE_W + GAP_X), MARGIN + depth_index * (NODE_H + GAP_Y)
            corner[node.key] = (x, y)
            placed_nodes.append(PlacedNode(node.step_id, node.kind, node.shape, statuses.get(node.step_id, "pending"),
                                           x, y, _hexagon(x, y) if node.shape == "hexagon" else ""))
    placed_edges = []
    for edge in edges:
        (sx, sy), (tx, ty) = corner[edge.source], corner[edge.target]
        x1, y1, x2, y2 = sx + NODE_W / 2, sy + NODE_H, tx + NODE_W / 2, ty
        bend = (y2 - y1) / 2
        placed_edges.append(PlacedEdge(f"M{x1:g},{y1:g} C{x1:g},{y1 + bend:g} {x2:g},{y2 - bend:g} {x2:g},{y2:g}",
                                       edge.conditional))
    return Drawing(placed_nodes, placed_edges, width, height)


def draw(mermaid_text: str, statuses: Mapping[str, str]) -> Drawing:
    """:func:`layout` of :func:`parse_flowchart`."""
    nodes, edges = parse_flowchart(mermaid_text)
    return layout(nodes, edges, statuses)


def _hexagon(x: float, y: float) -> str:
    inset = 14
    corners = [(x + inset, y), (x + NODE_W - inset, y), (x + NODE_W, y + NODE_H / 2), (x + NODE_W - inset, y + NODE_H),
               (x + inset, y + NODE_H), (x, y + NODE_H / 2)]
    return " ".join(f"{cx:g},{cy:g}" for cx, cy in corners)
