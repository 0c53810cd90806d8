"""API-format graphs over the lab model, for the demo's comparison grid and the end-to-end tests (standard library
only).  Each branch ends in its own SaveImage, whose filename prefix names the branch."""
from __future__ import annotations

from .files import NATIVE_PX, UNET_FILE, VAE_FILE

BRANCHES = ("vanilla", "hidiffusion", "relay", "deep_shrink")
TITLES = {"vanilla": "vanilla", "hidiffusion": "HiDiffusion", "relay": "relay (MegaFusion)",
          "deep_shrink": "Deep Shrink (core)"}


def relay_stages(px: int) -> str:
    """Native, then doubling up to ``px`` (e.g. 128 -> 256 -> 512 px)."""
    sizes = [NATIVE_PX]
    while sizes[-1] < px:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != px:
        raise ValueError(f"px must be a power-of-two multiple of {NATIVE_PX}, not {px}")
    return ", ".join(f"{s}x{s}" for s in sizes)


def comparison_graph(px: int, seed: int = 0, steps: int = 20, batch: int = 1, prefix: str = "lab") -> dict:
    """Vanilla, HiDiffusion (native_size 128), the relay and core Deep Shrink side by side at ``px`` x ``px``."""
    g: dict = {
        "unet": {"class_type": "MegapixelLabLoader", "inputs": {"unet_name": UNET_FILE}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": px, "height": px, "batch_size": batch}},
        "native": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": NATIVE_PX, "height": NATIVE_PX, "batch_size": batch}},
        "hidiffusion": {"class_type": "MegapixelHiDiffusion", "inputs": {"model": ["unet", 0], "native_size": NATIVE_PX}},
        "deep_shrink": {"class_type": "PatchModelAddDownscale", "inputs": {
            "model": ["unet", 0], "block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0,
            "end_percent": 0.35, "downscale_after_skip": True, "downscale_method": "bicubic",
            "upscale_method": "bicubic"}},
    }
    common = {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["unet", 1], "negative": ["unet", 1], "denoise": 1.0}
    for branch, model in (("vanilla", ["unet", 0]), ("hidiffusion", ["hidiffusion", 0]),
                          ("deep_shrink", ["deep_shrink", 0])):
        g[f"sample_{branch}"] = {"class_type": "KSampler",
                                 "inputs": dict(common, model=model, latent_image=["latent", 0])}
    g["sample_relay"] = {"class_type": "MegapixelRelayKSampler", "inputs": dict(
        common, model=["unet", 0], latent_image=["native", 0], stages=relay_stages(px), step_split="",
        upscale_method="bicubic", noise_rescheduling=False, dilated_middle_block=False)}
    for branch in BRANCHES:
        g[f"decode_{branch}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"sample_{branch}", 0],
                                                                       "vae": ["vae", 0]}}
        g[f"save_{branch}"] = {"class_type": "SaveImage", "inputs": {"images": [f"decode_{branch}", 0],
                                                                     "filename_prefix": f"{prefix}-{branch}"}}
    return g
