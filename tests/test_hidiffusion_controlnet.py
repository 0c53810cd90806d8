"""ControlNet under RAU-Net: a real (tiny, random) ControlNet applied through conditioning, as ControlNetApplyAdvanced
does; its residuals must follow RAU-Net's feature sizes instead of being dropped with a warning."""
from __future__ import annotations

import logging

import pytest
import torch

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_management
import comfy.ops
import comfy.patcher_extension
from harness import model_factory
import nodes

from megapixel.patches import families, presets, rau_net
from test_hidiffusion_support import conds, sample, schedule

DROPPED = "control could not be applied"


def tiny_controlnet(model, seed: int = 9):
    """A real comfy.controlnet.ControlNet around a tiny cldm ControlNet shaped like ``model``'s U-Net."""
    config = dict(model.model.model_config.unet_config)
    config.update(hint_channels=3, dtype=torch.float32, device=None, operations=comfy.ops.disable_weight_init)
    control = model_factory.init_weights(comfy.cldm.cldm.ControlNet(**config), seed=seed)
    return comfy.controlnet.ControlNet(control, load_device=comfy.model_management.get_torch_device())


def controlled(model, hw, strength=1.0):
    pos, neg = conds(model)
    hint = torch.rand(1, hw[0] * 8, hw[1] * 8, 3, generator=torch.Generator().manual_seed(2))
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, tiny_controlnet(model), hint, strength, 0.0, 1.0)


def official(model, row):
    layout = families.detect_layout(model)
    return rau_net.apply_rau_net(model, layout, presets.official_phases(layout.family, row))


@pytest.mark.parametrize("fixture, row, hw", [("sd15", "sd15_2048", (21, 27)), ("sdxl", "sdxl_4096", (24, 40))])
def test_controlnet_residuals_follow_rau_net(fixture, row, hw, request, caplog):
    model = request.getfixturevalue(fixture)
    patched = official(model, row)
    cpos, cneg = controlled(model, hw)
    sigmas = schedule(model, 4)  # both phases act in the first step(s), neither in the last
    with caplog.at_level(logging.WARNING):
        with_cn = sample(patched, hw, sigmas, cfg=3.0, positive=cpos, negative=cneg)
    assert DROPPED not in caplog.text
    assert with_cn.shape == (1, 4, *hw) and torch.isfinite(with_cn).all()
    without = sample(patched, hw, sigmas, cfg=3.0)
    assert not torch.allclose(with_cn, without, atol=1e-3)  # the control was applied


def test_without_the_wrapper_comfy_drops_the_residuals(sd15, caplog):
    """The counter-test: the same sampling with our DIFFUSION_MODEL wrapper removed loses the control."""
    patched = official(sd15, "sd15_2048")
    patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, rau_net.WRAPPER_KEY)
    cpos, cneg = controlled(sd15, (16, 16))
    with caplog.at_level(logging.WARNING):
        sample(patched, (16, 16), [float(sd15.get_model_object("model_sampling").sigma_max), 0.0], cfg=3.0,
               positive=cpos, negative=cneg)
    assert DROPPED in caplog.text


def test_residuals_are_resized_to_the_planned_sizes():
    layout = families.UNetLayout("SD1", 4, 2, False)
    active = rau_net.Active(frozenset({0}), frozenset({1}))
    plan = rau_net.plan_sizes(layout, (21, 27), active)
    assert plan.block_out[3] == (6, 7) and plan.block_out[4] == (6, 7) and plan.skip[4] == (3, 4)
    assert plan.middle == (1, 1)
    vanilla = rau_net.plan_sizes(layout, (21, 27), rau_net.INACTIVE)
    control = {"input": [], "middle": [torch.ones(1, 2, *vanilla.middle)],
               "output": [torch.ones(1, 2, *s) for s in vanilla.skip], "extra": "kept"}
    resized = rau_net.resize_control(control, plan)
    assert [tuple(t.shape[-2:]) for t in resized["output"]] == list(plan.skip)
    assert tuple(resized["middle"][0].shape[-2:]) == plan.middle and resized["extra"] == "kept"
    assert len(control["output"]) == 12 and tuple(control["output"][4].shape[-2:]) == vanilla.skip[4]  # copy
    assert torch.allclose(resized["output"][4], torch.ones_like(resized["output"][4]))  # area-averaged


def test_adapter_input_residuals_are_matched_to_their_blocks():
    """'input' residuals (T2I-Adapter) are popped one per input block from the end of the list."""
    layout = families.UNetLayout("SD1", 4, 2, False)
    plan = rau_net.plan_sizes(layout, (32, 32), rau_net.Active(frozenset({0}), frozenset()))
    vanilla = rau_net.plan_sizes(layout, (32, 32), rau_net.INACTIVE)
    residuals = [None] * 12
    residuals[11 - 4] = torch.ones(1, 2, *vanilla.block_out[4])  # popped at input block 4
    resized = rau_net.resize_control({"input": residuals, "middle": [], "output": []}, plan)
    assert tuple(resized["input"][7].shape[-2:]) == plan.block_out[4] == (8, 8)
    assert sum(t is not None for t in resized["input"]) == 1


def test_shrunk_residuals_are_area_averages_and_grown_ones_bicubic():
    """By hand: a residual shrunk by an integer factor is the mean of each factor x factor block; a grown one is
    torch's bicubic interpolation."""
    t = ((torch.arange(2 * 3 * 8 * 12, dtype=torch.float32) * 5.7) % 9.0).reshape(2, 3, 8, 12) ** 2
    shrunk = rau_net.resize_residual(t, (4, 6))
    expected = torch.empty(2, 3, 4, 6)
    for i in range(4):
        for j in range(6):
            expected[:, :, i, j] = t[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(-2, -1))
    assert torch.allclose(shrunk, expected, atol=1e-5)
    quarter = rau_net.resize_residual(t, (2, 3))
    assert torch.allclose(quarter, t.reshape(2, 3, 2, 4, 3, 4).mean(dim=(3, 5)), atol=1e-5)
    small = torch.randn(1, 2, 3, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(rau_net.resize_residual(small, (6, 10)),
                          torch.nn.functional.interpolate(small, size=(6, 10), mode="bicubic"), atol=1e-6)
