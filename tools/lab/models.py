"""The lab's models, built from ComfyUI's own classes: an SD1.5-class U-Net (``comfy.supported_models.SD15``,
SD1.5's block layout and eps schedule, small widths) and a TAESD autoencoder (``comfy.taesd.taesd.TAESD``, which the
stock VAE loader detects from its keys).  Files are safetensors; a U-Net file carries its config in its metadata.

Must run inside the host's Python, with ComfyUI importable.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models

from .files import UNET_FILE, VAE_FILE, WEAK_UNET_FILE, WEIGHTS_DIR  # noqa: F401  (re-exported)

CONTEXT_DIM = 32
PREFIX = "model.diffusion_model."

_BASE = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "model_channels": 32, "use_temporal_attention": False, "use_temporal_resblock": False,
    "adm_in_channels": None, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_middle": 1, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_linear_in_transformer": False, "context_dim": CONTEXT_DIM,
}
# SD1.5's layout (4 levels, 2 resnets each, transformers on the first three) at widths trainable on 2 CPU cores.
UNET_CONFIGS = {
    "main": dict(_BASE, channel_mult=[1, 2, 3, 3]),
    "weak": dict(_BASE, channel_mult=[1, 1, 2, 2]),
}


def build_unet(config: dict, dtype: torch.dtype | None = None) -> comfy.model_base.BaseModel:
    """An SD1.5-class eps model (``BaseModel`` over ComfyUI's ``UNetModel``) from a U-Net config; weights
    uninitialised (load or initialise them)."""
    config = dict(config)
    if dtype is not None:
        config["dtype"] = dtype
    model_config = comfy.supported_models.SD15(config)
    return comfy.model_base.BaseModel(model_config, model_type=comfy.model_base.ModelType.EPS)


# The metadata entry that holds a lab file's config (and says which kind of lab model it is).
UNET_KEY, DIT_KEY = "megapixel_lab_unet_config", "megapixel_lab_dit_config"


def save_unet(model: comfy.model_base.BaseModel, config: dict, path: Path, metadata: dict | None = None) -> Path:
    """The U-Net's weights in fp16 with its config in the file's metadata."""
    return _save(model, UNET_KEY, config, path, metadata)


def read_unet_config(path: Path) -> dict:
    return _read_config(path, UNET_KEY, "U-Net")


def load_unet(path: Path, dtype: torch.dtype | None = None) -> comfy.model_patcher.ModelPatcher:
    """A lab U-Net file as a ModelPatcher on ComfyUI's devices (what the lab loader node returns)."""
    return _load(build_unet(read_unet_config(path), dtype=_dtype(dtype)), path)


def _save(model: comfy.model_base.BaseModel, key: str, config: dict, path: Path, metadata: dict | None) -> Path:
    sd = {PREFIX + k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}
    meta = {key: json.dumps(config), **(metadata or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={k: str(v) for k, v in meta.items()})
    return path


def _read_config(path: Path, key: str, what: str) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if key not in meta:
        raise ValueError(f"{path} is not a Megapixel lab {what} (no {key} in its metadata)")
    return json.loads(meta[key])


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, or the one ComfyUI would run the diffusion model in on this device."""
    if dtype is not None:
        return dtype
    return comfy.model_management.unet_dtype(model_params=0, supported_dtypes=[torch.float16, torch.float32])


def _load(model: comfy.model_base.BaseModel, path: Path) -> comfy.model_patcher.ModelPatcher:
    """``path``'s weights in ``model`` (built from the file's config), as a ModelPatcher on ComfyUI's devices."""
    sd = load_file(str(path))
    # As ComfyUI's loaders do: the host's own key renames (0.30.0 renamed Flux's RMSNorm "scale" to "weight").
    sd = model.model_config.process_unet_state_dict({k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)})
    model.diffusion_model.load_state_dict(sd, strict=True)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device())


def empty_context(batch: int = 1) -> torch.Tensor:
    """The fixed (unconditional) context the lab U-Nets are trained with."""
    return torch.zeros(batch, 1, CONTEXT_DIM)


def conditioning() -> list:
    """That context as a ComfyUI CONDITIONING (positive and negative alike: the model is unconditional)."""
    return [[empty_context(), {}]]


# ---------------------------------------------------------------------------------------------------------------
# The lab DiT: a real ComfyUI Flux (``comfy.model_base.Flux`` over ``comfy.ldm.flux.model.Flux``) on the lab's latents.

DIT_FILE = "megapixel-lab-dit.safetensors"

# Flux.1's block kinds, RoPE and patching at lab size: the lab's 4-channel TAESD latents (SD1.5 latent format, so the
# same model-space latents as the U-Net), 2x2 patches, 3 heads of 64 with RoPE axes 8/28/28 (Flux's 16/56/56 at half
# the head width), theta 10000, no guidance embedding, no pooled vector, the lab's 32-wide zero context as its one
# text token.
DIT_CONFIG = dict(image_model="flux", in_channels=4, out_channels=4, vec_in_dim=None, context_in_dim=CONTEXT_DIM,
                  hidden_size=192, mlp_ratio=4.0, num_heads=3, depth=2, depth_single_blocks=3, axes_dim=[8, 28, 28],
                  theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False)


class LabFlux(comfy.supported_models.Flux):
    """Flux's config with the lab's (SD1.5) latent format and Flux's own sampling (ModelSamplingFlux, CONST:
    rectified flow, shift 1.15)."""
    latent_format = comfy.latent_formats.SD15


def build_dit(config: dict = DIT_CONFIG, dtype: torch.dtype | None = None) -> comfy.model_base.Flux:
    """The lab DiT (a ``comfy.model_base.Flux``) from its config, fitted to the running host (newer hosts require
    ``txt_ids_dims``); weights uninitialised."""
    from harness.tiny_dits import fit_to_host

    config = fit_to_host(comfy.supported_models.Flux, config, {"txt_ids_dims": []})
    if dtype is not None:
        config["dtype"] = dtype
    return LabFlux(config).get_model({})


def save_dit(model: comfy.model_base.Flux, config: dict, path: Path, metadata: dict | None = None) -> Path:
    """The DiT's weights in fp16 with its config in the file's metadata."""
    return _save(model, DIT_KEY, config, path, metadata)


def load_dit(path: Path | None = None, dtype: torch.dtype | None = None) -> comfy.model_patcher.ModelPatcher:
    """A lab DiT file as a ModelPatcher on ComfyUI's devices."""
    path = Path(path or WEIGHTS_DIR / DIT_FILE)
    return _load(build_dit(_read_config(path, DIT_KEY, "DiT"), dtype=_dtype(dtype)), path)


def dit_conditioning() -> list:
    """The lab's fixed zero context for the DiT: Flux's model reads ``pooled_output`` (None: no pooled vector)."""
    return [[empty_context(), {"pooled_output": None}]]
