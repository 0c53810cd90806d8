"""RAU-Net (HiDiffusion's resolution-aware U-Net) as patches on a cloned ModelPatcher.

Per model call a *schedule* says which operations are active (from the call's sigma and latent size); the patches
then change the U-Net's feature sizes through ComfyUI's public patch points only:

- ``forward_timestep_embed_patch`` on ``Downsample``: the stride-4 / padding-2 / dilation-2 conv with the layer's own
  weights, through its own weight-casting path (LoRA, lowvram/offload and manual-cast work as for the plain conv).
  ComfyUI's ``Upsample`` already interpolates to the skip connection's size, so the matching upsampler needs nothing.
- ``input_block_patch``: the pool after a level's first block (the pooled state becomes the skip, as officially).
- ``output_block_patch``: the decoder's features resized back to the skip's size where they meet again.
- a ``DIFFUSION_MODEL`` wrapper: ControlNet residuals resized to the feature sizes they are added to.

Nothing of the shared ``nn.Module`` is touched; inactive calls run the U-Net's own code path unchanged.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

import comfy.ops
import comfy.patcher_extension
import comfy.utils
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

from .families import UNetLayout
from .presets import CONV, POOL, Phase
from .schedule import SigmaWindow, current_sigma

WRAPPER_KEY = "megapixel.hidiffusion.rau_net"
DOWNSAMPLE_METHODS = ("avg-pool", "area", "bilinear", "bicubic", "nearest-exact")
UPSAMPLE_METHODS = ("bicubic", "bilinear", "nearest-exact", "area", "bislerp")

log = logging.getLogger(__name__)


class PatchConflictError(RuntimeError):
    """Another active patch resizes the same U-Net features in the same model call."""


@dataclass(frozen=True)
class Active:
    """What RAU-Net does in one model call: stride-4 conv at these levels' downsamplers, pool at these levels."""

    conv_levels: frozenset = frozenset()
    pool_levels: frozenset = frozenset()

    def __bool__(self) -> bool:
        return bool(self.conv_levels or self.pool_levels)


INACTIVE = Active()


class PhaseSchedule:
    """Fixed phases, each active inside its sigma window (the advanced node; also one row of the one-click node)."""

    def __init__(self, phases: tuple[Phase, ...], model_sampling):
        self.phases = tuple(phases)
        self.windows = tuple(SigmaWindow.from_fractions(model_sampling, p.start, p.end) for p in self.phases)

    def __call__(self, transformer_options: dict, latent_hw: tuple[int, int]) -> Active:
        sigma = current_sigma(transformer_options)
        if sigma is None:
            return INACTIVE
        conv, pool = set(), set()
        for phase, window in zip(self.phases, self.windows):
            if window.contains(sigma):
                (conv if phase.method == CONV else pool).add(phase.level)
        return Active(frozenset(conv), frozenset(pool)) if conv or pool else INACTIVE


Schedule = Callable[[dict, tuple], Active]


@dataclass(frozen=True)
class SizePlan:
    """Spatial sizes of the features in one call: after each input block (before its patches), each skip (after
    them) and the middle block."""

    block_out: tuple
    skip: tuple
    middle: tuple


def _down(size: tuple[int, int], factor: int) -> tuple[int, int]:
    return (-(-size[0] // factor), -(-size[1] // factor))


def plan_sizes(layout: UNetLayout, latent_hw: tuple[int, int], active: Active) -> SizePlan:
    size = tuple(latent_hw)
    block_out, skip = [], []
    downsamplers = {layout.downsample_block(l): l for l in range(layout.levels - 1)}
    pools = {layout.first_block(l) for l in active.pool_levels}
    for block in range(layout.n_input):
        if block in downsamplers:
            size = _down(size, 4 if downsamplers[block] in active.conv_levels else 2)
        block_out.append(size)
        if block in pools:
            size = _down(size, 2)
        skip.append(size)
    return SizePlan(tuple(block_out), tuple(skip), size)


def _conv_weights(op: torch.nn.Module, x: torch.Tensor):
    """The op's weight and bias as its own forward would use them (ComfyUI's cast path when the op casts)."""
    casts = isinstance(op, comfy.ops.CastWeightBiasOp) and (
        getattr(op, "comfy_cast_weights", False) or len(op.weight_function) > 0 or len(op.bias_function) > 0)
    if not casts:
        return op.weight, op.bias, None
    try:
        weight, bias, stream = comfy.ops.cast_bias_weight(op, x, offloadable=True)
    except TypeError:  # older ComfyUI: no offload streams
        weight, bias = comfy.ops.cast_bias_weight(op, x)
        stream = None
    return weight, bias, stream


def resolution_aware_downsample(layer: Downsample, x: torch.Tensor) -> torch.Tensor:
    """HiDiffusion's resolution-aware downsampler: the layer's 3x3 conv with stride 4, padding 2, dilation 2
    (output ``ceil(H/4)`` x ``ceil(W/4)``), without modifying the layer."""
    op = layer.op
    weight, bias, stream = _conv_weights(op, x)
    try:
        return F.conv2d(x, weight, bias, stride=4, padding=2, dilation=2, groups=op.groups)
    finally:
        if stream is not None and hasattr(comfy.ops, "uncast_bias_weight"):
            comfy.ops.uncast_bias_weight(op, weight, bias, stream)


def pool_down(h: torch.Tensor, method: str) -> torch.Tensor:
    """Halve ``h`` (rounding up for odd sizes)."""
    if method == "avg-pool":
        return F.avg_pool2d(h, kernel_size=2, ceil_mode=True)
    height, width = _down(tuple(h.shape[-2:]), 2)
    return comfy.utils.common_upscale(h, width, height, method, "disabled")


def resize_to(h: torch.Tensor, size: tuple[int, int], method: str) -> torch.Tensor:
    return comfy.utils.common_upscale(h, size[1], size[0], method, "disabled")


def resize_residual(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ControlNet residual at ``size``: area-averaged when shrinking, bicubic when growing."""
    if t.shape[-2] >= size[0] and t.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(t, size)
    return F.interpolate(t, size=size, mode="bicubic")


@dataclass(eq=False)
class RauNet:
    """The RAU-Net patch set for one model: ``apply(model)`` returns a patched clone."""

    layout: UNetLayout
    schedule: Schedule
    downsample_method: str = "avg-pool"
    upsample_method: str = "bicubic"
    name: str = "RAU-Net"
    _cache: tuple = field(default=(None, None, INACTIVE, None), repr=False)

    def __post_init__(self):
        if self.downsample_method not in DOWNSAMPLE_METHODS:
            raise ValueError(f"{self.name}: downsample method {self.downsample_method!r} is not one of "
                             f"{', '.join(DOWNSAMPLE_METHODS)}.")
        if self.upsample_method not in UPSAMPLE_METHODS:
            raise ValueError(f"{self.name}: upsample method {self.upsample_method!r} is not one of "
                             f"{', '.join(UPSAMPLE_METHODS)}.")

    # Patches live in model_options, which ModelPatcher.clone() deep-copies; this object is immutable
    # configuration plus a per-call cache, so every clone shares it.
    def __deepcopy__(self, memo):
        return self

    @property
    def label(self) -> str:
        """How errors name this patch: the node's name (prefixed with HiDiffusion when it does not say so)."""
        return self.name if self.name.startswith("HiDiffusion") else f"HiDiffusion {self.name}"

    def windows(self) -> list[SigmaWindow]:
        """The sigma windows where this RAU-Net may act (always, when the schedule does not say)."""
        return schedule_windows(self.schedule)

    # --- per-call decision ------------------------------------------------------------------------------------
    def active(self, transformer_options: dict, latent_hw: tuple[int, int] | None = None) -> tuple[Active, SizePlan | None]:
        if latent_hw is None:
            shape = transformer_options.get("original_shape")
            if shape is None:
                return INACTIVE, None
            latent_hw = (int(shape[-2]), int(shape[-1]))
        sigmas = transformer_options.get("sigmas")
        cached_sigmas, cached_hw, active, plan = self._cache
        if cached_sigmas is not None and cached_sigmas is sigmas and cached_hw == latent_hw:
            return active, plan
        active = self.schedule(transformer_options, latent_hw)
        plan = plan_sizes(self.layout, latent_hw, active) if active else None
        # Holding the sigmas tensor keeps its identity unique while it is the cache key.
        self._cache = (sigmas, latent_hw, active, plan)
        return active, plan

    # --- patches ----------------------------------------------------------------------------------------------
    def input_block_patch(self, h: torch.Tensor, transformer_options: dict) -> torch.Tensor:
        active, plan = self.active(transformer_options)
        if not active:
            return h
        block = transformer_options["block"][1]
        expected = plan.block_out[block] if block < len(plan.block_out) else None
        if expected is not None and tuple(h.shape[-2:]) != expected:
            raise PatchConflictError(
                f"{self.label}: the U-Net features after input block {block} are "
                f"{h.shape[-2]}x{h.shape[-1]}, but RAU-Net expected {expected[0]}x{expected[1]}. Another patch "
                f"resizes U-Net blocks in the same steps (for example PatchModelAddDownscale / Kohya Deep Shrink, "
                f"or a second RAU-Net). Remove one of them, or give them start/end ranges that do not overlap.")
        if any(block == self.layout.first_block(level) for level in active.pool_levels):
            h = pool_down(h, self.downsample_method)
        return h

    def output_block_patch(self, h: torch.Tensor, hsp: torch.Tensor, transformer_options: dict):
        active, _ = self.active(transformer_options)
        if active.pool_levels and h.shape[-2:] != hsp.shape[-2:]:
            block = transformer_options["block"][1]
            if any(block == self.layout.skip_consumer(self.layout.first_block(level) - 1)
                   for level in active.pool_levels):
                h = resize_to(h, tuple(hsp.shape[-2:]), self.upsample_method)
        return h, hsp

    def downsample_patch(self, layer, x, emb, context, transformer_options, output_shape=None, *args, **kwargs):
        """``forward_timestep_embed_patch`` handler for ``Downsample``.  ComfyUI runs only the first matching
        handler, so for blocks and steps that are not ours this hands over to the next one (or the layer)."""
        active, _ = self.active(transformer_options)
        block = transformer_options.get("block")
        if active.conv_levels and block is not None and block[0] == "input" and any(
                block[1] == self.layout.downsample_block(level) for level in active.conv_levels):
            return resolution_aware_downsample(layer, x)
        handlers = transformer_options.get("patches", {}).get("forward_timestep_embed_patch", [])
        after_us = False
        for class_type, handler in handlers:
            if getattr(handler, "__self__", handler) is self:
                after_us = True
                continue
            if after_us and isinstance(layer, class_type):
                return handler(layer, x, emb, context, transformer_options, output_shape, *args, **kwargs)
        return layer(x)

    def control_wrapper(self, executor, x, timesteps=None, context=None, y=None, control=None,
                        transformer_options={}, **kwargs):
        """DIFFUSION_MODEL wrapper: ControlNet residuals come at the vanilla U-Net's sizes; resize a copy of them to
        the sizes this call's features will have (ComfyUI would drop mismatching ones with a warning)."""
        if control is not None:
            active, plan = self.active(transformer_options, (int(x.shape[-2]), int(x.shape[-1])))
            if active:
                control = resize_control(control, plan)
        return executor(x, timesteps, context, y, control, transformer_options, **kwargs)

    # --- installation -----------------------------------------------------------------------------------------
    def apply(self, model):
        """A clone of ``model`` with RAU-Net; ``model`` itself is left unchanged.  Refuses (PatchConflictError) a
        model that already carries a RAU-Net acting in an overlapping part of the schedule."""
        ours = self.windows()
        for other in rau_nets_on(model):
            if any(a.overlaps(b) for a in ours for b in other.windows()):
                source = (f'another "{self.name}" node' if other.name == self.name
                          else f'the "{other.name}" node')
                raise PatchConflictError(
                    f"{self.name}: the model it gets already has RAU-Net from {source}, acting in an overlapping "
                    f"part of the schedule; two RAU-Nets resize the same U-Net blocks and together give broken "
                    f"images. Fix: keep one of them (the one-click node includes RAU-Net: switch its rau_net off "
                    f"to tune RAU-Net with the advanced node), or give them start/end ranges that do not overlap.")
        m = model.clone()
        m.set_model_input_block_patch(self.input_block_patch)
        m.set_model_output_block_patch(self.output_block_patch)
        m.set_model_forward_timestep_embed_patch((Downsample, self.downsample_patch))
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, self.control_wrapper)
        return m


def resize_control(control: dict, plan: SizePlan) -> dict:
    """A copy of ``control`` (``{"input": [...], "middle": [...], "output": [...]}``, as ControlNet's
    ``control_merge`` builds it) with each residual at the size of the features it is added to:
    ``output[i]`` to input block i's skip, ``middle`` to the middle block, ``input`` (popped from the end, one per
    input block) to that block's output."""
    out = dict(control)
    for key, residuals in control.items():
        if key not in ("input", "middle", "output") or not isinstance(residuals, list):
            continue
        resized = []
        for i, t in enumerate(residuals):
            if key == "output":
                target = plan.skip[i] if i < len(plan.skip) else None
            elif key == "middle":
                target = plan.middle
            else:
                block = len(residuals) - 1 - i
                target = plan.block_out[block] if 0 <= block < len(plan.block_out) else None
            if t is not None and target is not None and tuple(t.shape[-2:]) != tuple(target):
                t = resize_residual(t, tuple(target))
            resized.append(t)
        out[key] = resized
    return out


def schedule_windows(schedule) -> list[SigmaWindow]:
    """Sigma windows of a RAU-Net schedule: a PhaseSchedule's own, the union of a per-row schedule's rows (the
    one-click node), or always for a schedule that does not say."""
    windows = getattr(schedule, "windows", None)
    if windows is not None:
        return [w for w in windows if not w.empty]
    rows = getattr(schedule, "rows", None)
    if isinstance(rows, dict):
        return [w for row in rows.values() for w in schedule_windows(row)]
    return [SigmaWindow(math.inf, -math.inf)]


def rau_nets_on(model) -> list["RauNet"]:
    """The RAU-Nets already patched into ``model`` (found by their input-block patch)."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    found = []
    for patch in patches.get("input_block_patch", []):
        owner = getattr(patch, "__self__", None)
        if isinstance(owner, RauNet) and all(owner is not f for f in found):
            found.append(owner)
    return found


def deep_shrink_windows(model) -> list[SigmaWindow]:
    """Sigma windows of core Deep Shrink (PatchModelAddDownscale) patches already on ``model``, read from the
    patch closures.  Best effort: an unreadable one counts as always active."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    found = []
    for name in ("input_block_patch", "input_block_patch_after_skip"):
        for patch in patches.get(name, []):
            fn = getattr(patch, "__func__", patch)
            if not getattr(fn, "__module__", "").endswith("nodes_model_downscale"):
                continue
            try:
                cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
                found.append(SigmaWindow(float(cells["sigma_start"]), float(cells["sigma_end"]) - 1e-9))
            except (AttributeError, KeyError, TypeError, ValueError):
                found.append(SigmaWindow(math.inf, -math.inf))
    return found


def validate_phases(layout: UNetLayout, phases: tuple[Phase, ...], model, node: str) -> None:
    unet = model.model.diffusion_model
    for phase in phases:
        if not 0.0 <= phase.start <= 1.0 or not 0.0 <= phase.end <= 1.0:
            raise ValueError(f"{node}: start and end are fractions of the schedule between 0 and 1 "
                             f"(got {phase.start}..{phase.end}).")
        if phase.method == CONV:
            if not 0 <= phase.level < layout.levels - 1:
                raise ValueError(f"{node}: this {layout.family} U-Net has downsamplers at input blocks "
                                 f"{', '.join(str(layout.downsample_block(l)) for l in range(layout.levels - 1))}; "
                                 f"choose one of those for the stride-4 conv.")
            layer = next(l for l in unet.input_blocks[layout.downsample_block(phase.level)] if isinstance(l, Downsample))
            if not isinstance(getattr(layer, "op", None), torch.nn.Conv2d):
                raise ValueError(f"{node}: the downsampler at input block {layout.downsample_block(phase.level)} "
                                 f"is not a convolution, so it has no weights for a stride-4 conv.")
        elif phase.method == POOL:
            if not 0 <= phase.level < layout.levels:
                raise ValueError(f"{node}: this {layout.family} U-Net has no level {phase.level} to pool "
                                 f"(first blocks: {', '.join(str(layout.first_block(l)) for l in range(layout.levels))}).")
        else:
            raise ValueError(f"{node}: unknown RAU-Net method {phase.method!r}.")


def apply_rau_net(model, layout: UNetLayout, phases: tuple[Phase, ...], downsample_method: str = "avg-pool",
                  upsample_method: str = "bicubic", node: str = "RAU-Net"):
    """A clone of ``model`` with RAU-Net running ``phases`` (fixed sigma windows from the model's model_sampling).
    Refuses (ValueError) when core Deep Shrink is already on the model with an overlapping range."""
    validate_phases(layout, phases, model, node)
    schedule = PhaseSchedule(tuple(p for p in phases if p.active_somewhere), model.get_model_object("model_sampling"))
    for theirs in deep_shrink_windows(model):
        if any(theirs.overlaps(ours) for ours in schedule.windows):
            raise PatchConflictError(
                f"{node}: the model already has Kohya Deep Shrink (PatchModelAddDownscale) active in an overlapping "
                f"part of the schedule; both resize the U-Net's blocks and together give broken images. Remove one, "
                f"or make their start/end ranges not overlap.")
    return RauNet(layout, schedule, downsample_method, upsample_method, name=node).apply(model)
