"""The pack's high-resolution recipe as one call: what the quality lab found best, put together for a user who wants
a KSampler that draws at a larger size without duplicating the subject (docs/megapixel.md has the measurements).

The recipe, for any model ComfyUI samples: the MegaFusion relay (:mod:`.relay`) from the input latent's size to the
target, doubling the side per stage (2x: two stages, 4x: three), on the relay's default step split (the first stage
gets half the steps; 80 % for flow models such as Flux), upscaling the clean estimate in latent space (bicubic).
With a weak model connected, the autoguidance guider (:mod:`.autoguidance`, w = :data:`AUTOGUIDANCE_W`) steers the
first stage only (its guidance interval ends between the first stage's last two noise levels): at the native size
the weak model knows what it does, above it it extrapolates worse than the main model, and guiding there doubled
duplication in the lab.
Without one, the core CFG guider.  Everything else (batch, masks, denoise < 1, previews, interrupt) is the relay's and the host's own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import comfy.samplers
from comfy.model_patcher import ModelPatcher

from ..patches.model_info import latent_ratio, patch_size
from .relay import RelayError, relay_sampler_custom
from .relay_stages import LATENT_PX, MAX_FACTOR

NODE_NAME = "Megapixel High-Res Sampler"
AUTOGUIDANCE_W = 2.0  # EDM2's range (1.7-2.1); the lab's weak model gains most there
MAX_SIDE_PX = 16384


@dataclass(frozen=True)
class Target:
    width: int  # pixels
    height: int


def target_size(latent_shape: tuple[int, ...], ratio: int, scale_by: float, width: int = 0, height: int = 0,
                node: str = NODE_NAME) -> Target:
    """The output size in pixels: ``width`` x ``height`` where given (one of them alone keeps the aspect ratio),
    else the input latent's size times ``scale_by``.  Raises RelayError for sizes the recipe cannot reach."""
    h0, w0 = latent_shape[-2] * ratio, latent_shape[-1] * ratio
    if width < 0 or height < 0:
        raise RelayError(f"{node}: width/height: {width}x{height} is negative. Fix: 0 (use scale_by) or a size in "
                         "pixels.")
    if width or height:
        width = width or round(height * w0 / h0)
        height = height or round(width * h0 / w0)
        source = f"width x height {width}x{height}"
    else:
        if not math.isfinite(scale_by) or scale_by <= 0:
            raise RelayError(f"{node}: scale_by: {scale_by} is not a usable factor. Fix: a number from 1 to "
                             f"{MAX_FACTOR:g} (2 doubles the side).")
        width, height = round(w0 * scale_by), round(h0 * scale_by)
        source = f"scale_by {scale_by:g}"
    if width < w0 or height < h0:
        raise RelayError(f"{node}: {source}: the target ({width}x{height} px) is smaller than the input latent "
                         f"({w0}x{h0} px); this sampler only enlarges. Fix: a scale_by of at least 1, or use a "
                         "plain KSampler for this size.")
    if max(width / w0, height / h0) > MAX_FACTOR or max(width, height) > MAX_SIDE_PX:
        raise RelayError(f"{node}: {source}: {width}x{height} px is more than {MAX_FACTOR:g} times the input "
                         f"({w0}x{h0} px) or above {MAX_SIDE_PX} px a side. Fix: a smaller target, or a larger input "
                         "latent.")
    return Target(width, height)


def stage_list(latent_shape: tuple[int, ...], target: Target, ratio: int = LATENT_PX, patch: int = 1) -> str:
    """The relay's ``stages`` text from the input size to ``target``: one stage per doubling of the side (rounded
    up), sizes spaced evenly in log scale and rounded to whole tokens ('512x512, 1024x1024, 2048x2048' for 4x)."""
    h0, w0 = latent_shape[-2] * ratio, latent_shape[-1] * ratio
    grid = ratio * patch
    ratio_side = max(target.width / w0, target.height / h0)
    n = 1 + max(0, math.ceil(math.log2(ratio_side) - 1e-9)) if ratio_side > 1 else 1
    sizes = [(w0, h0)]
    for k in range(1, n):
        t = k / (n - 1)
        w = round(w0 * (target.width / w0) ** t / grid) * grid
        h = round(h0 * (target.height / h0) ** t / grid) * grid
        if k == n - 1:
            w, h = round(target.width / grid) * grid, round(target.height / grid) * grid
        if (w, h) != sizes[-1]:
            sizes.append((max(w, sizes[-1][0]), max(h, sizes[-1][1])))
    return ", ".join(f"{w}x{h}" for w, h in sizes)


def first_stage_end(model: ModelPatcher, sigmas, latent_shape: tuple[int, ...], stages: str) -> float:
    """The end_percent that limits a guidance interval to the relay's first stage: between the noise levels of its
    last step and the boundary (1.0, the whole schedule, for a single stage).  The stage is the relay's own plan
    (:func:`relay.plan_relay`, the default split for this model), so the two cannot disagree."""
    from .autoguidance import percent_for_sigma
    from .relay import plan_relay

    if len(sigmas) < 3:
        return 1.0
    ms = model.get_model_object("model_sampling")
    plan = plan_relay(sigmas, latent_shape, stages, model_sampling=ms, ratio=latent_ratio(model),
                      patch=patch_size(model))
    if len(plan.stages) == 1:
        return 1.0
    first = plan.stages[0].sigmas
    boundary = (float(first[-1]) + float(first[-2])) / 2
    return min(1.0, max(1e-3, percent_for_sigma(ms, boundary)))


def highres_sample(model: ModelPatcher, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                   positive, negative, latent: dict, *, scale_by: float = 2.0, width: int = 0, height: int = 0,
                   denoise: float = 1.0, weak_model: ModelPatcher | None = None, node: str = NODE_NAME) -> dict:
    """Sample ``latent`` up to the target size with the recipe; returns the LATENT dict at the target size."""
    import comfy_extras.nodes_custom_sampler as custom

    from .autoguidance import AutoguidanceGuider, validate_models

    if weak_model is not None:
        validate_models(model, weak_model, node)  # before anything loads
    samples = latent["samples"]
    ratio, patch = latent_ratio(model), patch_size(model)
    target = target_size(tuple(samples.shape), ratio, scale_by, width, height, node)
    stages = stage_list(tuple(samples.shape), target, ratio, patch)
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    if weak_model is not None:
        guider = AutoguidanceGuider(model, weak_model, cfg=cfg, w=AUTOGUIDANCE_W,
                                    end_percent=first_stage_end(model, sigmas, tuple(samples.shape), stages))
    else:
        guider = comfy.samplers.CFGGuider(model)
        guider.set_cfg(cfg)
    guider.set_conds(positive, negative)
    out, _ = relay_sampler_custom(custom.Noise_RandomNoise(seed), guider, comfy.samplers.sampler_object(sampler_name),
                                  sigmas, latent, stages=stages, node=node)
    return out
