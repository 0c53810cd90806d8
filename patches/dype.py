"""DyPE: dynamic position extrapolation for RoPE diffusion transformers (arXiv 2510.20766).

A DiT places its image tokens with rotary position embeddings (RoPE): pair ``i`` of an axis of ``d`` channels turns
by ``pos * w_i`` with ``w_i = theta ** (-2i / d)``.  Above the training size the positions run past anything the
model saw, and plain extrapolation repeats patterns and breaks the layout.  Two classic fixes change the frequencies:

- **NTK-aware scaling** raises the base: ``theta' = theta * s ** (d / (d - 2))`` for a size ratio ``s``, so the
  slowest pair is interpolated by exactly ``s`` and the fastest pair is unchanged.
- **YaRN** (arXiv 2309.00071, in the three-band form DyPE's authors use for images) keeps the pairs that turn many
  times over the native length at their own frequency, interpolates those that turn less than once (``w / s``), uses
  NTK between, with linear ramps between the bands, and sharpens attention by ``mscale = 1 + 0.1 ln s`` (applied to
  queries and keys alike).

**DyPE** makes either one depend on the diffusion time ``t`` (the noise level, 1 = pure noise): early steps, which
form the layout (low frequencies), get the full extrapolation; late steps, which draw fine detail, get the native
positions back.  NTK: ``theta' = theta * s ** (kappa(t) * d / (d - 2))`` with ``kappa(t) = lambda_s * t ** lambda_t``;
YaRN: the band edges (in rotations over the native length) are multiplied by ``t ** lambda_t``, so as ``t`` falls
every pair ends up in the "native" band.  Defaults are the authors' (reference code, github.com/guyyariv/DyPE,
``flux/transformer_flux.py``): ``lambda_s = 2``, ``lambda_t = 2``, YaRN bands ``beta = (1.25, 0.75)`` and
``gamma = (16, 2)``, ``mscale = 1 + 0.1 ln s`` (not time-dependent).  One deliberate difference: the ramp's both ends
are clamped to the axis's pairs, so the limit ``t -> 0`` is the native frequencies (the reference code clamps only
one end, which flips to full interpolation below ``t`` of about 0.01).

The first half of this module is that math as plain functions of torch tensors; the second half is ComfyUI glue: a
clone of the model with an object patch that replaces the diffusion model's RoPE embedder with :class:`DyPEEmbedder`
(same output layout, scaled frequencies) and an ``APPLY_MODEL`` wrapper that reads each call's latent size and sigma
and tells the embedder what to do.  At or below the model's native area the embedder calls the original one: the
model is bit-identical to the unpatched one there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

import comfy.patcher_extension

from .model_info import display_name, latent_ratio, patch_size
from .schedule import current_sigma

NTK, YARN = "ntk", "yarn"
METHODS = (YARN, NTK)
PER_AXIS, BY_AREA = "per axis", "by area"
AXIS_SCALINGS = (PER_AXIS, BY_AREA)

# The authors' defaults (reference implementation of arXiv 2510.20766, flux/transformer_flux.py).
LAMBDA_S = 2.0          # Dy-NTK: strength of the time schedule (the NTK exponent is lambda_s * t**lambda_t)
LAMBDA_T = 2.0          # time exponent of the schedule (both methods)
YARN_BETA = (1.25, 0.75)  # NTK -> linear ramp, in rotations over the native length (fast edge, slow edge)
YARN_GAMMA = (16.0, 2.0)  # native -> (NTK/linear) ramp, in rotations over the native length
MSCALE_COEFFICIENT = 0.1  # YaRN attention temperature: mscale = 1 + 0.1 ln s

WRAPPER_KEY = "megapixel_dype"


# --- the frequency math -------------------------------------------------------------------------------------------
def base_frequencies(dim: int, theta: float) -> torch.Tensor:
    """RoPE angular frequencies of an axis with ``dim`` channels (``dim / 2`` pairs): ``theta ** (-2i / dim)``
    (float64, as ComfyUI computes them)."""
    if dim % 2 or dim < 2:
        raise ValueError(f"a RoPE axis needs an even number of channels, not {dim}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return 1.0 / (float(theta) ** exponents)


def ntk_theta(theta: float, scale: float, dim: int, strength: float = 1.0) -> float:
    """NTK-aware base: ``theta * scale ** (strength * dim / (dim - 2))`` (``strength`` 1 = static NTK; DyPE passes
    ``kappa(t)``)."""
    return float(theta) * float(scale) ** (float(strength) * dim / (dim - 2))


def ntk_frequencies(dim: int, theta: float, scale: float, strength: float = 1.0) -> torch.Tensor:
    return base_frequencies(dim, ntk_theta(theta, max(float(scale), 1.0), dim, strength))


def correction_index(rotations: float, dim: int, theta: float, length: float) -> float:
    """The (fractional) pair index whose wavelength ``2 pi theta ** (2i / dim)`` fits ``rotations`` times into
    ``length`` positions: ``dim * ln(length / (2 pi rotations)) / (2 ln theta)``."""
    if rotations <= 0:
        return math.inf
    return dim * math.log(length / (2 * math.pi * rotations)) / (2 * math.log(theta))


def correction_range(fast: float, slow: float, dim: int, theta: float, length: float) -> tuple[float, float]:
    """Pair indices (low, high) of a YaRN ramp between ``fast`` rotations (below ``low``: more than that) and
    ``slow`` rotations (above ``high``: fewer), rounded outwards and clamped to the axis's ``dim / 2`` pairs."""
    pairs = dim // 2
    low = correction_index(fast, dim, theta, length)
    high = correction_index(slow, dim, theta, length)
    low = min(max(math.floor(low) if math.isfinite(low) else pairs, 0), pairs)
    high = min(max(math.ceil(high) if math.isfinite(high) else pairs, 0), pairs)
    return float(low), float(high)


def ramp(low: float, high: float, pairs: int) -> torch.Tensor:
    """0 up to pair ``low``, 1 from pair ``high``, linear between (float64)."""
    if high <= low:
        high = low + 0.001
    return ((torch.arange(pairs, dtype=torch.float64) - low) / (high - low)).clamp(0.0, 1.0)


def yarn_frequencies(dim: int, theta: float, scale: float, length: float, kappa: float = 1.0,
                     beta: tuple[float, float] = YARN_BETA,
                     gamma: tuple[float, float] = YARN_GAMMA) -> torch.Tensor:
    """YaRN frequencies of one axis for a size ratio ``scale`` over a native ``length`` (tokens): pairs turning
    fewer than ``beta`` times over the native length are interpolated (``w / scale``), faster ones get NTK's
    frequencies, and pairs turning more than ``gamma`` times keep their own; linear ramps join the bands.  ``kappa``
    (DyPE's ``t ** lambda_t``) multiplies both bands' edges: 1 is static YaRN, 0 the native frequencies."""
    pairs = dim // 2
    base = base_frequencies(dim, theta)
    scale = max(float(scale), 1.0)
    if scale == 1.0 or kappa <= 0.0:
        return base
    linear = base / scale
    ntk = ntk_frequencies(dim, theta, scale)
    to_linear = ramp(*correction_range(beta[0] * kappa, beta[1] * kappa, dim, theta, length), pairs)
    blended = linear * to_linear + ntk * (1.0 - to_linear)
    to_blend = ramp(*correction_range(gamma[0] * kappa, gamma[1] * kappa, dim, theta, length), pairs)
    return blended * to_blend + base * (1.0 - to_blend)


def yarn_mscale(scale: float, coefficient: float = MSCALE_COEFFICIENT) -> float:
    """YaRN's attention temperature factor on queries and keys: ``1 + coefficient * ln(scale)`` above native."""
    return 1.0 + coefficient * math.log(scale) if scale > 1.0 else 1.0


def diffusion_time(sigma: float, sigma_max: float) -> float:
    """DyPE's ``t`` in [0, 1] (1 = pure noise): sigma over the model's largest sigma (flow models: sigma itself)."""
    if not sigma_max or not math.isfinite(sigma_max) or sigma_max <= 0:
        return 1.0
    return min(max(float(sigma) / float(sigma_max), 0.0), 1.0)


def ntk_kappa(t: float, lambda_s: float = LAMBDA_S, lambda_t: float = LAMBDA_T) -> float:
    """Dy-NTK's exponent weight ``lambda_s * t ** lambda_t``."""
    return float(lambda_s) * float(t) ** float(lambda_t)


def yarn_kappa(t: float, lambda_t: float = LAMBDA_T) -> float:
    """Dy-YaRN's band-edge weight ``t ** lambda_t``."""
    return float(t) ** float(lambda_t)


@dataclass(frozen=True)
class Settings:
    """What the node chose: method, the time schedule, YaRN's bands and temperature, how sizes become scales."""

    method: str = YARN
    dynamic: bool = True
    lambda_s: float = LAMBDA_S
    lambda_t: float = LAMBDA_T
    beta: tuple[float, float] = YARN_BETA
    gamma: tuple[float, float] = YARN_GAMMA
    attention_scale: bool = True
    mscale_coefficient: float = MSCALE_COEFFICIENT
    axis_scaling: str = PER_AXIS

    def axis_frequencies(self, dim: int, theta: float, scale: float, length: float, t: float) -> torch.Tensor:
        """One spatial axis's frequencies at size ratio ``scale`` and diffusion time ``t``."""
        if self.method == NTK:
            strength = ntk_kappa(t, self.lambda_s, self.lambda_t) if self.dynamic else 1.0
            return ntk_frequencies(dim, theta, scale, strength)
        kappa = yarn_kappa(t, self.lambda_t) if self.dynamic else 1.0
        return yarn_frequencies(dim, theta, scale, length, kappa, self.beta, self.gamma)

    def mscale(self, scale: float) -> float:
        if self.method != YARN or not self.attention_scale:
            return 1.0
        return yarn_mscale(scale, self.mscale_coefficient)


def size_scales(height: int, width: int, native: float, axis_scaling: str = PER_AXIS) -> tuple[float, float] | None:
    """Scale of each spatial axis (height, width) for a latent of ``height`` x ``width`` against a native square of
    side ``native`` (same units); None at or below the native area (the model then runs unpatched)."""
    if height * width <= native * native:
        return None
    if axis_scaling == BY_AREA:
        s = math.sqrt(height * width) / native
        return s, s
    return max(height / native, 1.0), max(width / native, 1.0)


# --- rotation matrices in ComfyUI's layout -----------------------------------------------------------------------
def _fp64_ok(device: torch.device) -> bool:
    import comfy.model_management as mm

    if hasattr(mm, "supports_fp64"):
        return bool(mm.supports_fp64(device))
    return not (mm.is_device_mps(device) or mm.is_intel_xpu() or mm.is_directml_enabled())


def rotations(pos: torch.Tensor, frequencies: torch.Tensor, mscale: float = 1.0) -> torch.Tensor:
    """``comfy.ldm.flux.math.rope``'s layout for given frequencies: (..., n, pairs, 2, 2) float32 rotation matrices
    ``[[cos, -sin], [sin, cos]]`` of ``pos * w``, times ``mscale``."""
    device = pos.device if _fp64_ok(pos.device) else torch.device("cpu")
    angles = pos.to(device=device, dtype=torch.float64).unsqueeze(-1) * frequencies.to(device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    out = torch.stack([cos, -sin, sin, cos], dim=-1).reshape(*angles.shape, 2, 2)
    if mscale != 1.0:
        out = out * mscale
    return out.to(dtype=torch.float32, device=pos.device)


# --- ComfyUI glue -------------------------------------------------------------------------------------------------
class UnsupportedModelError(ValueError):
    """The model has no RoPE DyPE can re-scale."""


@dataclass(frozen=True)
class Family:
    """What DyPE needs to know of a RoPE DiT: its native side (px), its latent's downscale, the diffusion model's
    patch size, the RoPE embedder's attribute, and which RoPE axes are height and width."""

    native_px: int
    downscale: int
    patch: int
    embedder_key: str
    spatial_axes: tuple[int, int]


# model_base class name -> (native px, spatial axes).  Checked most-derived first.
_FAMILIES = (
    ("ChromaRadiance", 1024, (1, 2)),
    ("Chroma", 1024, (1, 2)),
    ("Flux2", 1024, (1, 2)),
    ("Flux", 1024, (1, 2)),
    ("QwenImage", 1328, (1, 2)),
    ("Lumina2", 1024, (1, 2)),  # and Z-Image
    ("HiDream", 1024, (1, 2)),
    ("HunyuanImage21", 2048, (0, 1)),
)
_REJECTED = ("HunyuanImage21Refiner",)  # video-shaped (3-D patches)
SUPPORTED_TEXT = ("Flux.1 (dev, schnell, Kontext, Krea), Flux.2, Chroma, Chroma Radiance, Qwen-Image, Lumina 2, "
                  "Z-Image, HiDream and HunyuanImage 2.1")
_EMBEDDER_KEYS = ("pe_embedder", "rope_embedder")


def _unsupported(model, why: str, node: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{node}: model: the model ({display_name(model)}) {why}. DyPE re-scales the rotary position embeddings "
        f"(RoPE) of {SUPPORTED_TEXT}. Fix: connect one of those; models without RoPE (SD1.x, SD2.x, SDXL and other "
        f"U-Nets, SD3, AuraFlow) have nothing to extrapolate: use HiDiffusion or the relay sampler for them.")


def _mro_names(obj) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def detect_family(model, node: str = "DyPE") -> Family:
    """The :class:`Family` of ``model`` (a ModelPatcher); raises UnsupportedModelError for anything else."""
    base = getattr(model, "model", None)
    dm = getattr(base, "diffusion_model", None)
    if dm is None:
        raise _unsupported(model, "has no diffusion model", node)
    names = _mro_names(base)
    key = next((k for k in _EMBEDDER_KEYS if hasattr(dm, k)), None)
    if key is None:
        raise _unsupported(model, "has no rotary position embedder (pe_embedder / rope_embedder)", node)
    if any(n in _REJECTED for n in names):
        raise _unsupported(model, "is a video-shaped RoPE model whose positions the node cannot re-scale", node)
    for cls_name, native_px, axes in _FAMILIES:
        if cls_name in names:
            return Family(native_px, latent_ratio(model), patch_size(model), key, axes)
    raise _unsupported(model, "has a RoPE the node does not know how to re-scale (its image axes and native size "
                              "are not known)", node)


def _probe_layout(embedder, axes_dim: list[int]) -> int | None:
    """The dimension ComfyUI's embedder inserts its head axis at (1 for Flux's EmbedND, 2 for HiDream's), found by
    comparing it with :func:`rotations` on a few positions; None if neither matches (a layout DyPE cannot build)."""
    from comfy.ldm.flux.math import rope

    n = len(axes_dim)
    ids = torch.arange(3 * n, dtype=torch.float32).reshape(1, 3, n) * 0.75
    with torch.no_grad():
        expected = embedder(ids)
        ours = torch.cat([rope(ids[..., i], axes_dim[i], embedder.theta) for i in range(n)], dim=-3)
    for dim in (1, 2):
        candidate = ours.unsqueeze(dim)
        if candidate.shape == expected.shape and torch.equal(candidate, expected):
            return dim
    return None


class DyPEEmbedder(torch.nn.Module):
    """Replaces a DiT's RoPE embedder (an object patch).  While :attr:`call` is None (no model call through the
    wrapper, or a size at or below native) it returns the original embedder's output; otherwise it builds the same
    layout with the spatial axes' frequencies re-scaled for this call's size and time."""

    def __init__(self, original: torch.nn.Module, head_dim: int, family: Family, settings: Settings):
        super().__init__()
        object.__setattr__(self, "original", original)  # not a submodule: no state_dict keys, no device moves
        self.theta = original.theta
        self.axes_dim = list(original.axes_dim)
        self.head_dim = head_dim
        self.family = family
        self.settings = settings
        self.native_tokens = family.native_px / (family.downscale * family.patch)
        self.call: tuple[tuple[float, float], float] | None = None  # (scales of the spatial axes, t)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        call = self.call
        if call is None:
            return self.original(ids)
        from comfy.ldm.flux.math import rope

        scales, t = call
        parts = []
        for i in range(ids.shape[-1]):
            dim = self.axes_dim[i]
            scale = scales[self.family.spatial_axes.index(i)] if i in self.family.spatial_axes else 1.0
            if scale <= 1.0:
                parts.append(rope(ids[..., i], dim, self.theta))
                continue
            freqs = self.settings.axis_frequencies(dim, self.theta, scale, self.native_tokens, t)
            parts.append(rotations(ids[..., i], freqs, self.settings.mscale(scale)))
        return torch.cat(parts, dim=-3).unsqueeze(self.head_dim)


class DyPE:
    """The per-call logic: an APPLY_MODEL wrapper that turns the latent's size and sigma into the embedder's
    :attr:`DyPEEmbedder.call` for the duration of the call."""

    def __init__(self, embedder: DyPEEmbedder, native_latent: float, sigma_max: float):
        self.embedder = embedder
        self.native_latent = native_latent
        self.sigma_max = sigma_max

    def plan(self, shape: tuple[int, ...], sigma) -> tuple[tuple[float, float], float] | None:
        """(axis scales, t) for a latent of ``shape`` at ``sigma``; None at or below native (then nothing runs)."""
        scales = size_scales(int(shape[-2]), int(shape[-1]), self.native_latent, self.embedder.settings.axis_scaling)
        if scales is None:
            return None
        return scales, diffusion_time(float(sigma), self.sigma_max)

    def __call__(self, executor, x, t, *args, **kwargs):
        """APPLY_MODEL wrapper: ``args`` are (c_concat, c_crossattn, control, transformer_options)."""
        options = args[3] if len(args) > 3 and isinstance(args[3], dict) else kwargs.get("transformer_options") or {}
        plan = None
        if x.ndim >= 4 and self._above_native(x.shape):  # at or below native: no device read at all
            sigma = current_sigma(options)
            plan = self.plan(tuple(x.shape), float(t.reshape(-1)[0]) if sigma is None else sigma)
        if plan is None:
            return executor(x, t, *args, **kwargs)
        embedder = self.installed(executor)
        previous = embedder.call
        embedder.call = plan
        try:
            return executor(x, t, *args, **kwargs)
        finally:
            embedder.call = previous

    def installed(self, executor) -> DyPEEmbedder:
        """The DyPE embedder the diffusion model holds for this call (ours, unless something copied it)."""
        model = getattr(getattr(executor, "class_obj", None), "diffusion_model", None)
        current = getattr(model, self.embedder.family.embedder_key, None)
        return current if isinstance(current, DyPEEmbedder) else self.embedder

    def _above_native(self, shape) -> bool:
        return int(shape[-2]) * int(shape[-1]) > self.native_latent * self.native_latent


def dype_on(model) -> DyPEEmbedder | None:
    """The DyPE embedder already patched into ``model``, if any."""
    for key in _EMBEDDER_KEYS:
        full = f"diffusion_model.{key}"
        patched = model.object_patches.get(full) if hasattr(model, "object_patches") else None
        if isinstance(patched, DyPEEmbedder):
            return patched
    return None


def apply_dype(model, settings: Settings = Settings(), native_size: int = 0, node: str = "DyPE"):
    """A clone of ``model`` (a ModelPatcher of a RoPE DiT) with DyPE; ``model`` itself is not changed.
    ``native_size`` (px per side, 0 = the family's) is the size the model was trained at."""
    if settings.method not in METHODS:
        raise ValueError(f"{node}: method: {settings.method!r} is not one of {', '.join(METHODS)}. "
                         f"Fix: pick one of those.")
    if settings.axis_scaling not in AXIS_SCALINGS:
        raise ValueError(f"{node}: axis_scaling: {settings.axis_scaling!r} is not one of "
                         f"{', '.join(AXIS_SCALINGS)}. Fix: pick one of those.")
    numbers = {"lambda_s": settings.lambda_s, "lambda_t": settings.lambda_t, "beta_fast": settings.beta[0],
               "beta_slow": settings.beta[1], "gamma_fast": settings.gamma[0], "gamma_slow": settings.gamma[1]}
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{node}: {name}: {value} is not a usable value. Fix: a finite number of 0 or more "
                             f"(the authors' defaults: lambda_s {LAMBDA_S:g}, lambda_t {LAMBDA_T:g}, beta "
                             f"{YARN_BETA[0]:g}/{YARN_BETA[1]:g}, gamma {YARN_GAMMA[0]:g}/{YARN_GAMMA[1]:g}).")
    family = detect_family(model, node)
    if native_size:
        if native_size < 64 or native_size % 8:
            raise ValueError(f"{node}: native_size: {native_size} px is not a training resolution. Fix: give the "
                             f"side in pixels the model was trained at (a multiple of 8, at least 64), or 0 for the "
                             f"family's ({family.native_px} px for {display_name(model)}).")
        family = replace(family, native_px=int(native_size))
    if dype_on(model) is not None:
        raise ValueError(f"{node}: model: the model already has DyPE (from another DyPE node); a second one would "
                         f"replace the first one's settings. Fix: keep one DyPE node on the model.")
    key = f"diffusion_model.{family.embedder_key}"
    original = model.get_model_object(key)
    axes_dim = list(getattr(original, "axes_dim", []) or [])
    if not hasattr(original, "theta") or len(axes_dim) <= max(family.spatial_axes) or any(d % 2 for d in axes_dim):
        raise _unsupported(model, "has a RoPE embedder without the theta / axes_dim settings DyPE re-scales", node)
    head_dim = _probe_layout(original, axes_dim)
    if head_dim is None:
        raise _unsupported(model, f"has a RoPE embedder ({type(original).__name__}) whose output layout the node "
                                  f"cannot reproduce", node)
    embedder = DyPEEmbedder(original, head_dim, family, settings)
    sigma_max = float(model.get_model_object("model_sampling").sigma_max)
    wrapper = DyPE(embedder, family.native_px / family.downscale, sigma_max)
    m = model.clone()
    m.add_object_patch(key, embedder)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, wrapper)
    return m
