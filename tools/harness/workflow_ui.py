"""Write a UI-format workflow (what the frontend saves and loads, LiteGraph version 0.4) from a short description:
nodes with their widget values, and links between named outputs and inputs.  Used by ``tools/generate/workflows.py``
for the workflows that are easier to keep as code than to hand-edit."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class _Node:
    id: int
    type: str
    widgets: list
    pos: tuple[int, int]
    size: tuple[int, int]
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type) of link inputs, in slot order
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    title: str | None = None


class Workflow:
    """Nodes and links; :meth:`save` writes the JSON the frontend loads."""

    def __init__(self):
        self.nodes: list[_Node] = []
        self.links: list[list] = []  # [id, from node, from slot, to node, to slot, type]

    def node(self, type_: str, widgets: list, pos: tuple[int, int], size: tuple[int, int] = (320, 100), *,
             inputs: list[tuple[str, str]] = (), outputs: list[tuple[str, str]] = (), title: str | None = None
             ) -> _Node:
        n = _Node(len(self.nodes) + 1, type_, list(widgets), pos, size, list(inputs), list(outputs), title)
        self.nodes.append(n)
        return n

    def link(self, src: _Node, output: str, dst: _Node, input_: str) -> None:
        out_slot = [name for name, _ in src.outputs].index(output)
        in_slot = [name for name, _ in dst.inputs].index(input_)
        self.links.append([len(self.links) + 1, src.id, out_slot, dst.id, in_slot, src.outputs[out_slot][1]])

    def to_json(self) -> dict:
        nodes = []
        for order, n in enumerate(self.nodes):
            inputs = []
            for slot, (name, type_) in enumerate(n.inputs):
                link = next((lk[0] for lk in self.links if lk[3] == n.id and lk[4] == slot), None)
                inputs.append({"name": name, "type": type_, "link": link})
            outputs = [{"name": name, "type": type_, "slot_index": slot,
                        "links": [lk[0] for lk in self.links if lk[1] == n.id and lk[2] == slot]}
                       for slot, (name, type_) in enumerate(n.outputs)]
            node = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {},
                    "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
                    "properties": {"Node name for S&R": n.type}, "widgets_values": n.widgets}
            if n.title:
                node["title"] = n.title
            nodes.append(node)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {}, "version": 0.4}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
