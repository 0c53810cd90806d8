"""The relay sampler and the autoguidance guider on every DiT family of the host (tiny seeded models built from the
host's own classes, ``tools/harness/tiny_dits.py``): one-stage identity with the core sampler, 2 and 3 stages in scale
factors and in pixels (latent and VAE upscaling), the model's latent ratio and patch size, 5-D latents, the Flux
family's size-dependent shift, reference latents, same-family and other-family weak models."""
from __future__ import annotations

import math

import pytest
import torch

import comfy.model_sampling
import comfy.samplers
import comfy.sd
from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

from harness import tiny_dits
from megapixel.patches import model_info
from megapixel.samplers import relay
from megapixel.samplers.autoguidance import AutoguidanceGuider

FAMILIES = tiny_dits.FAMILIES
STEPS = 4


@pytest.fixture(scope="module")
def models():
    """family -> tiny model, built once per module."""
    cache = {}

    def get(family: str, seed: int = 0):
        if (family, seed) not in cache:
            cache[family, seed] = tiny_dits.tiny_dit(family, seed)
        return cache[family, seed]
    return get


def base_px(family: str) -> int:
    """An image side that makes an 8x8-token latent for ``family``."""
    return 8 * tiny_dits.latent_ratio(family) * tiny_dits.patch_size(family)


def guider_for(model, family: str, cfg: float = 1.0):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(tiny_dits.conditioning(family, seed=1), tiny_dits.conditioning(family, seed=2))
    guider.set_cfg(cfg)
    return guider


def sigmas(model, steps: int = STEPS) -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)


def relay_run(model, family: str, stages: str, guider=None, split: str = "", vae=None, latent=None):
    px = base_px(family)
    latent = {"samples": tiny_dits.empty_latent(family, px, px) if latent is None else latent}
    return relay.relay_sampler_custom(Noise_RandomNoise(3), guider or guider_for(model, family),
                                      comfy.samplers.sampler_object("euler"), sigmas(model), latent, stages=stages,
                                      step_split=split, vae=vae)[0]["samples"]


class CallShapes:
    """A unet function wrapper on a clone of the model: the latent shape and conds of every model call.  (A plain
    function: clones deep-copy their model options, and a function survives that as itself.)"""

    def __init__(self, model):
        self.model = model.clone()
        self.calls: list[tuple[tuple[int, ...], dict]] = []
        calls = self.calls

        def wrapper(apply_model, args):
            calls.append((tuple(args["input"].shape), args["c"]))
            return apply_model(args["input"], args["timestep"], **args["c"])
        self.model.set_model_unet_function_wrapper(wrapper)

    def sizes(self) -> list[tuple[int, int]]:
        out = []
        for shape, _ in self.calls:
            if not out or out[-1] != shape[-2:]:
                out.append(shape[-2:])
        return out


# --- the model's geometry -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_geometry_is_read_from_the_model(models, family):
    model = models(family)
    assert model_info.latent_ratio(model) == tiny_dits.latent_ratio(family)
    assert model_info.patch_size(model) == tiny_dits.patch_size(family)
    assert family.lower() in model_info.display_name(model).lower()


# --- one stage is the core sampler -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_one_stage_is_bit_identical_to_the_core_sampler(models, family):
    model = models(family)
    px = base_px(family)
    latent = {"samples": tiny_dits.empty_latent(family, px, px)}
    guider, sampler, sig = guider_for(model, family), comfy.samplers.sampler_object("euler"), sigmas(model)
    relayed, _ = relay.relay_sampler_custom(Noise_RandomNoise(5), guider, sampler, sig, latent, stages="1")
    core, _ = SamplerCustomAdvanced.execute(Noise_RandomNoise(5), guider, sampler, sig, latent).result
    assert torch.equal(relayed["samples"], core["samples"])


# --- stages ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_three_scale_stages_sample_at_whole_tokens(models, family):
    """'1, 1.5, 2' from 8x8 tokens: 12x12 then 16x16 tokens, i.e. latents of whole patches at every stage."""
    probe = CallShapes(models(family))
    out = relay_run(probe.model, family, "1, 1.5, 2", split="2/1/1")
    p = tiny_dits.patch_size(family)
    assert probe.sizes() == [(8 * p, 8 * p), (12 * p, 12 * p), (16 * p, 16 * p)]
    px = base_px(family)
    assert out.shape == tiny_dits.empty_latent(family, 2 * px, 2 * px).shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_two_pixel_stages_use_the_models_latent_ratio(models, family):
    """Sizes in pixels are read at the family's own pixels per latent pixel (16 for Flux.2, 32 for HunyuanImage)."""
    px = base_px(family)
    probe = CallShapes(models(family))
    out = relay_run(probe.model, family, f"{px}x{px}, {2 * px}x{3 * px // 2}", split="3/1")
    r = tiny_dits.latent_ratio(family)
    assert probe.sizes()[-1] == (3 * px // 2 // r, 2 * px // r)
    assert out.shape == tiny_dits.empty_latent(family, 2 * px, 3 * px // 2).shape


def test_pixel_stages_off_the_token_grid_are_refused_naming_the_token_size(models):
    family = tiny_dits.FLUX2
    px = base_px(family)  # 128 px: 16 px per token
    with pytest.raises(relay.RelayError, match=r"size 200x200 is not a multiple of 16 px.*Fix: use e.g. 208x208"):
        relay_run(models(family), family, f"{px}x{px}, 200x200")
    with pytest.raises(relay.RelayError, match=r"input latent is 128x128 px"):
        relay_run(models(family), family, "64x64, 128x128")


def test_video_latents_are_refused_with_one_stage_allowed(models):
    family = tiny_dits.QWEN_IMAGE
    model = models(family)
    video = torch.zeros(1, 16, 3, 16, 16)
    with pytest.raises(relay.RelayError, match="video latent of 3 frames.*one stage"):
        relay_run(model, family, "1, 2", latent=video)


# --- VAE upscaling ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def taesd(tmp_path_factory):
    """channels -> a real ComfyUI VAE: a seeded TAESD with that many latent channels at 1/8 (16: the latent space of
    Flux.1, SD3, Chroma, Lumina 2, Z-Image, HiDream, Qwen-Image; 4: SDXL's, AuraFlow's)."""
    import comfy.utils

    folder = tmp_path_factory.mktemp("vae")
    return {c: comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_dits.save_stand_in_vae(folder, c))))
            for c in (4, 16)}


@pytest.fixture(scope="module")
def taef16(taesd):
    return taesd[16]


TAESD_FAMILIES = [f for f in FAMILIES if tiny_dits.latent_ratio(f) == 8 and tiny_dits.latent_channels(f) in (4, 16)]


@pytest.mark.parametrize("family", TAESD_FAMILIES)
def test_vae_upscaling(models, taesd, family):
    """Pixel-space upscaling through a VAE of the family's latent space (the 5-D Qwen-Image latent keeps its frame
    axis through a VAE that makes 4-D latents)."""
    out = relay_run(models(family), family, "1, 2", split="3/1", vae=taesd[tiny_dits.latent_channels(family)])
    assert out.shape == tiny_dits.empty_latent(family, 2 * base_px(family), 2 * base_px(family)).shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", [tiny_dits.FLUX2, tiny_dits.HUNYUAN_IMAGE])
def test_a_vae_of_another_latent_space_is_refused_naming_both(models, taef16, family):
    with pytest.raises(relay.RelayError, match=rf"16-channel latents at 1/8.*\({family}\).*"
                                               rf"{tiny_dits.latent_channels(family)}-channel latents at "
                                               rf"1/{tiny_dits.latent_ratio(family)}"):
        relay_run(models(family), family, "1, 2", vae=taef16)


# --- the Flux family's size-dependent shift ------------------------------------------------------------------------
def node_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """ComfyUI's ModelSamplingFlux node: mu linear in the 16x16-px token count, base at 256 and max at 4096."""
    slope = (max_shift - base_shift) / (4096 - 256)
    return width * height / 256 * slope + (base_shift - slope * 256)


class FluxSampling(comfy.model_sampling.ModelSamplingFlux, comfy.model_sampling.CONST):
    """What the ModelSamplingFlux node puts on a model."""


def flux_sampling(shift: float):
    ms = FluxSampling()
    ms.set_parameters(shift=shift)
    return ms


def test_each_flux_stage_samples_at_its_own_sizes_shift():
    """A 1024 px latent with the shift for 1024 px, relayed to 2048 px: the second stage's schedule is the same
    timesteps at the shift for twice the side, from first principles: the shift factor e^mu doubles with the side
    (SD3's resolution law), and sigma = e^mu / (e^mu + 1/t - 1)."""
    mu0 = node_shift(1024, 1024)
    mu1 = mu0 + math.log(2.0)
    sig = comfy.samplers.calculate_sigmas(flux_sampling(mu0), "simple", 10)
    plan = relay.plan_relay(sig, (1, 16, 128, 128), "1, 2", "8/2", model_sampling=flux_sampling(mu0))
    assert torch.equal(plan.stages[0].sigmas, sig[:9]) and plan.stages[0].shift is None
    assert plan.stages[1].shift == pytest.approx(mu1)
    t = 1.0 / (1.0 + math.exp(mu0) * (1.0 / sig[8:].double() - 1.0))  # the base timesteps under the 1024 px shift
    expected = math.exp(mu1) / (math.exp(mu1) + 1.0 / t - 1.0)
    torch.testing.assert_close(plan.stages[1].sigmas.double(), expected, rtol=1e-5, atol=1e-6)
    assert plan.stages[1].sigmas[0] > sig[8]  # the larger stage restarts noisier: same signal per resolution
    assert not plan.notes


def test_a_4096_px_flux_relay_keeps_something_at_every_boundary():
    """1024 -> 2048 -> 4096 px over 28 steps (22/3/3, a flow model's default split): every later stage starts well
    below pure noise, where the
    ModelSamplingFlux node's line extrapolated to 4096 px (mu 11.6) would restart the last stage from noise."""
    ms = flux_sampling(node_shift(1024, 1024))
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 28)
    plan = relay.plan_relay(sig, (1, 16, 128, 128), "1, 2, 4", "", model_sampling=ms)
    assert [s.steps for s in plan.stages] == [22, 3, 3]
    assert all(0.5 < float(s.sigmas[0]) < 0.8 for s in plan.stages[1:]) and not plan.notes
    assert node_shift(4096, 4096) > 11.5


def test_the_flux_stage_model_gets_that_shift(models):
    family = tiny_dits.FLUX_DEV
    model = models(family)
    seen = []

    def wrapper(apply_model, args):
        seen.append(float(apply_model.__self__.model_sampling.shift))
        return apply_model(args["input"], args["timestep"], **args["c"])
    probe = model.clone()
    probe.set_model_unet_function_wrapper(wrapper)
    mu0 = float(model.get_model_object("model_sampling").shift)
    relay_run(probe, family, "1, 2", split="3/1")
    px = base_px(family)
    assert seen[0] == pytest.approx(mu0)
    assert seen[-1] == pytest.approx(mu0 + math.log(2.0))
    assert float(model.get_model_object("model_sampling").shift) == mu0  # the model we were given is untouched


def test_a_flux_shift_set_for_the_final_size_is_warned_about():
    """The shift of a 4096 px image on a 1024 px first stage: the first stage ends in noise, and so the relay warns."""
    ms = flux_sampling(node_shift(4096, 4096))
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 50)
    plan = relay.plan_relay(sig, (1, 16, 128, 128), "1, 4", "40/10", model_sampling=ms)
    assert any("first stage ends at noise level" in n and "ModelSamplingFlux" in n for n in plan.notes)
    assert any("stage 2 restarts at noise level" in n for n in plan.notes)


def test_rescheduling_adds_nothing_to_a_size_shifted_model():
    ms = flux_sampling(1.15)
    sig = comfy.samplers.calculate_sigmas(ms, "simple", 10)
    plain = relay.plan_relay(sig, (1, 16, 128, 128), "1, 2", "8/2", model_sampling=ms)
    both = relay.plan_relay(sig, (1, 16, 128, 128), "1, 2", "8/2", model_sampling=ms, reschedule=True)
    assert torch.equal(plain.stages[1].sigmas, both.stages[1].sigmas) and not both.stages[1].reschedule
    assert any("noise_rescheduling" in n for n in both.notes)


# --- reference latents (Flux Kontext, Qwen-Image-Edit) ----------------------------------------------------------------
@pytest.mark.parametrize("family", [tiny_dits.FLUX_DEV, tiny_dits.QWEN_IMAGE])
def test_reference_latents_reach_the_model_at_every_stage_resized(models, family):
    px = base_px(family)
    ref = torch.randn(tiny_dits.empty_latent(family, px, px).shape, generator=torch.Generator().manual_seed(4))
    cond = tiny_dits.conditioning(family, seed=1)
    cond = [[cond[0][0], dict(cond[0][1], reference_latents=[ref])]]
    probe = CallShapes(models(family))
    guider = comfy.samplers.CFGGuider(probe.model)
    guider.set_conds(cond, tiny_dits.conditioning(family, seed=2))
    guider.set_cfg(1.0)
    relay_run(probe.model, family, "1, 2", guider=guider, split="3/1")
    pairs = {(shape[-2:], tuple(c["ref_latents"][0].shape[-2:])) for shape, c in probe.calls}
    side = ref.shape[-1]
    assert pairs == {((side, side), (side, side)), ((2 * side, 2 * side), (2 * side, 2 * side))}


# --- autoguidance -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_autoguidance_with_a_same_family_weak_model_in_the_relay(models, family):
    model, weak = models(family), models(family, seed=1)
    guider = AutoguidanceGuider(model, weak, cfg=1.0, w=2.0)
    guider.set_conds(tiny_dits.conditioning(family, seed=1), tiny_dits.conditioning(family, seed=2))
    guided = relay_run(model, family, "1, 2", guider=guider, split="3/1")
    plain = relay_run(model, family, "1, 2", split="3/1")
    assert guided.shape == plain.shape and torch.isfinite(guided).all()
    assert not torch.allclose(guided, plain)


# Pairs a user could plausibly connect: same latent space (the hard cases), then another latent space.
OTHER_FAMILY = {
    tiny_dits.FLUX_DEV: tiny_dits.CHROMA, tiny_dits.CHROMA: tiny_dits.FLUX_DEV, tiny_dits.HIDREAM: tiny_dits.FLUX_SCHNELL,
    tiny_dits.FLUX_SCHNELL: tiny_dits.HIDREAM, tiny_dits.LUMINA2: tiny_dits.ZIMAGE, tiny_dits.ZIMAGE: tiny_dits.LUMINA2,
    tiny_dits.SD3: tiny_dits.FLUX_DEV, tiny_dits.AURAFLOW: tiny_dits.SD3, tiny_dits.FLUX2: tiny_dits.FLUX_DEV,
    tiny_dits.QWEN_IMAGE: tiny_dits.FLUX_DEV, tiny_dits.HUNYUAN_IMAGE: tiny_dits.QWEN_IMAGE,
}


@pytest.mark.parametrize("family", [f for f in FAMILIES if f in OTHER_FAMILY])
def test_a_weak_model_of_another_family_is_refused_naming_both(models, family):
    model, weak = models(family), models(OTHER_FAMILY[family])
    with pytest.raises(ValueError, match="Autoguidance Guider: weak_model") as err:
        AutoguidanceGuider(model, weak)
    message = str(err.value)
    assert model_info.display_name(model) in message and model_info.display_name(weak) in message
    assert "Fix:" in message
