"""Hostile inputs through the real server: every bad prompt ends with a clear error (or runs correctly), the server
keeps serving, and afterwards good prompts give exactly what a fresh server gives.

Table-driven: each :class:`Case` is an API graph built by small helper functions and what must happen to it:
``refused`` (``/prompt`` answers 400 with node errors naming the input), ``error`` (queued, then an
``execution_error`` in ``/history`` whose message names the node and input), ``ok`` (runs; images counted and
measured) or ``ends`` (host behaviour we do not own, e.g. a NaN in a core node: it must just end, either way).

Everything runs on a server of this module's own (so nothing a bad prompt leaves behind can reach other tests), with
the random SD1.5 checkpoint, its weak twin and a tiny SD3-family diffusion model (another latent space, another
family: 16 latent channels), at 64-128 px and 1-4 steps.  The good prompts' pixels are taken on that server before
any case runs (what a fresh server gives) and compared after all the cases.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from harness import tiny_dits
from harness.comfy_server import ComfyServer, Graph, ServerError, cached_nodes, execution_error
from harness.host import HOST_DIR, HOST_VERSION
from lab.files import LAB_DIR

pytestmark = pytest.mark.e2e

FIXTURES = HOST_DIR / "fixtures"
TINY_SD3_NAME = "megapixel-tiny-sd3-v1.safetensors"
WEAK_DTYPE = "fp8_e4m3fn"  # how the autoguidance cases load the weak model (UNETLoader), to save memory


# --- models ----------------------------------------------------------------------------------------------------
def tiny_sd3_model(cache_dir: Path = FIXTURES) -> Path:
    """A 2M-parameter MMDiT that ComfyUI's UNETLoader detects as SD3 (16-channel SD3 latents, flow): a model
    from another family and latent space than SD1.5, in 4 MB."""
    path = Path(cache_dir) / TINY_SD3_NAME
    if path.exists():
        return path
    import comfy.model_base
    import comfy.supported_models
    import comfy.utils
    from harness import model_factory

    unet_config = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "adm_in_channels": 2048,
                   "context_embedder_config": {"target": "torch.nn.Linear",
                                               "params": {"in_features": 4096, "out_features": 128}},
                   "pos_embed_max_size": 32, "num_patches": 1024, "pos_embed_scaling_factor": None,
                   "input_size": None, "x_block_self_attn_layers": []}
    model = comfy.model_base.SD3(comfy.supported_models.SD3(unet_config))
    model_factory.init_weights(model.diffusion_model, seed=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    comfy.utils.save_torch_file({k: v.half() for k, v in model.diffusion_model.state_dict().items()}, str(partial))
    partial.rename(path)
    return path


@dataclass(frozen=True)
class Models:
    main: str        # checkpoint names as the server lists them
    weak: str
    sd3: str         # a diffusion model (UNETLoader)


def start_server(host, main: Path, weak: Path, sd3: Path, custom_nodes: dict[str, str] | None = None) -> ComfyServer:
    """A server of our own with the three models (and test-only custom nodes: folder name -> __init__.py source)."""
    ComfyServer.free_all_memory()  # the session's server keeps its models otherwise
    # The development nodes give the DyPE cases a tiny Flux (no stock loader builds one) and its text conditioning;
    # the stand-in TAESD decodes Flux latents.
    server = ComfyServer(host, checkpoints=[main, weak], cpu=not torch.cuda.is_available(),
                         models={"vae": [tiny_dits.save_stand_in_vae(FIXTURES)]},
                         custom_nodes={"megapixel_lab": LAB_DIR / "nodes"})
    # The weak checkpoint is also a diffusion model here: the autoguidance cases load it with UNETLoader in fp8
    # (0.9 GB instead of 3.3 GB of fp32 weights on a CPU; still an SD1.5 U-Net to the guider).
    for model in (sd3, weak):
        target = server.base_dir / "models" / "diffusion_models" / model.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(model.resolve())
    for name, source in (custom_nodes or {}).items():
        folder = server.base_dir / "custom_nodes" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text(source)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


# --- graphs ----------------------------------------------------------------------------------------------------
@dataclass
class Pipeline:
    """The ids of a text-to-image graph's parts, for cases to rewire."""

    g: Graph
    ckpt: str
    pos: str
    neg: str
    latent: str
    sampled: list = field(default_factory=list)   # link to the sampler's LATENT output


def base(models: Models, width: int = 64, height: int = 64, batch: int = 1, ckpt: str | None = None,
         rerun: int = 0) -> Pipeline:
    """Loader, prompts and an empty latent.  ``rerun`` > 0 passes the latent through that many LatentMultiply x1.0
    nodes: the same pixels, but a graph the server's cache has not seen, so a prompt compared again samples again."""
    g = Graph()
    ckpt_id = g.add("CheckpointLoaderSimple", ckpt_name=ckpt or models.main)
    pos = g.add("CLIPTextEncode", text="a lighthouse at dusk", clip=g.out(ckpt_id, 1))
    neg = g.add("CLIPTextEncode", text="blurry", clip=g.out(ckpt_id, 1))
    latent = g.add("EmptyLatentImage", width=width, height=height, batch_size=batch)
    for _ in range(rerun):
        latent = g.add("LatentMultiply", samples=g.out(latent), multiplier=1.0)
    return Pipeline(g, ckpt_id, pos, neg, latent)


def save(p: Pipeline, samples: list, prefix: str = "hostile") -> Graph:
    decoded = p.g.add("VAEDecode", samples=samples, vae=p.g.out(p.ckpt, 2))
    p.g.add("SaveImage", images=p.g.out(decoded), filename_prefix=prefix)
    return p.g


def ksampler(p: Pipeline, model: list | None = None, seed: int = 1, steps: int = 1, cfg: float = 5.0,
             denoise: float = 1.0, **changes) -> Graph:
    inputs = dict(model=model or p.g.out(p.ckpt), positive=p.g.out(p.pos), negative=p.g.out(p.neg),
                  latent_image=p.g.out(p.latent), seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                  scheduler="normal", denoise=denoise)
    inputs.update(changes)
    for name in [k for k, v in inputs.items() if v is _MISSING]:
        del inputs[name]
    sampled = p.g.add("KSampler", **inputs)
    return save(p, p.g.out(sampled))


_MISSING = object()


def custom_sampling(p: Pipeline, guider: list, seed: int = 1, steps: int = 2, model: list | None = None) -> Graph:
    """SamplerCustomAdvanced with a GUIDER (autoguidance, relay guiders, CFGGuider)."""
    g = p.g
    noise = g.add("RandomNoise", noise_seed=seed)
    sampler = g.add("KSamplerSelect", sampler_name="euler")
    sigmas = g.add("BasicScheduler", model=model or g.out(p.ckpt), scheduler="normal", steps=steps, denoise=1.0)
    sampled = g.add("SamplerCustomAdvanced", noise=g.out(noise), guider=guider, sampler=g.out(sampler),
                    sigmas=g.out(sigmas), latent_image=g.out(p.latent))
    return save(p, g.out(sampled))


def autoguidance(models: Models, weak: str = "weak", cfg: float = 3.0, w: float = 2.0, start: float = 0.0,
                 end: float = 1.0, width: int = 64, height: int = 64, batch: int = 1, seed: int = 1,
                 rerun: int = 0, steps: int = 1) -> Graph:
    """Autoguidance through SamplerCustomAdvanced; ``weak`` picks the weak model: 'weak' (the weak checkpoint),
    'same-output' (the main loader's own output), 'same-file' (a second loader of the main file), 'sd3' (another
    latent space), 'vpred' (the weak checkpoint told it predicts v)."""
    p = base(models, width, height, batch, rerun=rerun)
    g = p.g
    if weak == "same-output":
        weak_model = g.out(p.ckpt)
    elif weak == "same-file":
        weak_model = g.out(g.add("CheckpointLoaderSimple", ckpt_name=models.main))
    elif weak == "sd3":
        weak_model = g.out(g.add("UNETLoader", unet_name=models.sd3, weight_dtype="default"))
    elif weak == "vpred":
        loader = g.add("UNETLoader", unet_name=models.weak, weight_dtype=WEAK_DTYPE)
        weak_model = g.out(g.add("ModelSamplingDiscrete", model=g.out(loader), sampling="v_prediction", zsnr=False))
    else:
        weak_model = g.out(g.add("UNETLoader", unet_name=models.weak, weight_dtype=WEAK_DTYPE))
    guider = g.add("MegapixelAutoguidanceGuider", model=g.out(p.ckpt), weak_model=weak_model, positive=g.out(p.pos),
                   negative=g.out(p.neg), cfg=cfg, w=w, start_percent=start, end_percent=end)
    return custom_sampling(p, g.out(guider), seed=seed, steps=steps)


# --- expectations ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Models], Graph]
    expect: str                      # "refused" | "error" | "fails" (either of those two) | "ok" | "ends"
    match: str = ""                  # regex the error message must match (names the node and input)
    images: int = 1                  # for "ok": how many images
    size: tuple[int, int] | None = None  # for "ok": (width, height) of each
    needs: str = ""                  # a node type the case needs (skipped until the pack has it)


def _bad_link(m: Models) -> Graph:
    p = base(m)
    return ksampler(p, latent_image=p.g.out(p.ckpt, 0))  # a MODEL where a LATENT goes


def _dangling(m: Models) -> Graph:
    return ksampler(base(m), latent_image=["99", 0])


def _unknown_node(m: Models) -> Graph:
    g = ksampler(base(m))
    g.add("MegapixelNoSuchNode", model=["1", 0])
    return g


CORE_CASES = [
    Case("core-good", lambda m: ksampler(base(m)), "ok", size=(64, 64)),
    Case("core-steps-zero", lambda m: ksampler(base(m), steps=0), "refused", r"steps"),
    Case("core-steps-nan", lambda m: ksampler(base(m), steps=float("nan")), "refused", r"steps"),
    Case("core-cfg-negative", lambda m: ksampler(base(m), cfg=-1.0), "refused", r"cfg"),
    Case("core-cfg-nan", lambda m: ksampler(base(m), cfg=float("nan")), "ends"),
    Case("core-denoise-negative", lambda m: ksampler(base(m), denoise=-0.5), "refused", r"denoise"),
    Case("core-seed-negative", lambda m: ksampler(base(m), seed=-1), "refused", r"seed"),
    Case("core-width-zero", lambda m: ksampler(base(m, width=0)), "refused", r"width"),
    Case("core-width-huge", lambda m: ksampler(base(m, width=10 ** 9)), "refused", r"width"),
    Case("core-width-string", lambda m: ksampler(base(m, width="wide")), "refused", r"width"),
    Case("core-size-not-multiple-of-8", lambda m: ksampler(base(m, width=100, height=60)), "ok", size=(96, 56)),
    Case("core-aspect-1-to-8", lambda m: ksampler(base(m, width=64, height=512)), "ok", size=(64, 512)),
    Case("core-aspect-8-to-1", lambda m: ksampler(base(m, width=512, height=64)), "ok", size=(512, 64)),
    *[Case(f"core-batch-{n}", (lambda n: lambda m: ksampler(base(m, batch=n)))(n), "ok", images=n, size=(64, 64))
      for n in (1, 2, 3, 4)],
    Case("core-missing-required-input", lambda m: ksampler(base(m), latent_image=_MISSING), "refused",
         r"latent_image"),
    Case("core-wrong-link-type", _bad_link, "refused", r"latent_image|LATENT|MODEL"),
    Case("core-dangling-link", _dangling, "refused", r"99|latent_image|[Nn]ode"),
    Case("core-unknown-node-type", _unknown_node, "refused", r"MegapixelNoSuchNode"),
    Case("core-missing-checkpoint", lambda m: ksampler(base(m, ckpt="no-such.safetensors")), "refused",
         r"ckpt_name"),
    Case("core-sd3-model-on-sd15-latent", lambda m: _sd3_on_sd15_latent(m), "error", r"KSampler"),
]


def _sd3_on_sd15_latent(m: Models) -> Graph:
    """A model from another latent space sampled on a 4-channel latent: the host's own failure must be clean."""
    p = base(m)
    sd3 = p.g.add("UNETLoader", unet_name=m.sd3, weight_dtype="default")
    return ksampler(p, model=p.g.out(sd3))


AG = "MegapixelAutoguidanceGuider"
AUTOGUIDANCE_CASES = [
    Case("ag-good", lambda m: autoguidance(m), "ok", size=(64, 64), needs=AG),
    Case("ag-same-model-twice", lambda m: autoguidance(m, weak="same-output"), "error", r"Autoguidance.*weak_model",
         needs=AG),
    Case("ag-same-file-twice", lambda m: autoguidance(m, weak="same-file"), "error", r"Autoguidance.*weak_model",
         needs=AG),
    Case("ag-weak-from-another-latent-space", lambda m: autoguidance(m, weak="sd3"), "error",
         r"Autoguidance.*weak_model.*latent", needs=AG),
    Case("ag-weak-other-prediction-type", lambda m: autoguidance(m, weak="vpred"), "error",
         r"Autoguidance.*weak_model.*prediction", needs=AG),
    Case("ag-empty-interval", lambda m: autoguidance(m, start=0.5, end=0.5), "error",
         r"Autoguidance.*(start_percent|end_percent)", needs=AG),
    Case("ag-reversed-interval", lambda m: autoguidance(m, start=0.9, end=0.1), "error",
         r"Autoguidance.*(start_percent|end_percent)", needs=AG),
    Case("ag-cfg-nan", lambda m: autoguidance(m, cfg=float("nan")), "error", r"Autoguidance.*cfg", needs=AG),
    Case("ag-w-nan", lambda m: autoguidance(m, w=float("nan")), "error", r"Autoguidance.*\bw\b", needs=AG),
    Case("ag-w-negative", lambda m: autoguidance(m, w=-1.0), "refused", r"\bw\b", needs=AG),
    Case("ag-both-off", lambda m: autoguidance(m, cfg=1.0, w=1.0), "ok", size=(64, 64), needs=AG),
    Case("ag-aspect-1-to-8", lambda m: autoguidance(m, width=32, height=256), "ok", size=(32, 256), needs=AG),
    Case("ag-batch-4", lambda m: autoguidance(m, batch=4, width=100, height=60), "ok", images=4, size=(96, 56),
         needs=AG),
]

# --- HiDiffusion ------------------------------------------------------------------------------------------------
HD, RAU, MSW = "MegapixelHiDiffusion", "MegapixelHiDiffusionRAUNet", "MegapixelHiDiffusionMSWMSA"
RAU_DEFAULTS = dict(family="auto", t1_blocks="official", t1_start=0.0, t1_end=0.4, t2_blocks="official", t2_start=0.0,
                    t2_end=0.0, downsample_method="avg-pool", upsample_method="bicubic")
MSW_DEFAULTS = dict(family="auto", blocks="auto", start=0.0, end=1.0, shift_mode="cycle")


def patched(m: Models, node: str = HD, width: int = 128, height: int = 128, batch: int = 1, seed: int = 1,
            model: str = "main", times: int = 1, rerun: int = 0, **widgets) -> Graph:
    """A KSampler on a model patched by ``node`` (``times`` in a row); the one-click node targets 1024 px by default,
    so its patches are active at these tiny sizes."""
    p = base(m, width, height, batch, rerun=rerun)
    g = p.g
    link = g.out(g.add("UNETLoader", unet_name=m.sd3, weight_dtype="default")) if model == "sd3" else g.out(p.ckpt)
    defaults = {HD: dict(target_width=1024, target_height=1024), RAU: RAU_DEFAULTS, MSW: MSW_DEFAULTS}[node]
    inputs = {k: v for k, v in {**defaults, **widgets}.items() if v is not _MISSING}
    for _ in range(times):
        link = g.out(g.add(node, model=link, **inputs))
    return ksampler(p, model=link, seed=seed, steps=2)


HIDIFFUSION_CASES = [
    Case("hd-good", lambda m: patched(m), "ok", size=(128, 128), needs=HD),
    Case("hd-missing-optional-inputs", lambda m: patched(m, target_width=_MISSING, target_height=_MISSING,
                                                          width=64, height=64), "ok", size=(64, 64), needs=HD),
    Case("hd-wrong-model-family", lambda m: patched(m, model="sd3"), "fails", r"HiDiffusion.*(U-Net|SD1|family)",
         needs=HD),
    Case("hd-target-width-only", lambda m: patched(m, target_height=0), "fails", r"HiDiffusion.*target_(width|height)",
         needs=HD),
    Case("hd-everything-off", lambda m: patched(m, rau_net=False, msw_msa=False), "fails",
         r"HiDiffusion.*(RAU-Net|MSW-MSA|rau_net|msw_msa)", needs=HD),
    Case("hd-target-negative", lambda m: patched(m, target_width=-8, target_height=-8), "refused", r"target_width",
         needs=HD),
    Case("hd-same-model-patched-twice", lambda m: patched(m, times=2), "fails",
         r"HiDiffusion.*already has RAU-Net", needs=HD),  # refused when the second node runs (issue 12)
    Case("hd-size-not-multiple-of-8", lambda m: patched(m, width=100, height=60), "ok", size=(96, 56), needs=HD),
    Case("hd-aspect-1-to-8", lambda m: patched(m, width=64, height=512), "ok", size=(64, 512), needs=HD),
    Case("hd-aspect-8-to-1", lambda m: patched(m, width=512, height=64), "ok", size=(512, 64), needs=HD),
    *[Case(f"hd-batch-{n}", (lambda n: lambda m: patched(m, batch=n))(n), "ok", images=n, size=(128, 128), needs=HD)
      for n in (2, 4)],
    Case("rau-good", lambda m: patched(m, node=RAU), "ok", size=(128, 128), needs=RAU),
    Case("rau-nothing-active", lambda m: patched(m, node=RAU, t1_blocks="off", t2_blocks="off"), "fails",
         r"RAU-Net.*(phase|active)", needs=RAU),
    Case("rau-end-before-start", lambda m: patched(m, node=RAU, t1_start=0.6, t1_end=0.2), "fails",
         r"RAU-Net", needs=RAU),
    Case("rau-nan-fraction", lambda m: patched(m, node=RAU, t1_end=float("nan")), "fails", r"RAU-Net.*t1", needs=RAU),
    Case("rau-negative-fraction", lambda m: patched(m, node=RAU, t1_start=-0.5), "refused", r"t1_start", needs=RAU),
    Case("rau-wrong-model-family", lambda m: patched(m, node=RAU, model="sd3"), "fails", r"RAU-Net.*(U-Net|family)",
         needs=RAU),
    Case("rau-family-forced-wrong", lambda m: patched(m, node=RAU, family="SDXL"), "fails", r"RAU-Net.*(SDXL|sdxl)",
         needs=RAU),
    Case("msw-good", lambda m: patched(m, node=MSW), "ok", size=(128, 128), needs=MSW),
    Case("msw-malformed-blocks", lambda m: patched(m, node=MSW, blocks="input 1, banana"), "fails",
         r"MSW-MSA.*blocks", needs=MSW),
    Case("msw-block-without-attention", lambda m: patched(m, node=MSW, blocks="input 3"), "fails",
         r"MSW-MSA.*input 3", needs=MSW),
    Case("msw-end-before-start", lambda m: patched(m, node=MSW, start=0.8, end=0.2), "fails", r"MSW-MSA.*(start|end)",
         needs=MSW),
    Case("msw-size-not-multiple-of-8", lambda m: patched(m, node=MSW, width=100, height=60), "ok", size=(96, 56),
         needs=MSW),
    # A value outside a dropdown's list (an edited or outdated workflow): newer hosts refuse it at /prompt themselves,
    # older ones leave it to the pack, whose error must name the input.  Either refusal is right.
    Case("msw-shift-mode-not-in-list", lambda m: patched(m, node=MSW, shift_mode="sideways"), "fails",
         r"shift.mode", needs=MSW),
]

# --- relay (MegaFusion) --------------------------------------------------------------------------------------------
RELAY, RELAY_CUSTOM = "MegapixelRelayKSampler", "MegapixelRelaySamplerCustom"


def relay(m: Models, stages: str = "1, 2", steps: int = 4, width: int = 64, height: int = 64, batch: int = 1,
          seed: int = 1, model: str = "main", rerun: int = 0, **widgets) -> Graph:
    p = base(m, width, height, batch, rerun=rerun)
    g = p.g
    link = g.out(g.add("UNETLoader", unet_name=m.sd3, weight_dtype="default")) if model == "sd3" else g.out(p.ckpt)
    if model == "hidiffusion":
        link = g.out(g.add(HD, model=link, target_width=1024, target_height=1024))
    inputs = dict(model=link, seed=seed, steps=steps, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=g.out(p.pos), negative=g.out(p.neg), latent_image=g.out(p.latent), denoise=1.0,
                  stages=stages, step_split="", upscale_method="bicubic", noise_rescheduling=False,
                  dilated_middle_block=False)
    inputs.update(widgets)
    if inputs.pop("with_vae", False):
        inputs["vae"] = g.out(p.ckpt, 2)
    sampled = g.add(RELAY, **inputs)
    return save(p, g.out(sampled))


def relay_autoguidance(m: Models, stages: str = "1, 2", seed: int = 1) -> Graph:
    """The custom relay sampler with the autoguidance guider: the two compose."""
    p = base(m)
    g = p.g
    weak = g.add("UNETLoader", unet_name=m.weak, weight_dtype=WEAK_DTYPE)
    guider = g.add(AG, model=g.out(p.ckpt), weak_model=g.out(weak), positive=g.out(p.pos), negative=g.out(p.neg),
                   cfg=3.0, w=2.0, start_percent=0.0, end_percent=1.0)
    noise = g.add("RandomNoise", noise_seed=seed)
    sampler = g.add("KSamplerSelect", sampler_name="euler")
    sigmas = g.add("BasicScheduler", model=g.out(p.ckpt), scheduler="normal", steps=4, denoise=1.0)
    sampled = g.add(RELAY_CUSTOM, noise=g.out(noise), guider=g.out(guider), sampler=g.out(sampler),
                    sigmas=g.out(sigmas), latent_image=g.out(p.latent), stages=stages, step_split="",
                    upscale_method="bicubic", noise_rescheduling=False, dilated_middle_block=False)
    return save(p, g.out(sampled))


RELAY_CASES = [
    Case("relay-good", lambda m: relay(m), "ok", size=(128, 128), needs=RELAY),
    Case("relay-pixel-space-upscale", lambda m: relay(m, with_vae=True), "ok", size=(128, 128), needs=RELAY),
    Case("relay-all-options", lambda m: relay(m, noise_rescheduling=True, dilated_middle_block=True), "ok",
         size=(128, 128), needs=RELAY),
    *[Case(f"relay-stages-{name}", (lambda spec: lambda m: relay(m, stages=spec))(spec), "refused", r"stages",
           needs=RELAY) for name, spec in [("empty", ""), ("garbage", "banana"), ("decreasing", "1, 0.5"),
                                           ("nan", "1, nan"), ("inf", "1, inf"), ("negative", "1, -2"),
                                           ("not-multiple-of-8", "64x64, 100x100"),
                                           ("mixed", "1, 128x128"), ("zero", "0, 1")]],
    Case("relay-first-stage-is-not-the-latent", lambda m: relay(m, stages="128x128, 256x256"), "fails",
         r"first stage", needs=RELAY),
    Case("relay-upscale-method-not-in-list", lambda m: relay(m, upscale_method="sideways"), "fails",
         r"upscale_method", needs=RELAY),
    Case("relay-split-wrong-count", lambda m: relay(m, stages="1, 1.5, 2", steps=6, step_split="80/20"), "refused",
         r"step_split", needs=RELAY),
    Case("relay-split-negative", lambda m: relay(m, step_split="-1, 2"), "refused", r"step_split", needs=RELAY),
    Case("relay-too-few-steps", lambda m: relay(m, stages="1, 1.5, 2", steps=2), "refused", r"steps", needs=RELAY),
    Case("relay-denoise-zero", lambda m: relay(m, denoise=0.0), "fails", r"Relay.*(denoise|steps)", needs=RELAY),
    Case("relay-wrong-model-family", lambda m: relay(m, model="sd3"), "fails", r"Relay|KSampler", needs=RELAY),
    Case("relay-stages-double-comma-is-read-as-one", lambda m: relay(m, stages="1,,2"), "ok", size=(128, 128),
         needs=RELAY),
    Case("relay-one-stage", lambda m: relay(m, stages="1", steps=2), "ok", size=(64, 64), needs=RELAY),
    Case("relay-size-not-multiple-of-8", lambda m: relay(m, width=100, height=60), "ok", size=(192, 112),
         needs=RELAY),
    Case("relay-aspect-1-to-8", lambda m: relay(m, width=32, height=256), "ok", size=(64, 512), needs=RELAY),
    *[Case(f"relay-batch-{n}", (lambda n: lambda m: relay(m, batch=n))(n), "ok", images=n, size=(128, 128),
           needs=RELAY) for n in (2, 4)],
    Case("relay-with-hidiffusion-model", lambda m: relay(m, model="hidiffusion"), "ok", size=(128, 128),
         needs=RELAY + "+" + HD),
    Case("relay-custom-with-autoguidance", lambda m: relay_autoguidance(m), "ok", size=(128, 128),
         needs=RELAY_CUSTOM + "+" + AG),
]

DYPE = "MegapixelDyPE"
DYPE_ADVANCED = "MegapixelDyPEAdvanced"


def dype(m: Models, model: str = "flux", seed: int = 1, width: int = 256, height: int = 256, steps: int = 2,
         node: str = DYPE, times: int = 1, rerun: int = 0, **settings) -> Graph:
    """A tiny Flux (development node) -> DyPE -> BasicGuider -> SamplerCustomAdvanced -> the stand-in VAE.  ``model``:
    'flux', 'sd15' (the main checkpoint: a U-Net, no RoPE) or 'sd3' (a DiT with learned positions, no RoPE)."""
    g = Graph()
    if model == "flux":
        loaded = g.out(g.add("MegapixelTinyDiT", family=tiny_dits.FLUX_DEV, seed=0))
    elif model == "sd3":
        loaded = g.out(g.add("UNETLoader", unet_name=m.sd3, weight_dtype="default"))
    else:
        loaded = g.out(g.add("CheckpointLoaderSimple", ckpt_name=m.main))
    inputs = dict(method="yarn", dynamic=True, native_size=128)
    if node == DYPE_ADVANCED:
        inputs.update(lambda_s=2.0, lambda_t=2.0, beta_fast=1.25, beta_slow=0.75, gamma_fast=16.0, gamma_slow=2.0,
                      attention_scale=True, axis_scaling="per axis")
    inputs.update(settings)
    for name in [k for k, v in inputs.items() if v is _MISSING]:
        del inputs[name]
    for _ in range(times):
        loaded = g.out(g.add(node, model=loaded, **inputs))
    cond = g.add("MegapixelTinyDiTTextEncode", family=tiny_dits.FLUX_DEV, text="a lighthouse at dusk")
    guider = g.add("BasicGuider", model=loaded, conditioning=g.out(cond))
    latent = g.add("EmptySD3LatentImage", width=width, height=height, batch_size=1)
    for _ in range(rerun):
        latent = g.add("LatentMultiply", samples=g.out(latent), multiplier=1.0)
    sigmas = g.add("BasicScheduler", model=loaded, scheduler="simple", steps=steps, denoise=1.0)
    sampled = g.add("SamplerCustomAdvanced", noise=g.out(g.add("RandomNoise", noise_seed=seed)), guider=g.out(guider),
                    sampler=g.out(g.add("KSamplerSelect", sampler_name="euler")), sigmas=g.out(sigmas),
                    latent_image=g.out(latent))
    vae = g.add("VAELoader", vae_name=tiny_dits.STAND_IN_VAE)
    decoded = g.add("VAEDecode", samples=g.out(sampled), vae=g.out(vae))
    g.add("SaveImage", images=g.out(decoded), filename_prefix="hostile_dype")
    return g


DYPE_CASES = [
    Case("dype-good", lambda m: dype(m), "ok", size=(256, 256), needs=DYPE),
    Case("dype-advanced-good", lambda m: dype(m, node=DYPE_ADVANCED, method="ntk"), "ok", size=(256, 256),
         needs=DYPE_ADVANCED),
    Case("dype-at-native-size", lambda m: dype(m, width=128, height=128), "ok", size=(128, 128), needs=DYPE),
    Case("dype-native-size-auto", lambda m: dype(m, native_size=_MISSING), "ok", size=(256, 256), needs=DYPE),
    Case("dype-aspect-1-to-4", lambda m: dype(m, width=128, height=512), "ok", size=(128, 512), needs=DYPE),
    Case("dype-on-a-u-net", lambda m: dype(m, model="sd15"), "fails", r"DyPE.*(SD1\.5|RoPE)", needs=DYPE),
    Case("dype-on-a-dit-without-rope", lambda m: dype(m, model="sd3"), "fails", r"DyPE.*(SD3|RoPE)", needs=DYPE),
    Case("dype-applied-twice", lambda m: dype(m, times=2), "fails", r"DyPE.*(already|twice)", needs=DYPE),
    Case("dype-method-not-in-list", lambda m: dype(m, method="sideways"), "fails", r"method", needs=DYPE),
    Case("dype-native-size-negative", lambda m: dype(m, native_size=-64), "refused", r"native_size", needs=DYPE),
    Case("dype-native-size-not-a-resolution", lambda m: dype(m, native_size=12), "fails", r"DyPE.*native_size",
         needs=DYPE),
    Case("dype-lambda-nan", lambda m: dype(m, node=DYPE_ADVANCED, lambda_s=float("nan")), "fails", r"lambda_s",
         needs=DYPE_ADVANCED),
]

CASES = CORE_CASES + AUTOGUIDANCE_CASES + HIDIFFUSION_CASES + RELAY_CASES + DYPE_CASES

# Good prompts, one per capability that exists.  A server of ours runs them first thing after it starts (what a
# fresh server gives), and again after the bad prompts with ``rerun`` = 1, 2, ... (the same pixels from a graph the
# cache has not seen, so everything samples again on the models the bad prompts went through).
GOOD = [
    ("core", lambda m, rerun: ksampler(base(m, width=64, height=96, rerun=rerun), seed=777, steps=2), ""),
    ("autoguidance", lambda m, rerun: autoguidance(m, width=96, height=64, seed=778, rerun=rerun, steps=2), AG),
    ("hidiffusion", lambda m, rerun: patched(m, seed=779, rerun=rerun), HD),
    ("relay", lambda m, rerun: relay(m, seed=780, width=64, height=96, rerun=rerun), RELAY),
    ("dype", lambda m, rerun: dype(m, seed=781, rerun=rerun), DYPE),
]


# --- fixtures and checks ---------------------------------------------------------------------------------------
# One server for this suite and the soak suite (tests/test_soak.py): conftest's ``hostile_server`` starts it with the
# three models, the soak probe and the development nodes, and takes the fresh-server reference before anything runs.
@pytest.fixture(scope="module")
def model_files(hostile_server) -> tuple[Path, Path, Path]:
    return hostile_server.model_files


@pytest.fixture(scope="module")
def models(hostile_server) -> Models:
    return hostile_server.models


@pytest.fixture(scope="module")
def server(hostile_server):
    return hostile_server.server


@pytest.fixture(scope="module")
def node_types(hostile_server) -> set[str]:
    return hostile_server.node_types


@pytest.fixture(scope="module")
def reference(hostile_server) -> "FreshReference":
    """Taken before any case runs (the server's first sampling)."""
    return hostile_server.reference


def pixel_digest(png: bytes) -> str:
    """A hash of the decoded pixels (not of the file, whose metadata may differ)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    return hashlib.sha256(f"{image.mode}{image.size}".encode() + image.tobytes()).hexdigest()


def still_serving(server: ComfyServer, timeout: float = 600) -> None:
    """The server answers and its queue drains (a prompt a failed case left queued must still finish)."""
    stats = server.get("/system_stats", timeout=120)
    assert "system" in stats, stats
    deadline = time.monotonic() + timeout
    while True:
        queue = server.get("/queue", timeout=120)
        if not queue.get("queue_running") and not queue.get("queue_pending"):
            return
        assert time.monotonic() < deadline, f"the queue did not drain in {timeout}s: {queue}"
        time.sleep(0.5)


def run_case(server: ComfyServer, case: Case, models: Models) -> str:
    """Run one case and check its expectation; returns a one-line account for the log."""
    graph = case.build(models)
    if case.expect == "fails":  # refused by validation, or an execution error: either way naming the input
        try:
            prompt_id = server.queue(graph)
        except ServerError as refused:
            message = str(refused)
            assert re.search(case.match, message, re.S), f"{case.name}: the refusal does not name {case.match!r}:\n{message}"
            return f"refused: {message[:200]}"
        entry = server.wait(prompt_id, timeout=600)
        error = execution_error(entry)
        assert entry["status"].get("status_str") == "error", f"{case.name}: expected a failure, it ran"
        assert re.search(case.match, error, re.S), f"{case.name}: the error does not name {case.match!r}:\n{error}"
        return f"error: {error[:200]}"
    if case.expect == "refused":
        with pytest.raises(ServerError) as refused:
            server.queue(graph)
        message = str(refused.value)
        assert "node_errors" in message or "error" in message, message
        assert re.search(case.match, message, re.S), f"{case.name}: the refusal does not name {case.match!r}:\n{message}"
        return f"refused: {message[:200]}"
    prompt_id = server.queue(graph)
    entry = server.wait(prompt_id, timeout=600)
    status = entry["status"].get("status_str")
    error = execution_error(entry)
    if case.expect == "ends":
        assert status in ("success", "error"), entry["status"]
        return f"ended with {status}: {error[:200]}"
    if case.expect == "error":
        assert status == "error", f"{case.name}: expected an error, got {status}"
        assert re.search(case.match, error, re.S), f"{case.name}: the error does not name {case.match!r}:\n{error}"
        assert "Traceback" not in error.split(":", 2)[-1][:20]
        return f"error: {error[:200]}"
    assert status == "success", f"{case.name}: {error or entry['status']}"
    images = server.images(entry)
    assert len(images) == case.images, f"{case.name}: {len(images)} images, expected {case.images}"
    if case.size:
        from PIL import Image

        sizes = {Image.open(io.BytesIO(data)).size for _, data in images}
        assert sizes == {case.size}, f"{case.name}: image sizes {sizes}, expected {case.size}"
    return f"ok: {len(images)} image(s)"


def on_every_host(case: Case) -> bool:
    """Refusals and errors (what a host update changes: its own validation, what reaches the pack) and one good case
    per capability run on every host; the other good inputs (sizes, batches, aspect ratios: the pack's own sampling
    code, the same on any host) run once, on the pinned host."""
    return case.expect != "ok" or case.name.endswith("-good")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, server, models, node_types, reference, host):
    missing = [need for need in case.needs.split("+") if need and need not in node_types]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in the pack yet")
    if host.version not in ("", HOST_VERSION) and not on_every_host(case):
        pytest.skip(f"a good input: run once, on the pinned ComfyUI {HOST_VERSION}")
    try:
        print(f"{case.name}: {run_case(server, case, models)}")
    finally:
        still_serving(server)


def good_digests(server: ComfyServer, models: Models, node_types: set[str], rerun: int = 0) -> dict[str, list[str]]:
    """Pixel digests of every GOOD prompt the pack can run (``rerun``: see GOOD)."""
    digests = {}
    for name, build, needs in GOOD:
        if needs and needs not in node_types:
            continue
        entry = server.run(build(models, rerun), timeout=600)
        digests[name] = [pixel_digest(data) for _, data in server.images(entry)]
    return digests


class FreshReference:
    """The GOOD prompts' pixels on a server that has run nothing else yet, and later comparisons against them."""

    def __init__(self, server: ComfyServer, models: Models, node_types: set[str]):
        self.server, self.models, self.node_types = server, models, node_types
        self.digests = good_digests(server, models, node_types)
        self._reruns = 0

    def assert_unchanged(self, after: str) -> None:
        self._reruns += 1
        now = good_digests(self.server, self.models, self.node_types, rerun=self._reruns)
        assert now == self.digests, json.dumps({after: now, "fresh server": self.digests}, indent=1)


def test_rerun_graphs_sample_again(server, models, reference):
    """The comparison below can fail: a rerun graph samples again (it is not answered from the server's cache)."""
    server.run(ksampler(base(models, width=64, height=96), seed=777, steps=1))  # the loader in the cache (the
    # server keeps the last prompt's outputs; the case before may have loaded another model)
    graph = ksampler(base(models, width=64, height=96, rerun=9), seed=777, steps=2)
    entry = server.run(graph)
    cached = cached_nodes(entry)
    sampler = next(k for k, v in graph.items() if v["class_type"] == "KSampler")
    assert "1" in cached, f"the loader should come from the cache: {cached}"
    assert sampler not in cached, f"the KSampler came from the cache: {cached}"


def test_good_prompts_afterwards_equal_a_fresh_server(reference):
    """Run last: whatever the cases above left in the server, good prompts give a fresh server's exact pixels."""
    reference.assert_unchanged("after hostile cases")
