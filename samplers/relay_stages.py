"""Relay stages: what users type (a stage list and a step split), checked and turned into a plan.

Pure functions, no model needed:

- :func:`parse_stages` reads the ``stages`` text: scale factors of the input latent (``"1, 1.5, 2"``) or sizes in
  pixels (``"512x512, 768x768, 1024x1024"``); separators may be commas, semicolons, spaces or arrows.
- :func:`parse_split` reads the ``step_split`` text: one weight per stage (``"80/10/10"``, ``"40, 5, 5"``); empty
  means the default split (:func:`default_split`: half the steps for the first stage).
- :func:`stage_sizes` resolves the stages against the input latent's size (in latent pixels).
- :func:`split_steps` apportions the total steps to the stages; :func:`slice_sigmas` cuts one schedule into
  consecutive slices that share their boundary sigmas.

Every problem raises :class:`StageSpecError`, whose message names the input and the fix; the nodes prefix their own
name.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import torch

LATENT_PX = 8  # pixels per latent pixel of the SD-family VAEs; explicit sizes must be multiples of it
MAX_FACTOR = 16.0
MAX_STAGES = 8


class StageSpecError(ValueError):
    """A bad stage list or step split.  ``input_name`` is the node input at fault."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"{input_name}: {message}")
        self.input_name = input_name


@dataclass(frozen=True)
class StageSpec:
    """The parsed ``stages`` text: either scale ``factors`` or pixel ``sizes`` (width, height), never both."""
    factors: tuple[float, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.factors) or len(self.sizes)


_SEPARATORS = re.compile(r"\s*(?:->|→|>|,|;|\s)\s*")
_SIZE = re.compile(r"^(\d+)\s*[x×*X]\s*(\d+)$")


def _tokens(text: str) -> list[str]:
    text = re.sub(r"\s*[x×*X]\s*", "x", text.strip())  # "512 x 512" -> "512x512" before splitting on spaces
    return [t for t in _SEPARATORS.split(text) if t]


@functools.lru_cache(maxsize=256)
def parse_stages(text: str) -> StageSpec:
    """Parse the ``stages`` input.  Factors must start at 1 and increase; sizes must be multiples of 8 px and grow.

    Cached (the result is immutable): the node's validation and its run, and every check in the run, share one
    parse of the same text."""
    tokens = _tokens(text or "")
    if not tokens:
        raise StageSpecError("stages", "is empty. Fix: list the stages, e.g. '1, 1.5, 2' (scale factors of the "
                                       "input latent) or '512x512, 768x768, 1024x1024' (sizes in pixels).")
    if len(tokens) > MAX_STAGES:
        raise StageSpecError("stages", f"has {len(tokens)} stages; at most {MAX_STAGES} are supported. "
                                       "Fix: use fewer stages (MegaFusion uses 2 or 3).")
    sizes = [_SIZE.match(t) for t in tokens]
    if all(sizes):
        return StageSpec(sizes=_check_sizes([(int(m.group(1)), int(m.group(2))) for m in sizes]))
    if any(sizes):
        raise StageSpecError("stages", f"mixes sizes and scale factors ({text!r}). Fix: write all stages as scale "
                                       "factors ('1, 1.5, 2') or all as sizes ('512x512, 768x768, 1024x1024').")
    factors = []
    for t in tokens:
        try:
            factors.append(float(t))
        except ValueError:
            raise StageSpecError("stages", f"cannot read {t!r} as a scale factor or a WIDTHxHEIGHT size. Fix: write "
                                           "e.g. '1, 1.5, 2' or '512x512, 768x768, 1024x1024'.") from None
    return StageSpec(factors=_check_factors(factors))


def _check_factors(factors: list[float]) -> tuple[float, ...]:
    for f in factors:
        if not math.isfinite(f) or f < 1.0:
            raise StageSpecError("stages", f"scale factor {f:g} is below 1; the relay only goes up in resolution. "
                                           "Fix: start at 1 (the input latent's size) and increase, e.g. '1, 1.5, 2'.")
        if f > MAX_FACTOR:
            raise StageSpecError("stages", f"scale factor {f:g} is above {MAX_FACTOR:g}. Fix: use factors between 1 "
                                           "and 16 of the input latent's size.")
    if factors[0] != 1.0:
        raise StageSpecError("stages", f"the first stage is {factors[0]:g}, but it must be 1: the first stage samples "
                                       "at the input latent's own size. Fix: start the list with 1, e.g. "
                                       f"'1, {', '.join(f'{f:g}' for f in factors)}'.")
    for a, b in zip(factors, factors[1:]):
        if b <= a:
            raise StageSpecError("stages", f"is not increasing ({a:g} then {b:g}). Fix: each stage must be larger "
                                           "than the one before, e.g. '1, 1.5, 2'.")
    return tuple(factors)


def _check_sizes(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    for w, h in sizes:
        if w <= 0 or h <= 0 or w % LATENT_PX or h % LATENT_PX:
            raise StageSpecError("stages", f"size {w}x{h} is not a multiple of {LATENT_PX} px. Fix: use sizes "
                                           f"divisible by {LATENT_PX}, e.g. {max(8, w // 8 * 8)}x{max(8, h // 8 * 8)}.")
    for (w0, h0), (w1, h1) in zip(sizes, sizes[1:]):
        if w1 < w0 or h1 < h0 or (w1, h1) == (w0, h0):
            raise StageSpecError("stages", f"is not increasing ({w0}x{h0} then {w1}x{h1}). Fix: each stage must be "
                                           "larger than the one before and no side may shrink.")
    return tuple(sizes)


def round_half_up(x: float) -> int:
    """The nearest integer, halves rounded up (11 x 1.5 = 16.5 -> 17), not to even as Python's round() does.  The
    small tolerance keeps a product that is a half in decimals (but a hair below it in binary) rounding up."""
    return math.floor(x + 0.5 + 1e-9)


def stage_sizes(spec: StageSpec, latent_height: int, latent_width: int, ratio: int = LATENT_PX,
                patch: int = 1) -> list[tuple[int, int]]:
    """(height, width) of every stage in latent pixels, for an input latent of that size.

    ``ratio`` is the model's pixels per latent pixel (8 for SD and Flux.1, 16 for Flux.2, 32 for HunyuanImage 2.1),
    ``patch`` its latent pixels per transformer token (2 for most DiTs, 1 for U-Nets).  Factors scale both sides and
    round half up to whole tokens; sizes must start at the input latent's size, and later ones be whole tokens."""
    if spec.sizes:
        first_w, first_h = spec.sizes[0]
        if (first_h, first_w) != (latent_height * ratio, latent_width * ratio):
            raise StageSpecError(
                "stages", f"the first stage is {first_w}x{first_h} but the input latent is "
                          f"{latent_width * ratio}x{latent_height * ratio} px. Fix: start the list with the "
                          "latent's size, or make the latent (e.g. Empty Latent Image) the first stage's size.")
        step = ratio * patch
        for w, h in spec.sizes[1:]:
            if w % step or h % step:
                raise StageSpecError(
                    "stages", f"size {w}x{h} is not a multiple of {step} px, this model's token size ({ratio} px per "
                              f"latent pixel x {patch} latent pixels per token). Fix: use e.g. "
                              f"{max(step, round_half_up(w / step) * step)}x{max(step, round_half_up(h / step) * step)}.")
        out = [(h // ratio, w // ratio) for w, h in spec.sizes]
    else:
        out = [(max(patch, patch * round_half_up(latent_height * f / patch)),
                max(patch, patch * round_half_up(latent_width * f / patch))) if f != 1.0
               else (latent_height, latent_width) for f in spec.factors]
    for (h0, w0), (h1, w1) in zip(out, out[1:]):
        if (h1, w1) == (h0, w0):
            raise StageSpecError("stages", f"two stages round to the same size {w0 * ratio}x{h0 * ratio} px "
                                           "for this latent. Fix: space the scale factors further apart.")
    return out


# --- step split -------------------------------------------------------------------------------------------------
FIRST_STAGE_SHARE = 0.5  # the default split's share of the first stage (the quality lab's finding; docs/relay.md)
FLOW_FIRST_STAGE_SHARE = 0.8  # flow (rectified-flow) models: re-noising to mid-schedule keeps too little (docs/relay.md)


def default_split(total_steps: int, n_stages: int, first_share: float = FIRST_STAGE_SHARE) -> list[int]:
    """The default split: the first stage gets half the steps (rounded up), the others share the rest evenly (at
    least one step each; a remainder goes to the earlier, cheaper ones).  20 steps: 10/5/5 (three stages), 10/10 (two).

    MegaFusion's paper gives the first stage 80 %; on the quality lab's model that leaves the later stages two steps
    at a low noise level, too few to clean what a latent upscale brings (blotches, and coloured bands along the edges:
    the border latents, stretched), and duplicates more.  Half the schedule per stage is what a hires fix at denoise
    0.5 re-noises to, and measured best (docs/relay.md).  Flow models (Flux, SD3, ...) take ``first_share`` 0.8
    (:data:`FLOW_FIRST_STAGE_SHARE`): a flow latent re-noised to mid-schedule keeps a small share of its signal
    (x = sigma·noise + (1 - sigma)·x0, the later stages' size shift raising sigma further), and the lab's DiT lost its
    whole layout at 4x with half the steps."""
    _check_enough_steps(total_steps, n_stages)
    if n_stages == 1:
        return [total_steps]
    rest = max(n_stages - 1, min(total_steps - 1, math.ceil(total_steps * (1 - first_share) - 0.5 - 1e-9)))
    base, extra = divmod(rest, n_stages - 1)
    later = [base + (1 if i < extra else 0) for i in range(n_stages - 1)]
    return [total_steps - rest, *later]


def parse_split(text: str, n_stages: int) -> list[float] | None:
    """Weights of the ``step_split`` text, one per stage; None when empty (use :func:`default_split`)."""
    weights = _parse_split(text or "", n_stages)
    return None if weights is None else list(weights)


@functools.lru_cache(maxsize=256)
def _parse_split(text: str, n_stages: int) -> tuple[float, ...] | None:
    tokens = [t for t in re.split(r"[\s,;/:]+", (text or "").strip().rstrip("%")) if t]
    if not tokens:
        return None
    weights = []
    for t in tokens:
        try:
            weights.append(float(t.rstrip("%")))
        except ValueError:
            raise StageSpecError("step_split", f"cannot read {t!r} as a number. Fix: one share per stage, e.g. "
                                               "'80/10/10', or leave it empty for MegaFusion's default.") from None
    if len(weights) != n_stages:
        raise StageSpecError("step_split", f"has {len(weights)} shares but there are {n_stages} stages. Fix: give one "
                                           "share per stage (e.g. '80/10/10' for three), or leave it empty.")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise StageSpecError("step_split", "shares must be non-negative numbers with a positive sum. Fix: e.g. "
                                           "'80/10/10'.")
    return tuple(weights)


def split_steps(total_steps: int, n_stages: int, weights: list[float] | None = None,
                first_share: float = FIRST_STAGE_SHARE) -> list[int]:
    """Steps per stage.  Shares are apportioned by largest remainder, so shares that already sum to the step count
    are taken as they are ('40, 5, 5' of 50) and percentages work for any count ('80/10/10')."""
    if weights is None:
        return default_split(total_steps, n_stages, first_share)
    _check_enough_steps(total_steps, n_stages)
    exact = [total_steps * w / sum(weights) for w in weights]
    counts = [math.floor(e + 1e-9) for e in exact]
    by_remainder = sorted(range(n_stages), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total_steps - sum(counts)]:
        counts[i] += 1
    for i, c in enumerate(counts):
        if c == 0:
            raise StageSpecError("step_split", f"stage {i + 1} gets 0 of the {total_steps} steps. Fix: give it a larger "
                                               "share or raise the step count; every stage needs at least one step.")
    return counts


def _check_enough_steps(total_steps: int, n_stages: int) -> None:
    if total_steps < n_stages:
        raise StageSpecError("steps", f"{total_steps} steps cannot be split over {n_stages} stages. Fix: use at least "
                                      "one step per stage (MegaFusion uses 50 steps for 3 stages).")


def slice_sigmas(sigmas: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Consecutive slices of one schedule, ``counts[k]`` steps each; a slice starts at the sigma where the previous
    one ended (the next stage's first sigma is the one the relayed latent is re-noised to)."""
    if sum(counts) != len(sigmas) - 1:
        raise ValueError(f"the steps of the stages ({sum(counts)}) do not match the schedule ({len(sigmas) - 1} steps)")
    out, start = [], 0
    for c in counts:
        out.append(sigmas[start:start + c + 1])
        start += c
    return out


def check_spec(stages: str, step_split: str = "", steps: int | None = None) -> None:
    """Everything that can be checked from the text inputs alone (the nodes' validate_inputs)."""
    spec = parse_stages(stages)
    weights = parse_split(step_split, len(spec))
    if steps is not None:
        split_steps(steps, len(spec), weights)
