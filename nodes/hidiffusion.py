"""Nodes for hidiffusion (filled in by its issue)."""
from comfy_api.latest import io

NODES: list[type[io.ComfyNode]] = []
