"""Which U-Net a MODEL holds, and where its blocks sit.

HiDiffusion's block maps are defined per U-Net *level* (the resolution stages of the encoder/decoder); this module
turns a model into a :class:`UNetLayout` that knows the ComfyUI block index of every level's downsampler, upsampler,
first resnet and transformer blocks, so the patches never hard-code indices a differently-shaped U-Net would break.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.supported_models as sm
from comfy.ldm.modules.attention import SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, UNetModel, Upsample

from .model_info import display_name

SD1, SD2, SDXL = "SD1", "SD2", "SDXL"
FAMILIES = (SD1, SD2, SDXL)
SUPPORTED_TEXT = "SD1.x, SD2.x (incl. v-prediction) and SDXL-architecture U-Nets (SDXL base, SSD-1B, Vega, ...)"

# Model configs that are U-Nets but not ones HiDiffusion's maps fit (different level layout or purpose).
_REJECTED_CONFIGS = (sm.SDXLRefiner, sm.SVD_img2vid, sm.SD_X4Upscaler, sm.Stable_Cascade_C)


class UnsupportedModelError(ValueError):
    """The model is not a U-Net HiDiffusion can patch."""


def _unsupported(model, why: str, node: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{node}: the model ({display_name(model)}) {why}. HiDiffusion supports {SUPPORTED_TEXT}; "
        f"connect one of those (DiTs such as SD3 or Flux, and Stable Cascade, have no U-Net levels to patch).")


@dataclass(frozen=True)
class UNetLayout:
    """Block indices of a ComfyUI ``UNetModel`` (``openaimodel.py``), by level.

    ``levels`` resolution stages, ``res_blocks`` resnet(+transformer) blocks per level on the encoder side
    (the decoder has one more per level).  Input block 0 is ``conv_in``.
    """

    family: str
    levels: int
    res_blocks: int
    v_prediction: bool

    @property
    def n_input(self) -> int:
        return self.levels * (self.res_blocks + 1)

    def downsample_block(self, level: int) -> int:
        """Input block holding the Downsample from ``level`` to ``level + 1``."""
        return (level + 1) * (self.res_blocks + 1)

    def upsample_block(self, level: int) -> int:
        """Output block whose Upsample goes from ``level + 1`` back to ``level``."""
        return (self.levels - level - 2) * (self.res_blocks + 1) + self.res_blocks

    def first_block(self, level: int) -> int:
        """Input block of the first resnet(+transformer) of ``level``."""
        return level * (self.res_blocks + 1) + 1

    def skip_consumer(self, input_block: int) -> int:
        """Output block that pops ``input_block``'s skip connection."""
        return self.n_input - 1 - input_block

    def input_blocks_of(self, level: int) -> list[int]:
        start = self.first_block(level)
        return list(range(start, start + self.res_blocks))

    def output_blocks_of(self, level: int) -> list[int]:
        start = (self.levels - 1 - level) * (self.res_blocks + 1)
        return list(range(start, start + self.res_blocks + 1))

    def level_of_input(self, block: int) -> int:
        return max(0, (block - 1) // (self.res_blocks + 1)) if block > 0 else 0

    @property
    def native_px(self) -> int:
        """Training resolution (pixels per side): SD1 512, SD2 768 (v-prediction) or 512, SDXL 1024."""
        if self.family == SDXL:
            return 1024
        if self.family == SD2 and self.v_prediction:
            return 768
        return 512


def _unet(model, node: str) -> UNetModel:
    inner = getattr(model, "model", None)
    unet = getattr(inner, "diffusion_model", None)
    if unet is None or not isinstance(unet, UNetModel) or not hasattr(unet, "input_blocks"):
        raise _unsupported(model, "is not a U-Net (its diffusion model has no input_blocks)", node)
    return unet


def _family_from_config(model) -> str | None:
    config = getattr(model.model, "model_config", None)
    if config is None:
        return None
    if isinstance(config, _REJECTED_CONFIGS):
        return "rejected"
    if isinstance(config, sm.SDXL):
        return SDXL
    if isinstance(config, sm.SD20):
        return SD2
    if isinstance(config, sm.SD15):
        return SD1
    return None


def _family_from_structure(unet: UNetModel, levels: int) -> str | None:
    context = None
    for block in unet.input_blocks:
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                context = layer.transformer_blocks[0].attn2.to_k.in_features
                break
        if context is not None:
            break
    if levels == 4 and unet.num_classes is None:
        return SD2 if context == 1024 else SD1 if context == 768 else None
    if levels == 3 and unet.num_classes is not None:
        return SDXL
    return None


def detect_layout(model, family: str = "auto", node: str = "HiDiffusion") -> UNetLayout:
    """The :class:`UNetLayout` of ``model`` (a ModelPatcher).  ``family`` overrides detection (``"SD1"``, ``"SD2"``,
    ``"SDXL"``) but the U-Net must still have that family's level structure.  Raises UnsupportedModelError."""
    unet = _unet(model, node)
    downsamplers = [i for i, b in enumerate(unet.input_blocks) if any(isinstance(l, Downsample) for l in b)]
    levels = len(downsamplers) + 1
    res = set(unet.num_res_blocks) if hasattr(unet, "num_res_blocks") else set()
    if len(res) != 1:
        raise _unsupported(model, "has U-Net levels with different numbers of resnet blocks", node)
    res_blocks = res.pop()
    detected = _family_from_config(model)
    if detected == "rejected":
        raise _unsupported(model, "is a U-Net whose layout HiDiffusion's block maps do not fit", node)
    if detected is None:
        detected = _family_from_structure(unet, levels)
    chosen = detected if family in (None, "", "auto") else family
    if chosen not in FAMILIES:
        if family not in (None, "", "auto"):
            raise ValueError(f"{node}: model family {family!r} is not one of auto, {', '.join(FAMILIES)}.")
        raise _unsupported(model, "was not recognised as an SD1, SD2 or SDXL U-Net; set the family input if it "
                                  "is one", node)
    want_levels = 3 if chosen == SDXL else 4
    layout = UNetLayout(chosen, levels, res_blocks, _is_v_prediction(model))
    if levels != want_levels:
        raise _unsupported(model, f"has {levels} U-Net levels, not the {want_levels} of an {chosen} U-Net "
                                  f"(family {'detected' if family in (None, '', 'auto') else 'set'} as {chosen})",
                           node)
    if len(unet.input_blocks) != layout.n_input or len(unet.output_blocks) != layout.n_input or \
            downsamplers != [layout.downsample_block(l) for l in range(levels - 1)]:
        raise _unsupported(model, "has an unexpected U-Net block layout", node)
    for level in range(levels - 1):
        if not any(isinstance(l, Upsample) for l in unet.output_blocks[layout.upsample_block(level)]):
            raise _unsupported(model, "has an unexpected U-Net block layout (upsamplers)", node)
    return layout


def _is_v_prediction(model) -> bool:
    import comfy.model_base

    return getattr(model.model, "model_type", None) == comfy.model_base.ModelType.V_PREDICTION


def has_transformer(model, block: tuple[str, int]) -> bool:
    """Whether ``("input"|"output", index)`` of the model's U-Net holds a SpatialTransformer."""
    unet = model.model.diffusion_model
    blocks = unet.input_blocks if block[0] == "input" else unet.output_blocks
    return 0 <= block[1] < len(blocks) and any(isinstance(l, SpatialTransformer) for l in blocks[block[1]])
