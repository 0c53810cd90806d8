"""Nodes for relay (filled in by its issue)."""
from comfy_api.latest import io

NODES: list[type[io.ComfyNode]] = []
