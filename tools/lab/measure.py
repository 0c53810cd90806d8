"""Count and measure the objects of a decoded lab image (see :mod:`lab.scenes`).

Objects are vivid, backgrounds muted: a pixel is foreground where its chroma (max(rgb) - min(rgb)) exceeds
:data:`CHROMA_THRESHOLD`; objects are the 8-connected foreground components of at least :data:`MIN_AREA_PX` pixels
(absolute, so a duplicate drawn at the model's native pixel size counts at every image size).  Each object's shape fidelity is its best IoU with an ideal circle, square or triangle inscribed in
its bounding box; an object below :data:`MALFORMED_IOU` is malformed (the lab autoencoder's own round trip keeps
95 % of real scenes' objects above it: triangles come back with softened corners, median IoU 0.78).

Two figures of what a person sees besides the objects (:func:`background_figures`).  A training scene's background is
exactly a linear colour gradient, so each channel of the background pixels (outside the objects, dilated by
:data:`OBJECT_MARGIN` of the side) is fitted by a plane a + b·x + c·y over the *interior* (the image less its outer
bands):

- **background noise**: the RMS of the interior residuals (0 on a clean gradient; blotches and specks raise it);
- **edge band**: per side, the mean residual colour of the outer band (:data:`EDGE_BAND` of the side) against the
  interior's plane, as an RGB vector; its length, the largest over the four sides.  A stripe of colour ``d`` along
  one edge reads ``|d|``; noise averages out over the band.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch

from .scenes import SHAPES, shape_mask

CHROMA_THRESHOLD = 0.45
MIN_AREA_PX = 100  # 10x10 px: about a tenth of the smallest training object (a 38 px triangle); smaller are specks
MALFORMED_IOU = 0.7
OBJECT_MARGIN = 1 / 64  # background starts this share of the side away from any object (its anti-aliased rim)
EDGE_BAND = 1 / 64      # outer band width as a share of the side: 8 px at 512 (one latent row), 2 px at 128
MIN_BAND_PX = 32        # a side whose band keeps fewer background pixels than this (an object on it) is skipped


@dataclass(frozen=True)
class ImageStats:
    count: int                    # objects found
    largest_side: float           # largest object's bounding-box side / image side (0 when there is none)
    fidelities: tuple[float, ...]  # per object: best IoU with an ideal shape in its bounding box
    background_noise: float = 0.0  # RMS colour residual of the background from a plane (see the module docstring)
    edge_band: float = 0.0         # largest mean colour deviation of an outer band from the interior's plane


def foreground(image: torch.Tensor) -> np.ndarray:
    """Boolean [H, W] mask of vivid pixels of an IMAGE [H, W, 3] in [0, 1]."""
    chroma = image.max(dim=-1).values - image.min(dim=-1).values
    return (chroma > CHROMA_THRESHOLD).cpu().numpy()


def fidelity(component: np.ndarray) -> float:
    """Best IoU of a boolean component mask with an ideal shape inscribed in its bounding box."""
    ys, xs = np.nonzero(component)
    box = (float(ys.min()), float(xs.min()), float(ys.max()) + 1, float(xs.max()) + 1)
    h, w = component.shape
    comp = torch.from_numpy(component)
    best = 0.0
    for shape in SHAPES:
        ideal = shape_mask(shape, h, w, box) > 0.5
        inter = (ideal & comp).sum().item()
        union = (ideal | comp).sum().item()
        best = max(best, inter / max(union, 1))
    return best


def _band_width(side: int) -> int:
    return max(1, round(side * EDGE_BAND))


def background_figures(image: torch.Tensor, objects: np.ndarray) -> tuple[float, float]:
    """(background noise, edge band) of an IMAGE [H, W, 3] whose objects are the boolean mask ``objects`` [H, W]."""
    rgb = image.detach().float().cpu().numpy().reshape(*objects.shape, -1)[..., :3]
    h, w = objects.shape
    margin = max(1, round(max(h, w) * OBJECT_MARGIN))
    background = ~scipy.ndimage.binary_dilation(objects, iterations=margin) if objects.any() else np.ones_like(objects)
    bh, bw = _band_width(h), _band_width(w)
    bands = {"top": (slice(0, bh), slice(None)), "bottom": (slice(h - bh, h), slice(None)),
             "left": (slice(None), slice(0, bw)), "right": (slice(None), slice(w - bw, w))}
    interior = np.zeros_like(background)
    interior[bh:h - bh, bw:w - bw] = True
    fit = background & interior
    if fit.sum() < 3 * MIN_BAND_PX:
        return 0.0, 0.0  # nothing but objects: no background to judge
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    design = np.stack([np.ones(h * w), ys.ravel() / h, xs.ravel() / w], axis=1)
    flat = rgb.reshape(-1, rgb.shape[-1]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design[fit.ravel()], flat[fit.ravel()], rcond=None)
    residual = (flat - design @ coef).reshape(h, w, -1)
    noise = float(np.sqrt(np.mean(residual[fit] ** 2)))
    edge = 0.0
    for rows, cols in bands.values():
        keep = background[rows, cols]
        if keep.sum() >= MIN_BAND_PX:
            edge = max(edge, float(np.linalg.norm(residual[rows, cols][keep].mean(axis=0))))
    return noise, edge


def measure_image(image: torch.Tensor) -> ImageStats:
    """Objects and background of one IMAGE [H, W, 3]."""
    mask = foreground(image)
    h, w = mask.shape
    labels, n = scipy.ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ImageStats(0, 0.0, (), *background_figures(image, np.zeros_like(mask)))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = [i + 1 for i, a in enumerate(areas) if a >= MIN_AREA_PX]
    sides, fids = [], []
    for label in keep:
        comp = labels == label
        ys, xs = np.nonzero(comp)
        sides.append(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / max(h, w))
        fids.append(fidelity(comp))
    objects = np.isin(labels, keep)
    return ImageStats(len(keep), float(max(sides, default=0.0)), tuple(fids), *background_figures(image, objects))


def measure_batch(images: torch.Tensor) -> list[ImageStats]:
    """Objects of every image of an IMAGE batch [B, H, W, 3]."""
    return [measure_image(img) for img in images]
