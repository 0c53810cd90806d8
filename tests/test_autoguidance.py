"""Autoguidance GUIDER on the tiny real models: the formula, the interval, skipped work, hooks, loading, validation."""
from __future__ import annotations

import copy

import pytest
import torch

import comfy.model_base
import comfy.model_management
import comfy.samplers

from harness import model_factory
from megapixel.nodes.autoguidance import AutoguidanceGuiderNode
from megapixel.samplers.autoguidance import AutoguidanceGuider, autoguidance, weak_term
from support import make_cond

SIZE = 64  # px: an 8x8 latent keeps every run well under a second


@pytest.fixture(scope="module")
def weak15():
    """A second tiny SD1.5 with other weights: the weak model."""
    return model_factory.tiny_unet("sd15", seed=11)


@pytest.fixture(scope="module")
def conds(sd15):
    return make_cond(sd15, seed=1), make_cond(sd15, seed=2)


def counting(model, calls: list):
    """A clone of ``model`` whose U-Net calls append their batch size to ``calls``."""
    m = model.clone()

    def wrapper(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m


def noise_and_latent(seed: int = 0):
    latent = torch.zeros(1, 4, SIZE // 8, SIZE // 8)
    return torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed)), latent


def sigmas_for(model, steps: int) -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)


def run(guider, model, steps: int = 4, seed: int = 0, sampler: str = "euler") -> torch.Tensor:
    noise, latent = noise_and_latent(seed)
    return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas_for(model, steps),
                         seed=seed, disable_pbar=True)


def one_step(guider, sigma: float, seed: int = 0) -> torch.Tensor:
    """The guider's denoised output for the first (only) call at ``sigma``."""
    captured = {}

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        captured["denoised"] = model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        return x

    noise, latent = noise_and_latent(seed)
    guider.sample(noise, latent, comfy.samplers.KSAMPLER(fn), torch.tensor([sigma, 0.0]), seed=seed,
                  disable_pbar=True)
    return captured["denoised"]


def cfg_guider(model, positive, negative, cfg):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def ag_guider(model, weak, positive, negative, cfg=5.0, w=2.0, start=0.0, end=1.0):
    guider = AutoguidanceGuider(model, weak, cfg=cfg, w=w, start_percent=start, end_percent=end)
    guider.set_conds(positive, negative)
    return guider


def snapshot(model):
    return (copy.deepcopy(model.model_options), dict(model.patches), dict(model.object_patches),
            dict(model.additional_models), model.patches_uuid)


# --- the formula ----------------------------------------------------------------------------------------------------
def test_pure_formula():
    gen = torch.Generator().manual_seed(0)
    c, u, b = (torch.randn(2, 4, 3, 3, generator=gen) for _ in range(3))
    expected = c + 3.0 * (c - u) + 0.8 * (c - b)
    assert torch.allclose(autoguidance(c, u, b, cfg=4.0, w=1.8), expected, atol=1e-6)
    assert torch.allclose(autoguidance(c, None, b, cfg=1.0, w=2.0), b + 2.0 * (c - b), atol=1e-6)  # EDM2 form
    assert torch.equal(autoguidance(c, u, None, cfg=4.0, w=3.0), u + (c - u) * 4.0)  # core CFG
    assert torch.equal(weak_term(c, b, 1.0), torch.zeros_like(c))


def test_w1_equals_cfg_guider_exactly(sd15, weak15, conds):
    weak_calls = []
    positive, negative = conds
    expected = run(cfg_guider(sd15, positive, negative, 5.0), sd15)
    got = run(ag_guider(sd15, counting(weak15, weak_calls), positive, negative, cfg=5.0, w=1.0), sd15)
    assert torch.equal(got, expected)
    assert weak_calls == []  # w = 1: the weak model never runs


def test_weak_with_identical_weights_gives_the_main_result(sd15, conds):
    twin = model_factory.tiny_unet("sd15", seed=1)  # same weights as the sd15 fixture, a separate model object
    assert twin.model is not sd15.model
    positive, negative = conds
    expected = run(cfg_guider(sd15, positive, negative, 5.0), sd15)
    got = run(ag_guider(sd15, twin, positive, negative, cfg=5.0, w=3.0), sd15)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    other = run(ag_guider(sd15, model_factory.tiny_unet("sd15", seed=11), positive, negative, cfg=5.0, w=3.0), sd15)
    assert not torch.allclose(other, expected, atol=1e-3)  # a different weak model does change the result


@pytest.mark.parametrize("cfg, w", [(5.0, 2.0), (1.0, 2.5), (3.0, 0.5)])
def test_combination_matches_the_three_model_outputs(sd15, weak15, conds, cfg, w):
    positive, negative = conds
    sigma = float(sigmas_for(sd15, 10)[3])
    c = one_step(cfg_guider(sd15, positive, negative, 1.0), sigma)  # cfg 1: exactly C
    u = one_step(cfg_guider(sd15, negative, positive, 1.0), sigma)  # the main model on the negative prompt
    b = one_step(cfg_guider(weak15, positive, negative, 1.0), sigma)  # the weak model on the positive prompt
    d = one_step(ag_guider(sd15, weak15, positive, negative, cfg=cfg, w=w), sigma)
    expected = c + (cfg - 1) * (c - u) + (w - 1) * (c - b)
    assert not torch.allclose(c, b, atol=1e-2) and not torch.allclose(c, u, atol=1e-2)
    assert torch.allclose(d, expected, atol=1e-4, rtol=1e-4), (d - expected).abs().max()


# --- the interval and skipped work ----------------------------------------------------------------------------------
def test_interval_respected_and_weak_pass_skipped_outside(sd15, weak15, conds):
    positive, negative = conds
    steps, start, end = 10, 0.3, 0.7
    model_sampling = sd15.get_model_object("model_sampling")
    sigma_hi, sigma_lo = model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end)
    sigmas = sigmas_for(sd15, steps)[:-1]
    inside = [float(s) for s in sigmas if sigma_lo < float(s) <= sigma_hi]
    assert 0 < len(inside) < steps

    weak_calls = []
    run(ag_guider(sd15, counting(weak15, weak_calls), positive, negative, start=start, end=end), sd15, steps=steps)
    assert weak_calls == [1] * len(inside)  # one batch-1 weak pass per step inside the interval, none outside

    guider = ag_guider(sd15, weak15, positive, negative, cfg=5.0, start=start, end=end)
    plain = cfg_guider(sd15, positive, negative, 5.0)
    outside = float(sigmas[0])
    assert torch.equal(one_step(guider, outside), one_step(plain, outside))  # outside: D = CFG (= C when cfg = 1)
    assert not torch.allclose(one_step(guider, inside[0]), one_step(plain, inside[0]), atol=1e-3)


def test_interval_bounds_are_exclusive_low_inclusive_high(sd15, weak15, conds):
    positive, negative = conds
    model_sampling = sd15.get_model_object("model_sampling")
    start, end = 0.2, 0.6
    sigma_hi, sigma_lo = model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end)
    calls = []
    guider = ag_guider(sd15, counting(weak15, calls), positive, negative, start=start, end=end)
    one_step(guider, sigma_hi)
    assert calls == [1]
    one_step(guider, sigma_lo)
    one_step(guider, sigma_hi * 1.01)
    assert calls == [1]


def test_a_step_exactly_at_the_interval_end_skips_the_weak_model(sd15, weak15, conds):
    """Inside one sampling that reaches the interval (sigma_lo, sigma_hi], the step exactly at sigma_lo (end_percent)
    is outside: the weak model runs for the first step only, and the second step is plain CFG."""
    positive, negative = conds
    model_sampling = sd15.get_model_object("model_sampling")
    start, end = 0.2, 0.6
    sigma_hi, sigma_lo = model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end)
    calls = []
    guider = ag_guider(sd15, counting(weak15, calls), positive, negative, start=start, end=end)
    sigmas = torch.tensor([(sigma_hi + sigma_lo) / 2, sigma_lo, 0.0])
    noise, latent = noise_and_latent(1)
    guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=1, disable_pbar=True)
    assert calls == [1]

def test_main_cond_and_uncond_batched_and_uncond_skipped_at_cfg1(sd15, weak15, conds):
    positive, negative = conds
    main_calls, weak_calls = [], []
    run(ag_guider(counting(sd15, main_calls), counting(weak15, weak_calls), positive, negative, cfg=5.0), sd15,
        steps=3)
    assert main_calls == [2, 2, 2] and weak_calls == [1, 1, 1]  # cond + uncond in one batch, then the weak pass

    main_calls.clear()
    run(ag_guider(counting(sd15, main_calls), weak15, positive, negative, cfg=1.0), sd15, steps=3)
    assert main_calls == [1, 1, 1]  # cfg = 1: no uncond pass

    main_calls.clear()
    forced = counting(sd15, main_calls)
    forced.model_options["disable_cfg1_optimization"] = True
    run(ag_guider(forced, weak15, positive, negative, cfg=1.0), sd15, steps=3)
    assert main_calls == [2, 2, 2]


# --- hooks of the main model ----------------------------------------------------------------------------------------
def test_pre_and_post_cfg_hooks_of_the_main_model_keep_working(sd15, weak15, conds):
    positive, negative = conds
    seen = {"pre": 0, "post": []}

    def pre_cfg(args):
        seen["pre"] += 1
        assert len(args["conds_out"]) == 2
        return args["conds_out"]

    def post_cfg(args):
        seen["post"].append(args["denoised"].clone())
        return args["denoised"] * 0.5

    main = sd15.clone()
    main.set_model_sampler_pre_cfg_function(pre_cfg)
    main.set_model_sampler_post_cfg_function(post_cfg)
    sigma = float(sigmas_for(sd15, 10)[3])
    got = one_step(ag_guider(main, weak15, positive, negative, cfg=5.0, w=2.0), sigma)
    guided = one_step(ag_guider(sd15, weak15, positive, negative, cfg=5.0, w=2.0), sigma)
    assert seen["pre"] == 1 and len(seen["post"]) == 1
    assert torch.allclose(seen["post"][0], guided, atol=1e-5)  # the post-CFG hook sees the autoguided result
    assert torch.allclose(got, guided * 0.5, atol=1e-5)  # and its change is kept

    # A custom CFG function (e.g. RescaleCFG's slot) still replaces the CFG part.
    custom = sd15.clone()
    custom.set_model_sampler_cfg_function(lambda args: args["cond"])  # "noise" of cond only: D_cfg = C
    d = one_step(ag_guider(custom, weak15, positive, negative, cfg=5.0, w=2.0), sigma)
    c = one_step(cfg_guider(sd15, positive, negative, 1.0), sigma)
    b = one_step(cfg_guider(weak15, positive, negative, 1.0), sigma)
    assert torch.allclose(d, c + (c - b), atol=1e-4)


# --- model management -----------------------------------------------------------------------------------------------
def test_both_models_loaded_together_and_inputs_untouched(sd15, weak15, conds):
    positive, negative = conds
    before = snapshot(sd15), snapshot(weak15)
    probes = []

    def probe(apply_model, args):
        loaded = [lm.model for lm in comfy.model_management.current_loaded_models]
        probes.append((any(m.model is sd15.model for m in loaded), any(m.model is weak15.model for m in loaded)))
        return apply_model(args["input"], args["timestep"], **args["c"])

    weak = weak15.clone()
    weak.set_model_unet_function_wrapper(probe)
    load_calls = []
    original = comfy.model_management.load_models_gpu

    def spy(models, *a, **kw):  # records what each loading pass is asked for, then does the real loading
        load_calls.append({id(m.model) for m in models})
        return original(models, *a, **kw)

    comfy.model_management.load_models_gpu = spy
    try:
        guider = ag_guider(sd15, weak, positive, negative)
        run(guider, sd15, steps=2)
    finally:
        comfy.model_management.load_models_gpu = original
    assert probes == [(True, True), (True, True)]
    assert load_calls == [{id(sd15.model), id(weak15.model)}]  # one pass that knows about both
    assert guider.weak_patcher.model.current_patcher is None  # cleaned up like any additional model
    assert (snapshot(sd15), snapshot(weak15)) == before


def test_accepts_latent_shapes_keyword(sd15, weak15, conds):
    positive, negative = conds
    guider = ag_guider(sd15, weak15, positive, negative)
    noise, latent = noise_and_latent()
    guider.conds = {k: [c.copy() for c in v] for k, v in guider.original_conds.items()}
    out = guider.outer_sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas_for(sd15, 2),
                              disable_pbar=True, seed=0, latent_shapes=[latent.shape])
    assert out.shape == latent.shape and torch.isfinite(out).all()


# --- validation -----------------------------------------------------------------------------------------------------
def lora_like(model, scale: float):
    m = model.clone()
    key = "diffusion_model.out.2.weight"
    m.add_patches({key: (torch.full_like(model.model.state_dict()[key], scale),)}, 1.0)
    return m


@pytest.mark.parametrize("case, match", [
    ("same_object", r"Autoguidance Guider: the weak_model input is the very same model.*two 'Load Checkpoint'.*"
                    r"Fix: load a different, weaker checkpoint"),
    ("lora_clone", r"Autoguidance Guider: weak_model is a patched copy of the same loaded checkpoint.*LoRA.*Fix:"),
    ("latent_space", r"Autoguidance Guider: weak_model works in another latent space \(SDXL latents.*Fix:"),
    ("prediction", r"Autoguidance Guider: weak_model uses another prediction type.*V_PREDICTION.*Fix:"),
    ("context", r"Autoguidance Guider: weak_model \(SD2.x\) takes other inputs than model \(SD1.5\): its context_dim.*Fix:"),
])
def test_validation_errors(sd15, sdxl, case, match):
    main = sd15
    if case == "same_object":
        weak = sd15
    elif case == "lora_clone":
        main, weak = lora_like(sd15, 0.01), lora_like(sd15, 0.02)
    elif case == "latent_space":
        weak = sdxl
    elif case == "prediction":  # same family and latent space, only the prediction type differs
        weak = model_factory.build_unet_model("sd15", model_factory.TINY_CONFIGS["sd15"], seed=5,
                                              model_type=comfy.model_base.ModelType.V_PREDICTION)
    else:  # SD2-shaped EPS model: same latents and prediction, another text encoder width
        weak = model_factory.tiny_unet("sd2", seed=5)
    with pytest.raises(ValueError, match=match):
        AutoguidanceGuider(main, weak)
    positive, negative = make_cond(sd15), make_cond(sd15, seed=3)
    with pytest.raises(ValueError, match=match):  # the node raises the same, before any sampling
        AutoguidanceGuiderNode.execute(main, weak, positive, negative, 5.0, 2.0, 0.0, 1.0)


def test_validation_of_the_interval(sd15, weak15):
    with pytest.raises(ValueError, match=r"Autoguidance Guider: the guidance interval is empty.*start_percent"):
        AutoguidanceGuider(sd15, weak15, start_percent=0.6, end_percent=0.6)


def test_validation_runs_again_before_sampling(sd15, weak15, conds):
    """A guider whose models were swapped for an invalid pair after construction fails before anything loads."""
    positive, negative = conds
    guider = ag_guider(sd15, weak15, positive, negative)
    guider.weak_model = sd15
    with pytest.raises(ValueError, match="very same model"):
        run(guider, sd15, steps=1)


# --- composition ----------------------------------------------------------------------------------------------------
def test_map_models_returns_a_patched_copy(sd15, weak15, conds):
    positive, negative = conds
    guider = ag_guider(sd15, weak15, positive, negative, cfg=3.0, w=2.0, start=0.0, end=1.0)
    calls, mapped = [], []

    def fn(model):
        mapped.append(model)
        return counting(model, calls)

    copy_ = guider.megapixel_map_models(fn)
    assert copy_ is not guider and mapped == [sd15, weak15]
    assert guider.main_model is sd15 and guider.weak_model is weak15  # the original guider is unchanged
    assert (copy_.cfg, copy_.w, copy_.start_percent, copy_.end_percent) == (3.0, 2.0, 0.0, 1.0)
    out = run(copy_, sd15, steps=2)
    assert calls == [2, 1, 2, 1]  # main (cond+uncond) and weak, both through fn's patch, every step
    assert torch.allclose(out, run(guider, sd15, steps=2), atol=1e-5)


def test_works_inside_core_sampler_custom_advanced(sd15, weak15, conds):
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    positive, negative = conds
    guider = AutoguidanceGuiderNode.execute(sd15, weak15, positive, negative, 5.0, 2.0, 0.0, 1.0).result[0]
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    sigmas = sigmas_for(sd15, 3)
    out, _ = SamplerCustomAdvanced.execute(Noise_RandomNoise(7), guider, comfy.samplers.sampler_object("euler"),
                                           sigmas, latent).result
    plain = SamplerCustomAdvanced.execute(Noise_RandomNoise(7), cfg_guider(sd15, positive, negative, 5.0),
                                          comfy.samplers.sampler_object("euler"), sigmas, latent).result[0]
    assert out["samples"].shape == latent["samples"].shape and torch.isfinite(out["samples"]).all()
    assert not torch.allclose(out["samples"], plain["samples"], atol=1e-3)


# --- an unused weak model is not loaded -----------------------------------------------------------------------------
def loads_during(fn) -> list[set]:
    """The models (ids of their inner BaseModels) each load_models_gpu pass is asked for while ``fn`` runs."""
    calls = []
    original = comfy.model_management.load_models_gpu

    def spy(models, *a, **kw):
        calls.append({id(m.model) for m in models})
        return original(models, *a, **kw)

    comfy.model_management.load_models_gpu = spy
    try:
        fn()
    finally:
        comfy.model_management.load_models_gpu = original
    return calls


def test_weak_model_not_loaded_with_w1(sd15, weak15, conds):
    positive, negative = conds
    weak_calls = []
    guider = ag_guider(sd15, counting(weak15, weak_calls), positive, negative, cfg=5.0, w=1.0)
    out = {}
    assert loads_during(lambda: out.setdefault("x", run(guider, sd15, steps=3))) == [{id(sd15.model)}]
    assert weak_calls == [] and not guider.weak_in_use
    assert torch.equal(out["x"], run(cfg_guider(sd15, positive, negative, 5.0), sd15, steps=3))


def test_weak_model_not_loaded_for_a_schedule_outside_the_interval(sd15, weak15, conds):
    """A schedule (e.g. a relay stage) that never reaches the guidance interval samples as plain CFG, without
    loading the weak model; one that reaches it loads both."""
    positive, negative = conds
    ms = sd15.get_model_object("model_sampling")
    start, end = 0.7, 1.0
    full = sigmas_for(sd15, 6)
    early = full[:4]  # all above sigma(start): outside (sigma(end), sigma(start)]
    assert float(early.min()) > ms.percent_to_sigma(start)
    weak_calls = []
    guider = ag_guider(sd15, counting(weak15, weak_calls), positive, negative, cfg=5.0, start=start, end=end)
    noise, latent = noise_and_latent(3)
    euler = comfy.samplers.sampler_object("euler")
    out = {}
    loads = loads_during(lambda: out.setdefault("x", guider.sample(noise, latent, euler, early, seed=3,
                                                                    disable_pbar=True)))
    assert loads == [{id(sd15.model)}] and weak_calls == []
    plain = cfg_guider(sd15, positive, negative, 5.0).sample(noise, latent, euler, early, seed=3, disable_pbar=True)
    assert torch.equal(out["x"], plain)
    # The later part of the same schedule reaches the interval: both load together, the weak model runs.
    late = full[3:]
    loads = loads_during(lambda: guider.sample(noise, out["x"], euler, late, seed=3, disable_pbar=True))
    assert loads == [{id(sd15.model), id(weak15.model)}]
    inside = [s for s in late[:-1].tolist() if ms.percent_to_sigma(end) < s <= ms.percent_to_sigma(start)]
    assert weak_calls == [1] * len(inside) and len(inside) > 0


def test_interval_inputs_are_described_as_core_percentages():
    """start/end_percent are the model's timestep percentages (percent_to_sigma), like core's start_percent, not
    fractions of the step count: the tooltips say so."""
    inputs = {i.id: i for i in AutoguidanceGuiderNode.define_schema().inputs}
    for name in ("start_percent", "end_percent"):
        tip = inputs[name].tooltip
        assert "percentage of the model's timesteps" in tip and "core" in tip, tip
        assert "fraction of the schedule" not in tip and "step)" not in tip, tip
    assert "percent_to_sigma" in inputs["start_percent"].tooltip
    assert "not a fraction of the steps" in inputs["start_percent"].tooltip
