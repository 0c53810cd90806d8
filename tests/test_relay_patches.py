"""The relay's per-stage model patches: noise re-scheduling (model_sampling) and the dilated middle block."""
from __future__ import annotations

import pytest
import torch

import comfy.model_base
import comfy.model_sampling
import comfy.samplers

from harness import model_factory
from support import make_cond

from megapixel.samplers.relay_dilate import DilationError, apply_dilation, dilated_copy, middle_block_conv_keys
from megapixel.samplers.relay_schedule import apply_rescheduling, map_sigma, rescheduled_model_sampling, unmap_sigma


@pytest.fixture(scope="module")
def flow():
    return model_factory.build_unet_model("sd15", model_factory.TINY_CONFIGS["sd15"], seed=4,
                                          model_type=comfy.model_base.ModelType.FLOW)


@pytest.mark.parametrize("family", ["sd15", "sd2v", "flow"])
def test_rescheduled_model_sampling_maps_sigmas_and_keeps_labels(family, request):
    model = request.getfixturevalue(family)
    base = model.get_model_object("model_sampling")
    s = 2.0
    ms = rescheduled_model_sampling(base, s)
    flow = family == "flow"
    assert isinstance(ms, type(base)) and isinstance(ms, comfy.model_sampling.CONST) == flow
    t = torch.tensor([10.0, 250.0, 600.0, 980.0])
    expected = 2 * base.sigma(t) / (1 + base.sigma(t)) if flow else 2 * base.sigma(t)  # SNR' = SNR / s²
    assert torch.allclose(ms.sigma(t), expected, rtol=1e-5)
    # The model is told the original label for the mapped noise level.
    assert torch.allclose(ms.timestep(ms.sigma(t)), base.timestep(base.sigma(t)), atol=1e-3)
    assert float(ms.sigma_max) == pytest.approx(float(map_sigma(base.sigma_max, s, flow)), rel=1e-5)
    assert float(ms.sigma_min) == pytest.approx(float(map_sigma(base.sigma_min, s, flow)), rel=1e-5)
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(map_sigma(base.percent_to_sigma(0.5), s, flow)), rel=1e-5)
    assert torch.allclose(ms.sigmas, map_sigma(base.sigmas, s, flow))
    # Prediction-type maths unchanged: the same calculate_denoised at the same sigma.
    x, out, sig = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.tensor([1.5 if not flow else 0.5])
    assert torch.equal(ms.calculate_denoised(sig, out, x), base.calculate_denoised(sig, out, x))
    assert getattr(ms, "sigma_data", None) == getattr(base, "sigma_data", None)


def test_alpha_bar_matches_megafusions_formula(sd15):
    """alpha_bar' = alpha_bar / (s² - (s²-1)·alpha_bar), the official re-scheduling, for sigma = sqrt(1/ab - 1)."""
    base = sd15.get_model_object("model_sampling")
    s = 1.5
    ms = rescheduled_model_sampling(base, s)
    ab = 1 / (1 + base.sigmas.double() ** 2)
    ab_new = ab / (s ** 2 - (s ** 2 - 1) * ab)
    assert torch.allclose(1 / (1 + ms.sigmas.double() ** 2), ab_new, rtol=1e-5)


def test_map_and_unmap_are_inverse():
    x = torch.linspace(0.01, 0.99, 20)
    for flow in (False, True):
        assert torch.allclose(unmap_sigma(map_sigma(x, 1.7, flow), 1.7, flow), x, atol=1e-6)
    assert map_sigma(x, 1.0, True) is x


def test_rescheduling_patches_a_clone_only(sd15):
    base = sd15.get_model_object("model_sampling")
    clone = apply_rescheduling(sd15, 2.0)
    assert clone is not sd15 and sd15.get_model_object("model_sampling") is base
    assert "model_sampling" not in sd15.object_patches
    assert clone.get_model_object("model_sampling").relay_scale == 2.0
    assert torch.equal(base.sigmas, sd15.model.model_sampling.sigmas)


def test_dilated_copy_is_a_dilation_2_conv_with_the_same_weights(sd15):
    key = middle_block_conv_keys(sd15)[0]
    conv = sd15.get_model_object(key)
    new = dilated_copy(conv)
    assert type(new) is type(conv) and new.weight is conv.weight and new.bias is conv.bias
    assert conv.dilation == (1, 1) and conv.padding == (1, 1)
    x = torch.randn(1, conv.in_channels, 6, 6)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=2, dilation=2)
    assert torch.allclose(new(x), expected, atol=1e-5)
    assert not torch.allclose(conv(x), expected, atol=1e-3)


@pytest.mark.parametrize("family, n_resnets", [("sd15", 2), ("sdxl", 2)])
def test_middle_block_keys_are_conv1_conv2_of_each_resnet(family, n_resnets, request):
    model = request.getfixturevalue(family)
    keys = middle_block_conv_keys(model)
    assert len(keys) == 2 * n_resnets
    assert all(k.startswith("diffusion_model.middle_block.") for k in keys)
    assert {k.split(".")[3] for k in keys} == {"in_layers", "out_layers"}


def test_dilation_changes_the_clone_output_only(sd15):
    clone = apply_dilation(sd15)
    assert clone is not sd15 and not any(k.startswith("diffusion_model") for k in sd15.object_patches)
    x = torch.randn(1, 4, 32, 32)  # the middle block at 4x4: wide enough for the dilation to matter
    cond = make_cond(sd15)[0][0]

    def denoise(model):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds([[cond, {}]], [[cond, {}]])
        guider.set_cfg(1.0)
        sampler = comfy.samplers.sampler_object("euler")
        return guider.sample(torch.zeros_like(x), x, sampler, torch.tensor([2.0, 0.0]), seed=0)

    plain = denoise(sd15)
    dilated = denoise(clone)
    assert dilated.shape == plain.shape and not torch.allclose(plain, dilated, atol=1e-4)
    assert torch.equal(denoise(sd15), plain)
    assert sd15.model.diffusion_model.middle_block[0].in_layers[2].dilation == (1, 1)


def test_dilation_refuses_models_without_a_unet_middle_block(sd15):
    clone = sd15.clone()
    clone.add_object_patch("diffusion_model.middle_block", torch.nn.ModuleList())
    with pytest.raises(DilationError, match="no U-Net middle block"):
        middle_block_conv_keys(clone)
    with pytest.raises(DilationError, match="3x3"):
        dilated_copy(torch.nn.Conv2d(4, 4, 1))
