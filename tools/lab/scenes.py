"""Deterministic one-object scenes: a vivid shape on a muted, gently graded background.

Countable on purpose: objects are vivid (chroma = max(rgb) - min(rgb) >= 0.75) and backgrounds muted
(chroma <= 0.2), so a decoded image is segmented by chroma alone (:mod:`lab.measure`), whatever its layout.
Scene ``i`` is a pure function of ``i`` (its own seeded generator), so any subset can be regenerated exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .files import NATIVE_PX  # noqa: E402,F401
SHAPES = ("circle", "square", "triangle")
# Vivid object colours (RGB in [0, 1]).
PALETTE = {
    "red": (0.92, 0.1, 0.1), "green": (0.1, 0.8, 0.15), "blue": (0.12, 0.2, 0.95), "yellow": (0.95, 0.88, 0.08),
    "magenta": (0.9, 0.1, 0.85), "cyan": (0.08, 0.85, 0.9), "orange": (0.98, 0.5, 0.05),
}
SIZE_RANGE = (0.3, 0.6)  # object side as a share of the image side


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    size: float          # side / image side
    center: tuple[float, float]  # (y, x) as shares of the image side
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    angle: float         # direction of the background gradient (radians)


def scene_params(index: int) -> Scene:
    """The parameters of scene ``index`` (deterministic)."""
    g = torch.Generator().manual_seed(1_000_003 * int(index) + 17)
    u = lambda: float(torch.rand((), generator=g))  # noqa: E731
    shape = SHAPES[int(torch.randint(len(SHAPES), (), generator=g))]
    colour = list(PALETTE)[int(torch.randint(len(PALETTE), (), generator=g))]
    size = SIZE_RANGE[0] + (SIZE_RANGE[1] - SIZE_RANGE[0]) * u()
    half = size / 2
    center = (half + (1 - size) * u(), half + (1 - size) * u())
    backgrounds = []
    base = 0.15 + 0.7 * u()
    for _ in range(2):  # two muted colours: a grey of varied lightness with a slight tint
        grey = min(0.9, max(0.1, base + 0.25 * (u() - 0.5)))
        tint = [0.16 * (u() - 0.5) for _ in range(3)]
        backgrounds.append(tuple(min(1.0, max(0.0, grey + t)) for t in tint))
    return Scene(shape, colour, size, center, (backgrounds[0], backgrounds[1]), 2 * math.pi * u())


def shape_mask(shape: str, height: int, width: int, box: tuple[float, float, float, float],
               supersample: int = 1) -> torch.Tensor:
    """Coverage in [0, 1] of ``shape`` inscribed in ``box`` = (top, left, bottom, right) in pixels, [H, W]."""
    s = supersample
    ys = (torch.arange(height * s, dtype=torch.float32) + 0.5) / s
    xs = (torch.arange(width * s, dtype=torch.float32) + 0.5) / s
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    top, left, bottom, right = box
    cy, cx = (top + bottom) / 2, (left + right) / 2
    hh, hw = max((bottom - top) / 2, 1e-6), max((right - left) / 2, 1e-6)
    ny, nx = (y - cy) / hh, (x - cx) / hw  # -1..1 inside the box
    if shape == "circle":
        inside = nx ** 2 + ny ** 2 <= 1.0
    elif shape == "square":
        inside = (nx.abs() <= 1) & (ny.abs() <= 1)
    elif shape == "triangle":  # apex at the top centre, base along the bottom
        inside = (ny <= 1) & (ny >= -1) & (nx.abs() <= (ny + 1) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    m = inside.float()
    if s > 1:
        m = torch.nn.functional.avg_pool2d(m[None, None], s)[0, 0]
    return m


def render(scene: Scene, size: int = NATIVE_PX) -> torch.Tensor:
    """The scene as an image [H, W, 3] in [0, 1] (ComfyUI's IMAGE layout), anti-aliased."""
    ys = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(ys, ys, indexing="ij")
    ramp = (x - 0.5) * math.cos(scene.angle) + (y - 0.5) * math.sin(scene.angle)
    ramp = (ramp / math.sqrt(0.5) + 1) / 2  # 0..1 across the image
    c0, c1 = (torch.tensor(c) for c in scene.background)
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    half = scene.size * size / 2
    cy, cx = scene.center[0] * size, scene.center[1] * size
    mask = shape_mask(scene.shape, size, size, (cy - half, cx - half, cy + half, cx + half), supersample=4)
    colour = torch.tensor(PALETTE[scene.colour])
    return image * (1 - mask[..., None]) + colour * mask[..., None]


def batch(indices, size: int = NATIVE_PX) -> torch.Tensor:
    """Scenes ``indices`` as a ComfyUI IMAGE batch [B, H, W, 3]."""
    return torch.stack([render(scene_params(i), size) for i in indices])
