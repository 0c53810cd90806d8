"""What a MODEL is, as far as the pack's errors and stage sizes care: the name users know it by, and its latent
geometry (pixels per latent pixel, latent pixels per transformer token).

Read from the model itself (its config class, latent format, diffusion model), so a newer host's families work as
far as the host describes them.
"""
from __future__ import annotations

# Config class (comfy.supported_models) -> the name users know.  Anything else shows its class name.
_NAMES = {
    "SD15": "SD1.5", "SD20": "SD2.x", "SD21UnclipL": "SD2.1 unCLIP", "SD21UnclipH": "SD2.1 unCLIP", "SDXL": "SDXL",
    "SDXLRefiner": "SDXL refiner", "SSD1B": "SSD-1B", "Segmind_Vega": "Segmind Vega", "SD3": "SD3 / SD3.5",
    "AuraFlow": "AuraFlow", "PixArtAlpha": "PixArt-α", "PixArtSigma": "PixArt-Σ", "HunyuanDiT": "Hunyuan-DiT",
    "HunyuanDiT1": "Hunyuan-DiT 1.0", "Flux": "Flux.1 dev", "FluxInpaint": "Flux.1 Fill", "FluxSchnell": "Flux.1 schnell",
    "Flux2": "Flux.2", "Lumina2": "Lumina 2", "ZImage": "Z-Image", "HiDream": "HiDream", "Chroma": "Chroma",
    "ChromaRadiance": "Chroma Radiance", "Omnigen2": "OmniGen2", "QwenImage": "Qwen-Image",
    "HunyuanImage21": "HunyuanImage 2.1", "HunyuanImage21Refiner": "HunyuanImage 2.1 refiner",
    "Stable_Cascade_C": "Stable Cascade (stage C)", "Stable_Cascade_B": "Stable Cascade (stage B)",
    "SVD_img2vid": "Stable Video Diffusion", "SD_X4Upscaler": "SD x4 upscaler",
}

# Pixels per latent pixel of latent formats whose host (before ComfyUI's ``spacial_downscale_ratio``) does not say.
_RATIOS = {"Flux2": 16, "HunyuanImage21": 32, "ChromaRadiance": 1, "LTXV": 32, "Wan22": 16, "HunyuanVideo15": 16,
           "SC_Prior": 42, "SC_B": 4}
DEFAULT_RATIO = 8


def display_name(model) -> str:
    """The name users know a MODEL (ModelPatcher) by: 'Flux.2', 'Qwen-Image', 'SD1.5' ..."""
    config = getattr(getattr(model, "model", None), "model_config", None)
    name = type(config).__name__ if config is not None else type(getattr(model, "model", model)).__name__
    return _NAMES.get(name, name)


def latent_ratio(model) -> int:
    """Pixels per latent pixel (one side) of the model's latent format: 8 for SD and Flux.1, 16 for Flux.2 ..."""
    latent_format = model.get_model_object("latent_format")
    ratio = getattr(latent_format, "spacial_downscale_ratio", None)
    if isinstance(ratio, int) and ratio > 0:
        return ratio
    for cls in type(latent_format).__mro__:
        if cls.__name__ in _RATIOS:
            return _RATIOS[cls.__name__]
    return DEFAULT_RATIO


def patch_size(model) -> int:
    """Latent pixels per token side of a transformer (Flux 2, SD3 2, ...); 1 for U-Nets and unknown models."""
    size = getattr(model.get_model_object("diffusion_model"), "patch_size", 1)
    if isinstance(size, (list, tuple)):
        size = size[-1] if size else 1
    return size if isinstance(size, int) and size > 0 else 1
