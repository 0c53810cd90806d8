"""Autoguidance Guider node: a thin layer over :class:`samplers.autoguidance.AutoguidanceGuider`."""
from comfy_api.latest import io

from ..samplers.autoguidance import AutoguidanceGuider


class AutoguidanceGuiderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MegapixelAutoguidanceGuider",
            display_name="Autoguidance Guider",
            category="megapixel/guiders",
            description=(
                "Autoguidance (arXiv 2406.02507): steers the model away from a weaker version of itself, optionally "
                "together with CFG. D = C + (cfg - 1)(C - U) + (w - 1)(C - B), where C and U are the model on the "
                "positive/negative prompt and B the weak model on the positive prompt. cfg 1 is pure autoguidance, "
                "w 1 is plain CFG. start_percent/end_percent limit the autoguidance term to a range of noise "
                "levels (percentages of the model's timesteps, as in core nodes, not of the step count). The weak "
                "model is not loaded when w is 1 or the schedule never reaches that range. "
                "The weak model should be an earlier or smaller checkpoint of the same family. "
                "Connect the GUIDER output to SamplerCustomAdvanced or the Megapixel relay sampler."),
            inputs=[
                io.Model.Input("model", tooltip="The main model (C and U)."),
                io.Model.Input("weak_model", tooltip=(
                    "A weaker model of the same family: an earlier or smaller checkpoint, or one trained for fewer "
                    "epochs. It must be a separately loaded checkpoint, not the same one as 'model'.")),
                io.Conditioning.Input("positive", tooltip="The prompt; both models get it (B uses the weak model)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt for CFG (unused when cfg is 1)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=(
                    "Classifier-free guidance scale. 1 turns CFG off (pure autoguidance, no negative pass); CFG "
                    "applies at every step, like the core guider.")),
                io.Float.Input("w", display_name="autoguidance weight (w)", default=2.0, min=0.0, max=20.0,
                               step=0.05, round=0.01, tooltip=(
                    "Autoguidance weight. 1 turns autoguidance off (no weak-model pass); EDM2 uses 1.7 to 2.1.")),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Where the guidance interval starts, as a percentage of the model's timesteps (0 = the "
                    "highest noise level), turned into a noise level (sigma) by the model's percent_to_sigma like "
                    "the start_percent of core nodes (Apply ControlNet, Conditioning Set Timestep Range). It is "
                    "not a fraction of the steps: how many steps fall inside depends on the scheduler.")),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001, tooltip=(
                    "Where the guidance interval ends, as a percentage of the model's timesteps (1 = no noise), "
                    "like core end_percent inputs. Autoguidance acts for sigma in (sigma(end_percent), "
                    "sigma(start_percent)]; outside, the weak model is skipped and only CFG applies.")),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, weak_model, positive, negative, cfg, w, start_percent, end_percent) -> io.NodeOutput:
        guider = AutoguidanceGuider(model, weak_model, cfg=cfg, w=w, start_percent=start_percent,
                                    end_percent=end_percent)
        guider.set_conds(positive, negative)
        return io.NodeOutput(guider)


NODES: list[type[io.ComfyNode]] = [AutoguidanceGuiderNode]
