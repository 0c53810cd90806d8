"""Relay sampler nodes (MegaFusion): thin layers over :mod:`samplers.relay`."""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..samplers.relay import UPSCALE_METHODS, relay_ksampler, relay_sampler_custom
from ..samplers.relay_stages import StageSpecError, check_spec

KSAMPLER_NAME = "Relay KSampler (MegaFusion)"
CUSTOM_NAME = "Relay Sampler (custom, MegaFusion)"


def _relay_inputs() -> list:
    """The inputs both relay nodes add to their core counterpart."""
    return [
        io.String.Input("stages", default="1, 1.5, 2", tooltip=(
            "The resolution stages, low to high. Scale factors of the input latent ('1, 1.5, 2': a 512 px latent "
            "becomes 768 then 1024 px) or sizes in pixels ('512x512, 768x768, 1024x1024', the first one the "
            "latent's size, all multiples of 8 and of the model's token size: 16 px for Flux and most DiTs, 32 for "
            "HunyuanImage). Factors round to whole tokens. One stage ('1') is a plain sampler.")),
        io.String.Input("step_split", default="", tooltip=(
            "How the steps are shared by the stages: one share per stage, e.g. '80/10/10' or '40, 5, 5' (shares are "
            "proportions of the total steps). Empty = the default: half the steps for the first stage, the other "
            "half shared evenly by the others (20 steps: 10/5/5 for three stages, 10/10 for two); flow models (Flux, "
            "SD3, ...) keep MegaFusion's 80% for the first stage (28 steps: 22/3/3), since re-noising them to "
            "mid-schedule loses the layout.")),
        io.Combo.Input("upscale_method", options=UPSCALE_METHODS, default="bicubic", tooltip=(
            "How the clean estimate is enlarged between stages. In latent space, or in pixel space when a VAE is "
            "connected (as in the official code: decode, resize, encode).")),
        io.Boolean.Input("noise_rescheduling", default=False, tooltip=(
            "MegaFusion's noise re-scheduling: a stage at scale s samples at s times the noise level (flow models: "
            "the equivalent time shift) for the same timestep, since larger images keep more of their signal under "
            "the same noise. Off: every stage uses the schedule as it is. Models whose shift depends on the image "
            "size (Flux, Chroma) always sample each stage at its own size's shift; this switch adds nothing there.")),
        io.Boolean.Input("dilated_middle_block", default=False, tooltip=(
            "Dilate the U-Net middle block's resnet convolutions (dilation 2, same weights) in the stages after the "
            "first, to widen the context at higher resolutions. SD1.x, SD2.x and SDXL U-Nets only.")),
        io.Vae.Input("vae", optional=True, tooltip=(
            "Optional: upscale between stages in pixel space through this VAE (slower, as the official code). "
            "Leave unconnected to upscale the latent directly.")),
    ]


def _validate(node: str, stages, step_split, steps=None) -> bool | str:
    if steps is not None and not 1 <= int(steps) <= 10000:
        return f"{node}: steps: {steps} is out of range. Fix: use 1 to 10000 steps."
    if stages is None:  # connected from another node: checked when the node runs
        return True
    try:
        check_spec(stages, step_split or "", None if steps is None else int(steps))
    except StageSpecError as e:
        return f"{node}: {e}"
    return True


class RelayKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelRelayKSampler",
            display_name=KSAMPLER_NAME,
            category="megapixel/sampling",
            description=(
                "MegaFusion (arXiv 2408.11001): a KSampler that starts at the latent's size and relays to larger "
                "stages. One noise schedule for all steps is cut into slices; at the end of a slice the clean "
                "estimate is upscaled, re-noised with fresh noise to the next slice's noise level and sampled on. "
                "Most steps run at the low resolution, so it costs a fraction of sampling at the final size. With one "
                "stage it is exactly the core KSampler."),
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising, at every stage."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The random seed of the noise; later stages derive their fresh noise from it."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="Total steps over all stages (one schedule, split by step_split)."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as in the core KSampler."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES,
                               tooltip="The sampling algorithm; it restarts at every stage."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES,
                               tooltip="The schedule of noise levels over all the steps."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What the image should not show."),
                io.Latent.Input("latent_image", tooltip=(
                    "The first stage's latent (e.g. Empty Latent Image at the model's native size). Masks "
                    "(Set Latent Noise Mask) are followed to every stage.")),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run, as in the core KSampler."),
                *_relay_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="The last stage's latent.")],
        )

    @classmethod
    def validate_inputs(cls, stages=None, step_split=None, steps=None) -> bool | str:
        return _validate(KSAMPLER_NAME, stages, step_split, steps)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                stages, step_split, upscale_method, noise_rescheduling, dilated_middle_block,
                vae=None) -> io.NodeOutput:
        return io.NodeOutput(relay_ksampler(
            model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
            stages=stages, step_split=step_split, upscale_method=upscale_method,
            noise_rescheduling=noise_rescheduling, dilated_middle_block=dilated_middle_block, vae=vae,
            node=KSAMPLER_NAME))


class RelaySamplerCustom(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelRelaySamplerCustom",
            display_name=CUSTOM_NAME,
            category="megapixel/sampling",
            description=(
                "MegaFusion's relay for custom sampling: the inputs of SamplerCustomAdvanced (noise, guider, sampler, "
                "sigmas, latent) plus the relay stages, so any guider (CFG, autoguidance, ...) and any patched model "
                "relays too. The sigmas are the whole schedule; they are cut into one slice per stage. With one stage "
                "it is exactly SamplerCustomAdvanced."),
            inputs=[
                io.Noise.Input("noise", tooltip=(
                    "The first stage's noise (e.g. RandomNoise). Later stages always get fresh noise from its seed "
                    "and the stage number (a NOISE without a seed: from the noise it makes for the first stage).")),
                io.Guider.Input("guider", tooltip=(
                    "Any guider. Its models get the stage patches (re-scheduling, dilation) on clones; it is never "
                    "changed.")),
                io.Sampler.Input("sampler", tooltip="The sampling algorithm; it restarts at every stage."),
                io.Sigmas.Input("sigmas", tooltip="The schedule for ALL steps of all stages (e.g. BasicScheduler)."),
                io.Latent.Input("latent_image", tooltip="The first stage's latent, at the model's native size."),
                *_relay_inputs(),
            ],
            outputs=[
                io.Latent.Output(display_name="output", tooltip="The last stage's latent."),
                io.Latent.Output(display_name="denoised_output",
                                 tooltip="The model's last clean estimate, at the last stage's size."),
            ],
        )

    @classmethod
    def validate_inputs(cls, stages=None, step_split=None) -> bool | str:
        return _validate(CUSTOM_NAME, stages, step_split)

    @classmethod
    def execute(cls, noise, guider, sampler, sigmas, latent_image, stages, step_split, upscale_method,
                noise_rescheduling, dilated_middle_block, vae=None) -> io.NodeOutput:
        out, denoised = relay_sampler_custom(
            noise, guider, sampler, sigmas, latent_image, stages=stages, step_split=step_split,
            upscale_method=upscale_method, noise_rescheduling=noise_rescheduling,
            dilated_middle_block=dilated_middle_block, vae=vae, node=CUSTOM_NAME)
        return io.NodeOutput(out, denoised)


NODES: list[type[io.ComfyNode]] = [RelayKSampler, RelaySamplerCustom]
