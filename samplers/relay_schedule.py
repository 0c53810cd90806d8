"""MegaFusion's noise re-scheduling as a ``model_sampling`` object for a clone of the model.

A stage at scale ``s`` (its side over the first stage's side) samples at SNR' = SNR / s² for the same timestep label:

- EPS / V-prediction (and other variance-exploding sigmas): sigma' = s·sigma, i.e. alpha_bar' = alpha_bar /
  (s² - (s²-1)·alpha_bar) as in the official code;
- flow (CONST): t' = s·t / (1 + (s-1)·t), ComfyUI's ``time_snr_shift(s, t)``.

The model is still told the original label: ``timestep(sigma')`` is the base ``timestep`` of the unmapped sigma, so
only the noise level of the latent changes.  Everything that reads the schedule through the model sampling
(``sigma_min``/``sigma_max``, ``percent_to_sigma`` for conditioning timestep ranges, samplers that look at
``sigmas``) sees the mapped values, consistently with the stage's mapped slice of the schedule.
"""
from __future__ import annotations

import copy
import math

import torch

import comfy.model_sampling
from comfy.model_patcher import ModelPatcher


def is_flow(model_sampling) -> bool:
    return isinstance(model_sampling, comfy.model_sampling.CONST)


def is_size_shifted(model_sampling) -> bool:
    """Whether the model's shift depends on the image size (``ModelSamplingFlux``: its ``shift`` is mu, which
    ComfyUI's ModelSamplingFlux node sets from the width and height)."""
    return isinstance(model_sampling, comfy.model_sampling.ModelSamplingFlux)


def size_shift(model_sampling, scale: float) -> float:
    """The shift (mu) for a stage at ``scale`` times the side of the size the model's shift is set for: the shift
    factor e^mu grows with the side (SD3's resolution law, arXiv 2403.03206 section 5.3.2: SNR / s² at s times the
    side), so mu grows by ln s, and the stage's sigmas are :func:`map_sigma` of the same timesteps at ``scale``.  Not
    the ModelSamplingFlux node's line in the area, which is fitted between 256 and 4096 tokens and, extrapolated to
    4096 px, gives mu 11.6: pure noise at every step a relay could hand over."""
    return float(model_sampling.shift) + math.log(scale)


def apply_size_shift(model: ModelPatcher, shift: float) -> ModelPatcher:
    """A clone of ``model`` whose ModelSamplingFlux has ``shift`` (mu), as the ModelSamplingFlux node would set it;
    the model is told the true noise level (``timestep(sigma) = sigma``).  ``model`` itself is untouched."""
    base = model.get_model_object("model_sampling")
    shifted = copy.deepcopy(base)
    shifted.set_parameters(shift=shift)
    clone = model.clone()
    clone.add_object_patch("model_sampling", shifted)
    return clone


def map_sigma(sigma, scale: float, flow: bool):
    """The re-scheduled noise level of ``sigma`` for a stage at ``scale`` (floats or tensors)."""
    if scale == 1.0:
        return sigma
    if flow:
        return comfy.model_sampling.time_snr_shift(scale, sigma)
    return sigma * scale


def unmap_sigma(sigma, scale: float, flow: bool):
    """Inverse of :func:`map_sigma` (time_snr_shift(1/s) undoes time_snr_shift(s))."""
    if scale == 1.0:
        return sigma
    if flow:
        return comfy.model_sampling.time_snr_shift(1.0 / scale, sigma)
    return sigma / scale


class _Rescheduled:
    """Mixin put in front of the model's own ModelSampling class: the prediction-type methods (calculate_input,
    calculate_denoised, noise_scaling, ...) stay the class's own and take sigma' as given; the schedule methods
    delegate to the original object with sigmas mapped."""

    _relay_base: torch.nn.Module
    relay_scale: float
    relay_flow: bool

    @property
    def sigma_min(self):
        return map_sigma(self._relay_base.sigma_min, self.relay_scale, self.relay_flow)

    @property
    def sigma_max(self):
        return map_sigma(self._relay_base.sigma_max, self.relay_scale, self.relay_flow)

    def sigma(self, timestep):
        return map_sigma(self._relay_base.sigma(timestep), self.relay_scale, self.relay_flow)

    def timestep(self, sigma):
        return self._relay_base.timestep(unmap_sigma(sigma, self.relay_scale, self.relay_flow))

    def percent_to_sigma(self, percent):
        return float(map_sigma(float(self._relay_base.percent_to_sigma(percent)), self.relay_scale, self.relay_flow))


def rescheduled_model_sampling(base: torch.nn.Module, scale: float) -> torch.nn.Module:
    """A new model-sampling object: ``base``'s class and settings with the schedule mapped for ``scale``.
    ``base`` is not modified."""
    cls = type(base)
    new_cls = type(f"Relay{cls.__name__}", (_Rescheduled, cls), {"__module__": __name__})
    obj = new_cls.__new__(new_cls)
    torch.nn.Module.__init__(obj)
    for key, value in vars(base).items():  # plain settings: sigma_data, shift, multiplier, zsnr, ...
        if not key.startswith("_") and key != "training" and not isinstance(value, (torch.Tensor, torch.nn.Module)):
            object.__setattr__(obj, key, value)
    flow = is_flow(base)
    # Held outside the module tree (object.__setattr__): moving the model must not move or re-register it.
    object.__setattr__(obj, "_relay_base", base)
    object.__setattr__(obj, "relay_scale", float(scale))
    object.__setattr__(obj, "relay_flow", flow)
    for name, buf in base._buffers.items():
        if buf is None:
            continue
        if name == "sigmas":
            obj.register_buffer(name, map_sigma(buf.clone(), scale, flow))
        elif name == "log_sigmas" and "sigmas" in base._buffers:
            obj.register_buffer(name, map_sigma(base._buffers["sigmas"].clone(), scale, flow).log())
        else:
            obj.register_buffer(name, buf.clone())
    return obj


def apply_rescheduling(model: ModelPatcher, scale: float) -> ModelPatcher:
    """A clone of ``model`` whose model sampling is re-scheduled for ``scale`` (``model`` itself is untouched)."""
    clone = model.clone()
    clone.add_object_patch("model_sampling", rescheduled_model_sampling(model.get_model_object("model_sampling"), scale))
    return clone
