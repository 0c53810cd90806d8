"""Where in the schedule a model call is: its sigma, its step index, and schedule fractions as sigma windows.

Patches decide per model call from ``transformer_options["sigmas"]`` (set by ComfyUI's samplers for every call),
never by counting calls, so they behave the same with any sampler, step count, scheduler or guider.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SigmaWindow:
    """The calls with ``low < sigma <= high``: a ``[start, end)`` fraction of the schedule in sigma terms."""

    high: float
    low: float

    @classmethod
    def from_fractions(cls, model_sampling, start: float, end: float) -> "SigmaWindow":
        """``start``/``end`` are fractions of the schedule (0 = pure noise, 1 = clean), converted with the model's
        own ``percent_to_sigma`` like core ComfyUI's sigma-ranged nodes.  ``end <= start`` gives an empty window."""
        if end <= start:
            return cls(0.0, 0.0)
        return cls(float(model_sampling.percent_to_sigma(start)), float(model_sampling.percent_to_sigma(end)))

    @property
    def empty(self) -> bool:
        return self.high <= self.low

    def contains(self, sigma: float) -> bool:
        return self.low < sigma <= self.high

    def overlaps(self, other: "SigmaWindow") -> bool:
        return not self.empty and not other.empty and max(self.low, other.low) < min(self.high, other.high)


# One entry each, shared by every patch: all blocks of one model call (and all cond/uncond batches of one step) see
# the same ``sigmas`` / ``sample_sigmas`` tensor objects, so the device-to-host copy (a GPU sync) happens once per
# step, not once per block.  The key is the tensor object itself (held by the entry, so its id cannot be reused):
# samplers make a new sigma tensor for every call (``sigma * s_in``) and never write into one.  (No version counter:
# ComfyUI samples under torch.inference_mode, whose tensors have none.)
_sigma_cache: tuple = (None, None)
_step_cache: tuple = (None, None, None)


def current_sigma(transformer_options: dict) -> float | None:
    """The sigma of this model call (the batch shares one), or None when the caller did not say.  A Python float,
    read from the device once per ``sigmas`` tensor."""
    global _sigma_cache
    sigmas = transformer_options.get("sigmas")
    if sigmas is None:
        return None
    if not torch.is_tensor(sigmas):
        return float(sigmas[0]) if isinstance(sigmas, (list, tuple)) else float(sigmas)
    cached, value = _sigma_cache
    if cached is sigmas:
        return value
    value = float(sigmas.reshape(-1)[0])
    _sigma_cache = (sigmas, value)
    return value


def step_index(transformer_options: dict, sigma: float) -> int:
    """A deterministic step number for this call: the position of ``sigma`` in the sampler's schedule
    (``sample_sigmas``; intermediate sigmas of multi-stage samplers count as the step they lead to), or, without a
    schedule, a number derived from the sigma itself."""
    global _step_cache
    schedule = transformer_options.get("sample_sigmas")
    if schedule is not None and torch.is_tensor(schedule) and schedule.numel() > 0:
        cached, cached_sigma, index = _step_cache
        if cached is schedule and cached_sigma == sigma:
            return index
        values = schedule.detach().reshape(-1).float().cpu()
        close = torch.isclose(values, torch.tensor(sigma, dtype=values.dtype), rtol=1e-4, atol=1e-7)
        hits = torch.nonzero(close)
        index = int(hits[0]) if hits.numel() > 0 else int((values > sigma).sum())
        _step_cache = (schedule, sigma, index)
        return index
    if sigma <= 0:
        return 0
    return int(math.floor(math.log(sigma) * 8.0))
