"""Helpers shared by tests: conditioning and latents shaped for the tiny model fixtures."""
from __future__ import annotations

import torch


def context_dim(model) -> int:
    return model.model.model_config.unet_config["context_dim"]


def make_cond(model, batch: int = 1, seed: int = 0, tokens: int = 7, width: int = 512, height: int = 512) -> list:
    """A CONDITIONING list for ``model``: random token embeddings, plus pooled output and sizes for SDXL."""
    gen = torch.Generator().manual_seed(seed)
    extra = {}
    if model.model.model_config.unet_config.get("adm_in_channels"):
        extra = {"pooled_output": torch.randn(batch, 1280, generator=gen), "width": width, "height": height,
                 "crop_w": 0, "crop_h": 0, "target_width": width, "target_height": height}
    return [[torch.randn(batch, tokens, context_dim(model), generator=gen), extra]]


def latent(width_px: int, height_px: int, batch: int = 1) -> dict:
    return {"samples": torch.zeros(batch, 4, height_px // 8, width_px // 8)}
