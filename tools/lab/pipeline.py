"""Sample the lab model in-process, one named *row* (a technique and its settings) at a time, and measure the decoded
images: what ``tools/bench/quality.py``, the quality tests and the thumbnails share.

Every row goes through the pack's and ComfyUI's own code paths (the one-click HiDiffusion node's patch, the relay
KSampler, core Deep Shrink's node, the autoguidance guider, ``comfy.sample``), one seed per image, batch 1, so seed
``s`` of a row is what a user gets with that seed in the matching graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from safetensors.torch import load_file

import comfy.sample
import comfy.samplers
import comfy.sd
from comfy.model_patcher import ModelPatcher

from . import measure, models
from .files import NATIVE_PX

STEPS = 20
SAMPLER = "euler"
SCHEDULER = "normal"


@dataclass
class Lab:
    model: ModelPatcher
    weak: ModelPatcher
    vae: comfy.sd.VAE
    cond: list | None = None  # None: the U-Net's (models.conditioning())
    _dit: "Lab | None" = None

    @property
    def conditioning(self) -> list:
        return self.cond if self.cond is not None else models.conditioning()

    @property
    def dit(self) -> "Lab":
        """The same lab with the lab DiT (a RoPE model: ComfyUI's Flux) as its model, loaded on first use."""
        if self._dit is None:
            model = models.load_dit(models.WEIGHTS_DIR / models.DIT_FILE)
            self._dit = Lab(model, model, self.vae, cond=models.dit_conditioning())
        return self._dit


def load_lab() -> Lab:
    """The committed lab weights: main U-Net, weak U-Net, TAESD autoencoder (through ``comfy.sd.VAE``, as the stock
    VAE loader does)."""
    vae = comfy.sd.VAE(sd=load_file(str(models.WEIGHTS_DIR / models.VAE_FILE)))
    return Lab(models.load_unet(models.WEIGHTS_DIR / models.UNET_FILE),
               models.load_unet(models.WEIGHTS_DIR / models.WEAK_UNET_FILE), vae)


def _empty(px: int) -> torch.Tensor:
    return torch.zeros(1, 4, px // 8, px // 8)


def _ksampler(model: ModelPatcher, lab: Lab, seed: int, px: int, steps: int) -> torch.Tensor:
    latent = _empty(px)
    noise = comfy.sample.prepare_noise(latent, seed)
    cond = lab.conditioning
    return comfy.sample.sample(model, noise, steps, 1.0, SAMPLER, SCHEDULER, cond, cond, latent, seed=seed,
                               disable_pbar=True)


def _hidiffusion(lab: Lab, **kwargs) -> ModelPatcher:
    from megapixel.patches.hidiffusion import apply_hidiffusion

    return apply_hidiffusion(lab.model, native_size=NATIVE_PX, **kwargs)


def deep_shrink(model: ModelPatcher, block: int = 3, factor: float = 2.0, end: float = 0.35) -> ModelPatcher:
    """Core Deep Shrink (PatchModelAddDownscale); by default its node's defaults: block 3, factor 2, 0 -> 0.35, after
    skip, bicubic both ways."""
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

    return PatchModelAddDownscale.execute(model, block, factor, 0.0, end, True, "bicubic", "bicubic").result[0]


def _hires_fix(denoise: float, pixel: bool = False, method: str = "bicubic") -> Callable:
    """The two-pass "hires fix" built from core nodes only: KSampler at the native size (half the steps), then
    Upscale Latent By (or VAE Decode -> Upscale Image By -> VAE Encode) to the target, then a KSampler at ``denoise``
    over the other half (a KSampler at denoise d with n steps runs n steps of an n/d schedule)."""
    def run(lab: Lab, seed: int, px: int, steps: int) -> torch.Tensor:
        import nodes

        cond = lab.conditioning
        first = steps // 2
        low = nodes.common_ksampler(lab.model, seed, first, 1.0, SAMPLER, SCHEDULER, cond, cond,
                                    {"samples": _empty(NATIVE_PX)})[0]
        factor = px / NATIVE_PX
        if pixel:
            image = nodes.VAEDecode().decode(lab.vae, low)[0]
            image = nodes.ImageScaleBy().upscale(image, method, factor)[0]
            high = nodes.VAEEncode().encode(lab.vae, image)[0]
        else:
            high = nodes.LatentUpscaleBy().upscale(low, method, factor)[0]
        return nodes.common_ksampler(lab.model, seed, steps - first, 1.0, SAMPLER, SCHEDULER, cond, cond, high,
                                     denoise=denoise)[0]["samples"]
    return run


def _relay_stages(px: int) -> str:
    """The lab's relay stages to ``px``: the native side doubled until it is reached ("1, 2, 4" at 4x)."""
    factors = [1]
    while factors[-1] * NATIVE_PX < px:
        factors.append(factors[-1] * 2)
    if factors[-1] * NATIVE_PX != px:
        raise ValueError(f"the relay row needs a power-of-two multiple of {NATIVE_PX} px, not {px}")
    return ", ".join(str(f) for f in factors)


def _relay(model: ModelPatcher, lab: Lab, seed: int, px: int, steps: int, **kwargs) -> torch.Tensor:
    from megapixel.samplers.relay import relay_ksampler

    cond = lab.conditioning
    out = relay_ksampler(model, seed, steps, 1.0, SAMPLER, SCHEDULER, cond, cond, {"samples": _empty(NATIVE_PX)},
                         stages=_relay_stages(px), **kwargs)
    return out["samples"]


def _split_text(first: str, px: int) -> str:
    """A relay step split giving the first stage ``first`` % and the later stages of a ``px`` relay equal shares."""
    later = max(1, round(math.log2(px / NATIVE_PX)))
    rest = (100 - int(first)) / later
    return "/".join([first] + [f"{rest:g}"] * later)


def _autoguided(w: float) -> Callable:
    def run(lab: Lab, seed: int, px: int, steps: int) -> torch.Tensor:
        from megapixel.samplers.autoguidance import AutoguidanceGuider

        latent = _empty(px)
        guider = AutoguidanceGuider(lab.model, lab.weak, cfg=1.0, w=w)
        guider.set_conds(lab.conditioning, lab.conditioning)
        sigmas = comfy.samplers.calculate_sigmas(lab.model.get_model_object("model_sampling"), SCHEDULER, steps)
        noise = comfy.sample.prepare_noise(latent, seed)
        sampler = comfy.samplers.sampler_object(SAMPLER)
        out = guider.sample(noise, latent, sampler, sigmas, seed=seed, disable_pbar=True)
        return out
    return run


def _relay_autoguided(w: float, native_only: bool) -> Callable:
    """The relay (SamplerCustom form: any GUIDER) with the autoguidance guider, the weak model guiding every stage or
    only the native one (its guidance interval ends between the native stage's last two noise levels)."""
    def run(lab: Lab, seed: int, px: int, steps: int) -> torch.Tensor:
        import comfy_extras.nodes_custom_sampler as custom
        from megapixel.samplers.autoguidance import AutoguidanceGuider
        from megapixel.samplers.highres import first_stage_end
        from megapixel.samplers.relay import relay_sampler_custom

        stages = _relay_stages(px)
        sigmas = comfy.samplers.calculate_sigmas(lab.model.get_model_object("model_sampling"), SCHEDULER, steps)
        end = first_stage_end(lab.model, sigmas, tuple(_empty(NATIVE_PX).shape), stages) if native_only else 1.0
        guider = AutoguidanceGuider(lab.model, lab.weak, cfg=1.0, w=w, end_percent=end)
        guider.set_conds(lab.conditioning, lab.conditioning)
        noise = custom.Noise_RandomNoise(seed)
        out, _ = relay_sampler_custom(noise, guider, comfy.samplers.sampler_object(SAMPLER), sigmas,
                                      {"samples": _empty(NATIVE_PX)}, stages=stages)
        return out["samples"]
    return run


def _dype(lab: Lab, method: str) -> ModelPatcher:
    """DyPE (the pack's patch, the authors' defaults for ``method``) on the lab DiT, native size 128 px."""
    from megapixel.patches.dype import Settings, apply_dype

    return apply_dype(lab.model, Settings(method=method), native_size=NATIVE_PX)


# name -> (what it is, sampler(lab, seed, px, steps) -> latent)
ROWS: dict[str, tuple[str, Callable]] = {
    "vanilla": ("the model alone, core KSampler", lambda lab, s, px, n: _ksampler(lab.model, lab, s, px, n)),
    "hidiffusion": ("HiDiffusion one-click (RAU-Net + MSW-MSA, native_size 128)",
                    lambda lab, s, px, n: _ksampler(_hidiffusion(lab), lab, s, px, n)),
    "rau_net": ("RAU-Net only (one-click, MSW-MSA off)",
                lambda lab, s, px, n: _ksampler(_hidiffusion(lab, msw_msa=False), lab, s, px, n)),
    "msw_msa": ("MSW-MSA only (one-click, RAU-Net off)",
                lambda lab, s, px, n: _ksampler(_hidiffusion(lab, rau_net=False), lab, s, px, n)),
    "relay": ("relay KSampler, native -> 2x (-> 4x), default split",
              lambda lab, s, px, n: _relay(lab.model, lab, s, px, n)),
    "relay_hidiffusion": ("relay KSampler over the HiDiffusion-patched model",
                          lambda lab, s, px, n: _relay(_hidiffusion(lab), lab, s, px, n)),
    "deep_shrink": ("core Deep Shrink (PatchModelAddDownscale, its defaults)",
                    lambda lab, s, px, n: _ksampler(deep_shrink(lab.model), lab, s, px, n)),
}
# The incumbents a user already has: the two-pass hires fix (core nodes, same total steps) in latent and pixel space.
ROWS.update({
    "hires_fix_0.5": ("hires fix: KSampler, Upscale Latent By (bicubic), KSampler at denoise 0.5",
                      _hires_fix(0.5)),
    "hires_fix_0.6": ("hires fix: KSampler, Upscale Latent By (bicubic), KSampler at denoise 0.6",
                      _hires_fix(0.6)),
    "hires_fix_pixel_0.5": ("hires fix in pixel space: VAE Decode, Upscale Image By (bicubic), VAE Encode, KSampler at "
                            "denoise 0.5", _hires_fix(0.5, pixel=True)),
})
# Search rows (not in the default run; ``--rows`` names them): Deep Shrink's settings and the relay's step split.
DEEP_SHRINK_GRID = [(3, 2.0, 0.5), (3, 4.0, 0.35), (3, 4.0, 0.5), (4, 2.0, 0.5), (4, 4.0, 0.5), (3, 2.0, 0.7)]
SEARCH_ROWS: set[str] = set()
for _b, _f, _e in DEEP_SHRINK_GRID:
    _name = f"deep_shrink_b{_b}_f{_f:g}_e{_e:g}"
    ROWS[_name] = (f"core Deep Shrink, block {_b}, factor {_f:g}, end {_e:g}",
                   lambda lab, s, px, n, b=_b, f=_f, e=_e: _ksampler(deep_shrink(lab.model, b, f, e), lab, s, px, n))
    SEARCH_ROWS.add(_name)
for _split in ("80", "70", "60", "50", "40"):
    _name = f"relay_split_{_split}"
    ROWS[_name] = (f"relay KSampler, first stage {_split} % of the steps, the rest shared evenly",
                   lambda lab, s, px, n, sp=_split: _relay(lab.model, lab, s, px, n, step_split=_split_text(sp, px)))
    SEARCH_ROWS.add(_name)
for _split in ("80", "70"):
    _name = f"dit_relay_split_{_split}"
    ROWS[_name] = (f"lab DiT, relay KSampler, first stage {_split} % of the steps",
                   lambda lab, s, px, n, sp=_split: _relay(lab.dit.model, lab.dit, s, px, n,
                                                           step_split=_split_text(sp, px)))
    SEARCH_ROWS.add(_name)
# The lab DiT (ComfyUI's Flux on the lab latents): plain RoPE, and DyPE's two methods, alone and under the relay.
ROWS.update({
    "dit": ("lab DiT (Flux, RoPE), core KSampler", lambda lab, s, px, n: _ksampler(lab.dit.model, lab.dit, s, px, n)),
    "dit_dype_yarn": ("lab DiT + DyPE (yarn, native_size 128)",
                      lambda lab, s, px, n: _ksampler(_dype(lab.dit, "yarn"), lab.dit, s, px, n)),
    "dit_dype_ntk": ("lab DiT + DyPE (ntk, native_size 128)",
                     lambda lab, s, px, n: _ksampler(_dype(lab.dit, "ntk"), lab.dit, s, px, n)),
    "dit_relay": ("lab DiT, relay KSampler, native -> 2x (-> 4x)",
                  lambda lab, s, px, n: _relay(lab.dit.model, lab.dit, s, px, n)),
    "dit_relay_dype_yarn": ("lab DiT + DyPE (yarn), relay KSampler, native -> 2x (-> 4x)",
                            lambda lab, s, px, n: _relay(_dype(lab.dit, "yarn"), lab.dit, s, px, n)),
})
# DyPE does nothing at or below the native size: at 1x its rows are the plain DiT's (skipped there).
SIZE_ONLY = {"dit_dype_yarn", "dit_dype_ntk"}
AUTOGUIDANCE_WEIGHTS = (1.5, 2.0, 3.0)
for _w in AUTOGUIDANCE_WEIGHTS:
    ROWS[f"autoguidance_w{_w:g}"] = (f"autoguidance with the weak model, w = {_w:g} (native size only)",
                                     _autoguided(_w))
NATIVE_ONLY = {name for name in ROWS if name.startswith("autoguidance")}
UPSCALE_ONLY = {name for name in ROWS if name.startswith(("hires_fix", "deep_shrink"))}
# The pack's one-node recipe (the MegapixelHighRes node's code path), alone and with the weak model connected.
def _megapixel(weak: bool) -> Callable:
    def run(lab: Lab, seed: int, px: int, steps: int) -> torch.Tensor:
        from megapixel.samplers.highres import highres_sample

        cond = lab.conditioning
        return highres_sample(lab.model, seed, steps, 1.0, SAMPLER, SCHEDULER, cond, cond,
                              {"samples": _empty(NATIVE_PX)}, scale_by=px / NATIVE_PX,
                              weak_model=lab.weak if weak else None)["samples"]
    return run


ROWS["megapixel"] = ("Megapixel High-Res Sampler (the one-node recipe)", _megapixel(False))
ROWS["megapixel_weak"] = ("Megapixel High-Res Sampler with the weak model connected (autoguidance at the native "
                          "stage)", _megapixel(True))
# Compositions: the relay with the weak model guiding (w = 2, the EDM2 range) every stage, or the native stage only.
ROWS["relay_autoguidance"] = ("relay + autoguidance (w = 2) at every stage", _relay_autoguided(2.0, False))
ROWS["relay_autoguidance_native"] = ("relay + autoguidance (w = 2) at the native stage only",
                                     _relay_autoguided(2.0, True))


def sample_images(lab: Lab, row: str, seeds, px: int, steps: int = STEPS) -> torch.Tensor:
    """Decoded images [B, H, W, 3] of ``row`` for ``seeds`` at ``px`` x ``px``."""
    sampler = ROWS[row][1]
    images = []
    with torch.inference_mode():  # as ComfyUI runs nodes: no autograd graph kept alive by the decoded images
        for seed in seeds:
            latent = sampler(lab, int(seed), px, steps)
            images.append(lab.vae.decode(latent).reshape(-1, px, px, 3).float().cpu())
    return torch.cat(images)


def measure_row(lab: Lab, row: str, seeds, px: int, steps: int = STEPS) -> list[measure.ImageStats]:
    return measure.measure_batch(sample_images(lab, row, seeds, px, steps))
