"""Megapixel: tuning-free high-resolution generation for ComfyUI.

HiDiffusion (RAU-Net, MSW-MSA) model patches, a MegaFusion relay sampler and an autoguidance guider,
registered through ComfyUI's V3 extension API.
"""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .nodes import NODES

# Served by ComfyUI at /extensions/megapixel/ (the pack's folder name); the frontend's node library reads each
# node's docs from docs/<node id>.md there.  tools/generate/docs.py writes them from the nodes' schemas.
WEB_DIRECTORY = "./web"


class MegapixelExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> MegapixelExtension:
    return MegapixelExtension()
