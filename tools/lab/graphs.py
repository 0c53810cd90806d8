"""API-format graphs over the lab model, for the demo's comparison grid and the end-to-end tests (standard library
only).  Each branch ends in its own SaveImage, whose filename prefix names the branch."""
from __future__ import annotations

from .files import NATIVE_PX, UNET_FILE, VAE_FILE

BRANCHES = ("megapixel", "vanilla", "hires_fix", "deep_shrink")
TITLES = {"megapixel": "Megapixel High-Res", "vanilla": "vanilla", "hires_fix": "hires fix (core, 0.6)",
          "deep_shrink": "Deep Shrink (core)"}
HIRES_DENOISE = 0.6  # the hires fix's second pass, as the lab's hires_fix_0.6 row


def comparison_graph(px: int, seed: int = 0, steps: int = 20, batch: int = 1, prefix: str = "lab") -> dict:
    """The Megapixel High-Res Sampler, the model alone, the two-pass hires fix (core nodes: KSampler at the native
    size, Upscale Latent By, KSampler at denoise 0.6; the steps shared half and half) and core Deep Shrink side by
    side at ``px`` x ``px``: what a user chooses between."""
    g: dict = {
        "unet": {"class_type": "MegapixelLabLoader", "inputs": {"unet_name": UNET_FILE}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": VAE_FILE}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": px, "height": px, "batch_size": batch}},
        "native": {"class_type": "EmptyLatentImage",
                   "inputs": {"width": NATIVE_PX, "height": NATIVE_PX, "batch_size": batch}},
        "deep_shrink": {"class_type": "PatchModelAddDownscale", "inputs": {
            "model": ["unet", 0], "block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0,
            "end_percent": 0.35, "downscale_after_skip": True, "downscale_method": "bicubic",
            "upscale_method": "bicubic"}},
    }
    common = {"seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["unet", 1], "negative": ["unet", 1], "denoise": 1.0}
    for branch, model in (("vanilla", ["unet", 0]), ("deep_shrink", ["deep_shrink", 0])):
        g[f"sample_{branch}"] = {"class_type": "KSampler",
                                 "inputs": dict(common, model=model, latent_image=["latent", 0])}
    g["sample_megapixel"] = {"class_type": "MegapixelHighRes", "inputs": dict(
        common, model=["unet", 0], latent_image=["native", 0], scale_by=px / NATIVE_PX, width=0, height=0)}
    first = steps // 2
    g["hires_low"] = {"class_type": "KSampler", "inputs": dict(common, model=["unet", 0], latent_image=["native", 0],
                                                               steps=first)}
    g["hires_up"] = {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["hires_low", 0],
                                                                 "upscale_method": "bicubic",
                                                                 "scale_by": px / NATIVE_PX}}
    g["sample_hires_fix"] = {"class_type": "KSampler", "inputs": dict(
        common, model=["unet", 0], latent_image=["hires_up", 0], steps=steps - first, denoise=HIRES_DENOISE)}
    for branch in BRANCHES:
        g[f"decode_{branch}"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"sample_{branch}", 0],
                                                                       "vae": ["vae", 0]}}
        g[f"save_{branch}"] = {"class_type": "SaveImage", "inputs": {"images": [f"decode_{branch}", 0],
                                                                     "filename_prefix": f"{prefix}-{branch}"}}
    return g
