"""One-click HiDiffusion: RAU-Net and MSW-MSA with the official presets, choosing the threshold row per model call
from the latent size (or a given target size), and doing nothing at or below the model's native resolution."""
from __future__ import annotations

from .families import SDXL, UNetLayout, detect_layout
from .msw_msa import MswMsa, official_blocks
from .presets import ROWS, choose_row, official_phases
from .rau_net import INACTIVE, Active, PhaseSchedule, RauNet


class OfficialSchedule:
    """RAU-Net phases of the official row the image size selects (None at or below native: inactive)."""

    def __init__(self, layout: UNetLayout, model_sampling, aggressive: bool = True,
                 target_px: tuple[int, int] | None = None, native_px: int = 0):
        self.layout = layout
        self.target_px = target_px
        self.native_px = int(native_px) or layout.native_px
        rows = ("sdxl_2048", "sdxl_4096") if layout.family == SDXL else ("sd15_1024", "sd15_2048")
        self.rows = {name: PhaseSchedule(official_phases(layout.family, name, aggressive), model_sampling)
                     for name in rows}

    def row(self, latent_hw: tuple[int, int]) -> str | None:
        height, width = self.target_px or (int(latent_hw[0]) * 8, int(latent_hw[1]) * 8)
        return choose_row(self.layout.family, self.native_px, height, width)

    def __call__(self, transformer_options: dict, latent_hw: tuple[int, int]) -> Active:
        row = self.row(latent_hw)
        return self.rows[row](transformer_options, latent_hw) if row is not None else INACTIVE


class AboveNative:
    """MSW-MSA gate of the one-click node: on for every step when the size is above native."""

    def __init__(self, schedule: OfficialSchedule):
        self.schedule = schedule

    def __call__(self, options: dict) -> bool:
        shape = options.get("original_shape")
        return shape is not None and self.schedule.row((shape[-2], shape[-1])) is not None


def apply_hidiffusion(model, family: str = "auto", target_width: int = 0, target_height: int = 0,
                      aggressive: bool = True, rau_net: bool = True, msw_msa: bool = True,
                      node: str = "HiDiffusion", native_size: int = 0):
    """A clone of ``model`` with HiDiffusion's official presets.  ``target_width``/``target_height`` (pixels, both
    non-zero) decide the row instead of the latent size; ``native_size`` (pixels per side, 0 = the family's) is the
    training resolution the rows are measured against, for models trained at another size than their family's."""
    if not (rau_net or msw_msa):
        raise ValueError(f"{node}: both RAU-Net and MSW-MSA are switched off, so the node would do nothing; "
                         f"switch at least one on (or remove the node).")
    if (target_width > 0) != (target_height > 0):
        raise ValueError(f"{node}: give both target_width and target_height, or leave both at 0 to use the "
                         f"latent's size.")
    if native_size and (native_size < 64 or native_size % 8):
        raise ValueError(f"{node}: native_size {native_size} px is not a training resolution; give the side in "
                         f"pixels the model was trained at (a multiple of 8, at least 64), or 0 for the family's.")
    layout = detect_layout(model, family, node)
    target = (int(target_height), int(target_width)) if target_width > 0 else None
    schedule = OfficialSchedule(layout, model.get_model_object("model_sampling"), aggressive, target,
                                native_size)
    patched = model
    if rau_net:
        patched = RauNet(layout, schedule, name=node).apply(patched)
    if msw_msa:
        patched = MswMsa(official_blocks(layout, model), AboveNative(schedule), "cycle", name=node).apply(patched)
    return patched


__all__ = ["OfficialSchedule", "AboveNative", "apply_hidiffusion", "ROWS"]
