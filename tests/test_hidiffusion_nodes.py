"""The HiDiffusion nodes: schemas, defaults that reproduce the official presets, the one-click node's per-call choice
(untouched at native size), odd sizes on every family, errors that name the node."""
from __future__ import annotations

import pytest
import torch

from megapixel.nodes.hidiffusion import (BLOCK_CHOICES, NODES, HiDiffusion, HiDiffusionMSWMSA, HiDiffusionRAUNet,
                                         phase_for)
from megapixel.patches import families, presets, rau_net
from megapixel.patches.presets import CONV, POOL, Phase
from test_hidiffusion_support import denoise_once, tiny_flux, sample, schedule, snapshot, with_probe


def run_node(node, **inputs):
    return node.execute(**inputs).result[0]


def rau_defaults(model, **overrides):
    inputs = {input.id: getattr(input, "default", None) for input in HiDiffusionRAUNet.define_schema().inputs}
    inputs.update(model=model, **overrides)
    return run_node(HiDiffusionRAUNet, **inputs)


def test_schemas():
    ids = [n.define_schema().node_id for n in NODES]
    assert ids == ["MegapixelHiDiffusion", "MegapixelHiDiffusionRAUNet", "MegapixelHiDiffusionMSWMSA"]
    for node in NODES:
        schema = node.define_schema()
        assert schema.category == "megapixel/hidiffusion" and schema.description
        assert all(i.tooltip for i in schema.inputs)
    one_click = {i.id: i for i in HiDiffusion.define_schema().inputs}
    assert one_click["target_width"].optional and one_click["target_width"].default == 0


def test_block_choices_map_to_levels():
    assert phase_for("official", "T1", "SD1", 0, 0.4) == Phase(CONV, 0, 0, 0.4)
    assert phase_for("official", "T2", "SD1", 0, 0.3) == Phase(POOL, 1, 0, 0.3)
    assert phase_for("official", "T1", "SDXL", 0, 0.4) == Phase(POOL, 1, 0, 0.4)
    assert phase_for("official", "T2", "SDXL", 0, 0.3) == Phase(CONV, 1, 0, 0.3)
    assert phase_for("stride-4 conv at input 6", "T1", "SD1", 0, 1) == Phase(CONV, 1, 0, 1)
    assert phase_for("pool at input 7", "T2", "SDXL", 0, 1) == Phase(POOL, 2, 0, 1)
    assert phase_for("off", "T1", "SD1", 0, 1) is None
    assert len(BLOCK_CHOICES) == len(set(BLOCK_CHOICES))


def test_rau_net_node_defaults_are_the_official_1024_row(sd15):
    node_model = rau_defaults(sd15)
    layout = families.detect_layout(sd15)
    direct = rau_net.apply_rau_net(sd15, layout, presets.official_phases("SD1", "sd15_1024"))
    sigmas = schedule(sd15, 5)
    assert torch.equal(sample(node_model, (16, 16), sigmas), sample(direct, (16, 16), sigmas))


def test_rau_net_node_errors_name_the_node(sd15):
    with pytest.raises(families.UnsupportedModelError, match="HiDiffusion RAU-Net \\(advanced\\).*SD1.x"):
        rau_defaults(tiny_flux())
    with pytest.raises(ValueError, match="no phase is active"):
        rau_defaults(sd15, t1_blocks="off")


def test_msw_msa_node(sd15, sdxl):
    inputs = dict(family="auto", blocks="auto", start=0.0, end=1.0, shift_mode="cycle")
    patched = run_node(HiDiffusionMSWMSA, model=sdxl, **inputs)
    assert torch.isfinite(denoise_once(patched, (18, 14), 5.0)).all()
    custom = run_node(HiDiffusionMSWMSA, model=sd15, **dict(inputs, blocks="input 1, output 11"))
    assert not torch.equal(denoise_once(custom, (16, 16), 5.0), denoise_once(sd15, (16, 16), 5.0))
    with pytest.raises(ValueError, match="HiDiffusion MSW-MSA \\(advanced\\): block \"input 3\" has no self-attention"):
        run_node(HiDiffusionMSWMSA, model=sd15, **dict(inputs, blocks="input 3"))
    with pytest.raises(families.UnsupportedModelError, match="MSW-MSA"):
        run_node(HiDiffusionMSWMSA, model=tiny_flux(), **inputs)


# --- one-click --------------------------------------------------------------------------------------------------
def test_one_click_leaves_native_and_smaller_sizes_untouched(sd15):
    patched = run_node(HiDiffusion, model=sd15)
    sigma = float(sd15.get_model_object("model_sampling").sigma_max)
    for hw in ((64, 64),):  # 512x512 px: native
        assert torch.equal(denoise_once(patched, hw, sigma), denoise_once(sd15, hw, sigma))
    # Just above native (576x512 px) it acts.
    assert not torch.equal(denoise_once(patched, (72, 64), sigma), denoise_once(sd15, (72, 64), sigma))


def test_one_click_native_size_of_sd2_v_prediction_is_768(sd2v):
    sigma = float(sd2v.get_model_object("model_sampling").sigma_max)
    small = (12, 12)
    at_native = run_node(HiDiffusion, model=sd2v, target_width=768, target_height=768)
    assert torch.equal(denoise_once(at_native, small, sigma), denoise_once(sd2v, small, sigma))
    above = run_node(HiDiffusion, model=sd2v, target_width=1024, target_height=768)
    assert not torch.equal(denoise_once(above, small, sigma), denoise_once(sd2v, small, sigma))


@pytest.mark.parametrize("target, row", [((1024, 1024), "sd15_1024"), ((2048, 2048), "sd15_2048")])
def test_one_click_target_size_picks_the_row(sd15, target, row):
    patched, probe = with_probe(run_node(HiDiffusion, model=sd15, target_width=target[0], target_height=target[1],
                                         msw_msa=False))
    sample(patched, (16, 16), schedule(sd15, 10))
    after_conv = [hw for _, hw in probe.at_block(3)]  # 4x4 while the stride-4 conv acts, else 8x8
    level1 = [hw for _, hw in probe.at_block(5)]  # half of that while the pool acts
    conv_steps = sum(hw == (4, 4) for hw in after_conv)
    pool_steps = sum(b[0] * 2 == a[0] for a, b in zip(after_conv, level1))
    t1, t2 = presets.ROWS[row].t1, presets.ROWS[row].t2
    assert conv_steps == pytest.approx(10 * t1, abs=1)
    assert pool_steps == pytest.approx(10 * t2, abs=1)


@pytest.mark.parametrize("aggressive, first", [(True, "conv"), (False, "pool")])
def test_one_click_sdxl_aggressive_mode(sdxl, aggressive, first):
    patched, probe = with_probe(run_node(HiDiffusion, model=sdxl, target_width=2048, target_height=2048,
                                         aggressive=aggressive, msw_msa=False))
    denoise_once(patched, (32, 32), float(sdxl.get_model_object("model_sampling").sigma_max))
    at4, at6 = probe.at_block(4)[0][1], probe.at_block(6)[0][1]
    assert ("pool" if at4 == (8, 8) else "conv" if at6 == (4, 4) else "off") == first


def test_one_click_validates_its_inputs(sd15):
    with pytest.raises(ValueError, match="HiDiffusion: give both target_width and target_height"):
        run_node(HiDiffusion, model=sd15, target_width=1024)
    with pytest.raises(ValueError, match="both RAU-Net and MSW-MSA are switched off"):
        run_node(HiDiffusion, model=sd15, rau_net=False, msw_msa=False)
    with pytest.raises(families.UnsupportedModelError, match="HiDiffusion: the model \\(Flux.1 dev\\)"):
        run_node(HiDiffusion, model=tiny_flux())


@pytest.mark.parametrize("fixture", ["sd15", "sd2v", "sdxl"])
@pytest.mark.parametrize("px", [(1000, 1000), (512, 2048), (1016, 632)])
def test_one_click_odd_sizes_and_aspects(fixture, px, request):
    """Both patches active together at odd latent sizes (125x125, 64x256, 127x79) on every family."""
    model = request.getfixturevalue(fixture)
    hw = (px[1] // 8, px[0] // 8)
    native = families.detect_layout(model).native_px
    if px[0] * px[1] <= native * native:  # SDXL at 1000x1000 or 1016x632 is below native: ask for a 2x target
        patched = run_node(HiDiffusion, model=model, target_width=2 * native, target_height=2 * native)
    else:
        patched = run_node(HiDiffusion, model=model)
    out = denoise_once(patched, hw, float(model.get_model_object("model_sampling").sigma_max))
    assert out.shape == (1, 4, *hw) and torch.isfinite(out).all()


def test_one_click_is_deterministic_and_does_not_mutate(sd15):
    before = snapshot(sd15)
    patched = run_node(HiDiffusion, model=sd15, target_width=2048, target_height=2048)
    sigmas = schedule(sd15, 3)
    a = sample(patched, (20, 12), sigmas, seed=5, cfg=4.0)
    b = sample(patched, (20, 12), sigmas, seed=5, cfg=4.0)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert snapshot(sd15) == before


# --- RAU-Net twice ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first, second", [("one-click", "advanced"), ("advanced", "one-click"),
                                           ("advanced", "advanced"), ("one-click", "one-click")])
def test_rau_net_twice_is_refused_when_the_second_node_runs(sd15, first, second):
    apply = {"one-click": lambda m: run_node(HiDiffusion, model=m), "advanced": lambda m: rau_defaults(m)}
    names = {"one-click": "HiDiffusion", "advanced": "HiDiffusion RAU-Net (advanced)"}
    patched = apply[first](sd15)
    with pytest.raises(rau_net.PatchConflictError) as err:
        apply[second](patched)
    message = str(err.value)
    assert message.startswith(names[second] + ": the model it gets already has RAU-Net from ")
    assert "HiDiffusion HiDiffusion" not in message and "Fix:" in message
    if first == second:
        assert f'another "{names[first]}" node' in message and message.count(names[first]) == 2
    else:  # each node named once
        assert f'the "{names[first]}" node' in message
        assert message.count("HiDiffusion RAU-Net (advanced)") == 1
        assert message.count("HiDiffusion") == 2


def test_rau_net_twice_in_separate_ranges_is_allowed(sd15):
    """Two advanced RAU-Nets acting in parts of the schedule that do not overlap never resize the same call."""
    early = rau_defaults(sd15, t1_start=0.0, t1_end=0.3)
    both = rau_defaults(early, t1_start=0.5, t1_end=0.8)
    assert torch.isfinite(sample(both, (16, 16), schedule(sd15, 4))).all()
    one_click_without_rau = run_node(HiDiffusion, model=early, rau_net=False, target_width=1024,
                                     target_height=1024)  # MSW-MSA only: nothing to refuse
    assert torch.isfinite(denoise_once(one_click_without_rau, (16, 16), 5.0)).all()


def test_runtime_conflict_names_the_one_click_node_once(sd15):
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

    patched = run_node(HiDiffusion, model=sd15, msw_msa=False, target_width=1024, target_height=1024)
    shrunk = PatchModelAddDownscale.execute(patched, 3, 2.0, 0.0, 0.35, True, "bicubic", "bicubic").result[0]
    with pytest.raises(rau_net.PatchConflictError) as err:
        denoise_once(shrunk, (16, 16), float(sd15.get_model_object("model_sampling").sigma_max))
    assert str(err.value).startswith("HiDiffusion: the U-Net features after input block")
    assert "HiDiffusion HiDiffusion" not in str(err.value)


def test_patches_work_under_inference_mode(sd15):
    """ComfyUI executes every node under torch.inference_mode (execution.py), whose tensors have no version counter:
    the patches' per-step reads must work on them, with the same result."""
    patched = run_node(HiDiffusion, model=sd15, target_width=2048, target_height=2048)
    sigmas = schedule(sd15, 3)
    expected = sample(patched, (16, 16), sigmas, cfg=2.0)
    with torch.inference_mode():
        got = sample(patched, (16, 16), sigmas, cfg=2.0)
    assert torch.equal(got, expected)
