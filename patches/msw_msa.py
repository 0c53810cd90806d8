"""MSW-MSA (HiDiffusion's modified shifted-window self-attention) as attn1 patches on a cloned ModelPatcher.

``attn1_patch`` (runs before to_q/to_k/to_v) cuts the tokens of a chosen block into 2x2 windows stacked in the batch
dimension, after a cyclic shift; ``attn1_output_patch`` (runs on the attention output, before the residual add)
puts them back.  Self-attention then costs a quarter.  Unlike the official code:

- the shift is deterministic: one of the four official offsets chosen from the step index (same seed and
  settings, same image), or none;
- any latent size works: the token grid is padded to even sides (its last row / column repeated) before the
  shift and cropped back after it, instead of bicubically resizing activations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .schedule import SigmaWindow, current_sigma, step_index

SHIFT_MODES = ("cycle", "pseudo-random", "none")


@dataclass(frozen=True)
class WindowGeometry:
    """An ``h`` x ``w`` token grid padded to ``2wh`` x ``2ww``, rolled by ``shift`` and cut into 2x2 windows of
    ``wh`` x ``ww``."""

    h: int
    w: int
    shift: tuple[int, int]

    @property
    def wh(self) -> int:
        return -(-self.h // 2)

    @property
    def ww(self) -> int:
        return -(-self.w // 2)

    @classmethod
    def for_offset(cls, h: int, w: int, k: int) -> "WindowGeometry":
        """Offset ``k`` (0..3) of the official four: ``(k * wh // 4, k * ww // 4)`` tokens."""
        wh, ww = -(-h // 2), -(-w // 2)
        return cls(h, w, ((wh // 4) * k, (ww // 4) * k))


def token_grid(tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """Height and width of a block's token grid from its token count and the latent's size.

    U-Net feature maps are the latent divided by a power of two, rounded up (stride-2 convs, RAU-Net's stride-4 conv
    and ceil-mode pooling all give that), so try those first; otherwise (another patch resized by some other factor)
    take the factor pair of ``tokens`` closest to the latent's aspect ratio.
    """
    h0, w0 = int(latent_hw[0]), int(latent_hw[1])
    for k in range(16):
        f = 1 << k
        h, w = -(-h0 // f), -(-w0 // f)
        if h * w == tokens:
            return h, w
        if h * w < tokens:
            break
    aspect = h0 / w0
    best, best_score = (1, tokens), math.inf
    for a in range(1, math.isqrt(tokens) + 1):
        if tokens % a:
            continue
        for h, w in ((a, tokens // a), (tokens // a, a)):
            score = abs(math.log((h / w) / aspect))
            if score < best_score:
                best, best_score = (h, w), score
    return best


def partition(x: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """(B, h*w, C) tokens -> (4B, wh*ww, C) windows (window-major within each batch item).

    An odd side is first padded to even by repeating the grid's last row / column (the official code resizes to
    even sides there), then the padded grid is rolled by the shift, as the official code rolls its even grid."""
    b, _, c = x.shape
    x = x.reshape(b, g.h, g.w, c)
    if 2 * g.wh != g.h:
        x = torch.cat([x, x[:, -1:]], dim=1)
    if 2 * g.ww != g.w:
        x = torch.cat([x, x[:, :, -1:]], dim=2)
    if g.shift != (0, 0):
        x = torch.roll(x, shifts=(-g.shift[0], -g.shift[1]), dims=(1, 2))
    x = x.reshape(b, 2, g.wh, 2, g.ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * 4, g.wh * g.ww, c)


def reverse(x: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """Inverse of :func:`partition`: (4B, wh*ww, C) -> (B, h*w, C)."""
    b, c = x.shape[0] // 4, x.shape[-1]
    x = x.reshape(b, 2, 2, g.wh, g.ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * g.wh, 2 * g.ww, c)
    if g.shift != (0, 0):
        x = torch.roll(x, shifts=g.shift, dims=(1, 2))
    x = x[:, :g.h, :g.w]
    return x.reshape(b, g.h * g.w, c)


def shift_offset(mode: str, step: int) -> int:
    """Which of the four official offsets a step uses."""
    if mode == "none":
        return 0
    if mode == "pseudo-random":  # a fixed scrambling of the step number: irregular, but reproducible
        return ((step + 1) * 0x9E3779B1 >> 16) & 3
    return step % 4


Gate = Callable[[dict], bool]


class SigmaGate:
    """Active inside a ``[start, end)`` fraction of the schedule."""

    def __init__(self, model_sampling, start: float, end: float):
        self.window = SigmaWindow.from_fractions(model_sampling, start, end)

    def __call__(self, options: dict) -> bool:
        sigma = current_sigma(options)
        return sigma is not None and self.window.contains(sigma)


class MswMsa:
    """The MSW-MSA patch pair for a set of blocks; ``apply(model)`` returns a patched clone."""

    def __init__(self, blocks, gate: Gate, shift_mode: str = "cycle", name: str = "MSW-MSA"):
        if shift_mode not in SHIFT_MODES:
            raise ValueError(f"{name}: shift mode {shift_mode!r} is not one of {', '.join(SHIFT_MODES)}.")
        self.blocks = frozenset((str(kind), int(index)) for kind, index in blocks)
        self.gate = gate
        self.shift_mode = shift_mode
        self.name = name
        self._state_key = f"megapixel.msw_msa.{id(self)}"

    # model_options are deep-copied by ModelPatcher.clone(); this object holds configuration only.
    def __deepcopy__(self, memo):
        return self

    def _window_geometry(self, n: torch.Tensor, extra_options: dict) -> WindowGeometry | None:
        block = extra_options.get("block")
        if block is None or (block[0], block[1]) not in self.blocks:
            return None
        shape = extra_options.get("original_shape")
        if shape is None or not self.gate(extra_options):
            return None
        h, w = token_grid(n.shape[1], (shape[-2], shape[-1]))
        if h < 2 or w < 2:
            return None
        sigma = current_sigma(extra_options)
        k = shift_offset(self.shift_mode, step_index(extra_options, sigma)) if sigma is not None else 0
        return WindowGeometry.for_offset(h, w, k)

    def attn1_patch(self, n, context_attn1, value_attn1, extra_options):
        g = self._window_geometry(n, extra_options)
        if g is None:
            return n, context_attn1, value_attn1
        windows = partition(n, g)

        def follow(t):
            """Keys/values: windowed like the queries when they are the same token map, else shared by all four
            windows (e.g. extra reference tokens another patch appended)."""
            if t is None or t is n:
                return windows
            if t.shape[:2] == n.shape[:2]:
                return partition(t, g)
            return t.repeat_interleave(4, dim=0)

        context = follow(context_attn1)
        value = context if value_attn1 is context_attn1 else follow(value_attn1)
        extra_options[self._state_key] = g
        return windows, context, value

    def attn1_output_patch(self, n, extra_options):
        g = extra_options.pop(self._state_key, None)
        return n if g is None else reverse(n, g)

    def apply(self, model):
        """A clone of ``model`` with MSW-MSA; ``model`` itself is left unchanged.

        Our attn1_patch goes last, so patches already on the model see the whole token map; our
        attn1_output_patch goes FIRST, so the attention output is un-windowed before any other output patch sees
        it.  ``set_model_attn1_output_patch`` can only append, hence the direct insert at index 0 of the clone's
        own list (``clone()`` deep-copies model_options, so the input model's list is untouched).
        """
        m = model.clone()
        m.set_model_attn1_patch(self.attn1_patch)
        patches = m.model_options["transformer_options"].setdefault("patches", {})
        patches["attn1_output_patch"] = [self.attn1_output_patch] + list(patches.get("attn1_output_patch", []))
        return m


def parse_blocks(text: str, node: str = "MSW-MSA") -> list[tuple[str, int]] | None:
    """``"auto"`` (or empty) -> None; ``"input 1, input 2, output 9"`` -> [("input", 1), ("input", 2), ("output", 9)]."""
    text = (text or "").strip().lower()
    if text in ("", "auto", "official"):
        return None
    blocks = []
    for part in text.replace(";", ",").split(","):
        words = part.split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in ("input", "output", "middle") or not words[1].isdigit():
            raise ValueError(f"{node}: blocks: cannot read {part.strip()!r}; write e.g. \"input 1, input 2, "
                             f"output 9\" (or \"auto\" for the official blocks).")
        blocks.append((words[0], int(words[1])))
    return blocks


def official_blocks(layout, model) -> list[tuple[str, int]]:
    """The official MSW-MSA blocks: every transformer block of level 0 (SD1/SD2) or level 1 (SDXL)."""
    from .families import has_transformer
    from .presets import MSW_LEVEL

    level = MSW_LEVEL[layout.family]
    blocks = [("input", b) for b in layout.input_blocks_of(level)] + \
             [("output", b) for b in layout.output_blocks_of(level)]
    return [b for b in blocks if has_transformer(model, b)]


def validate_blocks(model, blocks: list[tuple[str, int]], node: str) -> None:
    from .families import has_transformer

    unet = model.model.diffusion_model
    if not blocks:
        raise ValueError(f"{node}: no blocks to window; give at least one block with self-attention.")
    for kind, index in blocks:
        if kind == "middle":
            ok = index == 0 and unet.middle_block is not None
        else:
            ok = has_transformer(model, (kind, index))
        if not ok:
            with_attention = [f"{k} {i}" for k, seq in (("input", unet.input_blocks), ("output", unet.output_blocks))
                              for i in range(len(seq)) if has_transformer(model, (k, i))]
            raise ValueError(f"{node}: block \"{kind} {index}\" has no self-attention in this U-Net; blocks that "
                             f"have: {', '.join(with_attention)}.")


def apply_msw_msa(model, blocks: list[tuple[str, int]], start: float = 0.0, end: float = 1.0,
                  shift_mode: str = "cycle", node: str = "MSW-MSA"):
    """A clone of ``model`` with MSW-MSA on ``blocks`` for the ``[start, end)`` fraction of the schedule."""
    validate_blocks(model, blocks, node)
    if not 0.0 <= start <= 1.0 or not 0.0 <= end <= 1.0:
        raise ValueError(f"{node}: start and end are fractions of the schedule between 0 and 1.")
    gate = SigmaGate(model.get_model_object("model_sampling"), start, end)
    return MswMsa(blocks, gate, shift_mode, name=node).apply(model)
