"""The relay loop on tiny real U-Nets: single-stage equivalence with the core samplers, stage shapes, the boundary
re-noise, EPS / V / flow models, determinism, interrupt, progress, masks, area conds and non-mutation."""
from __future__ import annotations

import copy

import pytest
import torch

import comfy.model_base
import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import nodes
from comfy_extras import nodes_custom_sampler

from harness import model_factory
from support import latent, make_cond

from megapixel.samplers import relay
from megapixel.samplers.relay_schedule import map_sigma

SIZE = 64  # px: an 8x8 latent (the tiny U-Net goes down to 1x1); stages go up to 2x-2.5x that


@pytest.fixture(scope="module")
def flow():
    """Tiny SD1.5-shaped U-Net sampled as a flow (CONST) model: a real ModelSamplingDiscreteFlow."""
    return model_factory.build_unet_model("sd15", model_factory.TINY_CONFIGS["sd15"], seed=4,
                                          model_type=comfy.model_base.ModelType.FLOW)


def conds(model):
    return make_cond(model, seed=11), make_cond(model, seed=12)


def cfg_guider(model, cfg=3.0):
    pos, neg = conds(model)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(pos, neg)
    guider.set_cfg(cfg)
    return guider


def run(model, stages="1, 2", steps=5, split="", seed=7, sampler="euler", scheduler="normal", reschedule=False,
        dilate=False, callback=None, size=SIZE, mask=None, guider=None, upscale=None, batch=1):
    """relay_sample as the Relay KSampler drives it, with a callback to watch every step."""
    guider = guider or cfg_guider(model)
    lat = latent(size, size, batch)["samples"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    plan = relay.plan_relay(sigmas, tuple(lat.shape), stages, split,
                            model_sampling=model.get_model_object("model_sampling"), reschedule=reschedule,
                            dilate=dilate)
    noise = comfy.sample.prepare_noise(lat, seed)
    result = relay.relay_sample(guider, comfy.samplers.sampler_object(sampler), plan, lat, noise,
                                upscale=upscale or relay.latent_upscaler("bicubic"),
                                stage_noise=lambda k, x: relay.fresh_noise(x, seed, k), denoise_mask=mask,
                                callback=callback, disable_pbar=True, seed=seed)
    return plan, result


class Recorder:
    """A sampler callback keeping (step, x0, x, total) of every step."""

    def __init__(self):
        self.steps = []

    def __call__(self, step, x0, x, total):
        self.steps.append((step, x0.clone(), x.clone(), total))


# --- single stage == core --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler, scheduler, denoise", [("euler", "normal", 1.0), ("dpmpp_2m_sde", "karras", 1.0),
                                                         ("uni_pc", "simple", 0.6)])
def test_single_stage_is_bit_identical_to_core_ksampler(sd15, sampler, scheduler, denoise):
    pos, neg = conds(sd15)
    lat = latent(SIZE, SIZE)
    if denoise < 1.0:
        lat["samples"] = torch.randn(lat["samples"].shape, generator=torch.Generator().manual_seed(3))
    core = nodes.common_ksampler(sd15, 42, 4, 3.5, sampler, scheduler, pos, neg, lat, denoise=denoise)[0]
    mine = relay.relay_ksampler(sd15, 42, 4, 3.5, sampler, scheduler, pos, neg, lat, denoise, stages="1",
                                noise_rescheduling=True, dilated_middle_block=True)
    assert torch.equal(core["samples"], mine["samples"])


def test_single_stage_is_bit_identical_to_sampler_custom_advanced(sd2v):
    guider = cfg_guider(sd2v, 4.0)
    sampler = comfy.samplers.sampler_object("dpmpp_2m")
    sigmas = comfy.samplers.calculate_sigmas(sd2v.get_model_object("model_sampling"), "karras", 4)
    noise = nodes_custom_sampler.Noise_RandomNoise(9)
    lat = latent(SIZE, SIZE)
    core = nodes_custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, lat)
    out, denoised = relay.relay_sampler_custom(noise, guider, sampler, sigmas, lat, stages="1")
    assert torch.equal(core[0]["samples"], out["samples"])
    assert torch.equal(core[1]["samples"], denoised["samples"])


def test_denoise_zero_returns_the_latent_like_core(sd15):
    pos, neg = conds(sd15)
    lat = latent(SIZE, SIZE)
    out = relay.relay_ksampler(sd15, 1, 4, 3.0, "euler", "normal", pos, neg, lat, 0.0, stages="1")
    assert torch.equal(out["samples"], lat["samples"])
    with pytest.raises(relay.RelayError, match="Relay KSampler: .*no steps to sample"):
        relay.relay_ksampler(sd15, 1, 4, 3.0, "euler", "normal", pos, neg, lat, 0.0, stages="1, 2")


# --- stages ------------------------------------------------------------------------------------------------------
def test_three_stages_have_the_planned_shapes_steps_and_one_schedule(sd15):
    rec = Recorder()
    plan, result = run(sd15, stages="1, 1.5, 2", steps=10, callback=rec)
    assert [(s.height, s.width, s.steps) for s in plan.stages] == [(8, 8, 5), (12, 12, 3), (16, 16, 2)]
    assert [r[0] for r in rec.steps] == list(range(10))  # one progress count over all stages
    assert {r[3] for r in rec.steps} == {10}
    assert [tuple(r[2].shape[-2:]) for r in rec.steps] == [(8, 8)] * 5 + [(12, 12)] * 3 + [(16, 16)] * 2
    assert result.samples.shape == (1, 4, 16, 16) and torch.isfinite(result.samples).all()
    assert [tuple(x.shape) for x in result.stage_latents] == [(1, 4, 12, 12), (1, 4, 16, 16)]
    full = comfy.samplers.calculate_sigmas(sd15.get_model_object("model_sampling"), "normal", 10)
    assert torch.equal(torch.cat([plan.stages[0].sigmas, plan.stages[1].sigmas[1:], plan.stages[2].sigmas[1:]]), full)


def test_relay_ksampler_output_is_at_the_last_stage_size(sd15):
    pos, neg = conds(sd15)
    out = relay.relay_ksampler(sd15, 3, 4, 3.0, "euler", "normal", pos, neg, latent(48, SIZE), stages="1, 1.5, 2",
                               step_split="2/1/1")
    assert out["samples"].shape == (1, 4, 16, 12)


def _check_boundary(model, rec, plan, result, seed, boundary_step):
    """The first latent of stage 1 is the upscaled x0 of stage 0's last step, re-noised with FRESH noise to the
    stage's first sigma through the model's own noise_scaling."""
    inner = model.model
    x0_last = rec.steps[boundary_step - 1][1]
    x_first = rec.steps[boundary_step][2]
    stage = plan.stages[1]
    up = relay.resize(inner.process_latent_out(x0_last), stage.height, stage.width, "bicubic")
    assert torch.equal(up, result.stage_latents[0])
    base = inner.process_latent_in(up)
    sigma = float(stage.sigmas[0])
    noise = relay.fresh_noise(up, seed, 1)
    expected = inner.model_sampling.noise_scaling(torch.tensor(sigma), noise.clone(), base)
    assert torch.allclose(x_first, expected, atol=1e-4, rtol=1e-5)
    # Its statistics: the part that is not signal has exactly the std the next sigma implies.
    signal = (1.0 - sigma) * base if plan.flow else base
    residual = x_first - signal
    assert abs(float(residual.std()) / sigma - 1.0) < 0.05
    assert abs(float(residual.mean())) < 0.1 * sigma
    # Fresh: uncorrelated with the first stage's noise (upscaled to the same size).
    first_noise = relay.resize(comfy.sample.prepare_noise(torch.zeros(x0_last.shape), seed), stage.height,
                               stage.width, "bicubic")
    corr = torch.corrcoef(torch.stack([residual.flatten(), first_noise.flatten()]))[0, 1]
    assert abs(float(corr)) < 0.1
    return sigma


@pytest.mark.parametrize("family", ["sd15", "sd2v", "flow"])
def test_boundary_renoise_for_eps_v_and_flow(family, request):
    model = request.getfixturevalue(family)
    rec = Recorder()
    plan, result = run(model, stages="1, 2", steps=5, split="4/1", callback=rec, seed=21, batch=4)
    assert plan.flow == (family == "flow")
    sigma = _check_boundary(model, rec, plan, result, 21, 4)
    full = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 5)
    assert sigma == pytest.approx(float(full[4]))  # no re-scheduling: the schedule's own sigma
    assert result.samples.shape == (4, 4, 16, 16) and torch.isfinite(result.samples).all()


@pytest.mark.parametrize("family", ["sd15", "flow"])
def test_boundary_renoise_with_rescheduling_uses_the_mapped_sigma(family, request):
    model = request.getfixturevalue(family)
    rec = Recorder()
    plan, result = run(model, stages="1, 2", steps=5, split="4/1", callback=rec, seed=5, reschedule=True, batch=4)
    sigma = _check_boundary(model, rec, plan, result, 5, 4)
    full = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 5)
    b = float(full[4])
    expected = 2 * b / (1 + b) if family == "flow" else 2 * b  # time_snr_shift(2, t) / 2·sigma
    assert sigma == pytest.approx(expected, rel=1e-5)
    assert plan.stages[0].sigmas.tolist() == full[:5].tolist()  # the first stage is never re-scheduled


def test_fresh_noise_is_deterministic_per_seed_and_stage():
    x = torch.zeros(1, 4, 8, 8)
    assert torch.equal(relay.fresh_noise(x, 3, 0), comfy.sample.prepare_noise(x, 3))
    assert torch.equal(relay.fresh_noise(x, 3, 1), relay.fresh_noise(x, 3, 1))
    assert not torch.equal(relay.fresh_noise(x, 3, 1), relay.fresh_noise(x, 3, 2))
    assert not torch.equal(relay.fresh_noise(x, 3, 1), relay.fresh_noise(x, 4, 1))
    assert relay.stage_seed(0xffffffffffffffff, 3) < 1 << 64


def test_relay_is_deterministic(sd15):
    pos, neg = conds(sd15)
    args = (sd15, 5, 4, 3.0, "euler_ancestral", "normal", pos, neg, latent(SIZE, SIZE))
    a = relay.relay_ksampler(*args, stages="1, 1.5", step_split="3/1")["samples"]
    b = relay.relay_ksampler(*args, stages="1, 1.5", step_split="3/1")["samples"]
    c = relay.relay_ksampler(sd15, 6, *args[2:], stages="1, 1.5", step_split="3/1")["samples"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


class SeedlessNoise:
    """A NOISE as other packs may make it: generate_noise only, no ``seed`` attribute."""

    def __init__(self, key: int):
        self.key = key

    def generate_noise(self, input_latent):
        samples = input_latent["samples"]
        return torch.randn(samples.shape, generator=torch.Generator().manual_seed(self.key))


class NoiseRecorder(comfy.samplers.CFGGuider):
    """A CFG guider that keeps the noise every stage is started with."""

    def sample(self, noise, *args, **kwargs):
        self.noises.append(noise.clone())
        return super().sample(noise, *args, **kwargs)


def stage_noises(model, noise) -> list[torch.Tensor]:
    guider = NoiseRecorder(model)
    guider.noises = []
    guider.set_conds(*conds(model))
    guider.set_cfg(2.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    relay.relay_sampler_custom(noise, guider, comfy.samplers.sampler_object("euler"), sigmas, latent(SIZE, SIZE),
                               stages="1, 1.5, 2", step_split="1/1/1")
    return guider.noises


def test_a_noise_without_seed_gives_every_stage_its_own_reproducible_noise(sd15):
    a = stage_noises(sd15, SeedlessNoise(1))
    assert [tuple(n.shape[-2:]) for n in a] == [(8, 8), (12, 12), (16, 16)]
    assert torch.equal(a[0], SeedlessNoise(1).generate_noise(latent(SIZE, SIZE)))  # stage 0: the NOISE's own
    again = stage_noises(sd15, SeedlessNoise(1))
    assert all(torch.equal(x, y) for x, y in zip(a, again))  # reproducible
    other = stage_noises(sd15, SeedlessNoise(2))
    for k in (1, 2):  # another NOISE gives other later stages (not one fixed noise for every NOISE without a seed)
        assert not torch.allclose(a[k], other[k])
        # ... and no stage's noise repeats the NOISE's own noise at that size (it would correlate with stage 0's).
        own = SeedlessNoise(1).generate_noise({"samples": torch.zeros_like(a[k])})
        corr = torch.corrcoef(torch.stack([a[k].flatten(), own.flatten()]))[0, 1]
        assert abs(float(corr)) < 0.2
        assert 0.8 < float(a[k].std()) < 1.2 and abs(float(a[k].mean())) < 0.2  # standard normal
    assert not torch.allclose(a[1][..., :8, :8], a[2][..., :8, :8])


def test_a_noise_without_seed_under_inference_mode(sd15):
    """As ComfyUI runs nodes (torch.inference_mode): the same noise as outside it."""
    with torch.inference_mode():
        inside = stage_noises(sd15, SeedlessNoise(1))
    assert all(torch.equal(x, y) for x, y in zip(inside, stage_noises(sd15, SeedlessNoise(1))))


def test_a_noise_with_seed_keeps_using_its_seed(sd15):
    noises = stage_noises(sd15, nodes_custom_sampler.Noise_RandomNoise(9))
    for k in (1, 2):
        assert torch.equal(noises[k], relay.fresh_noise(torch.zeros_like(noises[k]), 9, k))


# --- interrupt and progress --------------------------------------------------------------------------------------
class Interrupter(Recorder):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def __call__(self, step, x0, x, total):
        super().__call__(step, x0, x, total)
        if step == self.at_step:
            comfy.model_management.interrupt_current_processing(True)


@pytest.mark.parametrize("at_step, where", [(2, "between stages"), (3, "inside a stage")])
def test_interrupt_stops_the_relay(sd15, at_step, where):
    rec = Interrupter(at_step)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run(sd15, stages="1, 1.5, 2", steps=6, split="3/2/1", callback=rec)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    # Steps 0-2 are stage 1, 3-4 stage 2, 5 stage 3.  Interrupting at stage 1's last step stops before stage 2
    # starts; interrupting at stage 2's first step stops before its second.
    assert [r[0] for r in rec.steps] == list(range(at_step + 1))


def test_one_progress_bar_for_all_stages(sd15):
    updates = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        pos, neg = conds(sd15)
        relay.relay_ksampler(sd15, 1, 6, 3.0, "euler", "normal", pos, neg, latent(SIZE, SIZE), stages="1, 1.5, 2",
                             step_split="4/1/1")
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    # One bar: one total for all stages, counting up across the stage boundaries, first step and completion shown.
    # (Newer hosts drop updates that come less than 0.1 s after the previous one, except the first and the last,
    # so which steps in between are reported depends on the machine's speed.)
    values = [value for value, _ in updates]
    assert {total for _, total in updates} == {6}, updates
    assert values[0] == 1 and values[-1] == 6 and values == sorted(set(values)), updates
    if not hasattr(comfy.utils, "PROGRESS_THROTTLE_MIN_INTERVAL"):  # a host that reports every step
        assert values == list(range(1, 7)), updates


# --- spatial inputs ------------------------------------------------------------------------------------------------
def test_inpainting_mask_keeps_the_known_region_at_every_stage(sd15):
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1.0  # repaint the left half, keep the right half
    pos, neg = conds(sd15)
    lat = {"samples": source, "noise_mask": mask}
    out = relay.relay_ksampler(sd15, 2, 5, 3.0, "euler", "normal", pos, neg, lat, stages="1, 2", step_split="4/1")
    assert out["samples"].shape == (1, 4, 16, 16)
    assert torch.equal(out["noise_mask"], mask)
    known = relay.resize(source, 16, 16, "bicubic")
    right = slice(10, 16)  # away from the bilinear seam of the resized mask
    assert torch.allclose(out["samples"][..., right], known[..., right], atol=1e-4)
    assert not torch.allclose(out["samples"][..., :6], known[..., :6], atol=1e-1)


def test_absolute_area_conds_are_scaled_to_the_stage(sd15):
    pos, neg = conds(sd15)
    (area_cond,) = nodes.ConditioningSetArea().append(pos, 32, 16, 8, 24, 1.0)  # w, h, x, y in px
    guider = comfy.samplers.CFGGuider(sd15)
    guider.set_conds(area_cond + pos, neg)
    guider.set_cfg(3.0)
    before = copy.deepcopy([c.get("area") for c in guider.original_conds["positive"]])
    sigmas = comfy.samplers.calculate_sigmas(sd15.get_model_object("model_sampling"), "normal", 4)
    plan = relay.plan_relay(sigmas, (1, 4, 8, 8), "1, 2", "3/1")
    g1 = relay.stage_guider(guider, plan.stages[1], plan.stages[0])
    assert g1 is not guider
    assert g1.original_conds["positive"][0]["area"] == (4, 8, 6, 2)  # (h, w, y, x) latent px, doubled
    assert [c.get("area") for c in guider.original_conds["positive"]] == before  # the given guider is untouched
    assert relay.stage_guider(guider, plan.stages[0], plan.stages[0]) is guider
    # And it samples.
    _, result = run(sd15, stages="1, 2", steps=4, split="3/1", guider=guider)
    assert result.samples.shape == (1, 4, 16, 16)


def test_area_scaling_clamps_to_the_stage():
    conds_ = {"positive": [{"area": (16, 16, 0, 0)}, {"area": ("percentage", 0.5, 0.5, 0, 0)}, {}]}
    out = relay.scale_spatial_conds(conds_, 1.5, 1.5, 24, 24)
    assert out["positive"][0]["area"] == (24, 24, 0, 0)
    assert out["positive"][1]["area"] == ("percentage", 0.5, 0.5, 0, 0)
    assert relay.scale_spatial_conds({"positive": [{}]}, 2, 2, 32, 32) is None
    with pytest.raises(relay.RelayError, match="cannot be scaled"):
        relay.scale_spatial_conds({"positive": [{"area": (4, 4, 4, 0, 0, 0)}]}, 2, 2, 32, 32)


def test_areas_scale_each_axis_by_its_own_factor(sd15):
    """Stages given in px may grow the sides by different factors: 512x512 -> 1024x768 px is x2 in width and x1.5
    in height, so an area's heights and y positions scale by 1.5 and its widths and x positions by 2."""
    pos, neg = conds(sd15)
    (area_cond,) = nodes.ConditioningSetArea().append(pos, 16, 8, 24, 16, 1.0)  # w, h, x, y in px
    guider = comfy.samplers.CFGGuider(sd15)
    guider.set_conds(area_cond, neg)
    assert guider.original_conds["positive"][0]["area"] == (1, 2, 2, 3)  # (h, w, y, x) latent px at stage 1
    sigmas = comfy.samplers.calculate_sigmas(sd15.get_model_object("model_sampling"), "normal", 4)
    plan = relay.plan_relay(sigmas, (1, 4, 64, 64), "512x512, 1024x768", "3/1")
    assert (plan.stages[1].height, plan.stages[1].width) == (96, 128)
    g1 = relay.stage_guider(guider, plan.stages[1], plan.stages[0])
    # h 1 x 1.5 = 1.5 -> 2, w 2 x 2 = 4, y 2 x 1.5 = 3, x 3 x 2 = 6
    assert g1.original_conds["positive"][0]["area"] == (2, 4, 3, 6)


# --- guiders and models are never mutated --------------------------------------------------------------------------
def _model_state(model):
    return (dict(model.object_patches), copy.copy(model.model_options), model.get_model_object("model_sampling"),
            model.model.model_sampling, model.model.diffusion_model.middle_block[0].in_layers[2],
            tuple(model.model.diffusion_model.middle_block[0].in_layers[2].dilation), model.patches_uuid)


def test_relay_with_patches_leaves_the_input_model_and_guider_untouched(sd15):
    pos, neg = conds(sd15)
    lat = latent(SIZE, SIZE)
    before_core = nodes.common_ksampler(sd15, 4, 3, 3.0, "euler", "normal", pos, neg, lat)[0]["samples"]
    state = _model_state(sd15)
    guider = cfg_guider(sd15)
    guider_state = (guider.model_patcher, guider.model_options, dict(guider.original_conds))
    _, result = run(sd15, stages="1, 2", steps=4, split="3/1", reschedule=True, dilate=True, guider=guider)
    assert torch.isfinite(result.samples).all()
    # The patcher we were given holds no new patches ...
    assert dict(sd15.object_patches) == state[0] and sd15.model_options == state[1]
    assert sd15.get_model_object("model_sampling") is state[2] and sd15.patches_uuid == state[6]
    assert (guider.model_patcher, guider.model_options, guider.original_conds) == guider_state
    # ... and sampling with it again (ComfyUI swaps the loaded clone's object patches out) gives the same result.
    after_core = nodes.common_ksampler(sd15, 4, 3, 3.0, "euler", "normal", pos, neg, lat)[0]["samples"]
    assert torch.equal(before_core, after_core)
    after = _model_state(sd15)
    assert after[3] is state[3] and after[4] is state[4] and after[5] == (1, 1)


class MappingGuider(comfy.samplers.CFGGuider):
    """A guider implementing the model-mapping protocol, as the autoguidance guider does."""

    def __init__(self, model, other):
        super().__init__(model)
        self.other = other
        self.mapped = []

    def megapixel_map_models(self, fn):
        copy_ = MappingGuider(fn(self.model_patcher), fn(self.other))
        copy_.original_conds = self.original_conds
        copy_.cfg = self.cfg
        self.mapped.append(copy_)
        return copy_


def test_guiders_with_the_mapping_protocol_get_every_model_patched(sd15):
    guider = MappingGuider(sd15, sd15.clone())
    pos, neg = conds(sd15)
    guider.set_conds(pos, neg)
    guider.set_cfg(2.0)
    plan, result = run(sd15, stages="1, 1.5, 2", steps=6, split="4/1/1", reschedule=True, guider=guider)
    assert len(guider.mapped) == 2  # stages 2 and 3; the first stage runs on the guider itself
    for mapped, stage in zip(guider.mapped, plan.stages[1:]):
        for model in (mapped.model_patcher, mapped.other):
            ms = model.get_model_object("model_sampling")
            assert ms.relay_scale == pytest.approx(stage.scale)
    assert guider.model_patcher is sd15 and "model_sampling" not in guider.other.object_patches


def test_guiders_without_the_protocol_are_copied_with_a_patched_model(sd15):
    guider = cfg_guider(sd15)
    plan = relay.plan_relay(torch.linspace(5, 0, 5), (1, 4, 8, 8), "1, 2", "3/1",
                            model_sampling=sd15.get_model_object("model_sampling"), reschedule=True, dilate=True)
    g = relay.stage_guider(guider, plan.stages[1], plan.stages[0])
    assert g is not guider and guider.model_patcher is sd15
    assert g.model_patcher is not sd15 and g.model_options is g.model_patcher.model_options
    assert "model_sampling" in g.model_patcher.object_patches
    assert "diffusion_model.middle_block.0.in_layers.2" in g.model_patcher.object_patches


# --- ControlNet ----------------------------------------------------------------------------------------------------
def tiny_controlnet(model):
    """A real comfy.controlnet.ControlNet around a tiny cldm ControlNet shaped like the tiny SD1.5 U-Net."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    config = dict(model.model.model_config.unet_config)
    config.update(hint_channels=3, dtype=torch.float32, device=None, operations=comfy.ops.disable_weight_init)
    control = model_factory.init_weights(comfy.cldm.cldm.ControlNet(**config), seed=9)
    return comfy.controlnet.ControlNet(control, load_device=comfy.model_management.get_torch_device())


def test_controlnet_hints_follow_the_stage_size(sd15):
    cn = tiny_controlnet(sd15)
    pos, neg = conds(sd15)
    hint = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))
    cpos, cneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, hint, 1.0, 0.0, 1.0)
    guider = comfy.samplers.CFGGuider(sd15)
    guider.set_conds(cpos, cneg)
    guider.set_cfg(3.0)
    seen = []
    control = cpos[0][1]["control"]
    original_get_control = control.get_control

    def watch(x_noisy, t, cond, batched_number, transformer_options):
        out = original_get_control(x_noisy, t, cond, batched_number, transformer_options)
        seen.append((tuple(x_noisy.shape[-2:]), tuple(control.cond_hint.shape[-2:])))
        return out

    control.get_control = watch  # an instance attribute on this test's own ControlNet copy
    _, with_cn = run(sd15, stages="1, 2", steps=3, split="2/1", guider=guider)
    _, without = run(sd15, stages="1, 2", steps=3, split="2/1")
    assert {s for s in seen} == {((8, 8), (64, 64)), ((16, 16), (128, 128))}  # hint resized to each stage
    assert with_cn.samples.shape == (1, 4, 16, 16) and torch.isfinite(with_cn.samples).all()
    assert not torch.allclose(with_cn.samples, without.samples, atol=1e-3)
