"""HiDiffusion nodes (RAU-Net, MSW-MSA, one-click): thin layers over :mod:`patches`."""
from __future__ import annotations

from comfy_api.latest import io

from ..patches import families, msw_msa, presets, rau_net
from ..patches.hidiffusion import apply_hidiffusion
from ..patches.presets import CONV, POOL, Phase

RAU_NET_NAME = "HiDiffusion RAU-Net (advanced)"
MSW_MSA_NAME = "HiDiffusion MSW-MSA (advanced)"
ONE_CLICK_NAME = "HiDiffusion"
CATEGORY = "megapixel/hidiffusion"

FAMILY_CHOICES = ["auto", *families.FAMILIES]
FAMILY_TOOLTIP = ("The U-Net family: auto detects it from the model. SD1 and SD2 share a block map (SD2 differs only in "
                  "its native size); SDXL has its own. Set it only for a model the detection does not recognise.")

# Block numbers of SD1/SD2/SDXL U-Nets (two resnets per level); other layouts use the same levels.
OFFICIAL, OFF = "official", "off"
BLOCK_CHOICES = [OFFICIAL, OFF,
                 "stride-4 conv at input 3", "stride-4 conv at input 6", "stride-4 conv at input 9",
                 "pool at input 1", "pool at input 4", "pool at input 7", "pool at input 10"]


def phase_for(choice: str, phase: str, family: str, start: float, end: float) -> Phase | None:
    """The Phase a block choice means for ``family`` (``phase`` is 'T1' or 'T2'); None for 'off'."""
    if choice not in BLOCK_CHOICES:
        raise ValueError(f"{RAU_NET_NAME}: {phase.lower()}_blocks: {choice!r} is not one of {', '.join(BLOCK_CHOICES)}. "
                         f"Fix: pick one of those (official = the model family's HiDiffusion block map).")
    if choice == OFF:
        return None
    if choice == OFFICIAL:
        method = presets.t_methods(family)[0 if phase == "T1" else 1]
        return Phase(method, presets.official_level(family, method), start, end)
    block = int(choice.rsplit(" ", 1)[1])
    if choice.startswith("stride-4 conv"):
        return Phase(CONV, block // 3 - 1, start, end)
    return Phase(POOL, (block - 1) // 3, start, end)


PERCENT_NOTE = (" A percentage of the model's timesteps (0 = the highest noise level, 1 = none), turned into a noise "
                "level by the model's percent_to_sigma as core start/end_percent inputs are; not a share of the steps.")


def _fraction(name: str, default: float, tooltip: str) -> io.Float.Input:
    return io.Float.Input(name, default=default, min=0.0, max=1.0, step=0.01, tooltip=tooltip + PERCENT_NOTE)


class HiDiffusionRAUNet(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        blocks_tip = ("Where this phase acts. official: the HiDiffusion block map of the model's family ({official}). "
                      "stride-4 conv at input N: that downsampler runs its own weights with stride 4 (the matching "
                      "upsampler goes straight back to the skip's size). pool at input N: average-pool after that "
                      "block, resized back before the decoder block that meets the level's first skip. Block numbers "
                      "are those of SD1/SD2/SDXL U-Nets; off: no {phase} phase.")
        return io.Schema(
            node_id="MegapixelHiDiffusionRAUNet",
            display_name=RAU_NET_NAME,
            category=CATEGORY,
            description=(
                "HiDiffusion's resolution-aware U-Net (arXiv 2311.17528): in the early, structure-forming part of "
                "the schedule the deep U-Net levels work at their trained feature size, which stops the duplicated "
                "objects and repeated patterns of sampling above the training resolution. Two phases, each with "
                "its blocks and a start/end percentage of the model's timesteps (as core start/end_percent inputs, "
                "not of the step count; converted to noise levels with the model's own sampling settings, so they "
                "mean the same for any sampler, scheduler and step count). The "
                "defaults are HiDiffusion's 1024-class row; the README lists every official row."),
            inputs=[
                io.Model.Input("model", tooltip="The SD1.x, SD2.x or SDXL model to patch (it is cloned, never changed)."),
                io.Combo.Input("family", options=FAMILY_CHOICES, default="auto", tooltip=FAMILY_TOOLTIP),
                io.Combo.Input("t1_blocks", options=BLOCK_CHOICES, default=OFFICIAL, tooltip=blocks_tip.format(
                    official="SD1/SD2: stride-4 conv at input 3; SDXL: pool at input 4", phase="T1")),
                _fraction("t1_start", 0.0, "Where in the schedule the T1 phase starts."),
                _fraction("t1_end", 0.4, "Where the T1 phase ends (official: 0.4 up to 2x native size, 0.7 above)."),
                io.Combo.Input("t2_blocks", options=BLOCK_CHOICES, default=OFFICIAL, tooltip=blocks_tip.format(
                    official="SD1/SD2: pool at input 4; SDXL: stride-4 conv at input 6", phase="T2")),
                _fraction("t2_start", 0.0, "Where in the schedule the T2 phase starts."),
                _fraction("t2_end", 0.0, "Where the T2 phase ends (official: 0 up to 2x native size, i.e. no T2; "
                                          "0.3 for 4x native, e.g. SD1.5 at 2048 px or SDXL at 4096 px)."),
                io.Combo.Input("downsample_method", options=list(rau_net.DOWNSAMPLE_METHODS), default="avg-pool",
                               tooltip="How the pool phase halves the features (official: avg-pool)."),
                io.Combo.Input("upsample_method", options=list(rau_net.UPSAMPLE_METHODS), default="bicubic",
                               tooltip="How the pool phase resizes the features back (official: bicubic)."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def execute(cls, model, family, t1_blocks, t1_start, t1_end, t2_blocks, t2_start, t2_end,
                downsample_method, upsample_method) -> io.NodeOutput:
        layout = families.detect_layout(model, family, RAU_NET_NAME)
        phases = tuple(p for p in (phase_for(t1_blocks, "T1", layout.family, t1_start, t1_end),
                                   phase_for(t2_blocks, "T2", layout.family, t2_start, t2_end)) if p is not None)
        if not any(p.active_somewhere for p in phases):
            raise ValueError(f"{RAU_NET_NAME}: no phase is active anywhere (each needs blocks other than 'off' and "
                             f"an end after its start), so the node would do nothing. Fix: e.g. t1_end 0.4.")
        return io.NodeOutput(rau_net.apply_rau_net(model, layout, phases, downsample_method, upsample_method,
                                                   node=RAU_NET_NAME))


class HiDiffusionMSWMSA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelHiDiffusionMSWMSA",
            display_name=MSW_MSA_NAME,
            category=CATEGORY,
            description=(
                "HiDiffusion's modified shifted-window self-attention: the self-attention of the highest-resolution "
                "transformer blocks runs in 2x2 windows, moved by a cyclic shift that changes every step, so it costs "
                "a quarter while the shifts keep the windows' seams from showing. Deterministic (the shift follows "
                "the step), and any width and height work (multiples of 8 px, any aspect ratio)."),
            inputs=[
                io.Model.Input("model", tooltip="The SD1.x, SD2.x or SDXL model to patch (it is cloned, never changed)."),
                io.Combo.Input("family", options=FAMILY_CHOICES, default="auto", tooltip=FAMILY_TOOLTIP),
                io.String.Input("blocks", default="auto", tooltip=(
                    "The blocks whose self-attention is windowed: auto = official (SD1/SD2: input 1, 2 and output "
                    "9, 10, 11; SDXL: input 4, 5 and output 3, 4, 5), or a list such as 'input 1, output 9'.")),
                _fraction("start", 0.0, "Where in the schedule windowing starts (official: 0)."),
                _fraction("end", 1.0, "Where windowing ends (official: 1, the whole schedule)."),
                io.Combo.Input("shift_mode", options=list(msw_msa.SHIFT_MODES), default="cycle", tooltip=(
                    "The window shift per step, among the four official offsets (0, 1/4, 2/4, 3/4 of a window): "
                    "cycle = in turn; pseudo-random = a fixed irregular order; none = no shift (seams may show).")),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def execute(cls, model, family, blocks, start, end, shift_mode) -> io.NodeOutput:
        layout = families.detect_layout(model, family, MSW_MSA_NAME)
        chosen = msw_msa.parse_blocks(blocks, MSW_MSA_NAME) or msw_msa.official_blocks(layout, model)
        if end <= start:
            raise ValueError(f"{MSW_MSA_NAME}: end ({end}) must be after start ({start}), or the node does nothing.")
        return io.NodeOutput(msw_msa.apply_msw_msa(model, chosen, start, end, shift_mode, node=MSW_MSA_NAME))


class HiDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelHiDiffusion",
            display_name=ONE_CLICK_NAME,
            category=CATEGORY,
            description=(
                "HiDiffusion in one node (arXiv 2311.17528): RAU-Net against duplicated objects above the training "
                "resolution and MSW-MSA for faster attention, with the official settings chosen at sampling time "
                "from the image size (SD1.5: 1024- or 2048-class; SDXL: 2048- or 4096-class). At or below the "
                "model's native resolution (SD1 512 px, SD2 768 px v-prediction / 512 px, SDXL 1024 px, by area; "
                "native_size sets it for models trained at another size) the model is left untouched, so one "
                "graph serves every size."),
            inputs=[
                io.Model.Input("model", tooltip="The SD1.x, SD2.x or SDXL model to patch (it is cloned, never changed)."),
                io.Int.Input("target_width", default=0, min=0, max=16384, step=8, optional=True, tooltip=(
                    "Optional: the final image width in pixels the settings are chosen for (0 = from the latent "
                    "being sampled). Useful where a sampler changes the size between stages.")),
                io.Int.Input("target_height", default=0, min=0, max=16384, step=8, optional=True, tooltip=(
                    "Optional: the final image height in pixels (0 = from the latent). Set both or neither.")),
                io.Boolean.Input("aggressive", default=True, optional=True, tooltip=(
                    "SDXL below 4096 px: the official 'aggressive' RAU-Net (the stride-4 conv for the first 16% of "
                    "the schedule, then the pool pair until 40%). Off: the pool pair only.")),
                io.Boolean.Input("rau_net", default=True, optional=True, tooltip="Apply RAU-Net."),
                io.Boolean.Input("msw_msa", default=True, optional=True, tooltip="Apply MSW-MSA."),
                io.Int.Input("native_size", default=0, min=0, max=8192, step=8, optional=True, tooltip=(
                    "The side in pixels the model was trained at: the settings count from it, and the node does "
                    "nothing at or below its area. 0 = auto, the family's (SD1 512, SD2 768 v-prediction / 512, "
                    "SDXL 1024). Set it for fine-tunes trained at another size, e.g. 768 for an SD1.5 model "
                    "trained at 768 px.")),
            ],
            outputs=[io.Model.Output(tooltip="The patched model.")],
        )

    @classmethod
    def execute(cls, model, target_width=0, target_height=0, aggressive=True, rau_net=True,
                msw_msa=True, native_size=0) -> io.NodeOutput:
        return io.NodeOutput(apply_hidiffusion(model, "auto", int(target_width or 0), int(target_height or 0),
                                               bool(aggressive), bool(rau_net), bool(msw_msa), node=ONE_CLICK_NAME,
                                               native_size=int(native_size or 0)))


NODES: list[type[io.ComfyNode]] = [HiDiffusion, HiDiffusionRAUNet, HiDiffusionMSWMSA]
