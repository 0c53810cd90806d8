"""The autoguidance guider inside the relay sampler: every stage's patches reach both models, one stage = core."""
from __future__ import annotations

import pytest
import torch

import comfy.samplers
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

from harness import model_factory
from megapixel.samplers import relay
from megapixel.samplers.autoguidance import AutoguidanceGuider
from support import make_cond
from test_autoguidance import loads_during

SIZE = 64


@pytest.fixture(scope="module")
def weak15():
    return model_factory.tiny_unet("sd15", seed=11)


def scale_recorder(model, record: list):
    """A clone of ``model`` whose U-Net calls record the relay scale of the model sampling they run with."""
    m = model.clone()

    def wrapper(apply_model, args):
        record.append(getattr(apply_model.__self__.model_sampling, "relay_scale", 1.0))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m


def guider_for(model, weak, cfg=4.0, w=2.0):
    guider = AutoguidanceGuider(model, weak, cfg=cfg, w=w)
    guider.set_conds(make_cond(model, seed=1), make_cond(model, seed=2))
    return guider


def sigmas(model, steps):
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)


def test_relay_stages_patch_both_models(sd15, weak15):
    main_scales, weak_scales = [], []
    guider = guider_for(scale_recorder(sd15, main_scales), scale_recorder(weak15, weak_scales))
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    out, _ = relay.relay_sampler_custom(Noise_RandomNoise(3), guider, comfy.samplers.sampler_object("euler"),
                                        sigmas(sd15, 4), latent, stages="1, 2", step_split="3/1",
                                        noise_rescheduling=True, dilated_middle_block=True)
    assert out["samples"].shape == (1, 4, SIZE // 4, SIZE // 4) and torch.isfinite(out["samples"]).all()
    # 3 steps at stage 1, 1 step at stage 2 (scale 2): the weak model runs every step, re-scheduled like the main one.
    assert main_scales == pytest.approx([1.0, 1.0, 1.0, 2.0])
    assert weak_scales == pytest.approx([1.0, 1.0, 1.0, 2.0])
    assert "model_sampling" not in sd15.object_patches and "model_sampling" not in weak15.object_patches


def test_single_stage_relay_is_core_sampler_custom_advanced(sd15, weak15):
    guider = guider_for(sd15, weak15)
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    sampler, sig = comfy.samplers.sampler_object("euler"), sigmas(sd15, 3)
    relayed, _ = relay.relay_sampler_custom(Noise_RandomNoise(5), guider, sampler, sig, latent, stages="1")
    core, _ = SamplerCustomAdvanced.execute(Noise_RandomNoise(5), guider, sampler, sig, latent).result
    assert torch.equal(relayed["samples"], core["samples"])


def test_stages_past_the_interval_do_not_load_the_weak_model(sd15, weak15):
    """Guidance in the first 40% of the timesteps only: the first stage loads and runs both models, the second stage
    (all of its sigmas below the interval) loads the main model alone."""
    weak_scales = []
    guider = AutoguidanceGuider(sd15, scale_recorder(weak15, weak_scales), cfg=4.0, w=2.0, start_percent=0.0,
                                end_percent=0.4)
    guider.set_conds(make_cond(sd15, seed=1), make_cond(sd15, seed=2))
    sig = sigmas(sd15, 8)
    sigma_lo = sd15.get_model_object("model_sampling").percent_to_sigma(0.4)
    assert float(sig[3]) < sigma_lo < float(sig[2])  # stage 2 (steps 4 to 8) lies below the interval
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    loads = loads_during(lambda: relay.relay_sampler_custom(
        Noise_RandomNoise(3), guider, comfy.samplers.sampler_object("euler"), sig, latent, stages="1, 2",
        step_split="3/5"))
    assert loads == [{id(sd15.model), id(weak15.model)}, {id(sd15.model)}]
    inside = [s for s in sig[:3].tolist() if s > sigma_lo]
    assert len(weak_scales) == len(inside) > 0
