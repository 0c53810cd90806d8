"""Node classes: inputs, outputs, validation and docs.  The work itself lives in ``patches/`` and ``samplers/``."""
from comfy_api.latest import io

NODES: list[type[io.ComfyNode]] = []
