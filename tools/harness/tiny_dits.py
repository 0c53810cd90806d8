"""Tiny real diffusion-transformer (DiT) image models of every family the pinned ComfyUI host knows, seeded.

Each model is the host's own ``comfy.supported_models.<Config>`` + the ``comfy.model_base`` model that config's
``get_model`` builds, in a real ``ModelPatcher``; only the sizes are small (one head -- two for Z-Image -- of the
family's real head width where it uses RoPE, one block of each kind) and the weights ours (:func:`model_factory.init_weights`, seeded).  What is kept from the real
models: the latent space (channels, spatial ratio, the frame axis), the patch size, the RoPE axes (``axes_dim``, so
the position embeddings split the head as the real ones do), the text-encoder widths the conditioning must have, and
the block kinds (double/single stream, refiners, MoE, modulation style).

Families (names as users know them -> host config class): see :data:`FAMILIES` and :data:`CONFIG_CLASS`.

**Loader round-trip** (:func:`save_diffusion_model` then ``comfy.sd.load_diffusion_model``): ComfyUI's detection
(``comfy/model_detection.py``) reads some sizes from the weights and fixes others to the full-size values, so a tiny
model loads back as itself only where every fixed value is one a tiny model can share.  :func:`round_trips` answers
for the running host.  On the two hosts tested:

- round-trip on 0.3.75 and 0.30.0: **SD3** (width = 64 x depth, heads = depth, both read from the weights),
  **HunyuanImage 2.1** (width read from ``img_in``, heads = width / 128).
- round-trip on 0.30.0 only: **Flux.1 dev**, **Flux.1 schnell**, **Flux.2** -- 0.30.0 derives the heads as
  width / sum(axes_dim); 0.3.75 fixes ``num_heads`` to 24 (Flux.1) / 48 (Flux.2), so only a 3072 / 6144-wide model
  (hundreds of millions of parameters) loads there.  0.3.75 still *detects* the right class (Flux with
  ``guidance_embed`` True for dev, FluxSchnell, Flux2); building the model then fails on the head count.
- never (fixed full-size values in detection or in the class match):
  **AuraFlow** (``dim``/``n_heads`` are not read from the weights: the 3072-wide default is built),
  **Lumina 2** (heads default to 32 unless the width is exactly 2304), **Z-Image** (the ZImage class matches only
  ``dim`` 3840: the tiny one is detected as Lumina2), **Qwen-Image** (24 heads x 128 and the 3584 text width are constructor defaults),
  **HiDream** (every size fixed), **Chroma** / **Chroma Radiance** (24 heads and the 5120-wide, 5-layer, 3072-out
  modulation approximator fixed), **Omnigen2** (every size fixed).

What the host's models need that is easy to miss (:func:`conditioning` provides it):

- every Flux-based model (Flux.1, Flux.2, Chroma, Chroma Radiance) reads ``pooled_output`` from the conditioning
  even when it has no pooled vector (a KeyError without it; CLIPTextEncode always sets it, None where there is none);
- Omnigen2 takes its text-token count from ``attention_mask`` (its forward fails without one);
- HiDream needs ``conditioning_llama3``, the hidden states of all 32 Llama layers [B, 32, tokens, 4096];
- Qwen-Image works on 5-D latents [B, 16, 1, H, W] (Wan 2.1 latent format; the sampler unsqueezes a 4-D empty
  latent, ``comfy.sample.fix_empty_latent_channels``);
- Flux.2's model pads the text to 512 tokens itself, whatever the conditioning holds;
- Z-Image's modulation reads min(dim, 256) features of a 256-wide time embedding: its width cannot go below 256;
- newer hosts add required fields to the parameter dataclasses (0.30.0: Flux ``txt_ids_dims``, Chroma
  ``txt_ids_dims``/``vec_in_dim``, Chroma Radiance ``use_x0``/``use_sequential_txt_ids``, HunyuanVideo
  ``meanflow_sum``) and drop constructor arguments (Qwen-Image ``guidance_embeds``): the config given to a host is
  fitted to what its classes take.

Must run inside the host's Python, with ComfyUI importable.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

import comfy.model_base
import comfy.model_detection
import comfy.model_patcher
import comfy.supported_models
import comfy.utils

from harness import model_factory

FLUX_DEV = "Flux.1 dev"
FLUX_SCHNELL = "Flux.1 schnell"
FLUX2 = "Flux.2"
SD3 = "SD3"
AURAFLOW = "AuraFlow"
LUMINA2 = "Lumina 2"
ZIMAGE = "Z-Image"
QWEN_IMAGE = "Qwen-Image"
HIDREAM = "HiDream"
CHROMA = "Chroma"
HUNYUAN_IMAGE = "HunyuanImage 2.1"
CHROMA_RADIANCE = "Chroma Radiance"
OMNIGEN2 = "Omnigen2"


@dataclass(frozen=True)
class _Family:
    config: str  # host config class in comfy.supported_models
    unet: dict  # the tiny unet_config
    latent_ratio: int  # pixels per latent pixel
    patch: int  # latent pixels per token side
    text_width: int  # width of the c_crossattn tokens (the family's text encoder)
    pooled_width: int | None = None  # width of ``pooled_output`` where the model reads one
    guidance: float | None = None  # ``guidance`` put in the conditioning (guidance-distilled models)
    frames: bool = False  # 5-D latents [B, C, T=1, H, W]
    llama_layers: int = 0  # HiDream: hidden states of this many Llama-3 layers in ``conditioning_llama3``
    llama_width: int = 0
    attention_mask: bool = False  # the model reads its token count from ``attention_mask`` (Omnigen2)
    # Fields newer hosts' parameter dataclasses require (added only where the host's class has them).
    newer: dict = field(default_factory=dict)


_FLUX1 = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
              hidden_size=128, mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
              theta=10000, patch_size=2, qkv_bias=True)
_CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=4096, hidden_size=128,
               mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000,
               patch_size=2, qkv_bias=True, in_dim=64, out_dim=128, hidden_dim=64, n_layers=1)

_FAMILIES: dict[str, _Family] = {
    # Flux.1: T5-XXL tokens (4096) + CLIP-L pooled (768); 16 channels at 1/8, 2x2 patches, RoPE axes 16/56/56.
    FLUX_DEV: _Family("Flux", dict(_FLUX1, guidance_embed=True), 8, 2, 4096, pooled_width=768, guidance=3.5,
                      newer={"txt_ids_dims": []}),
    FLUX_SCHNELL: _Family("FluxSchnell", dict(_FLUX1, guidance_embed=False), 8, 2, 4096, pooled_width=768,
                          newer={"txt_ids_dims": []}),
    # Flux.2: Mistral hidden states of 3 layers (3 x 5120), no pooled vector; 128 channels at 1/16, 1x1 patches,
    # 4 RoPE axes (the 4th counts text tokens), shared (global) modulation, no biases.
    FLUX2: _Family("Flux2", dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None,
                                 context_in_dim=15360, hidden_size=128, mlp_ratio=3.0, num_heads=1, depth=1,
                                 depth_single_blocks=1, axes_dim=[32, 32, 32, 32], theta=2000, patch_size=1,
                                 qkv_bias=False, guidance_embed=True, global_modulation=True, mlp_silu_act=True,
                                 ops_bias=False, default_ref_method="index", ref_index_scale=10.0),
                   16, 1, 15360, guidance=4.0, newer={"txt_ids_dims": [3]}),
    # SD3 (medium): MMDiT, width 64 x depth; CLIP-L+G+T5 tokens (4096), pooled CLIP-L+G (2048); learned 2-D
    # position table of 192 x 192 patches.
    SD3: _Family("SD3", {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 1,
                         "adm_in_channels": 2048,
                         "context_embedder_config": {"target": "torch.nn.Linear",
                                                     "params": {"in_features": 4096, "out_features": 64}},
                         "pos_embed_max_size": 192, "num_patches": 192 * 192, "pos_embed_scaling_factor": None,
                         "input_size": None, "x_block_self_attn_layers": []},
                 8, 2, 4096, pooled_width=2048),
    # AuraFlow: SDXL latents (4 channels at 1/8); Pile-T5-XL tokens (2048); learned 64 x 64 position table;
    # double (MMDiT) then single (DiT) layers.
    AURAFLOW: _Family("AuraFlow", dict(in_channels=4, out_channels=4, patch_size=2, dim=64, n_layers=2,
                                       n_double_layers=1, n_heads=1, global_conddim=64, cond_seq_dim=2048,
                                       max_seq=64 * 64),
                      8, 2, 2048),
    # Lumina 2: Gemma-2-2B tokens (2304); 96-wide heads (RoPE 32/32/32), noise and context refiners.
    LUMINA2: _Family("Lumina2", dict(image_model="lumina2", patch_size=2, in_channels=16, dim=96, n_layers=1,
                                     n_refiner_layers=1, n_heads=1, n_kv_heads=1, qk_norm=True, cap_feat_dim=2304,
                                     axes_dims=[32, 32, 32], axes_lens=[300, 512, 512], rope_theta=10000.0,
                                     ffn_dim_multiplier=4.0),
                     8, 2, 2304),
    # Z-Image: the Lumina 2 network with Qwen3-4B tokens (2560), 128-wide heads (RoPE 32/48/48, theta 256), its
    # own modulation, time x1000, tokens padded to multiples of 32.
    # (The time embedding is 256 wide and the modulation reads min(dim, 256) of it: dim must be >= 256.)
    ZIMAGE: _Family("ZImage", dict(image_model="lumina2", patch_size=2, in_channels=16, dim=256, n_layers=1,
                                   n_refiner_layers=1, n_heads=2, n_kv_heads=2, qk_norm=True, cap_feat_dim=2560,
                                   axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512], rope_theta=256.0,
                                   ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                                   pad_tokens_multiple=32),
                    8, 2, 2560),
    # Qwen-Image: Wan 2.1 latents (16 channels at 1/8 with a frame axis: 5-D); Qwen2.5-VL-7B tokens (3584);
    # RoPE 16/56/56 centred on the image.
    QWEN_IMAGE: _Family("QwenImage", dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                                          num_layers=1, attention_head_dim=128, num_attention_heads=1,
                                          joint_attention_dim=3584, axes_dims_rope=[16, 56, 56]),
                        8, 2, 3584, frames=True),
    # HiDream: T5 tokens (4096) + the hidden states of all 32 Llama-3.1 layers (4096 each) in
    # ``conditioning_llama3``, pooled CLIP-L+G (2048); MoE feed-forwards (4 experts, 2 active), RoPE 64/32/32.
    HIDREAM: _Family("HiDream", dict(image_model="hidream", patch_size=2, in_channels=16, out_channels=16,
                                     num_layers=1, num_single_layers=1, attention_head_dim=128,
                                     num_attention_heads=1, caption_channels=[4096, 4096], text_emb_dim=2048,
                                     num_routed_experts=4, num_activated_experts=2, axes_dims_rope=[64, 32, 32],
                                     max_resolution=[128, 128], llama_layers=[0, 31]),
                     8, 2, 4096, pooled_width=2048, llama_layers=32, llama_width=4096),
    # Chroma: Flux.1 latents and patches, T5 tokens only, modulation from a distilled approximator.
    CHROMA: _Family("Chroma", dict(_CHROMA), 8, 2, 4096, newer={"txt_ids_dims": [], "vec_in_dim": None}),
    # HunyuanImage 2.1: 64 channels at 1/32, 1x1 patches, RoPE 64/64 (theta 256); Qwen2.5-VL-7B tokens (3584)
    # through a token refiner.
    HUNYUAN_IMAGE: _Family("HunyuanImage21", dict(image_model="hunyuan_video", in_channels=64, out_channels=64,
                                                  patch_size=[1, 1], vec_in_dim=None, axes_dim=[64, 64],
                                                  meanflow=False, context_in_dim=3584, hidden_size=128,
                                                  mlp_ratio=4.0, num_heads=1, depth=1, depth_single_blocks=1,
                                                  theta=256, qkv_bias=True, byt5=False, guidance_embed=False,
                                                  use_cond_type_embedding=False, vision_in_dim=None),
                           32, 1, 3584, newer={"meanflow_sum": False}),
    # Chroma Radiance: pixel space (3 channels at 1/1), 16x16 patches, a per-pixel NeRF-style head (8 wide, one
    # block: it runs on every pixel, so a 32x32-token call is 512x512 pixels and takes ~0.3 s on one CPU thread).
    CHROMA_RADIANCE: _Family("ChromaRadiance", dict(_CHROMA, image_model="chroma_radiance", in_channels=3,
                                                    out_channels=3, patch_size=16, nerf_hidden_size=8,
                                                    nerf_mlp_ratio=2, nerf_depth=1, nerf_max_freqs=8,
                                                    nerf_tile_size=512, nerf_final_head_type="conv",
                                                    nerf_embedder_dtype=torch.float32),
                             1, 16, 4096, newer={"txt_ids_dims": [], "vec_in_dim": None, "use_x0": False,
                                                 "use_sequential_txt_ids": False}),
    # Omnigen2: Qwen2.5-VL-3B tokens (2048); 120-wide heads (RoPE 40/40/40), refiners, time x1000.
    OMNIGEN2: _Family("Omnigen2", dict(image_model="omnigen2", patch_size=2, in_channels=16, out_channels=None,
                                       hidden_size=120, num_layers=1, num_refiner_layers=1, num_attention_heads=1,
                                       num_kv_heads=1, multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5,
                                       axes_dim_rope=[40, 40, 40], axes_lens=[1024, 1664, 1664],
                                       text_feat_dim=2048, timestep_scale=1000.0),
                      8, 2, 2048, attention_mask=True),
}

FAMILIES: tuple[str, ...] = tuple(_FAMILIES)
"""Every DiT image family, by the name users know it."""

CONFIG_CLASS: dict[str, str] = {name: spec.config for name, spec in _FAMILIES.items()}
"""Family name -> the host's config class name in ``comfy.supported_models``."""


def _spec(family: str) -> _Family:
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown DiT family {family!r}; known: {', '.join(FAMILIES)}") from None


def _params_dataclass(network: type) -> type | None:
    """The parameter dataclass a ``**kwargs`` network builds from (FluxParams, ChromaRadianceParams, ...), if any."""
    value = getattr(inspect.getmodule(network), network.__name__ + "Params", None)
    return value if dataclasses.is_dataclass(value) else None


def _unet_config(family: str) -> dict:
    """The tiny unet_config fitted to the running host (see :func:`fit_to_host`)."""
    spec = _spec(family)
    return fit_to_host(getattr(comfy.supported_models, spec.config), spec.unet, spec.newer)


def fit_to_host(config_cls: type, unet_config: dict, newer: dict) -> dict:
    """``unet_config`` for ``config_cls`` (a ``comfy.supported_models`` class) fitted to the running host: the
    fields of ``newer`` that its network's parameters require (and older hosts lack) are added, fields it does not
    know are left out."""
    config = dict(unet_config)
    net = _network_class(config_cls)
    sig = inspect.signature(net.__init__)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    params_cls = _params_dataclass(net) if takes_kwargs else None
    if params_cls is not None:
        names = {f.name for f in dataclasses.fields(params_cls)}
        accepted = names | set(sig.parameters)
        for key, value in newer.items():
            if key in names and key not in config:
                config[key] = value
    elif takes_kwargs:
        accepted = None  # takes anything
    else:
        accepted = set(sig.parameters)
    if accepted is not None:
        config = {k: v for k, v in config.items() if k in accepted}
    return config


def _network_class(config_cls: type) -> type:
    """The ``comfy.ldm`` network class the config's model_base class builds (its ``unet_model``)."""
    model_cls = {
        "Flux": comfy.model_base.Flux, "FluxSchnell": comfy.model_base.Flux, "Flux2": comfy.model_base.Flux2,
        "SD3": comfy.model_base.SD3, "AuraFlow": comfy.model_base.AuraFlow, "Lumina2": comfy.model_base.Lumina2,
        "ZImage": comfy.model_base.Lumina2, "QwenImage": comfy.model_base.QwenImage,
        "HiDream": comfy.model_base.HiDream, "Chroma": comfy.model_base.Chroma,
        "ChromaRadiance": comfy.model_base.ChromaRadiance, "HunyuanImage21": comfy.model_base.HunyuanImage21,
        "Omnigen2": comfy.model_base.Omnigen2,
    }[config_cls.__name__]
    sig = inspect.signature(model_cls.__init__)
    if "unet_model" in sig.parameters and sig.parameters["unet_model"].default is not inspect.Parameter.empty:
        return sig.parameters["unet_model"].default
    # The class names its network in its body (``super().__init__(..., unet_model=X)``): read X from the source.
    source = inspect.getsource(model_cls.__init__)
    dotted = source.split("unet_model=", 1)[1].split(")", 1)[0].strip()
    head, *rest = dotted.split(".")  # a dotted name in model_base's namespace
    obj = vars(comfy.model_base)[head]
    for name in rest:
        obj = getattr(obj, name)
    return obj


def tiny_dit(family: str, seed: int = 0, **sizes) -> comfy.model_patcher.ModelPatcher:
    """A tiny real ``comfy.model_base`` model of ``family`` (one of :data:`FAMILIES`) in a ModelPatcher: fp32,
    eval mode, weights filled by ``model_factory.init_weights`` from ``seed`` (same seed, same weights).
    ``sizes`` override config entries (e.g. ``hidden_size``, ``num_heads``, ``depth`` for a benchmark-sized Flux)."""
    config = getattr(comfy.supported_models, _spec(family).config)({**_unet_config(family), **sizes})
    model = config.get_model({})
    model_factory.init_weights(model.diffusion_model, seed)
    _init_buffers(model.diffusion_model, seed)
    model.eval()
    return model_factory._patcher(model)


def _init_buffers(network: torch.nn.Module, seed: int) -> None:
    """Fill the saved (persistent) buffers, which the builders leave uninitialised (``torch.empty``) for the
    checkpoint to fill, deterministically: the MMDiT position table with its real 2-D sin-cos values, any other
    seeded.  Buffers the networks compute themselves (not saved) are left alone."""
    gen = torch.Generator().manual_seed(seed + 1)
    saved = set(network.state_dict(keep_vars=True))
    with torch.no_grad():
        for name, buf in network.named_buffers():
            if name not in saved or not buf.is_floating_point() or buf.numel() == 0:
                continue
            if name == "pos_embed" and buf.dim() == 3:  # SD3: [1, max_size**2, hidden]
                from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed
                size = math.isqrt(buf.shape[1])
                value = torch.from_numpy(get_2d_sincos_pos_embed(buf.shape[2], size)).reshape(buf.shape)
            else:
                value = torch.randn(buf.shape, generator=gen) * 0.02
            buf.copy_(value.to(buf.dtype))


def parameter_count(family: str) -> int:
    """How many parameters the tiny ``family`` model's diffusion model has."""
    model = tiny_dit(family)
    return sum(p.numel() for p in model.model.diffusion_model.parameters())


def conditioning(family: str, batch: int = 1, tokens: int = 4, seed: int = 0) -> list:
    """A deterministic CONDITIONING (``[[tensor, dict]]``) with what ``family``'s model reads: ``tokens`` text
    tokens of the family's text-encoder width; ``pooled_output`` (a tensor for Flux.1, SD3, HiDream, else None, as
    CLIPTextEncode leaves it: the Flux-based models read the key); ``guidance`` (Flux.1 dev, Flux.2);
    ``conditioning_llama3`` (HiDream: [batch, 32 layers, tokens, 4096]); ``attention_mask`` (Omnigen2, which
    takes its token count from it)."""
    spec = _spec(family)
    gen = torch.Generator().manual_seed(seed)
    cond = torch.randn((batch, tokens, spec.text_width), generator=gen)
    extra: dict = {"pooled_output": None}
    if spec.pooled_width is not None:
        extra["pooled_output"] = torch.randn((batch, spec.pooled_width), generator=gen)
    if spec.attention_mask:
        extra["attention_mask"] = torch.ones((batch, tokens), dtype=torch.long)
    if spec.guidance is not None:
        extra["guidance"] = spec.guidance
    if spec.llama_layers:
        extra["conditioning_llama3"] = torch.randn((batch, spec.llama_layers, tokens, spec.llama_width),
                                                   generator=gen)
    return [[cond, extra]]


def latent_channels(family: str) -> int:
    """Channels of ``family``'s latents (the host's latent format)."""
    return getattr(comfy.supported_models, _spec(family).config).latent_format.latent_channels


def latent_ratio(family: str) -> int:
    """Pixels per latent pixel (8, 16 for Flux.2, 32 for HunyuanImage 2.1, 1 for the pixel-space Chroma Radiance)."""
    return _spec(family).latent_ratio


def patch_size(family: str) -> int:
    """Latent pixels per token side (2 for most, 1 for Flux.2 and HunyuanImage 2.1, 16 for Chroma Radiance)."""
    return _spec(family).patch


def empty_latent(family: str, width_px: int, height_px: int, batch: int = 1) -> torch.Tensor:
    """Zeros shaped like the host's empty latent of ``family`` for an image of ``width_px`` x ``height_px``:
    [batch, C, H/r, W/r], or [batch, 16, 1, H/8, W/8] for Qwen-Image (its Wan 2.1 latent format has a frame axis;
    ComfyUI's sampler adds it to a 4-D empty latent, see ``comfy.sample.fix_empty_latent_channels``)."""
    spec = _spec(family)
    r = spec.latent_ratio
    shape = [batch, latent_channels(family)] + ([1] if spec.frames else []) + [height_px // r, width_px // r]
    return torch.zeros(shape)


def save_diffusion_model(family: str, path, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Save the tiny ``family`` model's diffusion-model weights (``seed``) as a safetensors file at ``path``, as
    ComfyUI's UNETLoader reads them (``comfy.sd.load_diffusion_model``).  Whether the loader gets this very model
    back depends on the host's detection: see :func:`round_trips` and the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_dit(family, seed)
    sd = {k: v.detach().to(dtype).contiguous() for k, v in model.model.diffusion_model.state_dict().items()}
    partial = path.with_name(path.name + ".partial")
    comfy.utils.save_torch_file(sd, str(partial))
    partial.replace(path)
    return path


def detected_config(family: str):
    """The config the running host's loader detects from the tiny ``family`` model's weights (a
    ``comfy.supported_models`` instance), or None when it detects nothing."""
    sd = tiny_dit(family).model.diffusion_model.state_dict()
    return comfy.model_detection.model_config_from_unet(sd, "")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(a, b)
        except TypeError:
            return False
    return a == b


def round_trips(family: str) -> bool:
    """Whether the running host's loader rebuilds the tiny ``family`` model from its saved weights: the same config
    class, the same values for every field both configs set, and a network of the same weight shapes (built on the
    meta device, so a full-size mis-detection costs nothing)."""
    spec = _spec(family)
    sd = tiny_dit(family).model.diffusion_model.state_dict()
    detected = comfy.model_detection.model_config_from_unet(dict(sd), "")
    if detected is None or type(detected).__name__ != spec.config:
        return False
    ours = _unet_config(family)
    if any(not _same(ours[k], detected.unet_config[k]) for k in ours if k in detected.unet_config):
        return False
    try:
        rebuilt = detected.get_model(sd, "", device=torch.device("meta"))
    except Exception:  # the detected config cannot be built at these widths
        return False
    theirs = rebuilt.diffusion_model.state_dict()
    return set(theirs) == set(sd) and all(tuple(theirs[k].shape) == tuple(v.shape) for k, v in sd.items())


STAND_IN_VAE = "megapixel-tiny-taesd16.safetensors"


def save_stand_in_vae(cache_dir, latent_channels: int = 16, seed: int = 0) -> Path:
    """A seeded random TAESD with ``latent_channels`` channels at 1/8 (Flux.1's latent space for 16), saved where the
    stock *Load VAE* node reads it (ComfyUI detects TAESD from the ``taesd_decoder`` keys).  Cached in ``cache_dir``."""
    import comfy.taesd.taesd as taesd

    path = Path(cache_dir) / (STAND_IN_VAE if latent_channels == 16
                              else STAND_IN_VAE.replace("16", str(latent_channels)))
    if path.exists():
        return path
    net = taesd.TAESD(latent_channels=latent_channels)  # ComfyUI's uninitialised layers: fill them
    model_factory.init_weights(net, seed)
    with torch.no_grad():
        net.vae_scale.fill_(1.0)
        net.vae_shift.fill_(0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    comfy.utils.save_torch_file({k: v.half() for k, v in net.state_dict().items()}, str(partial))
    partial.rename(path)
    return path
