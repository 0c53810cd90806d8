"""Real ComfyUI models with deterministic random weights, for tests, the demo and the benchmarks.

Everything is built through ComfyUI's own classes (``comfy.supported_models`` configs, ``comfy.model_base``,
``ModelPatcher``, ``comfy.sd.CLIP``/``VAE``); only the weights are ours.  ComfyUI's builders leave weights
uninitialised (``torch.empty``), so :func:`init_weights` fills them, seeded, with finite values of sensible scale.

Must run inside the host's Python, with ComfyUI importable.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
from comfy.ldm.models.autoencoder import AutoencoderKL

# Bump when what the checkpoint holds changes, so cached copies are rebuilt.
RANDOM_CHECKPOINT_NAME = "megapixel-random-sd15-v1.safetensors"
# A second one with other weights: the "weak model" autoguidance needs (the same file twice would be one object).
RANDOM_WEAK_CHECKPOINT_NAME = "megapixel-random-sd15-weak-v1.safetensors"

_TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "model_channels": 32, "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Tiny counterparts of ComfyUI's SD15 / SD21 / SDXL U-Net configs (comfy/model_detection.py): the same block
# structure (levels, resnets per level, where the transformers sit), small widths.
TINY_CONFIGS = {
    "sd15": dict(_TINY_UNET, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                 use_linear_in_transformer=False, context_dim=32),
    "sd2": dict(_TINY_UNET, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                use_linear_in_transformer=True, context_dim=64),
    "sdxl": dict(_TINY_UNET, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
                 channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 3, 3], transformer_depth_middle=3,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 3, 3, 3],
                 use_linear_in_transformer=True, context_dim=64),
}

_FAMILY_CLASSES = {
    "sd15": comfy.supported_models.SD15,
    "sd2": comfy.supported_models.SD20,
    "sdxl": comfy.supported_models.SDXL,
}


def init_weights(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Fill every parameter deterministically: matrices ~ N(0, scale²/fan_in), norm gains ~1, biases small."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                value = torch.randn(p.shape, generator=gen) * (scale / math.sqrt(fan_in))
            elif name.endswith("bias"):
                value = torch.randn(p.shape, generator=gen) * 0.02
            else:  # norm gains and other vectors
                value = 1.0 + torch.randn(p.shape, generator=gen) * 0.02
            p.copy_(value.to(p.dtype))
    return module


def _patcher(model: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def build_unet_model(family: str, unet_config: dict, seed: int,
                     model_type: comfy.model_base.ModelType = comfy.model_base.ModelType.EPS,
                     head_channels: int | None = None) -> comfy.model_patcher.ModelPatcher:
    """A real ``BaseModel`` of ``family`` ('sd15', 'sd2', 'sdxl') from ``unet_config``, wrapped in a ModelPatcher."""
    config = _FAMILY_CLASSES[family](dict(unet_config))
    if head_channels is not None:  # SD2/SDXL use 64-channel heads, wider than a tiny U-Net's first level
        config.unet_config["num_heads"] = -1
        config.unet_config["num_head_channels"] = head_channels
    if family == "sdxl":
        model = comfy.model_base.SDXL(config, model_type=model_type)
    else:
        model = comfy.model_base.BaseModel(config, model_type=model_type)
    init_weights(model.diffusion_model, seed)
    model.eval()
    return _patcher(model)


def tiny_unet(family: str, seed: int = 0, v_prediction: bool = False) -> comfy.model_patcher.ModelPatcher:
    """A tiny real U-Net of ``family``: 'sd15' (EPS), 'sd2' (V-prediction by default use), 'sdxl' (ADM)."""
    model_type = comfy.model_base.ModelType.V_PREDICTION if v_prediction else comfy.model_base.ModelType.EPS
    head_channels = None if family == "sd15" else 8
    return build_unet_model(family, TINY_CONFIGS[family], seed, model_type=model_type, head_channels=head_channels)


def _full_config(family: str) -> dict:
    """ComfyUI's own full-size U-Net configs (the ones its diffusers-to-ldm detection uses)."""
    full = {
        "sd15": dict(_TINY_UNET, model_channels=320, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2],
                     channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
                     transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                     use_linear_in_transformer=False, context_dim=768),
        "sdxl": dict(_TINY_UNET, model_channels=320, num_classes="sequential", adm_in_channels=2816,
                     num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                     transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                     use_linear_in_transformer=True, context_dim=2048),
    }
    return dict(full[family])


def full_unet(family: str, seed: int = 0, dtype: torch.dtype | None = None) -> comfy.model_patcher.ModelPatcher:
    """A full-size SD1.5 or SDXL U-Net with random weights (benchmarks: real shapes, real FLOPs)."""
    config = _full_config(family)
    if dtype is not None:
        config["dtype"] = dtype
    return build_unet_model(family, config, seed, head_channels=None if family == "sd15" else 64)


def _random_clip(seed: int) -> comfy.sd.CLIP:
    target = comfy.supported_models.SD15(dict(_full_config("sd15"))).clip_target()
    clip = comfy.sd.CLIP(target=target, embedding_directory=None)
    init_weights(clip.cond_stage_model, seed)
    return clip


def _random_vae(seed: int) -> comfy.sd.VAE:
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    autoencoder = AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    init_weights(autoencoder, seed)
    return comfy.sd.VAE(sd=autoencoder.state_dict())


def build_random_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a full-size SD1.5-architecture checkpoint (U-Net, CLIP-L, VAE) with random weights, in fp16,
    through ComfyUI's own ``comfy.sd.save_checkpoint``.  The stock CheckpointLoaderSimple detects it as SD1.5.
    It stands in for real weights, which cannot be downloaded here: images sampled from it are noise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = full_unet("sd15", seed)
    clip = _random_clip(seed + 1)
    vae = _random_vae(seed + 2)
    model.model.diffusion_model.half()
    clip.cond_stage_model.half()
    vae.first_stage_model.half()
    partial = path.with_suffix(".partial")
    comfy.sd.save_checkpoint(str(partial), model, clip, vae, metadata={"megapixel": "random weights, not a real model"})
    partial.rename(path)
    return path


def random_checkpoint(cache_dir: Path, weak: bool = False) -> Path:
    """The cached random SD1.5 checkpoint in ``cache_dir`` (or its weak twin), built on first use."""
    path = Path(cache_dir) / (RANDOM_WEAK_CHECKPOINT_NAME if weak else RANDOM_CHECKPOINT_NAME)
    if not path.exists():
        build_random_checkpoint(path, seed=100 if weak else 0)
    return path
