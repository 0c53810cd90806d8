"""Megapixel High-Res Sampler: the lab's winning recipe as one node, a thin layer over :mod:`samplers.highres`."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..samplers.highres import NODE_NAME, highres_sample
from ..samplers.relay_stages import MAX_FACTOR


class MegapixelHighRes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelHighRes",
            display_name=NODE_NAME,
            category="megapixel/sampling",
            description=(
                "Drop-in for KSampler that draws at a larger size than the model was trained for, without duplicated "
                "subjects: it samples at the input latent's size, then relays the clean estimate up to the target in "
                "stages that double the side (MegaFusion), half the steps at the native size and half over the "
                "larger stages. Connect a weaker checkpoint of the same family to weak_model to add autoguidance "
                "(w = 2) at the native-size stage. Give it a latent at the model's native size (SD1.5 512 px, SDXL 1024 px). "
                "For full control use the Relay KSampler / Relay Sampler (custom) and the Autoguidance Guider."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising, at every stage."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What the image should not show (used when cfg > 1)."),
                io.Latent.Input("latent_image", tooltip=(
                    "The starting latent at the model's native size (e.g. Empty Latent Image 512x512 for SD1.5, "
                    "1024x1024 for SDXL); the output is scale_by times larger. Batches and noise masks work as "
                    "in KSampler.")),
                io.Float.Input("scale_by", default=2.0, min=1.0, max=MAX_FACTOR, step=0.25, round=0.01, tooltip=(
                    "How much larger the output's side is than the input latent's (2: 512 -> 1024 px). Ignored "
                    "when width or height is set.")),
                io.Int.Input("width", default=0, min=0, max=16384, step=8, tooltip=(
                    "Target width in pixels; 0 = use scale_by. Set only one of width/height to keep the input's "
                    "aspect ratio.")),
                io.Int.Input("height", default=0, min=0, max=16384, step=8, tooltip=(
                    "Target height in pixels; 0 = use scale_by.")),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed of the noise; later stages derive their fresh noise from it."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip=(
                    "Total steps over all stages (half at the native size, half shared by the larger stages); at "
                    "least one per stage.")),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as in the core KSampler."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES,
                               tooltip="The sampling algorithm; it restarts at every stage."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES,
                               tooltip="The schedule of noise levels over all the steps."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "As in KSampler: below 1 the input latent is partly kept (image to image).")),
                io.Model.Input("weak_model", optional=True, tooltip=(
                    "Optional: a weaker checkpoint of the same family (an earlier or smaller one) for autoguidance "
                    "(w = 2) during the native-size stage, where it cleans the layout; the larger stages use plain "
                    "CFG. Leave unconnected for plain CFG throughout.")),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent at the target size.")],
        )

    @classmethod
    def validate_inputs(cls, scale_by=None, width=None, height=None, steps=None) -> bool | str:
        if scale_by is not None and not 1.0 <= float(scale_by) <= MAX_FACTOR:
            return f"{NODE_NAME}: scale_by: {scale_by} is out of range. Fix: a factor from 1 to {MAX_FACTOR:g}."
        for name, value in (("width", width), ("height", height)):
            if value is not None and int(value) % 8:
                return f"{NODE_NAME}: {name}: {value} is not a multiple of 8. Fix: e.g. {int(value) // 8 * 8 or 8}."
        if steps is not None and not 1 <= int(steps) <= 10000:
            return f"{NODE_NAME}: steps: {steps} is out of range. Fix: use 1 to 10000 steps."
        return True

    @classmethod
    def execute(cls, model, positive, negative, latent_image, scale_by, width, height, seed, steps, cfg, sampler_name,
                scheduler, denoise, weak_model=None) -> io.NodeOutput:
        return io.NodeOutput(highres_sample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                            latent_image, scale_by=scale_by, width=width, height=height,
                                            denoise=denoise, weak_model=weak_model))


NODES: list[type[io.ComfyNode]] = [MegapixelHighRes]
