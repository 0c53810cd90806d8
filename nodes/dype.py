"""DyPE nodes (RoPE position extrapolation for DiTs): thin layers over :mod:`patches.dype`."""
from __future__ import annotations

from comfy_api.latest import io

from ..patches import dype

SIMPLE_NAME = "DyPE (RoPE extrapolation)"
ADVANCED_NAME = "DyPE (RoPE extrapolation, advanced)"
CATEGORY = "megapixel/dype"

MODEL_TOOLTIP = (f"The DiT to patch: {dype.SUPPORTED_TEXT} (it is cloned, never changed). Models without rotary "
                 f"position embeddings (SD1.x/SD2.x/SDXL U-Nets, SD3, AuraFlow) are refused.")
METHOD_TOOLTIP = ("How the positions are extrapolated above the native size. yarn: YaRN, per frequency band (fast "
                  "pairs keep their frequency, slow ones are interpolated, NTK between) plus a slightly sharper "
                  "attention; the authors' default. ntk: NTK-aware scaling of the RoPE base (softer, very stable).")
DYNAMIC_TOOLTIP = ("DyPE's time schedule (arXiv 2510.20766): full extrapolation at the start of sampling, where the "
                   "layout forms, shrinking to the model's native positions as the noise falls, so the last steps "
                   "draw detail with the positions the model knows. Off: the same static extrapolation at every step.")
NATIVE_TOOLTIP = ("The side in pixels the model was trained at: the node does nothing at or below its area (the model "
                  "is then bit-identical to the unpatched one) and scales positions by the size over it above. 0 = "
                  "auto, the family's (Flux.1, Flux.2, Chroma, Lumina 2, Z-Image, HiDream 1024; Qwen-Image 1328; "
                  "HunyuanImage 2.1 2048).")


def _method(default: str = dype.YARN) -> io.Combo.Input:
    return io.Combo.Input("method", options=list(dype.METHODS), default=default, tooltip=METHOD_TOOLTIP)


def _native() -> io.Int.Input:
    return io.Int.Input("native_size", default=0, min=0, max=8192, step=8, optional=True, tooltip=NATIVE_TOOLTIP)


DESCRIPTION = (
    "Dynamic position extrapolation for rotary-position DiTs (DyPE, arXiv 2510.20766) with NTK-aware scaling or YaRN. "
    "Above the model's training size plain RoPE runs the positions past anything the model saw, which repeats "
    "patterns and breaks the layout; this node re-scales the RoPE frequencies of the image's height and width axes "
    "for the size of each model call (read from the latent, so one graph serves every size and every stage of the "
    "relay sampler), and with DyPE's schedule it relaxes them back to the native ones as the noise falls. At or below "
    "the native area it does nothing. Works with any sampler, scheduler and guider; the input model is cloned.")


class DyPENode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelDyPE",
            display_name=SIMPLE_NAME,
            category=CATEGORY,
            description=DESCRIPTION + " The advanced node exposes the schedule's exponents and YaRN's bands.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TOOLTIP),
                _method(),
                io.Boolean.Input("dynamic", default=True, tooltip=DYNAMIC_TOOLTIP),
                _native(),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def execute(cls, model, method=dype.YARN, dynamic=True, native_size=0) -> io.NodeOutput:
        settings = dype.Settings(method=method, dynamic=bool(dynamic))
        return io.NodeOutput(dype.apply_dype(model, settings, int(native_size or 0), node=SIMPLE_NAME))


def _positive(name: str, default: float, tooltip: str, maximum: float = 64.0) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=0.01, max=maximum, step=0.01, tooltip=tooltip)


class DyPEAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelDyPEAdvanced",
            display_name=ADVANCED_NAME,
            category=CATEGORY,
            description=DESCRIPTION + " Defaults are the DyPE authors' (lambda_s 2, lambda_t 2, YaRN beta 1.25/0.75, "
                                      "gamma 16/2, attention factor 1 + 0.1 ln s).",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TOOLTIP),
                _method(),
                io.Boolean.Input("dynamic", default=True, tooltip=DYNAMIC_TOOLTIP),
                io.Float.Input("lambda_s", default=dype.LAMBDA_S, min=0.0, max=8.0, step=0.05, tooltip=(
                    "ntk with dynamic on: the schedule's strength. The RoPE base is theta * s^(k * d/(d-2)) with "
                    "k = lambda_s * t^lambda_t (t = noise level, 1 at the start): 2 doubles static NTK's exponent "
                    "at the first step. Not used by yarn.")),
                io.Float.Input("lambda_t", default=dype.LAMBDA_T, min=0.0, max=8.0, step=0.05, tooltip=(
                    "Dynamic on: how fast the extrapolation fades as the noise level t falls (weight t^lambda_t). "
                    "Larger = native positions sooner; 0 = no fading (constant, like dynamic off but with "
                    "lambda_s for ntk).")),
                _positive("beta_fast", dype.YARN_BETA[0], "yarn: pairs turning more than this many times over the "
                          "native length get NTK's frequency (authors: 1.25)."),
                _positive("beta_slow", dype.YARN_BETA[1], "yarn: pairs turning fewer than this many times are "
                          "interpolated (frequency / scale); a linear ramp joins the two (authors: 0.75)."),
                _positive("gamma_fast", dype.YARN_GAMMA[0], "yarn: pairs turning more than this many times keep "
                          "their native frequency (authors: 16).", maximum=1024.0),
                _positive("gamma_slow", dype.YARN_GAMMA[1], "yarn: below this many turns the NTK/interpolation "
                          "blend takes over fully; a linear ramp joins the two (authors: 2).", maximum=1024.0),
                io.Boolean.Input("attention_scale", default=True, tooltip=(
                    "yarn: multiply queries and keys on the scaled axes by 1 + 0.1 ln s (YaRN's attention "
                    "temperature; constant over the schedule, as the authors use it).")),
                io.Combo.Input("axis_scaling", options=list(dype.AXIS_SCALINGS), default=dype.PER_AXIS, tooltip=(
                    "per axis: height and width each scaled by their own ratio to the native side (an axis at or "
                    "below native is left alone), as the authors do. by area: both by the square root of the area "
                    "ratio (for very wide or tall images).")),
                _native(),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def execute(cls, model, method, dynamic, lambda_s, lambda_t, beta_fast, beta_slow, gamma_fast, gamma_slow,
                attention_scale, axis_scaling, native_size=0) -> io.NodeOutput:
        for band, fast, slow in (("beta", beta_fast, beta_slow), ("gamma", gamma_fast, gamma_slow)):
            if not fast > slow > 0:
                raise ValueError(f"{ADVANCED_NAME}: {band}_fast ({fast}) must be larger than {band}_slow ({slow}), "
                                 f"both above 0 (they are numbers of turns, fast pairs turn more). Fix: e.g. the "
                                 f"authors' {band}_fast {getattr(dype, 'YARN_' + band.upper())[0]}, {band}_slow "
                                 f"{getattr(dype, 'YARN_' + band.upper())[1]}.")
        if gamma_slow < beta_fast:
            raise ValueError(f"{ADVANCED_NAME}: gamma_slow ({gamma_slow}) must not be below beta_fast ({beta_fast}): "
                             f"the native band lies above the NTK band. Fix: e.g. gamma_slow 2, beta_fast 1.25.")
        settings = dype.Settings(method=method, dynamic=bool(dynamic), lambda_s=float(lambda_s),
                                 lambda_t=float(lambda_t), beta=(float(beta_fast), float(beta_slow)),
                                 gamma=(float(gamma_fast), float(gamma_slow)), attention_scale=bool(attention_scale),
                                 axis_scaling=axis_scaling)
        return io.NodeOutput(dype.apply_dype(model, settings, int(native_size or 0), node=ADVANCED_NAME))


NODES: list[type[io.ComfyNode]] = [DyPENode, DyPEAdvanced]
