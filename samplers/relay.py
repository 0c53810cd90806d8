"""MegaFusion's truncate-and-relay (arXiv 2408.11001) on ComfyUI's own sampling.

One sigma schedule for all steps is cut into consecutive slices, one per resolution stage.  Each stage is an ordinary
``guider.sample`` call over its slice (any GUIDER, any KSAMPLER, any scheduler).  At a boundary the clean estimate x0
that the model predicted at the stage's last step's *own input* (the sampler callback's ``denoised``; MegaFusion's
official SD pipelines take it one step late) is upscaled, and the next stage starts from it with FRESH noise (seeded
from the seed and the stage index) at the first sigma of its slice: ``guider.sample`` adds that noise itself through
the model's ``noise_scaling``, so the re-noised latent is ``x0 + sigma·noise`` for EPS / V-prediction and
``sigma·noise + (1 - sigma)·x0`` for flow (CONST) models.

Latent spaces: the callback's x0 is in the model's internal space (after ``latent_format.process_in``); guiders take
and return latents in the outer space (what VAEs decode), so x0 is brought out with ``process_latent_out`` before it
is upscaled (in latent space, or in pixel space through a VAE) and handed to the next stage as its ``latent_image``.

Per stage, optionally, the guider's models are swapped for patched clones: noise re-scheduling
(:mod:`.relay_schedule`) and dilated middle-block convolutions (:mod:`.relay_dilate`).  The guider we were given is
never mutated.  **Model-mapping protocol** (for guiders that hold models): if a guider has a method
``megapixel_map_models(fn)``, it must return a copy of itself with ``fn`` (ModelPatcher -> ModelPatcher) applied to
every ModelPatcher it samples with; otherwise the relay shallow-copies the guider and replaces its ``model_patcher``
with ``fn(model_patcher)`` (and its ``model_options`` when they were the patcher's own).

Spatial inputs follow the stage size: inpainting masks are resized by the host (``prepare_mask``) and the known region
is the input latent resized to the stage; ControlNet hints are resized by the host at every call; absolute area
conditioning (``ConditioningSetArea``) is scaled by the stage factor here; percentage areas and cond masks resize
themselves.

A single stage is exactly one ``guider.sample`` call with the caller's noise, sigmas, mask and seed, i.e. the core
KSampler / SamplerCustomAdvanced result.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

import comfy.model_management
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
from comfy.model_patcher import ModelPatcher

from ..patches.model_info import display_name, latent_ratio, patch_size
from .relay_dilate import DilationError, apply_dilation, middle_block_conv_keys
from .relay_schedule import apply_rescheduling, apply_size_shift, is_flow, is_size_shifted, map_sigma, size_shift
from .relay_stages import (FIRST_STAGE_SHARE, FLOW_FIRST_STAGE_SHARE, StageSpecError, parse_split, parse_stages,
                           round_half_up, slice_sigmas, split_steps, stage_sizes)

UPSCALE_METHODS = ["bicubic", "bislerp", "bilinear", "area", "nearest-exact", "lanczos"]
_SEED_STRIDE = 0x9E3779B97F4A7C15  # golden-ratio stride: stage seeds far apart from the user's neighbouring seeds


class RelayError(ValueError):
    """A relay input the sampler cannot work with; the message names the node, the input and the fix."""


# --- the plan -----------------------------------------------------------------------------------------------------
@dataclass
class RelayStage:
    index: int
    height: int  # latent pixels
    width: int
    steps: int
    sigmas: torch.Tensor  # this stage's slice of the schedule (re-scheduled / re-shifted when enabled)
    scale: float  # side length over the first stage's: sqrt of the area ratio
    reschedule: bool = False
    dilate: bool = False
    shift: float | None = None  # a size-shifted flow model's shift (mu) for this stage's size, when not the model's

    @property
    def patched(self) -> bool:
        return self.reschedule or self.dilate or self.shift is not None


@dataclass
class RelayPlan:
    stages: list[RelayStage]
    flow: bool = False
    notes: list[str] = field(default_factory=list)  # warnings for the user (logged when the relay starts)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)


NOTHING_KEPT_SIGMA = 0.97  # a flow stage that starts above this noise level keeps under 3% of what it was handed


def spatial_dims(latent_shape: tuple[int, ...], n_stages: int) -> tuple[int, int]:
    """(height, width) of an image latent: [B, C, H, W], or [B, C, 1, H, W] (Qwen-Image and other models whose
    latents carry a frame axis).  Raises StageSpecError for other shapes when there is more than one stage."""
    if len(latent_shape) == 4 or (len(latent_shape) == 5 and latent_shape[2] == 1):
        return latent_shape[-2], latent_shape[-1]
    if n_stages > 1:
        what = (f"a video latent of {latent_shape[2]} frames" if len(latent_shape) == 5
                else f"a latent of shape {tuple(latent_shape)}")
        raise StageSpecError("latent_image", f"is {what}; the relay enlarges still images ([batch, channels, height, "
                                             "width], or one frame). Fix: use one stage ('1') for this latent.")
    return latent_shape[-2], latent_shape[-1]


def plan_relay(sigmas: torch.Tensor, latent_shape: tuple[int, ...], stages: str, step_split: str = "", *,
               model_sampling=None, reschedule: bool = False, dilate: bool = False, ratio: int = 8,
               patch: int = 1) -> RelayPlan:
    """Check the stage inputs against the latent and the schedule and cut the schedule.  Raises StageSpecError.

    ``ratio`` and ``patch`` are the model's pixels per latent pixel and latent pixels per token (stage sizes respect
    both).  A flow model whose shift depends on the image size (``ModelSamplingFlux``: Flux, Chroma, Qwen-Image as
    loaded) samples every stage at its own size's shift (:func:`size_shift`): the schedule is read as the first
    stage's (the latent's size), and later stages re-shift the same timesteps, so a boundary sits at the same
    resolution-adjusted signal level, not at the same noise level."""
    spec = parse_stages(stages)
    weights = parse_split(step_split, len(spec))
    height, width = spatial_dims(latent_shape, len(spec))
    sizes = stage_sizes(spec, height, width, ratio, patch)
    flow = model_sampling is not None and is_flow(model_sampling)
    counts = split_steps(len(sigmas) - 1, len(spec), weights, FLOW_FIRST_STAGE_SHARE if flow else FIRST_STAGE_SHARE)
    shifted = model_sampling is not None and is_size_shifted(model_sampling)
    h0, w0 = sizes[0]
    plan = RelayPlan([], flow=flow)
    for k, ((h, w), s) in enumerate(zip(sizes, slice_sigmas(sigmas, counts))):
        scale = math.sqrt((h * w) / (h0 * w0))
        shift = None
        if shifted and k > 0:  # the same timesteps at this stage's own size's shift
            shift = size_shift(model_sampling, scale)
            s = map_sigma(s, scale, True)
        resched = reschedule and not shifted and k > 0 and scale != 1.0
        plan.stages.append(RelayStage(k, h, w, len(s) - 1, map_sigma(s, scale, flow) if resched else s, scale,
                                      reschedule=resched, dilate=dilate and k > 0, shift=shift))
    if shifted and reschedule:
        plan.notes.append("noise_rescheduling: this model's shift depends on the image size, so every stage already "
                          "samples at its own size's shift; the switch adds nothing on top.")
    if flow:
        _note_lost_stages(plan)
    return plan


def _note_lost_stages(plan: RelayPlan) -> None:
    """Warn where a flow schedule leaves a stage nothing to keep (its start, or the first stage's end, is noise)."""
    first = plan.stages[0]
    if len(plan.stages) > 1 and float(first.sigmas[-1]) >= NOTHING_KEPT_SIGMA:
        plan.notes.append(
            f"the first stage ends at noise level {float(first.sigmas[-1]):.2f}: it hands the next stage almost pure "
            "noise. The model's shift is likely set for a larger image (e.g. ModelSamplingFlux's width/height). Fix: "
            "set the shift for the first stage's size (the input latent's).")
    for stage in plan.stages[1:]:
        start = float(stage.sigmas[0])
        if start >= NOTHING_KEPT_SIGMA:
            plan.notes.append(
                f"stage {stage.index + 1} restarts at noise level {start:.2f}: it keeps almost nothing of the stage "
                "before. Fix: give the later stages a larger share of the steps (step_split), or smaller jumps.")


def stage_seed(seed: int, stage: int) -> int:
    """The seed of a stage's fresh noise: ``seed`` itself for the first stage, far-apart values after it."""
    return seed if stage == 0 else (int(seed) + stage * _SEED_STRIDE) % (1 << 64)


def noise_seed(noise, first_noise: torch.Tensor) -> int:
    """The seed later stages derive their fresh noise from: the NOISE object's own ``seed`` when it has one (core
    RandomNoise, DisableNoise), else a 64-bit digest of the noise it generated for the first stage, so a NOISE without
    a seed still gives noise that follows it (another NOISE, other later stages) and is reproducible."""
    seed = getattr(noise, "seed", None)
    if seed is not None:
        try:
            return int(seed)
        except (TypeError, ValueError):
            pass
    data = first_noise.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def fresh_noise(latent: torch.Tensor, seed: int, stage: int, batch_index=None) -> torch.Tensor:
    """Gaussian noise shaped like ``latent`` (on the CPU, like the host's), deterministic in the seed and stage."""
    return comfy.sample.prepare_noise(latent, stage_seed(seed, stage), batch_index)


# --- upscaling ----------------------------------------------------------------------------------------------------
def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos on float channels (PIL mode 'F'): unlike comfy.utils.lanczos it neither clamps nor quantises, so it
    works on latents as well as on images."""
    arr = samples.detach().float().cpu().numpy()
    out = np.empty(arr.shape[:2] + (height, width), dtype=np.float32)
    for b in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            img = Image.fromarray(np.ascontiguousarray(arr[b, c]), mode="F")
            out[b, c] = np.asarray(img.resize((width, height), resample=Image.Resampling.LANCZOS))
    return torch.from_numpy(out).to(samples.device, samples.dtype)


def resize(samples: torch.Tensor, height: int, width: int, method: str) -> torch.Tensor:
    """Resize [B, C, H, W] (or [B, C, T, H, W], frame by frame) to (height, width) with one of UPSCALE_METHODS."""
    if tuple(samples.shape[-2:]) == (height, width):
        return samples
    if samples.ndim == 5:
        b, c, t = samples.shape[:3]
        flat = samples.movedim(2, 1).reshape(b * t, c, *samples.shape[-2:])
        return resize(flat, height, width, method).reshape(b, t, c, height, width).movedim(1, 2)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return comfy.utils.common_upscale(samples, width, height, method, "disabled")


Upscaler = Callable[[torch.Tensor, int, int], torch.Tensor]


def latent_upscaler(method: str) -> Upscaler:
    """Upscale outer-space latents directly."""
    if method not in UPSCALE_METHODS:
        raise StageSpecError("upscale_method", f"{method!r} is not one of {', '.join(UPSCALE_METHODS)}.")
    return lambda x, h, w: resize(x, h, w, method)


def vae_upscaler(vae, method: str) -> Upscaler:
    """Upscale in pixel space, as the official code does: VAE decode -> resize -> VAE encode."""
    latent_upscaler(method)  # checks the name

    def upscale(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        ratio = vae_ratio(vae)
        frames_axis = x.ndim == 5 and getattr(vae, "latent_dim", 2) == 2  # one-frame latent, image VAE
        pixels = vae.decode(x[:, :, 0] if frames_axis else x)
        if pixels.ndim == 5:  # video-style VAEs return [B, T, H, W, C]
            pixels = pixels.reshape(-1, *pixels.shape[-3:])
        pixels = resize(pixels[..., :3].movedim(-1, 1), h * ratio, w * ratio, method).movedim(1, -1)
        out = vae.encode(pixels.clamp(0.0, 1.0))
        if out.ndim != x.ndim:  # e.g. an image VAE's [B, C, H, W] for a model that keeps a frame axis
            out = out.reshape(*x.shape[:-2], *out.shape[-2:])
        return out.to(x.device, x.dtype)
    return upscale


def vae_ratio(vae) -> int | None:
    """The VAE's pixels per latent pixel (one side), or None when it does not say one number."""
    ratio = getattr(vae, "downscale_ratio", 8)
    if isinstance(ratio, (tuple, list)) and ratio and isinstance(ratio[-1], int):  # (frames, height, width)
        ratio = ratio[-1]
    return ratio if isinstance(ratio, int) else None


def check_vae(vae, model: ModelPatcher, node: str) -> None:
    """The VAE must produce this model's latents (its channels, at its compression of the image)."""
    channels = model.get_model_object("latent_format").latent_channels
    ratio = latent_ratio(model)
    if getattr(vae, "latent_channels", channels) != channels or vae_ratio(vae) != ratio:
        raise RelayError(f"{node}: vae: this VAE makes {getattr(vae, 'latent_channels', '?')}-channel latents at 1/"
                         f"{vae_ratio(vae) or '?'} of the image size, the model ({display_name(model)}) works on "
                         f"{channels}-channel latents at 1/{ratio}. Fix: connect the VAE that belongs to the model "
                         "(or disconnect it to upscale in latent space).")


# --- per-stage guiders ------------------------------------------------------------------------------------------------
def map_guider_models(guider, fn: Callable[[ModelPatcher], ModelPatcher]):
    """A copy of ``guider`` sampling with ``fn`` applied to its models (see the protocol in the module docstring)."""
    if hasattr(guider, "megapixel_map_models"):
        return guider.megapixel_map_models(fn)
    old = guider.model_patcher
    new = copy.copy(guider)
    new.model_patcher = fn(old)
    if getattr(guider, "model_options", None) is old.model_options:
        new.model_options = new.model_patcher.model_options
    return new


def stage_model_fn(stage: RelayStage) -> Callable[[ModelPatcher], ModelPatcher] | None:
    """What a stage does to every model of the guider (clones only), or None when the stage needs no patch."""
    if not stage.patched:
        return None

    def fn(model: ModelPatcher) -> ModelPatcher:
        if stage.shift is not None:
            model = apply_size_shift(model, stage.shift)
        if stage.reschedule:
            model = apply_rescheduling(model, stage.scale)
        if stage.dilate:
            model = apply_dilation(model)
        return model
    return fn


def scale_spatial_conds(conds: dict, fy: float, fx: float, height: int, width: int,
                        method: str = "bicubic") -> dict | None:
    """Copies of ``conds`` (a guider's ``original_conds``) with what has a size in latent pixels scaled to the stage,
    or None if no cond has any: absolute areas (h, w, y, x) and reference latents (Flux Kontext, Qwen-Image-Edit:
    ``reference_latents``, resized by the stage's factor).  Percentage areas and masks resize themselves."""
    def scaled(area):
        h, w, y, x = area
        y2, x2 = min(round(y * fy), height - 1), min(round(x * fx), width - 1)
        return (max(1, min(round(h * fy), height - y2)), max(1, min(round(w * fx), width - x2)), y2, x2)

    def resized(ref: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        return resize(ref, max(1, round_half_up(h * fy)), max(1, round_half_up(w * fx)), method)

    found = False
    out = {}
    for key, cond_list in conds.items():
        new_list = []
        for c in cond_list:
            area = c.get("area") if isinstance(c, dict) else None
            if area is not None and len(area) == 4 and area[0] != "percentage":
                c = dict(c, area=scaled(area))
                found = True
            elif area is not None and area[0] != "percentage":
                raise RelayError(f"area conditioning with {len(area)} values ({area}) cannot be scaled to the relay "
                                 "stages. Fix: use percentage areas (Conditioning (Set Area with Percentage)) or masks.")
            refs = c.get("reference_latents") if isinstance(c, dict) else None
            if refs:
                c = dict(c, reference_latents=[resized(r) for r in refs])
                found = True
            new_list.append(c)
        out[key] = new_list
    return out if found else None


def stage_guider(guider, stage: RelayStage, first: RelayStage, method: str = "bicubic"):
    """The guider for ``stage``: models patched for the stage, spatial conds scaled to it.  ``guider`` is untouched."""
    fn = stage_model_fn(stage)
    g = guider if fn is None else map_guider_models(guider, fn)
    conds = getattr(g, "original_conds", None)
    if stage.index > 0 and isinstance(conds, dict):
        scaled = scale_spatial_conds(conds, stage.height / first.height, stage.width / first.width,
                                     stage.height, stage.width, method)
        if scaled is not None:
            g = copy.copy(g) if g is guider else g
            g.original_conds = scaled
    return g


def check_stage_patches(guider, plan: RelayPlan, node: str) -> None:
    """Fail before sampling if a stage patch cannot apply to the guider's model."""
    if any(s.dilate for s in plan.stages):
        try:
            middle_block_conv_keys(guider.model_patcher)
        except DilationError as e:
            raise RelayError(f"{node}: dilated_middle_block: {e}. Fix: turn it off for this model.") from None


# --- the relay loop -------------------------------------------------------------------------------------------------
@dataclass
class RelayResult:
    samples: torch.Tensor  # the last stage's output (outer latent space)
    denoised: torch.Tensor | None  # the last x0 the model predicted (outer latent space), None if never reported
    stage_latents: list[torch.Tensor] = field(default_factory=list)  # what each stage after the first started from


def relay_sample(guider, sampler, plan: RelayPlan, latent_image: torch.Tensor, noise: torch.Tensor, *,
                 upscale: Upscaler, stage_noise: Callable[[int, torch.Tensor], torch.Tensor],
                 denoise_mask: torch.Tensor | None = None, callback=None, disable_pbar: bool = False,
                 seed: int | None = None, node: str = "Relay sampler") -> RelayResult:
    """Run ``plan`` through ``guider``.  ``noise`` is the first stage's noise (as the core samplers would use it);
    ``stage_noise(k, latent)`` makes the fresh noise of stage k > 0; ``callback(step, x0, x, total)`` sees global
    step numbers over all stages (one progress bar)."""
    total = plan.total_steps
    first = plan.stages[0]
    current, stage_noise_tensor = latent_image, noise
    result = RelayResult(samples=latent_image, denoised=None)
    offset = 0
    for stage in plan.stages:
        comfy.model_management.throw_exception_if_processing_interrupted()
        g = stage_guider(guider, stage, first)
        if stage.index > 0:
            if result.denoised is None:
                raise RelayError(f"{node}: sampler: it reported no clean estimate (x0) during stage {stage.index}, so "
                                 "there is nothing to relay. Fix: use a sampler that reports one per step (euler, "
                                 "dpmpp_2m, ...).")
            current = upscale(result.denoised, stage.height, stage.width)
            if denoise_mask is not None:  # keep the known region: the input latent at the stage's size
                known = upscale(latent_image.to(current.device), stage.height, stage.width).to(current.dtype)
                m = comfy.sampler_helpers.prepare_mask(denoise_mask, current.shape, current.device)
                current = current * m + known * (1.0 - m)
            stage_noise_tensor = stage_noise(stage.index, current)
            result.stage_latents.append(current)
            comfy.model_management.throw_exception_if_processing_interrupted()

        reported = {}

        def stage_callback(step, x0, x, _total, offset=offset, reported=reported):
            reported["x0"] = x0
            if callback is not None:
                callback(offset + step, x0, x, total)

        samples = g.sample(stage_noise_tensor, current, sampler, stage.sigmas, denoise_mask=denoise_mask,
                           callback=stage_callback, disable_pbar=disable_pbar,
                           seed=None if seed is None else stage_seed(seed, stage.index))
        x0 = reported.get("x0")
        result.denoised = None if x0 is None else g.model_patcher.model.process_latent_out(x0.to(torch.float32))
        result.samples = samples
        offset += stage.steps
    return result


# --- the two samplers the nodes expose ------------------------------------------------------------------------------
def _upscaler(vae, method: str, model: ModelPatcher, node: str) -> Upscaler:
    if vae is None:
        return latent_upscaler(method)
    check_vae(vae, model, node)
    return vae_upscaler(vae, method)


def _check_latent(latent_image: torch.Tensor, node: str) -> None:
    if getattr(latent_image, "is_nested", False):
        raise RelayError(f"{node}: latent_image: nested (multi-part) latents cannot be relayed. Fix: use a plain "
                         "image latent, or a single stage.")


def _check_stage_count(stages: str, steps: int, node: str) -> None:
    """Stage text readable; with no steps to sample (denoise 0, empty sigmas) only a single stage makes sense."""
    try:
        n = len(parse_stages(stages))
    except StageSpecError as e:
        raise RelayError(f"{node}: {e}") from None
    if steps <= 0 and n > 1:
        raise RelayError(f"{node}: the schedule has no steps to sample (denoise 0 or empty sigmas), so there is nothing "
                         "to relay. Fix: raise denoise / give sigmas with steps, or use a single stage ('1').")


def _plan(sigmas, latent_image, stages, step_split, model: ModelPatcher, reschedule, dilate, node) -> RelayPlan:
    try:
        plan = plan_relay(sigmas, tuple(latent_image.shape), stages, step_split,
                          model_sampling=model.get_model_object("model_sampling"), reschedule=reschedule,
                          dilate=dilate, ratio=latent_ratio(model), patch=patch_size(model))
    except StageSpecError as e:
        raise RelayError(f"{node}: {e}") from None
    for note in plan.notes:
        logging.warning("%s: %s", node, note)
    return plan


def relay_ksampler(model: ModelPatcher, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                   positive, negative, latent: dict, denoise: float = 1.0, *, stages: str = "1", step_split: str = "",
                   upscale_method: str = "bicubic", noise_rescheduling: bool = False,
                   dilated_middle_block: bool = False, vae=None, node: str = "Relay KSampler") -> dict:
    """The core KSampler (nodes.common_ksampler -> comfy.sample.sample -> comfy.samplers.KSampler), relayed."""
    import latent_preview

    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    _check_latent(latent_image, node)
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    noise_mask = latent.get("noise_mask")
    ksampler = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                       scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    sigmas = ksampler.sigmas
    if len(sigmas) <= 1:
        _check_stage_count(stages, 0, node)
        out = latent.copy()
        out["samples"] = latent_image  # what the core KSampler returns for denoise 0
        return out
    plan = _plan(sigmas, latent_image, stages, step_split, model, noise_rescheduling, dilated_middle_block, node)
    upscale = _upscaler(vae, upscale_method, model, node)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    check_stage_patches(guider, plan, node)
    callback = latent_preview.prepare_callback(model, plan.total_steps)
    result = relay_sample(guider, comfy.samplers.sampler_object(ksampler.sampler), plan, latent_image, noise,
                          upscale=upscale, denoise_mask=noise_mask, callback=callback,
                          disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed, node=node,
                          stage_noise=lambda k, x: fresh_noise(x, seed, k, latent.get("batch_index")))
    out = latent.copy()
    out["samples"] = result.samples.to(comfy.model_management.intermediate_device())
    return out


def relay_sampler_custom(noise, guider, sampler, sigmas: torch.Tensor, latent: dict, *, stages: str = "1",
                         step_split: str = "", upscale_method: str = "bicubic", noise_rescheduling: bool = False,
                         dilated_middle_block: bool = False, vae=None,
                         node: str = "Relay Sampler (custom)") -> tuple[dict, dict]:
    """The core SamplerCustomAdvanced, relayed: (output, denoised_output).  Stage 0 uses ``noise`` (a NOISE object);
    later stages use fresh Gaussian noise from ``noise.seed`` (or, for a NOISE without one, from a digest of the noise
    it generated: :func:`noise_seed`) and the stage index (also after DisableNoise: a relayed latent must be
    re-noised)."""
    import latent_preview

    latent = latent.copy()
    latent_image = comfy.sample.fix_empty_latent_channels(guider.model_patcher, latent["samples"])
    latent["samples"] = latent_image
    noise_mask = latent.get("noise_mask")
    _check_stage_count(stages, sigmas.shape[-1] - 1, node)
    plan = None
    if sigmas.shape[-1] > 1:
        _check_latent(latent_image, node)
        plan = _plan(sigmas, latent_image, stages, step_split, guider.model_patcher, noise_rescheduling,
                     dilated_middle_block, node)
        check_stage_patches(guider, plan, node)
    upscale = _upscaler(vae, upscale_method, guider.model_patcher, node)
    x0_output = {}
    callback = latent_preview.prepare_callback(guider.model_patcher, sigmas.shape[-1] - 1, x0_output)
    disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
    first_noise = noise.generate_noise(latent)
    if plan is None:  # an empty schedule: the core returns the latent as it is
        samples = guider.sample(first_noise, latent_image, sampler, sigmas, denoise_mask=noise_mask,
                                callback=callback, disable_pbar=disable_pbar, seed=getattr(noise, "seed", None))
    else:
        seed = noise_seed(noise, first_noise)
        samples = relay_sample(guider, sampler, plan, latent_image, first_noise, upscale=upscale,
                               denoise_mask=noise_mask, callback=callback, disable_pbar=disable_pbar, seed=seed,
                               node=node, stage_noise=lambda k, x: fresh_noise(x, seed, k, latent.get("batch_index"))
                               ).samples
    samples = samples.to(comfy.model_management.intermediate_device())
    out = latent.copy()
    out["samples"] = samples
    if "x0" in x0_output:
        out_denoised = latent.copy()
        out_denoised["samples"] = guider.model_patcher.model.process_latent_out(x0_output["x0"].cpu())
    else:
        out_denoised = out
    return out, out_denoised
