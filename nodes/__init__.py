"""Node classes: inputs, outputs, validation and docs.  The work itself lives in ``patches/`` and ``samplers/``."""
from comfy_api.latest import io

from . import autoguidance, dype, hidiffusion, highres, relay

NODES: list[type[io.ComfyNode]] = [*highres.NODES, *hidiffusion.NODES, *relay.NODES, *autoguidance.NODES,
                                   *dype.NODES]
