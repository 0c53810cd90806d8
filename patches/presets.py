"""HiDiffusion's official presets: which blocks each phase patches, its switching thresholds, and the row a latent
size selects (megvii-research/HiDiffusion, ``hidiffusion.py``).

A RAU-Net *phase* is one of two operations on one U-Net level, active during a fraction of the schedule:

- ``conv``: the resolution-aware downsampler.  The Downsample from ``level`` to ``level + 1`` runs its own 3x3
  weights with stride 4 / padding 2 / dilation 2; the matching upsampler goes straight back to the skip's size.
- ``pool``: average-pool after the first resnet(+attention) of ``level``, resized back (bicubic) before the decoder
  block that concatenates the level's entry skip.

SD1/SD2 use ``conv`` at level 0 for T1 and ``pool`` at level 1 for T2; SDXL swaps the roles (T1 = ``pool`` at level
1, T2 = ``conv`` at level 1).  MSW-MSA windows the self-attention of every transformer block of one level
(SD1/SD2 level 0, SDXL level 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from .families import SD1, SD2, SDXL

CONV, POOL = "conv", "pool"


@dataclass(frozen=True)
class Phase:
    """One RAU-Net operation: ``method`` (``"conv"``/``"pool"``) at ``level``, active from ``start`` to ``end``
    (fractions of the schedule, 0 = first step)."""

    method: str
    level: int
    start: float
    end: float

    @property
    def active_somewhere(self) -> bool:
        return self.end > self.start


@dataclass(frozen=True)
class Row:
    """A row of the official switching thresholds: T1/T2 = fraction of the schedule each phase lasts."""

    name: str
    t1: float
    t2: float
    pool_only: bool = False


ROWS = {row.name: row for row in (
    Row("sd15_1024", 0.4, 0.0),
    Row("sd15_2048", 0.7, 0.3),
    Row("sdxl_2048", 0.4, 0.0),
    Row("sdxl_4096", 0.7, 0.3),
    Row("sdxl_turbo_1024", 0.5, 0.0, pool_only=True),
    Row("sdxl_controlnet_2048", 0.5, 0.0),
)}

# SDXL "aggressive" RAU-Net (official default for the 2048 rows): the stride-4 conv for the first 8 of 50 steps,
# then the pool pair until T1.
AGGRESSIVE_SPLIT = 8 / 50

# Level each operation patches in the official maps.
CONV_LEVEL = {SD1: 0, SD2: 0, SDXL: 1}
POOL_LEVEL = {SD1: 1, SD2: 1, SDXL: 1}
MSW_LEVEL = {SD1: 0, SD2: 0, SDXL: 1}
T1_METHOD = {SD1: CONV, SD2: CONV, SDXL: POOL}


def t_methods(family: str) -> tuple[str, str]:
    """(T1 method, T2 method) for ``family``."""
    t1 = T1_METHOD[family]
    return t1, POOL if t1 == CONV else CONV


def official_level(family: str, method: str) -> int:
    return CONV_LEVEL[family] if method == CONV else POOL_LEVEL[family]


def official_phases(family: str, row: str, aggressive: bool = False) -> tuple[Phase, ...]:
    """The RAU-Net phases of ``row`` for ``family``; ``aggressive`` applies to SDXL's 2048-class rows."""
    r = ROWS[row]
    if r.pool_only:
        phases = (Phase(POOL, POOL_LEVEL[family], 0.0, r.t1),)
    elif family == SDXL and aggressive and r.name in ("sdxl_2048", "sdxl_controlnet_2048"):
        split = min(AGGRESSIVE_SPLIT, r.t1)
        phases = (Phase(CONV, CONV_LEVEL[family], 0.0, split), Phase(POOL, POOL_LEVEL[family], split, r.t1))
    else:
        m1, m2 = t_methods(family)
        phases = (Phase(m1, official_level(family, m1), 0.0, r.t1), Phase(m2, official_level(family, m2), 0.0, r.t2))
    return tuple(p for p in phases if p.active_somewhere)


def choose_row(family: str, native_px: int, height_px: int, width_px: int) -> str | None:
    """The official threshold row for an image of ``width_px`` x ``height_px``, or None at or below the native
    area (HiDiffusion then leaves the model alone).  The "large" row (SD1.5 2048, SDXL 4096) applies when both sides
    are at least 4x the native side, as in the official code (SD1.5: latent sides >= 256, SDXL: >= 512)."""
    if height_px * width_px <= native_px * native_px:
        return None
    large = min(height_px, width_px) >= 4 * native_px
    if family == SDXL:
        return "sdxl_4096" if large else "sdxl_2048"
    return "sd15_2048" if large else "sd15_1024"


__all__ = ["CONV", "POOL", "Phase", "Row", "ROWS", "AGGRESSIVE_SPLIT", "MSW_LEVEL", "official_phases", "choose_row",
           "t_methods", "official_level", "SD1", "SD2", "SDXL"]
