"""MegaFusion's dilated middle block: conv1/conv2 of the U-Net middle block's resnets with dilation 2, padding 2 and
the same weights, so the lowest-resolution level sees a wider context at the higher-resolution stages.

The patch is an object patch on a clone: each conv is replaced, while the clone is loaded, by a copy of the same
module (same class, same Parameter objects, hence the same state-dict keys: LoRA weight patches, low-VRAM casting and
device moves all go through the host's own path) whose ``dilation`` and ``padding`` are 2.  The model we were given
is untouched.
"""
from __future__ import annotations

import torch

from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
from comfy.model_patcher import ModelPatcher

DILATION = 2


class DilationError(ValueError):
    """The model has no U-Net middle block with 3x3 resnet convolutions to dilate."""


def dilated_copy(conv: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """The same conv (class, parameters, casting behaviour) with dilation 2 and padding 2: same output size."""
    if not isinstance(conv, torch.nn.Conv2d) or tuple(conv.kernel_size) != (3, 3) or tuple(conv.stride) != (1, 1) \
            or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
        raise DilationError(f"expected a 3x3, stride-1, undilated Conv2d in the middle block, found {conv!r}")
    new = conv.__class__.__new__(conv.__class__)
    # A shallow copy with its own registries: _parameters etc. are new dicts holding the SAME Parameter objects.
    new.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in conv.__dict__.items()})
    new.dilation = (DILATION, DILATION)
    new.padding = (DILATION, DILATION)
    new._reversed_padding_repeated_twice = [DILATION] * 4
    return new


def middle_block_conv_keys(model: ModelPatcher) -> list[str]:
    """Object-patch keys of conv1/conv2 of every resnet in the middle block ('diffusion_model.middle_block.0.
    in_layers.2', ...)."""
    unet = model.get_model_object("diffusion_model")
    try:
        middle = model.get_model_object("diffusion_model.middle_block")
    except AttributeError:
        middle = None
    keys = []
    if middle is not None:
        for i, block in enumerate(middle):
            if isinstance(block, ResBlock):
                for seq_name in ("in_layers", "out_layers"):
                    for j, layer in enumerate(getattr(block, seq_name)):
                        if isinstance(layer, torch.nn.Conv2d):
                            keys.append(f"diffusion_model.middle_block.{i}.{seq_name}.{j}")
    if not keys:
        raise DilationError(f"{type(unet).__name__} has no U-Net middle block with resnets; dilated middle-block "
                            "convolutions apply to SD1.x, SD2.x and SDXL U-Nets only")
    return keys


def apply_dilation(model: ModelPatcher) -> ModelPatcher:
    """A clone of ``model`` whose middle-block resnet convs are dilated (``model`` itself is untouched)."""
    keys = middle_block_conv_keys(model)
    clone = model.clone()
    for key in keys:
        clone.add_object_patch(key, dilated_copy(model.get_model_object(key)))
    return clone
