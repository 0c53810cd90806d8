"""Helpers for the HiDiffusion tests: sampling through ComfyUI's own sampler path, probes, model snapshots.

(No tests here; the module name keeps it among the HiDiffusion test files.)
"""
from __future__ import annotations

import hashlib

import torch

import comfy.sample
import comfy.samplers
import support


def conds(model, batch: int = 1, seed: int = 0):
    return support.make_cond(model, batch=1, seed=seed), support.make_cond(model, batch=1, seed=seed + 1)


def sample(model, latent_hw, sigmas, batch: int = 1, seed: int = 0, cfg: float = 1.0, sampler: str = "euler",
           cond_seed: int = 0, positive=None, negative=None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample with ComfyUI's own path (sample_custom -> CFGGuider -> KSAMPLER), from seeded noise (or ``noise``)."""
    if noise is None:
        noise = torch.randn(batch, 4, *latent_hw, generator=torch.Generator().manual_seed(seed))
    pos, neg = conds(model, seed=cond_seed)
    positive = positive if positive is not None else pos
    negative = negative if negative is not None else neg
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object(sampler),
                                      torch.as_tensor(sigmas, dtype=torch.float32), positive, negative,
                                      torch.zeros_like(noise), seed=seed, disable_pbar=True)


def batch_noise(latent_hw, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 4, *latent_hw, generator=torch.Generator().manual_seed(seed))


def denoise_once(model, latent_hw, sigma: float, **kwargs) -> torch.Tensor:
    """One model call at ``sigma`` (euler from sigma to 0 returns the denoised estimate)."""
    return sample(model, latent_hw, [float(sigma), 0.0], **kwargs)


def schedule(model, steps: int, scheduler: str = "normal") -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)


def tiny_flux():
    """A tiny real Flux (a DiT: no U-Net levels), for the unsupported-model errors."""
    import comfy.model_base
    import comfy.supported_models
    from harness import model_factory

    cfg = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
               hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
               theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)
    return model_factory._patcher(comfy.model_base.Flux(comfy.supported_models.Flux(cfg)))


class ShapeProbe:
    """An input_block_patch recording (sigma, block, h's spatial size) for every input block of every call."""

    def __init__(self):
        self.calls: list[tuple[float, int, tuple[int, int]]] = []

    def __call__(self, h, transformer_options):
        self.calls.append((float(transformer_options["sigmas"][0]), transformer_options["block"][1],
                           tuple(h.shape[-2:])))
        return h

    def at_block(self, block: int) -> list[tuple[float, tuple[int, int]]]:
        return [(s, hw) for s, b, hw in self.calls if b == block]


def with_probe(model) -> tuple[object, ShapeProbe]:
    probe = ShapeProbe()
    m = model.clone()
    m.set_model_input_block_patch(probe)
    return m, probe


def snapshot(model) -> dict:
    """What must not change on an input model: its options (structure and the patch objects in them), object
    patches, wrappers, and the U-Net's modules and weights."""
    def describe(value):
        if isinstance(value, dict):
            return {k: describe(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [describe(v) for v in value]
        if torch.is_tensor(value):
            return ("tensor", tuple(value.shape))
        return ("obj", id(value)) if callable(value) else repr(value)

    unet = model.model.diffusion_model
    digest = hashlib.sha256()
    for name, tensor in unet.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return {
        "model_options": describe(model.model_options),
        "object_patches": dict(model.object_patches),
        "wrappers": describe(model.wrappers),
        "patches": {k: len(v) for k, v in model.patches.items()},
        "modules": [(n, type(m).__name__, sorted(vars(m).get("_forward_hooks", {}).keys()),
                     getattr(m, "stride", None), getattr(m, "padding", None), getattr(m, "dilation", None),
                     len(getattr(m, "weight_function", [])))
                    for n, m in unet.named_modules()],
        "weights": digest.hexdigest(),
    }


class HostReads(torch.Tensor):
    """A tensor that counts reads of its values to the host (float(), .item(), .cpu(), ...)."""

    count = 0
    READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__index__", "__bool__")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in cls.READS:
            HostReads.count += 1
        return super().__torch_function__(func, types, args, kwargs or {})
