"""Intervals for the quality lab's figures: what lets a table *rank* rows rather than list them.

Every row is sampled on the same seeds, so two rows are compared image by image (a paired design): the spread that
comes from the seeds (an easy scene, a hard one) cancels, and a paired interval is much narrower than the two rows'
own intervals side by side.  Rates get Wilson score intervals; means, ratios and paired differences get a percentile
bootstrap over the seeds (the same resampled seeds for both rows of a pair), with a fixed generator so a report is
reproducible.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.96
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0

# A figure of one row: (per-image values) -> one number (a rate, a mean, a share of objects ...)
Figure = Callable[[Sequence], float]


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _resamples(n: int, resamples: int) -> np.ndarray:
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(resamples, n))


def bootstrap(items: Sequence, figure: Figure, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95 % percentile interval of ``figure(items)`` over resampled items (the seeds)."""
    if not items:
        return (0.0, 0.0)
    values = [figure([items[i] for i in idx]) for idx in _resamples(len(items), resamples)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return (float(lo), float(hi))


def paired_difference(a: Sequence, b: Sequence, figure: Figure,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, tuple[float, float]]:
    """``figure(a) - figure(b)`` and its 95 % interval, ``a[i]`` and ``b[i]`` being the same seed's images: the
    seeds are resampled together, so what both rows share cancels."""
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs the same seeds in both rows ({len(a)} vs {len(b)} images)")
    if not a:
        return 0.0, (0.0, 0.0)
    diffs = [figure([a[i] for i in idx]) - figure([b[i] for i in idx]) for idx in _resamples(len(a), resamples)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return figure(a) - figure(b), (float(lo), float(hi))


def excludes_zero(interval: tuple[float, float]) -> bool:
    return interval[0] > 0 or interval[1] < 0
