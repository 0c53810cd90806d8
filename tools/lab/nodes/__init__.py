"""Development-only ComfyUI nodes for the quality lab and the DiT stand-ins (never part of the shipped pack).

The tooling links this folder into a test or demo server's ``custom_nodes/`` as ``megapixel_lab``.  The stock
checkpoint detector only knows SD1.5 at full width, so the lab's small SD1.5-class U-Nets are loaded here, from
ComfyUI's own classes; the lab autoencoder is a TAESD file that the stock *Load VAE* node loads.  Likewise the pinned
host's loaders cannot build a tiny Flux (they fix its head count), nor load tiny text encoders: the shipped DiT
workflows run in the tests with these two nodes in place of the diffusion-model loader and the text encoder.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from typing_extensions import override

import folder_paths
from comfy_api.latest import ComfyExtension, io

_TOOLS = Path(__file__).resolve().parent.parent.parent
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))

from harness import tiny_dits  # noqa: E402
from lab import models  # noqa: E402


class MegapixelLabLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelLabLoader",
            display_name="Megapixel Lab U-Net Loader (dev)",
            category="megapixel/lab",
            description=("Loads a quality-lab U-Net (a small SD1.5-class model trained on one-object scenes at "
                         "128 px) from models/diffusion_models, and the fixed conditioning it was trained with. "
                         "Development only."),
            inputs=[io.Combo.Input("unet_name", options=folder_paths.get_filename_list("diffusion_models"),
                                   tooltip="A lab U-Net file (megapixel-lab-unet*.safetensors).")],
            outputs=[io.Model.Output(tooltip="The lab U-Net."),
                     io.Conditioning.Output(tooltip="The empty context the model was trained with (use it as "
                                                    "positive and negative; the model is unconditional).")],
        )

    @classmethod
    def execute(cls, unet_name) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
        try:
            model = models.load_unet(Path(path))
        except ValueError as e:
            raise ValueError(f"Megapixel Lab U-Net Loader (dev): unet_name: {e}") from None
        return io.NodeOutput(model, models.conditioning())


class MegapixelTinyDiT(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelTinyDiT",
            display_name="Megapixel Tiny DiT (dev)",
            category="megapixel/lab",
            description="A tiny seeded model of a DiT family, built from the host's own classes. Development only.",
            inputs=[io.Combo.Input("family", options=list(tiny_dits.FAMILIES), tooltip="The DiT family."),
                    io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the weights.")],
            outputs=[io.Model.Output(tooltip="The tiny model (random weights).")],
        )

    @classmethod
    def execute(cls, family, seed) -> io.NodeOutput:
        return io.NodeOutput(tiny_dits.tiny_dit(family, seed))


class MegapixelTinyDiTTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelTinyDiTTextEncode",
            display_name="Megapixel Tiny DiT Text Encode (dev)",
            category="megapixel/lab",
            description=("Conditioning shaped as a DiT family's text encoders make it, seeded from the text. "
                         "Development only."),
            inputs=[io.Combo.Input("family", options=list(tiny_dits.FAMILIES), tooltip="The DiT family."),
                    io.String.Input("text", multiline=True, tooltip="Only its hash is used (as the seed).")],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, family, text) -> io.NodeOutput:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return io.NodeOutput(tiny_dits.conditioning(family, seed=seed))


class MegapixelLabExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [MegapixelLabLoader, MegapixelTinyDiT, MegapixelTinyDiTTextEncode]


async def comfy_entrypoint() -> MegapixelLabExtension:
    return MegapixelLabExtension()
