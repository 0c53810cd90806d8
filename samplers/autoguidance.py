"""Autoguidance (arXiv 2406.02507): a GUIDER that steers the main model away from a weaker model.

    D = C + (cfg - 1)·(C - U) + (w - 1)·(C - B)

C and U are the main model on the positive / negative conditioning, B the weak model on the positive one, all in
the denoised (x0) space a ComfyUI guider returns (the combination is linear, so it holds for eps and v alike).
cfg = 1 is pure autoguidance, EDM2's ``B + w·(C - B)``; w = 1 is plain CFG.  The autoguidance term is limited to
the guidance interval sigma in (sigma_lo, sigma_hi]; CFG itself stays on at every step, as in the core guider, so
outside the interval D = C + (cfg - 1)·(C - U) (= C when cfg = 1).

The guider is :class:`comfy.samplers.CFGGuider` with the weak model attached as an *additional model* of a clone of
the main one, so ``comfy.sampler_helpers.prepare_sampling`` loads both in one ``load_models_gpu`` pass (neither evicts
the other; low-VRAM partial loading still applies) and ``cleanup_models`` cleans both up.  It is attached only for
a sampling that can use it: with w = 1, or a schedule that never reaches the guidance interval (e.g. a relay stage
past it), the weak model is neither loaded nor run and the guider is the core CFGGuider.  The main model's pass is
the core's own ``sampling_function`` (cond and uncond batched, the cfg = 1 shortcut, pre-/post-CFG hooks and custom
CFG functions untouched); the autoguidance term is added as the first post-CFG function of the step, so later
post-CFG hooks see the guided result.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

import comfy.hooks
import comfy.model_patcher
import comfy.sampler_helpers
import comfy.samplers
from comfy.model_patcher import ModelPatcher

from ..patches.model_info import display_name

NODE_NAME = "Autoguidance Guider"
WEAK_MODEL_KEY = "megapixel_autoguidance_weak"


# --- the math -----------------------------------------------------------------------------------------------------
def autoguidance(cond: torch.Tensor, uncond: torch.Tensor | None, weak: torch.Tensor | None,
                 cfg: float, w: float) -> torch.Tensor:
    """D = C + (cfg - 1)(C - U) + (w - 1)(C - B), written as the core's CFG plus the autoguidance term.

    ``uncond`` may be None when cfg = 1 and ``weak`` None when w = 1 (or outside the interval): that term is 0.
    """
    guided = cond if uncond is None else uncond + (cond - uncond) * cfg
    return guided if weak is None else guided + weak_term(cond, weak, w)


def weak_term(cond: torch.Tensor, weak: torch.Tensor, w: float) -> torch.Tensor:
    """(w - 1)(C - B): what autoguidance adds to the CFG result."""
    return (cond - weak) * (w - 1.0)


def sigma_interval(model_sampling, start_percent: float, end_percent: float) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) of the guidance interval given as fractions of the schedule (0 = first step)."""
    sigma_hi = float(model_sampling.percent_to_sigma(start_percent))
    sigma_lo = float(model_sampling.percent_to_sigma(end_percent))
    return sigma_lo, sigma_hi


def percent_for_sigma(model_sampling, sigma: float) -> float:
    """The percent (as core start/end_percent inputs) whose noise level is ``sigma``: the inverse of the model's
    ``percent_to_sigma``, by bisection (it decreases monotonically).  Clamped to [0, 1]."""
    lo, hi = 0.0, 1.0
    for _ in range(48):
        mid = (lo + hi) / 2
        if float(model_sampling.percent_to_sigma(mid)) > sigma:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def in_interval(sigma: torch.Tensor, sigma_lo: float, sigma_hi: float) -> torch.Tensor:
    """Per batch element: is sigma in (sigma_lo, sigma_hi]?"""
    return (sigma > sigma_lo) & (sigma <= sigma_hi)


def schedule_reaches(sigmas: torch.Tensor, sigma_lo: float, sigma_hi: float) -> bool:
    """Can a sampling over ``sigmas`` call the model inside (sigma_lo, sigma_hi]?  Samplers call it at the schedule's
    sigmas and between neighbouring ones, so: does the interval meet [min(sigmas), max(sigmas)]?"""
    if sigmas is None or sigmas.numel() == 0:
        return False
    values = sigmas.detach().reshape(-1).float().cpu()
    return sigma_lo < float(values.max()) and sigma_hi >= float(values.min())


# --- validation ---------------------------------------------------------------------------------------------------
def _prediction_type(patcher: ModelPatcher) -> str:
    """The prediction/sampling classes of a model's (possibly patched) model_sampling, e.g. 'ModelSamplingDiscrete+EPS'.

    ComfyUI builds ``class ModelSampling(sampling, prediction)`` on the fly, so compare its bases, not the class."""
    cls = type(patcher.get_model_object("model_sampling"))
    bases = [b.__name__ for b in cls.__bases__ if b is not object] if cls.__name__ == "ModelSampling" else []
    return "+".join(bases) or cls.__name__


# Config entries that fix what a model takes in (latent channels, the text/pooled/size conditioning it reads).  Two
# models of one family may differ in everything else (width, depth, heads): that is what makes one of them weaker.
_INPUT_KEYS = ("image_model", "in_channels", "out_channels", "context_dim", "adm_in_channels", "context_in_dim",
               "vec_in_dim", "cap_feat_dim", "joint_attention_dim", "text_emb_dim", "caption_channels",
               "text_states_dim", "text_states_dim_2", "pooled_projection_dim", "llama_layers")


def _inputs_signature(patcher: ModelPatcher) -> dict:
    """What the model's config says it takes in (see _INPUT_KEYS); SD3's text embedder by its input width."""
    cfg = patcher.model.model_config.unet_config
    out = {key: cfg[key] for key in _INPUT_KEYS if key in cfg}
    embedder = cfg.get("context_embedder_config")
    if isinstance(embedder, dict):
        out["context_embedder_config.in_features"] = embedder.get("params", {}).get("in_features")
    return out


def validate_models(model: ModelPatcher, weak_model: ModelPatcher, node: str = NODE_NAME) -> None:
    """Raise ValueError, naming the node, the input and the fix, if ``weak_model`` cannot guide ``model``."""
    if weak_model is model:
        raise ValueError(
            f"{node}: the weak_model input is the very same model as the model input, so autoguidance would change "
            "nothing (C - B = 0). ComfyUI reuses one model for loader nodes with identical settings: two "
            "'Load Checkpoint' nodes pointing at the same file give one and the same model. Fix: load a different, "
            "weaker checkpoint into weak_model (an earlier or smaller checkpoint of the same family as the main model).")
    if weak_model.model is model.model:
        raise ValueError(
            f"{node}: weak_model is a patched copy of the same loaded checkpoint as model (for example the same "
            "checkpoint with another LoRA or model patch). ComfyUI keeps one copy of a checkpoint's weights in memory "
            "and can apply only one set of patches to it at a time, so the two cannot run side by side. Fix: load the "
            "weak model from its own checkpoint file (an earlier or smaller checkpoint of the same family); for a "
            "LoRA-based weak model, load the base checkpoint a second time from a separate file name (a copy or link "
            "of the file) and put the weaker LoRA on that one.")
    main_format, weak_format = model.model.latent_format, weak_model.model.latent_format
    if type(main_format) is not type(weak_format) or main_format.latent_channels != weak_format.latent_channels:
        raise ValueError(
            f"{node}: weak_model works in another latent space ({type(weak_format).__name__} latents, "
            f"{weak_format.latent_channels} channels; family {display_name(weak_model)}) than model "
            f"({type(main_format).__name__} latents, {main_format.latent_channels} channels; family "
            f"{display_name(model)}), so their predictions cannot be combined. Fix: connect a weaker checkpoint of the "
            "same family as the main model to weak_model.")
    main_pred, weak_pred = _prediction_type(model), _prediction_type(weak_model)
    if main_pred != weak_pred or model.model.model_type != weak_model.model.model_type:
        raise ValueError(
            f"{node}: weak_model uses another prediction type ({weak_pred}, {weak_model.model.model_type.name}) "
            f"than model ({main_pred}, {model.model.model_type.name}). Fix: connect a weak model with the same "
            "prediction type (e.g. both eps or both v-prediction; a 'ModelSampling...' node can set it) to weak_model.")
    if type(model.model) is not type(weak_model.model):
        raise ValueError(
            f"{node}: weak_model is a {display_name(weak_model)} model and model a {display_name(model)} model: "
            "different architectures take different conditioning, so the weak model cannot guide this one. Fix: "
            f"connect a weaker {display_name(model)} checkpoint (an earlier or smaller one of the same family) to "
            "weak_model.")
    main_in, weak_in = _inputs_signature(model), _inputs_signature(weak_model)
    for key in sorted(set(main_in) | set(weak_in)):
        if main_in.get(key) != weak_in.get(key):
            raise ValueError(
                f"{node}: weak_model ({display_name(weak_model)}) takes other inputs than model "
                f"({display_name(model)}): its {key} is {weak_in.get(key)}, the main model's {main_in.get(key)}, so "
                "it cannot take the same latents and conditioning. Fix: connect a weaker checkpoint of the same "
                "family as the main model to weak_model.")


def validate_settings(cfg: float, w: float, start_percent: float, end_percent: float, node: str = NODE_NAME) -> None:
    if not (0.0 <= start_percent < end_percent <= 1.0):
        raise ValueError(
            f"{node}: the guidance interval is empty or out of range (start_percent {start_percent}, end_percent "
            f"{end_percent}); autoguidance would never act. Fix: set 0 <= start_percent < end_percent <= 1 "
            "(0 and 1 guide the whole schedule).")
    if not math.isfinite(w) or not math.isfinite(cfg):
        raise ValueError(f"{node}: cfg and w must be finite numbers (got cfg {cfg}, w {w}).")


# --- the guider ---------------------------------------------------------------------------------------------------
class AutoguidanceGuider(comfy.samplers.CFGGuider):
    """CFGGuider plus a weak model: D = C + (cfg - 1)(C - U) + (w - 1)(C - B) inside the guidance interval."""

    def __init__(self, model: ModelPatcher, weak_model: ModelPatcher, cfg: float = 1.0, w: float = 2.0,
                 start_percent: float = 0.0, end_percent: float = 1.0):
        validate_models(model, weak_model)
        validate_settings(cfg, w, start_percent, end_percent)
        # A clone of the main model carries a clone of the weak one as an additional model while a sampling needs it:
        # prepare_sampling then loads both in one load_models_gpu pass, and per-run state (current_patcher, hooks)
        # lands on clones, never on the models we were given.
        super().__init__(model.clone())
        self.main_model = model
        self.weak_model = weak_model
        self._weak_clone = weak_model.clone()
        self.cfg = cfg
        self.w = w
        self.start_percent = start_percent
        self.end_percent = end_percent
        self.sigma_lo, self.sigma_hi = -math.inf, math.inf  # set from the model's schedule when sampling starts
        self.weak_inner = None
        self._attach_weak(not math.isclose(w, 1.0))

    # --- configuration ---
    def set_cfg(self, cfg: float, w: float | None = None) -> None:
        self.cfg = cfg
        if w is not None:
            self.w = w

    @property
    def weak_patcher(self) -> ModelPatcher:
        """The weak model's clone that rides along with the main model through loading and sampling."""
        return self._weak_clone

    @property
    def weak_in_use(self) -> bool:
        """Whether the current (or next) sampling loads and runs the weak model."""
        return bool(self.model_patcher.get_additional_models_with_key(WEAK_MODEL_KEY))

    def _attach_weak(self, use: bool) -> None:
        if use:
            self.model_patcher.set_additional_models(WEAK_MODEL_KEY, [self._weak_clone])
        else:
            self.model_patcher.remove_additional_models(WEAK_MODEL_KEY)

    def needs_weak(self, sigmas: torch.Tensor) -> bool:
        """Does sampling over ``sigmas`` use the weak model at all?  Not with w = 1, nor when the schedule never
        reaches the guidance interval."""
        if math.isclose(self.w, 1.0):
            return False
        sigma_lo, sigma_hi = sigma_interval(self.model_patcher.get_model_object("model_sampling"),
                                            self.start_percent, self.end_percent)
        return schedule_reaches(sigmas, sigma_lo, sigma_hi)

    def megapixel_map_models(self, fn: Callable[[ModelPatcher], ModelPatcher]) -> "AutoguidanceGuider":
        """A copy of this guider with ``fn`` applied to the main and the weak model (the relay sampler uses it to give
        every model of a stage the same patches)."""
        other = AutoguidanceGuider(fn(self.main_model), fn(self.weak_model), self.cfg, self.w,
                                   self.start_percent, self.end_percent)
        other.original_conds = {k: [c.copy() for c in v] for k, v in self.original_conds.items()}
        return other

    # --- sampling ---
    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None, **kwargs):
        validate_models(self.main_model, self.weak_model)  # before anything loads
        if "positive" not in self.original_conds:
            raise ValueError(f"{NODE_NAME}: no positive conditioning was set on the guider.")
        self._attach_weak(self.needs_weak(sigmas))  # an unused weak model is not loaded
        return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                              **kwargs)

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
                     seed=None, latent_shapes=None, **kwargs):
        if not self.weak_in_use:  # plain CFG: the core's path, nothing of the weak model
            return super().outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar,
                                        seed, latent_shapes=latent_shapes, **kwargs)
        # The weak model's own conditioning and options, prepared like CFGGuider.sample does for the main model.
        weak = self.weak_patcher
        self.weak_conds = {"positive": [c.copy() for c in self.original_conds["positive"]]}
        comfy.samplers.preprocess_conds_hooks(self.weak_conds)
        self.weak_options = comfy.model_patcher.create_model_options_clone(weak.model_options)
        self.weak_options.setdefault("transformer_options", {})
        orig_hook_mode = weak.hook_mode
        if comfy.samplers.get_total_hook_groups_in_conds(self.weak_conds) <= 1:
            weak.hook_mode = comfy.hooks.EnumHookMode.MinVram
        try:
            comfy.sampler_helpers.prepare_model_patcher(weak, self.weak_conds, self.weak_options)
            comfy.samplers.filter_registered_hooks_on_conds(self.weak_conds, self.weak_options)
            return super().outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar,
                                        seed, latent_shapes=latent_shapes, **kwargs)
        finally:
            comfy.samplers.cast_to_load_options(self.weak_options, device=weak.offload_device)
            weak.hook_mode = orig_hook_mode
            weak.restore_hook_patches()
            del self.weak_conds, self.weak_options

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None, **kwargs):
        if not self.weak_in_use:
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                        disable_pbar, seed, latent_shapes=latent_shapes, **kwargs)
        # Runs after prepare_sampling loaded both models (the main one and, as its additional model, the weak one).
        weak = self.weak_patcher
        weak.pre_run()
        try:
            self.weak_inner = weak.model
            weak_latent = latent_image
            if weak_latent is not None and torch.count_nonzero(weak_latent) > 0:
                weak_latent = self.inner_model.process_latent_in(weak_latent)  # same latent format (validated)
            self.weak_conds = comfy.samplers.process_conds(self.weak_inner, noise, self.weak_conds, device, weak_latent,
                                                           denoise_mask, seed, latent_shapes=latent_shapes)
            self.weak_options["transformer_options"]["sample_sigmas"] = sigmas
            comfy.samplers.cast_to_load_options(self.weak_options, device=device, dtype=weak.model_dtype())
            self.sigma_lo, self.sigma_hi = sigma_interval(self.inner_model.model_sampling, self.start_percent,
                                                          self.end_percent)
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                        disable_pbar, seed, latent_shapes=latent_shapes, **kwargs)
        except BaseException:
            weak.cleanup()  # on success cleanup_models does it, as for any additional model
            raise
        finally:
            self.weak_inner = None

    def predict_noise(self, x, timestep, model_options={}, seed=None, **kwargs):
        if self.weak_inner is None or math.isclose(self.w, 1.0) or \
                not bool(in_interval(timestep, self.sigma_lo, self.sigma_hi).any()):
            return super().predict_noise(x, timestep, model_options, seed, **kwargs)  # plain CFG, the core path
        options = model_options.copy()
        options["sampler_post_cfg_function"] = [self._add_weak_term] + list(
            model_options.get("sampler_post_cfg_function", []))
        return super().predict_noise(x, timestep, options, seed, **kwargs)

    def _add_weak_term(self, args: dict) -> torch.Tensor:
        """Post-CFG function (run first): the CFG result plus (w - 1)(C - B) where sigma is inside the interval."""
        x, sigma, cond_denoised = args["input"], args["sigma"], args["cond_denoised"]
        (weak_denoised,) = comfy.samplers.calc_cond_batch(self.weak_inner, [self.weak_conds["positive"]], x, sigma,
                                                          self.weak_options)
        term = weak_term(cond_denoised, weak_denoised, self.w)
        active = in_interval(sigma, self.sigma_lo, self.sigma_hi)
        if not bool(active.all()):
            term = term * active.to(term.dtype).reshape((-1,) + (1,) * (term.ndim - 1))
        return args["denoised"] + term
