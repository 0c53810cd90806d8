"""The relay nodes (V3 schema, validation, execution on tiny models) and pixel-space upscaling through a VAE."""
from __future__ import annotations

import re

import pytest
import torch

import comfy.sample
import comfy.samplers
import nodes
from comfy_extras import nodes_custom_sampler

from harness import model_factory
from support import latent, make_cond

from megapixel.nodes.relay import CUSTOM_NAME, KSAMPLER_NAME, RelayKSampler, RelaySamplerCustom
from megapixel.samplers import relay

SIZE = 64


def test_schemas_are_prefixed_documented_and_in_the_pack():
    from megapixel.nodes import NODES

    for node in (RelayKSampler, RelaySamplerCustom):
        assert node in NODES
        schema = node.define_schema()
        assert schema.node_id.startswith("MegapixelRelay") and schema.category == "megapixel/sampling"
        assert schema.description and all(i.tooltip for i in schema.inputs)
        names = [i.id for i in schema.inputs]
        assert names[-6:] == ["stages", "step_split", "upscale_method", "noise_rescheduling",
                              "dilated_middle_block", "vae"]
    ks = [i.id for i in RelayKSampler.define_schema().inputs]
    assert ks[:10] == ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                       "latent_image", "denoise"]  # the core KSampler's inputs, in its order
    custom = RelaySamplerCustom.define_schema()
    assert [i.id for i in custom.inputs][:5] == ["noise", "guider", "sampler", "sigmas", "latent_image"]
    assert [o.display_name for o in custom.outputs] == ["output", "denoised_output"]


@pytest.mark.parametrize("stages, split, steps, fragment", [
    ("1, 0.5", "", 20, "stages: scale factor 0.5 is below 1"),
    ("1, 2, 2", "", 20, "stages: is not increasing"),
    ("512x512, 700x700", "", 20, "not a multiple of 8 px"),
    ("1, 1.5, 2", "", 2, "steps: 2 steps cannot be split over 3 stages"),
    ("1, 2", "100/0", 20, "step_split: stage 2 gets 0 of the 20 steps"),
    ("1, 2", "80/10/10", 20, "step_split: has 3 shares but there are 2 stages"),
    ("", "", 20, "stages: is empty"),
    ("1, 2", "", 0, "steps: 0 is out of range"),
])
def test_bad_specs_fail_validation_naming_node_input_and_fix(stages, split, steps, fragment):
    message = RelayKSampler.validate_inputs(stages=stages, step_split=split, steps=steps)
    assert isinstance(message, str) and message.startswith(KSAMPLER_NAME + ": ") and fragment in message
    assert "Fix:" in message
    if steps > 0 and "steps" not in fragment:
        custom = RelaySamplerCustom.validate_inputs(stages=stages, step_split=split)
        assert isinstance(custom, str) and custom.startswith(CUSTOM_NAME + ": ") and fragment in custom


def test_good_specs_pass_validation_and_linked_inputs_are_deferred():
    assert RelayKSampler.validate_inputs(stages="1, 1.5, 2", step_split="", steps=20) is True
    assert RelayKSampler.validate_inputs(stages="512x512, 1024x1024", step_split="40, 10", steps=50) is True
    assert RelayKSampler.validate_inputs(stages=None, step_split=None, steps=None) is True
    assert RelaySamplerCustom.validate_inputs(stages="1, 2", step_split="4/1") is True


def test_relay_ksampler_node_runs_and_single_stage_matches_core(sd15):
    pos, neg = make_cond(sd15, seed=1), make_cond(sd15, seed=2)
    lat = latent(SIZE, SIZE)
    args = (sd15, 3, 4, 2.5, "euler", "normal", pos, neg, lat, 1.0)
    (one,) = RelayKSampler.execute(*args, "1", "", "bicubic", False, False).result
    (core,) = nodes.common_ksampler(*args)
    assert torch.equal(one["samples"], core["samples"])
    (three,) = RelayKSampler.execute(*args, "1, 1.5, 2", "2/1/1", "bislerp", True, True).result
    assert three["samples"].shape == (1, 4, 16, 16) and torch.isfinite(three["samples"]).all()


def test_relay_custom_node_runs_with_any_guider(sd15):
    pos = make_cond(sd15, seed=1)
    (guider,) = nodes_custom_sampler.BasicGuider.execute(sd15, pos).result
    (sigmas,) = nodes_custom_sampler.BasicScheduler.execute(sd15, "simple", 5, 1.0).result
    noise = nodes_custom_sampler.Noise_RandomNoise(5)
    sampler = comfy.samplers.sampler_object("dpmpp_2m")
    out, denoised = RelaySamplerCustom.execute(noise, guider, sampler, sigmas, latent(SIZE, SIZE), "1, 2", "",
                                               "area", True, False).result
    assert out["samples"].shape == denoised["samples"].shape == (1, 4, 16, 16)
    assert torch.isfinite(out["samples"]).all()
    # The last step lands on sigma 0, where the sampler's output is its clean estimate.
    assert torch.allclose(out["samples"], denoised["samples"], atol=1e-4)


def test_execute_rejects_specs_that_only_the_latent_shows(sd15):
    pos, neg = make_cond(sd15, seed=1), make_cond(sd15, seed=2)
    with pytest.raises(ValueError, match="^" + re.escape(KSAMPLER_NAME) + f": stages: the first stage is 512x512 but the input"):
        RelayKSampler.execute(sd15, 3, 4, 2.5, "euler", "normal", pos, neg, latent(SIZE, SIZE), 1.0,
                              "512x512, 1024x1024", "", "bicubic", False, False)


def test_dilation_on_a_model_without_a_unet_middle_block_fails_before_sampling(sd15):
    clone = sd15.clone()
    clone.add_object_patch("diffusion_model.middle_block", torch.nn.ModuleList())
    pos, neg = make_cond(sd15, seed=1), make_cond(sd15, seed=2)
    with pytest.raises(ValueError, match="^" + re.escape(KSAMPLER_NAME) + f": dilated_middle_block: .*Fix: turn it off"):
        RelayKSampler.execute(clone, 3, 4, 2.5, "euler", "normal", pos, neg, latent(SIZE, SIZE), 1.0,
                              "1, 2", "", "bicubic", False, True)


# --- pixel-space upscaling through a VAE -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae():
    """The random full-size SD VAE architecture (comfy.sd.VAE), as the random checkpoint holds it."""
    return model_factory._random_vae(seed=5)


def test_vae_upscaler_decodes_resizes_and_encodes(vae):
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    up = relay.vae_upscaler(vae, "bicubic")(x, 8, 8)
    pixels = vae.decode(x)
    expected = vae.encode(relay.resize(pixels.movedim(-1, 1), 64, 64, "bicubic").movedim(1, -1).clamp(0, 1))
    assert up.shape == (1, 4, 8, 8) and torch.allclose(up, expected, atol=1e-5)


def test_relay_through_the_vae(sd15, vae):
    rec = []
    guider = comfy.samplers.CFGGuider(sd15)
    guider.set_conds(make_cond(sd15, seed=1), make_cond(sd15, seed=2))
    guider.set_cfg(2.0)
    lat = latent(32, 32)["samples"]
    sigmas = comfy.samplers.calculate_sigmas(sd15.get_model_object("model_sampling"), "normal", 3)
    plan = relay.plan_relay(sigmas, tuple(lat.shape), "1, 2", "2/1")
    upscale = relay.vae_upscaler(vae, "bilinear")
    result = relay.relay_sample(guider, comfy.samplers.sampler_object("euler"), plan, lat,
                                comfy.sample.prepare_noise(lat, 1), upscale=upscale,
                                stage_noise=lambda k, x: relay.fresh_noise(x, 1, k),
                                callback=lambda step, x0, x, total: rec.append(x0), disable_pbar=True, seed=1)
    x0_out = sd15.model.process_latent_out(rec[1])
    assert torch.allclose(result.stage_latents[0], upscale(x0_out, 8, 8), atol=1e-5)
    assert result.samples.shape == (1, 4, 8, 8)
    assert relay.check_vae(vae, sd15, KSAMPLER_NAME) is None



@pytest.mark.parametrize("node", ["ksampler", "custom"])
def test_the_stage_list_is_parsed_once_per_prompt(sd15, monkeypatch, node):
    """Validation (when the prompt is queued) and the run share one parse of the stage list."""
    from megapixel.samplers import relay_stages

    reads = []
    tokens = relay_stages._tokens
    monkeypatch.setattr(relay_stages, "_tokens", lambda text: reads.append(text) or tokens(text))
    stages, step_split = f"1 -> 1.{5 if node == 'ksampler' else 75}", "3:1"  # texts no other test parses
    pos, neg = make_cond(sd15, seed=1), make_cond(sd15, seed=2)
    if node == "ksampler":
        assert RelayKSampler.validate_inputs(stages=stages, step_split=step_split, steps=4) is True
        (out,) = RelayKSampler.execute(sd15, 3, 4, 2.5, "euler", "normal", pos, neg, latent(SIZE, SIZE), 1.0,
                                       stages, step_split, "bicubic", False, False).result
    else:
        assert RelaySamplerCustom.validate_inputs(stages=stages, step_split=step_split) is True
        (guider,) = nodes_custom_sampler.BasicGuider.execute(sd15, pos).result
        (sigmas,) = nodes_custom_sampler.BasicScheduler.execute(sd15, "simple", 4, 1.0).result
        out, _ = RelaySamplerCustom.execute(nodes_custom_sampler.Noise_RandomNoise(3), guider,
                                            comfy.samplers.sampler_object("euler"), sigmas, latent(SIZE, SIZE),
                                            stages, step_split, "bicubic", False, False).result
    assert out["samples"].shape[-1] in (12, 14)
    assert reads == [stages]
