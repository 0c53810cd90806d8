"""Write the shipped workflows that are kept as code (``workflows/*.json``), so their graphs stay consistent:

    python3 tools/generate/workflows.py

The older U-Net workflows are hand-made; these are written here: the DiT ones share the Flux.1 front end (diffusion
model, dual text encoders, Flux guidance, the Flux VAE), which is long to wire by hand, and the High-Res Sampler
ones share one checkpoint front end.  ``tests/test_dit_workflows.py`` checks the files are what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/

from harness.workflow_ui import Workflow  # noqa: E402

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
FLUX_RELAY = "relay-autoguidance-flux1-1024-2048"
FLUX_DYPE = "dype-relay-flux1-1024-2048-4096"
PROMPT = "a red fox sitting in a snowy birch forest at sunrise, detailed wildlife photograph"
PROMPT_UNET = "a lighthouse on a rocky coast at dusk, detailed photograph, sharp focus"
NEGATIVE = "blurry, low quality, duplicate, deformed"

MODEL, CLIP, VAE, COND, LATENT = ("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("CONDITIONING",) * 2, \
    ("LATENT", "LATENT")


def _flux_front(wf: Workflow) -> dict:
    """Flux.1 dev's loaders, prompt and Flux guidance: the nodes every Flux workflow here starts from."""
    n = {}
    n["model"] = wf.node("UNETLoader", ["flux1-dev.safetensors", "default"], (20, 40), (320, 82), outputs=[MODEL],
                         title="Load Diffusion Model (main)")
    n["clip"] = wf.node("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"],
                        (20, 280), (320, 130), outputs=[CLIP])
    n["vae"] = wf.node("VAELoader", ["ae.safetensors"], (20, 450), (320, 60), outputs=[VAE])
    n["text"] = wf.node("CLIPTextEncode", [PROMPT], (380, 40), (400, 160), inputs=[("clip", "CLIP")], outputs=[COND])
    n["guidance"] = wf.node("FluxGuidance", [3.5], (380, 240), (320, 60), inputs=[("conditioning", "CONDITIONING")],
                            outputs=[COND])
    wf.link(n["clip"], "CLIP", n["text"], "clip")
    wf.link(n["text"], "CONDITIONING", n["guidance"], "conditioning")
    return n


def _relay_back(wf: Workflow, front: dict, guider, schedule_model, stages: str, prefix: str, tiled: bool) -> dict:
    """Noise, sampler, one schedule, the empty latent, the relay sampler, decode and save."""
    n = {}
    n["noise"] = wf.node("RandomNoise", [42, "fixed"], (820, 250), (320, 82), outputs=[("NOISE", "NOISE")])
    n["sampler"] = wf.node("KSamplerSelect", ["euler"], (820, 370), (320, 60), outputs=[("SAMPLER", "SAMPLER")])
    n["schedule"] = wf.node("BasicScheduler", ["simple", 28, 1.0], (820, 470), (320, 110),
                            inputs=[("model", "MODEL")], outputs=[("SIGMAS", "SIGMAS")])
    n["latent"] = wf.node("EmptySD3LatentImage", [1024, 1024, 1], (820, 620), (320, 110), outputs=[LATENT])
    n["relay"] = wf.node("MegapixelRelaySamplerCustom", [stages, "", "bicubic", False, False], (1200, 40), (340, 300),
                         inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                                 ("sigmas", "SIGMAS"), ("latent_image", "LATENT"), ("vae", "VAE")],
                         outputs=[("output", "LATENT"), ("denoised_output", "LATENT")])
    if tiled:  # a 4096 px decode in one piece needs tens of GB
        n["decode"] = wf.node("VAEDecodeTiled", [512, 64, 64, 8], (1580, 40), (320, 150),
                              inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=[("IMAGE", "IMAGE")])
    else:
        n["decode"] = wf.node("VAEDecode", [], (1580, 40), (210, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                              outputs=[("IMAGE", "IMAGE")])
    n["save"] = wf.node("SaveImage", [prefix], (1580, 220), (520, 560), inputs=[("images", "IMAGE")])
    wf.link(schedule_model, "MODEL", n["schedule"], "model")
    wf.link(n["noise"], "NOISE", n["relay"], "noise")
    wf.link(guider, "GUIDER", n["relay"], "guider")
    wf.link(n["sampler"], "SAMPLER", n["relay"], "sampler")
    wf.link(n["schedule"], "SIGMAS", n["relay"], "sigmas")
    wf.link(n["latent"], "LATENT", n["relay"], "latent_image")
    wf.link(n["relay"], "output", n["decode"], "samples")
    wf.link(front["vae"], "VAE", n["decode"], "vae")
    wf.link(n["decode"], "IMAGE", n["save"], "images")
    return n


SHIFT_NOTE = ("**Shift:** Flux's shift depends on the image size; the relay reads the model's shift as the first "
              "stage's (Flux.1 dev's default, 1.15, is the 1024 px one) and gives every later stage its own size's "
              "shift. If you add ModelSamplingFlux, set its width/height to the FIRST stage's size.")


def flux_relay_autoguidance() -> Workflow:
    """Flux.1 dev, 1024 -> 2048 px through the relay sampler, steered by autoguidance (a smaller Flux as the weak
    model), with Flux's own guidance and cfg 1."""
    wf = Workflow()
    front = _flux_front(wf)
    weak = wf.node("UNETLoader", ["flux.1-lite-8B.safetensors", "default"], (20, 160), (320, 82), outputs=[MODEL],
                   title="Load Diffusion Model (weak: a smaller Flux.1)")
    zero = wf.node("ConditioningZeroOut", [], (380, 340), (320, 30), inputs=[("conditioning", "CONDITIONING")],
                   outputs=[COND])
    guider = wf.node("MegapixelAutoguidanceGuider", [1.0, 2.0, 0.0, 1.0], (820, 40), (340, 170),
                     inputs=[("model", "MODEL"), ("weak_model", "MODEL"), ("positive", "CONDITIONING"),
                             ("negative", "CONDITIONING")], outputs=[("GUIDER", "GUIDER")])
    wf.link(front["model"], "MODEL", guider, "model")
    wf.link(weak, "MODEL", guider, "weak_model")
    wf.link(front["text"], "CONDITIONING", zero, "conditioning")
    wf.link(front["guidance"], "CONDITIONING", guider, "positive")
    wf.link(zero, "CONDITIONING", guider, "negative")
    _relay_back(wf, front, guider, front["model"], "1024x1024, 2048x2048", "megapixel_relay_flux", tiled=False)
    wf.node("MarkdownNote", [
        "**MegaFusion relay + autoguidance, Flux.1 dev 1024 -> 2048 px.** BasicScheduler makes ONE 28-step "
        "schedule; the relay samples half of it at 1024 px, then upscales the clean estimate and finishes at 2048 px "
        "(empty step_split: 14/14).\n\n" + SHIFT_NOTE + " On both models, if you add it.\n\n**Autoguidance:** the "
        "second loader holds the WEAK model, a smaller or earlier Flux.1 (e.g. an 8B distillation). cfg stays 1 "
        "(Flux dev is guidance-distilled: FluxGuidance does that job); w = 2 steers away from the weak model's "
        "errors. Set w = 1 to turn autoguidance off (the weak model is then not even loaded)."],
        (20, 560), (760, 260))
    return wf


def flux_dype_relay() -> Workflow:
    """Flux.1 dev with DyPE, 1024 -> 2048 -> 4096 px through the relay sampler."""
    wf = Workflow()
    front = _flux_front(wf)
    dype = wf.node("MegapixelDyPE", ["yarn", True, 0], (380, 340), (320, 110), inputs=[("model", "MODEL")],
                   outputs=[MODEL])
    guider = wf.node("BasicGuider", [], (820, 40), (320, 60),
                     inputs=[("model", "MODEL"), ("conditioning", "CONDITIONING")], outputs=[("GUIDER", "GUIDER")])
    wf.link(front["model"], "MODEL", dype, "model")
    wf.link(dype, "MODEL", guider, "model")
    wf.link(front["guidance"], "CONDITIONING", guider, "conditioning")
    _relay_back(wf, front, guider, dype, "1024x1024, 2048x2048, 4096x4096", "megapixel_dype_flux", tiled=True)
    wf.node("MarkdownNote", [
        "**DyPE + MegaFusion relay, Flux.1 dev 1024 -> 2048 -> 4096 px.** DyPE re-scales Flux's rotary position "
        "embeddings above its native 1024 px (YaRN, following the denoising progress: strong while the layout forms, "
        "native positions for the fine detail); at 1024 px it does nothing. The relay samples 22 of the 28 steps at "
        "1024 px and 3 at each larger size.\n\n" + SHIFT_NOTE + "\n\nThe 4096 px decode is tiled."],
        (20, 560), (760, 260))
    return wf


HIGHRES_NOTE = (
    "**Megapixel High-Res Sampler, {model} {native} -> {target} px.** Use it where you would use KSampler, with a "
    "latent at the model's native size: it samples there, then relays the clean estimate up to {scale}x in stages "
    "that double the side (half the steps at {native} px, half above). On the pack's quality lab it duplicates the "
    "subject no more than the model does at its native size, where a plain KSampler at {target} px repeats it "
    "(docs/megapixel.md has the measurements against hires fix and Deep Shrink).\n\n**Weak model (optional):** "
    "connect a second Load Checkpoint with an earlier or smaller {model} checkpoint to weak_model for autoguidance at "
    "the native stage.\n\n**Control:** the Relay KSampler, Relay Sampler (custom) and Autoguidance Guider nodes "
    "expose every setting.")


def highres(model: str, ckpt: str, native: int, scale: int, steps: int, cfg: float, sampler: str,
            scheduler: str, prefix: str) -> Workflow:
    """Checkpoint, prompts, an empty latent at the native size, the High-Res Sampler, decode, save."""
    wf = Workflow()
    loader = wf.node("CheckpointLoaderSimple", [ckpt], (20, 40), (320, 100), outputs=[MODEL, CLIP, VAE])
    pos = wf.node("CLIPTextEncode", [PROMPT_UNET], (380, 40), (400, 160), inputs=[("clip", "CLIP")], outputs=[COND])
    neg = wf.node("CLIPTextEncode", [NEGATIVE], (380, 240), (400, 120), inputs=[("clip", "CLIP")], outputs=[COND])
    empty = wf.node("EmptyLatentImage", [native, native, 1], (380, 400), (320, 110), outputs=[LATENT])
    sampler_node = wf.node("MegapixelHighRes", [float(scale), 0, 0, 42, "fixed", steps, cfg, sampler, scheduler, 1.0],
                           (820, 40), (340, 360),
                           inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                   ("latent_image", "LATENT"), ("weak_model", "MODEL")],
                           outputs=[LATENT])
    decode = wf.node("VAEDecode", [], (1200, 40), (210, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                     outputs=[("IMAGE", "IMAGE")])
    save = wf.node("SaveImage", [prefix], (1200, 140), (520, 560), inputs=[("images", "IMAGE")])
    wf.link(loader, "CLIP", pos, "clip")
    wf.link(loader, "CLIP", neg, "clip")
    wf.link(loader, "MODEL", sampler_node, "model")
    wf.link(pos, "CONDITIONING", sampler_node, "positive")
    wf.link(neg, "CONDITIONING", sampler_node, "negative")
    wf.link(empty, "LATENT", sampler_node, "latent_image")
    wf.link(sampler_node, "LATENT", decode, "samples")
    wf.link(loader, "VAE", decode, "vae")
    wf.link(decode, "IMAGE", save, "images")
    wf.node("MarkdownNote", [HIGHRES_NOTE.format(model=model, native=native, target=native * scale, scale=scale)],
            (20, 560), (760, 260))
    return wf


HIGHRES_SD15 = "megapixel-highres-sd15-1024"
HIGHRES_SDXL = "megapixel-highres-sdxl-2048"
BUILDERS = {FLUX_RELAY: flux_relay_autoguidance, FLUX_DYPE: flux_dype_relay,
            HIGHRES_SD15: lambda: highres("SD1.5", "v1-5-pruned-emaonly.safetensors", 512, 2, 24, 7.0, "dpmpp_2m",
                                          "karras", "megapixel_highres_sd15"),
            HIGHRES_SDXL: lambda: highres("SDXL", "sd_xl_base_1.0.safetensors", 1024, 2, 30, 6.0, "dpmpp_2m",
                                          "karras", "megapixel_highres_sdxl")}


def main() -> None:
    for name, build in BUILDERS.items():
        build().save(WORKFLOWS / f"{name}.json")
        print(f"wrote workflows/{name}.json")


if __name__ == "__main__":
    main()
