"""RAU-Net on the tiny real SD1/SD2/SDXL U-Nets: block maps, sigma gating, sizes, composition, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import comfy.model_base
import comfy.supported_models as sm
from harness import model_factory
from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

from megapixel.patches import families, presets, rau_net
from megapixel.patches.presets import CONV, POOL, Phase
from megapixel.patches.schedule import SigmaWindow
from test_hidiffusion_support import (HostReads, batch_noise, denoise_once, sample, schedule, snapshot, tiny_flux,
                                      with_probe)


def rau(model, phases, **kwargs):
    layout = families.detect_layout(model)
    return rau_net.apply_rau_net(model, layout, tuple(phases), **kwargs)


def official(model, row, aggressive=False):
    layout = families.detect_layout(model)
    return rau_net.apply_rau_net(model, layout, presets.official_phases(layout.family, row, aggressive))


# --- families and block maps --------------------------------------------------------------------------------
def test_families_are_detected(sd15, sd2v, sdxl):
    assert families.detect_layout(sd15).family == "SD1"
    assert families.detect_layout(sd2v).family == "SD2"
    assert families.detect_layout(sd2v).native_px == 768  # v-prediction SD2 is the 768 model
    assert families.detect_layout(sdxl).family == "SDXL"
    assert families.detect_layout(sdxl).native_px == 1024


def test_block_maps_match_the_official_ones(sd15, sdxl):
    sd = families.detect_layout(sd15)
    # SD1: stride-4 conv = input 3, its upsampler = output 8; pool after input 4, resized back before output 8.
    assert sd.downsample_block(0) == 3 and sd.upsample_block(0) == 8
    assert sd.first_block(1) == 4 and sd.skip_consumer(sd.first_block(1) - 1) == 8
    assert sd.input_blocks_of(0) == [1, 2] and sd.output_blocks_of(0) == [9, 10, 11]
    xl = families.detect_layout(sdxl)
    # SDXL: pool after input 4 / before output 5; stride-4 conv = input 6, upsampler = output 2.
    assert xl.first_block(1) == 4 and xl.skip_consumer(xl.first_block(1) - 1) == 5
    assert xl.downsample_block(1) == 6 and xl.upsample_block(1) == 2
    assert xl.input_blocks_of(1) == [4, 5] and xl.output_blocks_of(1) == [3, 4, 5]


def test_family_override_must_fit_the_structure(sd15, sdxl):
    assert families.detect_layout(sd15, "SD2").family == "SD2"  # same levels: allowed (only native size differs)
    with pytest.raises(families.UnsupportedModelError, match="3 U-Net levels, not the 4"):
        families.detect_layout(sdxl, "SD1", node="RAU-Net")


def test_non_unet_models_get_a_clear_error():
    flux = tiny_flux()
    with pytest.raises(families.UnsupportedModelError) as err:
        families.detect_layout(flux, node="HiDiffusion RAU-Net")
    message = str(err.value)
    assert "HiDiffusion RAU-Net" in message and "Flux" in message
    assert "SD1.x" in message and "SD2.x" in message and "SDXL" in message


def test_rejected_unet_configs_get_a_clear_error():
    refiner = model_factory.build_unet_model("sdxl", model_factory.TINY_CONFIGS["sdxl"], seed=0, head_channels=8)
    refiner.model.model_config = sm.SDXLRefiner(dict(model_factory.TINY_CONFIGS["sdxl"]))
    with pytest.raises(families.UnsupportedModelError, match="SDXL refiner"):
        families.detect_layout(refiner)


# --- official presets ---------------------------------------------------------------------------------------
def test_official_phases():
    assert presets.official_phases("SD1", "sd15_2048") == (Phase(CONV, 0, 0.0, 0.7), Phase(POOL, 1, 0.0, 0.3))
    assert presets.official_phases("SD1", "sd15_1024") == (Phase(CONV, 0, 0.0, 0.4),)
    assert presets.official_phases("SDXL", "sdxl_4096") == (Phase(POOL, 1, 0.0, 0.7), Phase(CONV, 1, 0.0, 0.3))
    assert presets.official_phases("SDXL", "sdxl_2048") == (Phase(POOL, 1, 0.0, 0.4),)
    assert presets.official_phases("SDXL", "sdxl_2048", aggressive=True) == (
        Phase(CONV, 1, 0.0, 0.16), Phase(POOL, 1, 0.16, 0.4))
    assert presets.official_phases("SDXL", "sdxl_turbo_1024") == (Phase(POOL, 1, 0.0, 0.5),)


@pytest.mark.parametrize("family, native, h, w, row", [
    ("SD1", 512, 512, 512, None), ("SD1", 512, 512, 768, "sd15_1024"), ("SD1", 512, 1024, 1024, "sd15_1024"),
    ("SD1", 512, 2048, 2048, "sd15_2048"), ("SD1", 512, 512, 2048, "sd15_1024"), ("SD2", 768, 768, 768, None),
    ("SDXL", 1024, 1024, 1024, None), ("SDXL", 1024, 2048, 2048, "sdxl_2048"), ("SDXL", 1024, 4096, 4096, "sdxl_4096"),
    ("SDXL", 1024, 4096, 2048, "sdxl_2048"),
])
def test_row_choice(family, native, h, w, row):
    assert presets.choose_row(family, native, h, w) == row


# --- behaviour ------------------------------------------------------------------------------------------------
def test_downsampler_is_stride_4_with_the_layers_own_weights(sd15):
    layer = sd15.model.diffusion_model.input_blocks[3][0]
    x = torch.randn(2, layer.channels, 21, 30)
    out = rau_net.resolution_aware_downsample(layer, x)
    expected = F.conv2d(x, layer.op.weight, layer.op.bias, stride=4, padding=2, dilation=2)
    assert out.shape[-2:] == (6, 8)  # ceil(21/4), ceil(30/4)
    assert torch.equal(out, expected)


def test_downsampler_goes_through_comfys_weight_cast_path():
    """A weight function (how ComfyUI applies LoRA in lowvram mode) is honoured, and the module is untouched."""
    model = model_factory.tiny_unet("sd15", seed=5)
    layer = model.model.diffusion_model.input_blocks[3][0]
    weight = layer.op.weight.detach().clone()
    layer.op.weight_function = [lambda w: w * 2.0]
    try:
        x = torch.randn(1, layer.channels, 16, 16)
        out = rau_net.resolution_aware_downsample(layer, x)
        assert torch.allclose(out, F.conv2d(x, weight * 2.0, layer.op.bias, stride=4, padding=2, dilation=2),
                              atol=1e-6)
        assert torch.equal(layer.op.weight, weight) and layer.op.stride == (2, 2)
    finally:
        layer.op.weight_function = []


@pytest.mark.parametrize("fixture", ["sd15", "sd2v", "sdxl"])
def test_inactive_window_is_bit_identical(fixture, request):
    model = request.getfixturevalue(fixture)
    patched = rau(model, [Phase(CONV, presets.CONV_LEVEL[families.detect_layout(model).family], 0.0, 0.3),
                          Phase(POOL, 1, 0.0, 0.3)])
    sigma = model.get_model_object("model_sampling").percent_to_sigma(0.6)  # outside [0, 0.3)
    vanilla = denoise_once(model, (20, 28), sigma, batch=2)
    assert torch.equal(denoise_once(patched, (20, 28), sigma, batch=2), vanilla)
    # ...and inside the window the same call differs.
    sigma_in = model.get_model_object("model_sampling").percent_to_sigma(0.1)
    assert not torch.equal(denoise_once(patched, (20, 28), sigma_in), denoise_once(model, (20, 28), sigma_in))


def test_probe_shows_activity_exactly_inside_the_sigma_range(sd15):
    t1, t2 = 0.7, 0.3
    patched, probe = with_probe(official(sd15, "sd15_2048"))
    sigmas = schedule(sd15, 10)
    sample(patched, (16, 16), sigmas)
    ms = sd15.get_model_object("model_sampling")
    conv_window = SigmaWindow(ms.percent_to_sigma(0.0), ms.percent_to_sigma(t1))
    pool_window = SigmaWindow(ms.percent_to_sigma(0.0), ms.percent_to_sigma(t2))
    seen = probe.at_block(3)  # after the level-0 downsampler: 4 (stride 4) or 8 (stride 2)
    assert len(seen) == 10
    for sigma, hw in seen:
        assert hw == ((4, 4) if conv_window.contains(sigma) else (8, 8)), sigma
    pooled = probe.at_block(5)  # second block of level 1 runs on the pooled features while T2 is active
    for sigma, hw in pooled:
        level1 = (4, 4) if conv_window.contains(sigma) else (8, 8)
        assert hw == ((level1[0] // 2, level1[1] // 2) if pool_window.contains(sigma) else level1), sigma
    active_steps = sum(conv_window.contains(s) for s, _ in seen)
    assert 0 < active_steps < 10 and sum(pool_window.contains(s) for s, _ in seen) < active_steps


def test_sdxl_aggressive_mode_switches_from_conv_to_pool(sdxl):
    patched, probe = with_probe(official(sdxl, "sdxl_2048", aggressive=True))
    sample(patched, (32, 32), schedule(sdxl, 13))
    kinds = []
    for (sigma, at4), (_, at6) in zip(probe.at_block(4), probe.at_block(6)):
        # Level 1 is 16x16: pooled after block 4 (8x8), or block 6 (level 1 -> 2) strided by 4 (4x4, not 8x8).
        kinds.append("pool" if at4 == (8, 8) else "conv" if at6 == (4, 4) else "off")
    assert kinds[0] == "conv" and "pool" in kinds and kinds[-1] == "off"
    assert kinds == sorted(kinds, key=["conv", "pool", "off"].index)  # conv first, then pool, then vanilla


@pytest.mark.parametrize("fixture, hw", [("sd15", (25, 19)), ("sd2v", (19, 33)), ("sdxl", (125, 125)),
                                         ("sdxl", (64, 256)), ("sdxl", (79, 127))])
def test_odd_sizes_keep_shape_and_stay_finite(fixture, hw, request):
    model = request.getfixturevalue(fixture)
    family = families.detect_layout(model).family
    row = "sdxl_4096" if family == "SDXL" else "sd15_2048"
    patched, probe = with_probe(official(model, row))
    out = denoise_once(patched, hw, float(model.get_model_object("model_sampling").sigma_max), batch=2)
    assert out.shape == (2, 4, *hw) and torch.isfinite(out).all()
    # Both phases were active: the deepest input block ran at 1/32 (SD1: conv /4 + pool /2 + 2 more /2s) or
    # 1/16 (SDXL: /2, pool /2, conv /4).
    deepest = probe.at_block(len(model.model.diffusion_model.input_blocks) - 1)[0][1]
    factor = 16 if family == "SDXL" else 32
    assert deepest == (-(-hw[0] // factor), -(-hw[1] // factor))


def test_batch_items_are_independent(sd15):
    patched = official(sd15, "sd15_2048")
    sigma = float(sd15.get_model_object("model_sampling").sigma_max)
    noise = batch_noise((21, 27), 3, seed=7)
    batch = denoise_once(patched, (21, 27), sigma, noise=noise)
    for i in range(3):
        single = denoise_once(patched, (21, 27), sigma, noise=noise[i:i + 1])
        assert torch.allclose(batch[i:i + 1], single, rtol=0, atol=1e-5 * float(batch.abs().max()))


def test_deterministic(sdxl):
    patched = official(sdxl, "sdxl_4096")
    sigmas = schedule(sdxl, 4)
    a = sample(patched, (40, 24), sigmas, seed=3, cfg=4.0, sampler="dpmpp_2m")
    b = sample(patched, (40, 24), sigmas, seed=3, cfg=4.0, sampler="dpmpp_2m")
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_input_model_is_not_mutated(sd15):
    before = snapshot(sd15)
    patched = official(sd15, "sd15_2048")
    sample(patched, (16, 24), schedule(sd15, 3))
    assert snapshot(sd15) == before
    assert snapshot(patched) != before  # the clone carries the patches


def test_existing_block_patches_are_kept(sd15):
    seen = []

    def other_input_patch(h, transformer_options):
        seen.append(("in", transformer_options["block"][1]))
        return h

    def other_output_patch(h, hsp, transformer_options):
        seen.append(("out", transformer_options["block"][1]))
        return h, hsp

    base = sd15.clone()
    base.set_model_input_block_patch(other_input_patch)
    base.set_model_output_block_patch(other_output_patch)
    patched = official(base, "sd15_2048")
    out = denoise_once(patched, (16, 16), float(sd15.get_model_object("model_sampling").sigma_max))
    assert torch.isfinite(out).all()
    assert {b for k, b in seen if k == "in"} == set(range(12)) and {b for k, b in seen if k == "out"} == set(range(12))


def test_other_downsample_handlers_still_run_where_we_do_not_act(sd15):
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample

    calls = []

    def other(layer, x, *args, **kwargs):
        calls.append(args[2]["block"][1] if len(args) > 2 else None)
        return layer(x)

    base = sd15.clone()
    patched = official(base, "sd15_1024")
    patched.set_model_forward_timestep_embed_patch((Downsample, other))
    denoise_once(patched, (16, 16), float(sd15.get_model_object("model_sampling").sigma_max))
    assert sorted(calls) == [6, 9]  # ours handled block 3, the later handler got the other two


def test_lora_on_the_downsampler_applies_under_rau_net():
    model = model_factory.tiny_unet("sd15", seed=11)
    key = "diffusion_model.input_blocks.3.0.op.weight"
    weight = model.model.state_dict()[key]
    lora = model.clone()
    lora.add_patches({key: ("diff", (torch.ones_like(weight) * 0.05,))}, 1.0)
    sigma = float(model.get_model_object("model_sampling").sigma_max)
    with_lora = denoise_once(official(lora, "sd15_1024"), (16, 16), sigma)
    plain = denoise_once(official(model, "sd15_1024"), (16, 16), sigma)
    assert not torch.equal(plain, with_lora) and torch.isfinite(with_lora).all()
    assert torch.equal(model.model.state_dict()[key], weight)  # loading `model` again restored its own weights


def test_deep_shrink_on_the_model_is_refused_at_patch_time(sd15):
    shrunk = PatchModelAddDownscale.execute(sd15, 3, 2.0, 0.0, 0.35, True, "bicubic", "bicubic").result[0]
    with pytest.raises(rau_net.PatchConflictError, match="Deep Shrink"):
        official(shrunk, "sd15_1024")
    # Ranges that do not overlap are fine.
    late = rau(shrunk, [Phase(CONV, 0, 0.5, 0.9)])
    assert torch.isfinite(denoise_once(late, (16, 16), 1.0)).all()


def test_deep_shrink_added_afterwards_is_reported_when_both_act(sd15):
    patched = official(sd15, "sd15_1024")
    shrunk = PatchModelAddDownscale.execute(patched, 3, 2.0, 0.0, 0.35, True, "bicubic", "bicubic").result[0]
    sigma = float(sd15.get_model_object("model_sampling").sigma_max)
    with pytest.raises(rau_net.PatchConflictError, match="Deep Shrink"):
        denoise_once(shrunk, (16, 16), sigma)
    # Where only one of them acts, sampling works.
    assert torch.isfinite(denoise_once(shrunk, (16, 16), sd15.get_model_object("model_sampling").percent_to_sigma(0.5))).all()


def test_bad_phases_are_refused(sd15, sdxl):
    with pytest.raises(ValueError, match="downsamplers at input blocks 3, 6"):
        rau(sdxl, [Phase(CONV, 2, 0.0, 0.4)])
    with pytest.raises(ValueError, match="between 0 and 1"):
        rau(sd15, [Phase(POOL, 1, 0.0, 1.5)])


# --- first principles: values, methods and boundaries, each computed by hand -------------------------------------
SD1_POOL_BLOCK = 4  # SD1: the pool acts after input block 4 (the first block of level 1) ...
SD1_RESIZE_BLOCK = 8  # ... and the decoder's features are resized back before output block 8 (README block map)


def pool_level_1(**kwargs) -> rau_net.RauNet:
    """A RAU-Net on the SD1 block map whose schedule always says: pool level 1."""
    model = model_factory.tiny_unet("sd15", seed=1)
    return rau_net.RauNet(families.detect_layout(model), lambda options, hw: rau_net.Active(pool_levels=frozenset({1})),
                          **kwargs)


def call_options(block, latent_hw=(18, 22)):
    return {"original_shape": [2, 4, *latent_hw], "sigmas": torch.tensor([1.0]), "block": block}


def test_pool_phase_averages_each_2x2_block_rounding_up():
    """Average-pool, kernel 2, ceil mode, by hand: output (i, j) is the mean of h[2i:2i+2, 2j:2j+2], and where an
    odd side leaves a 1-wide block at the edge, the mean of what is there."""
    net = pool_level_1()
    # An 18x22 latent: level 1 is 9x11 (odd both ways); values far from linear so max/min/mid-point differ from means.
    h = ((torch.arange(2 * 3 * 9 * 11, dtype=torch.float32) * 7.3) % 11.0).reshape(2, 3, 9, 11) ** 2
    out = net.input_block_patch(h.clone(), call_options(("input", SD1_POOL_BLOCK)))
    expected = torch.empty(2, 3, 5, 6)
    for i in range(5):
        for j in range(6):
            cell = h[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
            expected[:, :, i, j] = cell.sum(dim=(-2, -1)) / (cell.shape[-2] * cell.shape[-1])
    assert out.shape == (2, 3, 5, 6)
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-5)
    assert torch.equal(expected[0, 0, 4, 5], h[0, 0, 8, 10])  # the corner cell holds one value: itself
    # Other input blocks pass through untouched.
    g = torch.randn(2, 3, 9, 11)
    assert net.input_block_patch(g, call_options(("input", SD1_POOL_BLOCK - 1))) is g


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "nearest-exact", "area"])
def test_resize_back_uses_the_chosen_upsample_method(method):
    """Where the decoder meets the pooled level's first skip, the features go back to the skip's size with exactly
    the chosen method: torch's interpolate in that mode."""
    net = pool_level_1(upsample_method=method)
    h = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    skip = torch.randn(2, 3, 9, 11)
    out, skip_out = net.output_block_patch(h, skip, call_options(("output", SD1_RESIZE_BLOCK)))
    assert skip_out is skip
    assert torch.allclose(out, F.interpolate(h, size=(9, 11), mode=method), atol=1e-6)
    for other in (SD1_RESIZE_BLOCK - 1, SD1_RESIZE_BLOCK + 1):  # the neighbouring output blocks are not ours
        untouched, _ = net.output_block_patch(h, skip, call_options(("output", other)))
        assert untouched is h


def _float32_after(x: float) -> float:
    return float(torch.nextafter(torch.tensor(x, dtype=torch.float32), torch.tensor(math.inf)))


def test_phase_is_active_for_sigma_end_below_sigma_up_to_sigma_start(sd15):
    """A phase acts for sigma_end < sigma <= sigma_start (sigma_x = the model's percent_to_sigma(x)): a call exactly
    at sigma_end is NOT patched, one exactly at sigma_start is, and so is the next float32 above sigma_end."""
    ms = sd15.get_model_object("model_sampling")
    start, end = 0.2, 0.6
    sigma_start, sigma_end = float(ms.percent_to_sigma(start)), float(ms.percent_to_sigma(end))
    expected = {sigma_end: False, _float32_after(sigma_end): True, sigma_start: True,
                _float32_after(sigma_start): False, sigma_end * 0.5: False, sigma_start * 2.0: False}
    patched, probe = with_probe(rau(sd15, [Phase(CONV, 0, start, end)]))
    for sigma, active in expected.items():
        probe.calls.clear()
        denoise_once(patched, (16, 16), sigma)
        (seen_sigma, hw), = probe.at_block(3)  # after the level-0 downsampler: 4x4 with stride 4, 8x8 without
        assert seen_sigma == sigma  # the model was called at exactly this sigma
        assert hw == ((4, 4) if active else (8, 8)), (sigma, active)


def test_rau_net_reads_the_sigma_from_the_device_once_per_step(sd15):
    """All blocks of a model call (and all calls of a step) share one sigmas tensor: it is read to the host once,
    not per block (on a GPU every read is a sync)."""
    ms = sd15.get_model_object("model_sampling")
    schedule_ = rau_net.PhaseSchedule((Phase(CONV, 0, 0.0, 0.5),), ms)
    sigmas = torch.tensor([5.0, 5.0]).as_subclass(HostReads)
    options = {"sigmas": sigmas, "original_shape": [2, 4, 16, 16]}
    HostReads.count = 0
    assert schedule_(options, (16, 16))  # active at sigma 5
    first = HostReads.count
    for _ in range(24):
        schedule_(options, (16, 16))
    assert first >= 1 and HostReads.count == first

