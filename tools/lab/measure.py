"""Count and measure the objects of a decoded lab image (see :mod:`lab.scenes`).

Objects are vivid, backgrounds muted: a pixel is foreground where its chroma (max(rgb) - min(rgb)) exceeds
:data:`CHROMA_THRESHOLD`; objects are the 8-connected foreground components of at least :data:`MIN_AREA_PX` pixels
(absolute, so a duplicate drawn at the model's native pixel size counts at every image size).  Each object's shape fidelity is its best IoU with an ideal circle, square or triangle inscribed in
its bounding box; an object below :data:`MALFORMED_IOU` is malformed (the lab autoencoder's own round trip keeps
95 % of real scenes' objects above it: triangles come back with softened corners, median IoU 0.78).
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


@dataclass(frozen=True)
class ImageStats:
    count: int                    # objects found
    largest_side: float           # largest object's bounding-box side / image side (0 when there is none)
    fidelities: tuple[float, ...]  # per object: best IoU with an ideal shape in its bounding box


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


def measure_image(image: torch.Tensor) -> ImageStats:
    """Objects of one IMAGE [H, W, 3]."""
    mask = foreground(image)
    h, w = mask.shape
    labels, n = scipy.ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return ImageStats(0, 0.0, ())
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = [i + 1 for i, a in enumerate(areas) if a >= MIN_AREA_PX]
    sides, fids = [], []
    for label in keep:
        comp = labels == label
        ys, xs = np.nonzero(comp)
        sides.append(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / max(h, w))
        fids.append(fidelity(comp))
    return ImageStats(len(keep), float(max(sides, default=0.0)), tuple(fids))


def measure_batch(images: torch.Tensor) -> list[ImageStats]:
    """Objects of every image of an IMAGE batch [B, H, W, 3]."""
    return [measure_image(img) for img in images]
