"""Write the shipped DiT workflows (``workflows/*.json``) from code, so their graphs stay consistent:

    python3 tools/make_workflows.py

The U-Net workflows are hand-made; these share the Flux.1 front end (diffusion model, dual text encoders, Flux
guidance, the Flux VAE), which is long to wire by hand.  ``tests/test_dit_workflows.py`` checks the files are what
this script writes.
"""
from __future__ import annotations

from pathlib import Path

from workflow_ui import Workflow

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
FLUX_RELAY = "relay-autoguidance-flux1-1024-2048"
PROMPT = "a red fox sitting in a snowy birch forest at sunrise, detailed wildlife photograph"

MODEL, CLIP, VAE, COND, LATENT = ("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE"), ("CONDITIONING",) * 2, \
    ("LATENT", "LATENT")


def flux_relay_autoguidance() -> Workflow:
    """Flux.1 dev, 1024 -> 2048 px through the relay sampler, steered by autoguidance (a smaller Flux as the weak
    model), with Flux's own guidance and cfg 1."""
    wf = Workflow()
    main = wf.node("UNETLoader", ["flux1-dev.safetensors", "default"], (20, 40), (320, 82), outputs=[MODEL],
                   title="Load Diffusion Model (main)")
    weak = wf.node("UNETLoader", ["flux.1-lite-8B.safetensors", "default"], (20, 160), (320, 82), outputs=[MODEL],
                   title="Load Diffusion Model (weak: a smaller Flux.1)")
    clip = wf.node("DualCLIPLoader", ["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"], (20, 280),
                   (320, 130), outputs=[CLIP])
    vae = wf.node("VAELoader", ["ae.safetensors"], (20, 450), (320, 60), outputs=[VAE])
    text = wf.node("CLIPTextEncode", [PROMPT], (380, 40), (400, 160), inputs=[("clip", "CLIP")], outputs=[COND])
    guidance = wf.node("FluxGuidance", [3.5], (380, 240), (320, 60), inputs=[("conditioning", "CONDITIONING")],
                       outputs=[COND])
    zero = wf.node("ConditioningZeroOut", [], (380, 340), (320, 30), inputs=[("conditioning", "CONDITIONING")],
                   outputs=[COND])
    guider = wf.node("MegapixelAutoguidanceGuider", [1.0, 2.0, 0.0, 1.0], (820, 40), (340, 170),
                     inputs=[("model", "MODEL"), ("weak_model", "MODEL"), ("positive", "CONDITIONING"),
                             ("negative", "CONDITIONING")], outputs=[("GUIDER", "GUIDER")])
    noise = wf.node("RandomNoise", [42, "fixed"], (820, 250), (320, 82), outputs=[("NOISE", "NOISE")])
    sampler = wf.node("KSamplerSelect", ["euler"], (820, 370), (320, 60), outputs=[("SAMPLER", "SAMPLER")])
    sched = wf.node("BasicScheduler", ["simple", 28, 1.0], (820, 470), (320, 110), inputs=[("model", "MODEL")],
                    outputs=[("SIGMAS", "SIGMAS")])
    latent = wf.node("EmptySD3LatentImage", [1024, 1024, 1], (820, 620), (320, 110), outputs=[LATENT])
    relay = wf.node("MegapixelRelaySamplerCustom", ["1024x1024, 2048x2048", "", "bicubic", False, False],
                    (1200, 40), (340, 300),
                    inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                            ("latent_image", "LATENT"), ("vae", "VAE")],
                    outputs=[("output", "LATENT"), ("denoised_output", "LATENT")])
    decode = wf.node("VAEDecode", [], (1580, 40), (210, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                     outputs=[("IMAGE", "IMAGE")])
    save = wf.node("SaveImage", ["megapixel_relay_flux"], (1580, 140), (520, 560), inputs=[("images", "IMAGE")])
    wf.node("MarkdownNote", [
        "**MegaFusion relay + autoguidance, Flux.1 dev 1024 -> 2048 px.** BasicScheduler makes ONE 28-step "
        "schedule; the relay samples 80% of it at 1024 px, then upscales the clean estimate and finishes at 2048 px "
        "(empty step_split = 80/20).\n\n**Shift:** Flux's shift depends on the image size; the relay reads the model's "
        "shift as the first stage's (Flux.1 dev's default, 1.15, is the 1024 px one) and gives every later stage its "
        "own size's shift. If you add ModelSamplingFlux, set its width/height to the FIRST stage's size, on both "
        "models.\n\n**Autoguidance:** the second loader holds the WEAK model, a smaller or earlier Flux.1 (e.g. an "
        "8B distillation). cfg stays 1 (Flux dev is guidance-distilled: FluxGuidance does that job); w = 2 steers "
        "away from the weak model's errors. Set w = 1 to turn autoguidance off (the weak model is then not even "
        "loaded)."], (20, 560), (760, 260))
    wf.link(main, "MODEL", guider, "model")
    wf.link(weak, "MODEL", guider, "weak_model")
    wf.link(main, "MODEL", sched, "model")
    wf.link(clip, "CLIP", text, "clip")
    wf.link(text, "CONDITIONING", guidance, "conditioning")
    wf.link(text, "CONDITIONING", zero, "conditioning")
    wf.link(guidance, "CONDITIONING", guider, "positive")
    wf.link(zero, "CONDITIONING", guider, "negative")
    wf.link(noise, "NOISE", relay, "noise")
    wf.link(guider, "GUIDER", relay, "guider")
    wf.link(sampler, "SAMPLER", relay, "sampler")
    wf.link(sched, "SIGMAS", relay, "sigmas")
    wf.link(latent, "LATENT", relay, "latent_image")
    wf.link(relay, "output", decode, "samples")
    wf.link(vae, "VAE", decode, "vae")
    wf.link(decode, "IMAGE", save, "images")
    return wf


BUILDERS = {FLUX_RELAY: flux_relay_autoguidance}


def main() -> None:
    for name, build in BUILDERS.items():
        build().save(WORKFLOWS / f"{name}.json")
        print(f"wrote workflows/{name}.json")


if __name__ == "__main__":
    main()
