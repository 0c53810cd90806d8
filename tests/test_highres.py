"""The Megapixel High-Res Sampler: its target and stages from first principles, its refusals, and that it is exactly
the composition it claims (the relay over the core or the autoguidance guider) on tiny real U-Nets."""
from __future__ import annotations

import math

import pytest
import torch

import comfy.samplers
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

from harness import model_factory
from support import latent, make_cond

from megapixel.nodes.highres import MegapixelHighRes
from megapixel.samplers import highres, relay
from megapixel.samplers.autoguidance import AutoguidanceGuider

SIZE = 64


@pytest.fixture(scope="module")
def weak15():
    return model_factory.tiny_unet("sd15", seed=11)


@pytest.mark.parametrize("shape, scale, size, expected", [
    ((1, 4, 64, 64), 4.0, (0, 0), "512x512, 1024x1024, 2048x2048"),   # SD1.5 4x: one stage per doubling
    ((1, 4, 64, 64), 2.0, (0, 0), "512x512, 1024x1024"),
    ((1, 4, 128, 128), 1.5, (0, 0), "1024x1024, 1536x1536"),           # SDXL 1.5x: one jump
    ((1, 4, 64, 64), 3.0, (0, 0), "512x512, 888x888, 1536x1536"),      # log-spaced middle: 512·3^0.5 = 886.8 -> 888
    ((1, 4, 64, 96), 2.0, (0, 0), "768x512, 1536x1024"),               # width x height, aspect kept
    ((1, 4, 64, 64), 9.0, (1024, 0), "512x512, 1024x1024"),            # a size wins over scale_by; height follows
    ((1, 4, 64, 64), 1.0, (0, 0), "512x512"),                          # 1x: a single stage, the core sampler
])
def test_stages_double_the_side_per_stage(shape, scale, size, expected):
    target = highres.target_size(shape, 8, scale, *size)
    assert highres.stage_list(shape, target, 8) == expected


def test_stages_respect_the_token_grid():
    target = highres.target_size((1, 16, 64, 64), 8, 3.0)  # a DiT: 8 px per latent pixel, 2x2 latent patches
    stages = highres.stage_list((1, 16, 64, 64), target, 8, 2)
    assert all(int(v) % 16 == 0 for size in stages.split(", ") for v in size.split("x")), stages


@pytest.mark.parametrize("scale, size, fragment", [
    (0.5, (0, 0), "smaller than the input latent"),
    (math.nan, (0, 0), "not a usable factor"),
    (math.inf, (0, 0), "not a usable factor"),
    (2.0, (256, 0), "smaller than the input latent"),
    (2.0, (-8, 0), "negative"),
    (32.0, (0, 0), "more than 16 times"),
    (2.0, (20000, 0), "above 16384 px"),
])
def test_bad_targets_are_refused_with_the_fix(scale, size, fragment):
    with pytest.raises(relay.RelayError, match=f"^{highres.NODE_NAME}: ") as err:
        highres.target_size((1, 4, 64, 64), 8, scale, *size)
    assert fragment in str(err.value) and "Fix:" in str(err.value)


def test_node_validation_names_the_input():
    assert MegapixelHighRes.validate_inputs(scale_by=2.0, width=0, height=0, steps=20) is True
    assert "scale_by" in MegapixelHighRes.validate_inputs(scale_by=0.5)
    assert "width: 100 is not a multiple of 8" in MegapixelHighRes.validate_inputs(width=100)


def _sample(model, weak=None, batch=1, denoise=1.0, mask=None, steps=4, scale=2.0, seed=5):
    lat = latent(SIZE, SIZE, batch)
    if mask is not None:
        lat["noise_mask"] = mask
    return highres.highres_sample(model, seed, steps, 3.0, "euler", "normal", make_cond(model, batch, 1),
                                  make_cond(model, batch, 2), lat, scale_by=scale, denoise=denoise,
                                  weak_model=weak)["samples"]


def _composition(model, guider, steps=4, denoise=1.0, stages="64x64, 128x128", seed=5):
    """The same graph built from the pack's other nodes: Relay Sampler (custom) over ``guider``."""
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler="euler",
                                     scheduler="normal", denoise=denoise).sigmas
    out, _ = relay.relay_sampler_custom(Noise_RandomNoise(seed), guider, comfy.samplers.sampler_object("euler"),
                                        sigmas, latent(SIZE, SIZE), stages=stages)
    return out["samples"]


def test_it_is_the_relay_over_the_core_guider(sd15):
    guider = comfy.samplers.CFGGuider(sd15)
    guider.set_conds(make_cond(sd15, 1, 1), make_cond(sd15, 1, 2))
    guider.set_cfg(3.0)
    out = _sample(sd15)
    assert out.shape == (1, 4, SIZE // 4, SIZE // 4) and torch.isfinite(out).all()
    assert torch.equal(out, _composition(sd15, guider))
    assert torch.equal(_sample(sd15, denoise=0.6),
                       _composition(sd15, guider, denoise=0.6))  # denoise < 1 as in KSampler: fewer, lower sigmas


def _call_counter(model, calls: list):
    m = model.clone()

    def wrapper(apply_model, args):
        calls.append(tuple(args["input"].shape[-2:]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m


def test_the_first_stage_end_is_the_boundary_noise_level(sd15):
    from megapixel.samplers.autoguidance import percent_for_sigma, sigma_interval

    ms = sd15.get_model_object("model_sampling")
    for sigma in (0.5, 3.0, 10.0):
        assert float(ms.percent_to_sigma(percent_for_sigma(ms, sigma))) == pytest.approx(sigma, rel=1e-3)
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", 8)
    shape = tuple(latent(SIZE, SIZE)["samples"].shape)
    end = highres.first_stage_end(sd15, sigmas, shape, "64x64, 128x128")  # 4 + 4 steps
    lo, _ = sigma_interval(ms, 0.0, end)
    assert float(sigmas[4]) < lo < float(sigmas[3])  # stage 1's last call is inside, stage 2's first is not
    assert highres.first_stage_end(sd15, sigmas, shape, "64x64") == 1.0


def test_with_a_weak_model_it_is_the_relay_over_autoguidance_at_the_first_stage(sd15, weak15):
    sigmas = comfy.samplers.KSampler(sd15, steps=4, device=sd15.load_device, sampler="euler",
                                     scheduler="normal").sigmas
    guider = AutoguidanceGuider(sd15, weak15, cfg=3.0, w=highres.AUTOGUIDANCE_W,
                                end_percent=highres.first_stage_end(sd15, sigmas, tuple(latent(SIZE, SIZE)["samples"].shape),
                                                                    "64x64, 128x128"))
    guider.set_conds(make_cond(sd15, 1, 1), make_cond(sd15, 1, 2))
    guided = _sample(sd15, weak15)
    assert torch.equal(guided, _composition(sd15, guider))
    weak_calls = []
    _sample(sd15, _call_counter(weak15, weak_calls))
    assert weak_calls == [(SIZE // 8, SIZE // 8)] * 2  # the 2 native steps of 4, never at the larger stage
    assert not torch.equal(guided, _sample(sd15))  # the weak model did something
    assert not sd15.object_patches and not sd15.model_options.get("sampler_post_cfg_function")  # untouched


def test_batches_and_masks_work_as_in_ksampler(sd15):
    out = _sample(sd15, batch=2)
    assert out.shape == (2, 4, SIZE // 4, SIZE // 4) and not torch.equal(out[0], out[1])
    mask = torch.zeros(1, SIZE // 8, SIZE // 8)
    mask[:, :, : SIZE // 16] = 1.0  # repaint the left half only
    masked = _sample(sd15, mask=mask)
    assert masked.shape == (1, 4, SIZE // 4, SIZE // 4)
    right = masked[..., SIZE // 8 + 2:]  # away from the blended border: the (zero) input, kept
    assert right.abs().max() < 1e-4 and masked[..., : SIZE // 8 - 2].abs().max() > 1e-2


def test_a_weak_model_of_another_family_is_refused_before_sampling(sd15, sdxl):
    with pytest.raises(ValueError, match=f"^{highres.NODE_NAME}: weak_model") as err:
        _sample(sd15, sdxl)
    assert "Fix:" in str(err.value)
