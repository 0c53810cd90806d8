"""DyPE (patches/dype.py, nodes/dype.py): the frequency math from first principles, identity at native size, the
input model untouched, refused families, composition with the relay sampler and the autoguidance guider, and every
RoPE family of the tiny DiTs."""
from __future__ import annotations

import math

import pytest
import torch

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
from comfy.ldm.flux.math import apply_rope, rope

from harness import tiny_dits
from megapixel.nodes import dype as dype_nodes
from megapixel.patches import dype
from megapixel.samplers import relay
from megapixel.samplers.autoguidance import AutoguidanceGuider
from test_hidiffusion_support import snapshot

TWO_STEPS = (1.0, 0.5, 0.0)  # at sigma 1 the dynamic and static variants agree; at 0.5 they differ
NATIVE = 128  # px: the tiny models' "training size" in these tests (native_size), so latents stay small
FLUX = tiny_dits.FLUX_DEV
REFUSED = (tiny_dits.SD3, tiny_dits.AURAFLOW, tiny_dits.OMNIGEN2)
ROPE_FAMILIES = tuple(f for f in tiny_dits.FAMILIES if f not in REFUSED)


# --- helpers ------------------------------------------------------------------------------------------------------
# Every model sampled here stays referenced until the module ends: ComfyUI treats a loaded model whose ModelPatcher
# was garbage-collected while its weights live on (a discarded clone of a fixture) as a leak, and then runs a full
# gc.collect() on every later load (seconds each, most of this file's time).
_SAMPLED: list = []


@pytest.fixture(scope="module", autouse=True)
def _release_sampled():
    yield
    _SAMPLED.clear()


def sample(model, family: str, width: int, height: int, sigmas=(1.0, 0.0), seed: int = 0) -> torch.Tensor:
    """ComfyUI's own sampling path (sample_custom -> CFGGuider -> KSAMPLER, euler), cfg 1, seeded noise."""
    _SAMPLED.append(model)
    latent = comfy.sample.fix_empty_latent_channels(model, tiny_dits.empty_latent(family, width, height))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    cond = tiny_dits.conditioning(family)
    return comfy.sample.sample_custom(model, noise, 1.0, comfy.samplers.sampler_object("euler"),
                                      torch.tensor(sigmas, dtype=torch.float32), cond, cond, latent, seed=seed,
                                      disable_pbar=True)


class CallSpy:
    """A DIFFUSION_MODEL wrapper on a clone: records (latent h, w, the DyPE embedder's plan) for every call."""

    def __init__(self, model):
        self.calls: list[tuple[int, int, object]] = []
        self.timesteps: list[float] = []  # the diffusion model's timestep argument (Flux: sigma itself)
        self.model = model.clone()
        self.embedder = dype.dype_on(model)
        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "dype-test-spy", self)

    def __call__(self, executor, x, *args, **kwargs):
        self.calls.append((int(x.shape[-2]), int(x.shape[-1]), self.embedder.call if self.embedder else None))
        self.timesteps.append(float(args[0].reshape(-1)[0]))
        return executor(x, *args, **kwargs)


@pytest.fixture(scope="module")
def flux():
    return tiny_dits.tiny_dit(FLUX, seed=0)


@pytest.fixture(scope="module")
def weak_flux():
    return tiny_dits.tiny_dit(FLUX, seed=1)


# --- the frequency math, from first principles --------------------------------------------------------------------
D, THETA, LENGTH = 56, 10000.0, 64.0  # a Flux spatial axis, 1024 px native = 64 tokens


def rotations_over_native(freqs: torch.Tensor, length: float = LENGTH) -> torch.Tensor:
    """How many full turns each pair makes over the native length."""
    return freqs * length / (2 * math.pi)


def test_base_frequencies_are_comfyui_rope():
    w = dype.base_frequencies(D, THETA)
    assert w.shape == (D // 2,)
    assert w[0] == 1.0 and torch.allclose(w, torch.tensor([THETA ** (-2 * i / D) for i in range(D // 2)],
                                                          dtype=torch.float64))
    pos = torch.arange(-7, 90, dtype=torch.float32).reshape(1, -1) * 0.5
    for dim, theta in ((56, 10000), (32, 256), (64, 2000)):  # Flux, Z-Image, Flux.2
        assert torch.equal(dype.rotations(pos, dype.base_frequencies(dim, theta)), rope(pos, dim, theta))


def test_ntk_base_change():
    """NTK-aware: theta' = theta * s^(d/(d-2)): the fastest pair keeps its frequency, the slowest is divided by s."""
    for s in (1.5, 2.0, 4.0):
        assert dype.ntk_theta(THETA, s, D) == pytest.approx(THETA * s ** (D / (D - 2)), rel=1e-12)
        w, w_ntk = dype.base_frequencies(D, THETA), dype.ntk_frequencies(D, THETA, s)
        assert w_ntk[0] == w[0]
        assert w_ntk[-1].item() == pytest.approx(w[-1].item() / s, rel=1e-12)
        assert torch.all(w_ntk <= w)
    assert torch.equal(dype.ntk_frequencies(D, THETA, 1.0), dype.base_frequencies(D, THETA))


def test_yarn_bands():
    """YaRN: pairs turning >= 16 times over the native length keep their frequency; pairs turning <= 0.75 times are
    interpolated (w / s); pairs between 1.25 and 2 turns get NTK's frequency; the ramps between are monotone."""
    s, length = 4.0, 512.0  # a long native axis, so that every band has pairs (at 64 tokens no pair turns 16 times)
    w = dype.base_frequencies(D, THETA)
    w_ntk = dype.ntk_frequencies(D, THETA, s)
    w_yarn = dype.yarn_frequencies(D, THETA, s, length)
    turns = rotations_over_native(w, length)
    native, linear, ntk = turns >= 16, turns <= 0.75, (turns >= 1.25) & (turns <= 2)
    assert native.any() and linear.any() and ntk.any()
    assert torch.equal(w_yarn[native], w[native])
    assert torch.allclose(w_yarn[linear], w[linear] / s, rtol=1e-12, atol=0)
    assert torch.allclose(w_yarn[ntk], w_ntk[ntk], rtol=1e-12, atol=0)
    assert torch.all(w_yarn[1:] < w_yarn[:-1])  # still one frequency per pair, strictly slower down the axis
    assert torch.all(w_yarn <= w) and torch.all(w_yarn >= w / s)
    # The ramp: band edges are the pair indices where the turns cross 16/2 and 1.25/0.75 (rounded outwards).
    low, high = dype.correction_range(1.25, 0.75, D, THETA, length)
    assert low == math.floor(D * math.log(length / (2 * math.pi * 1.25)) / (2 * math.log(THETA)))
    assert high == math.ceil(D * math.log(length / (2 * math.pi * 0.75)) / (2 * math.log(THETA)))
    r = dype.ramp(low, high, D // 2)
    assert r[int(low)] == 0 and r[int(high)] == 1 and torch.all(r[1:] >= r[:-1])


def test_yarn_attention_temperature():
    """mscale = 1 + 0.1 ln s on queries and keys multiplies every attention logit by mscale^2 (YaRN's 1/t)."""
    assert dype.yarn_mscale(1.0) == 1.0 and dype.yarn_mscale(0.5) == 1.0
    assert dype.yarn_mscale(4.0) == pytest.approx(1 + 0.1 * math.log(4.0))
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 9, D, generator=gen), torch.randn(1, 1, 9, D, generator=gen)
    pos = torch.arange(9, dtype=torch.float32).reshape(1, 9)
    freqs, m = dype.yarn_frequencies(D, THETA, 4.0, LENGTH), dype.yarn_mscale(4.0)
    q1, k1 = apply_rope(q, k, dype.rotations(pos, freqs).unsqueeze(1))
    qm, km = apply_rope(q, k, dype.rotations(pos, freqs, m).unsqueeze(1))
    assert torch.allclose(qm @ km.transpose(-1, -2), m * m * (q1 @ k1.transpose(-1, -2)), rtol=1e-5, atol=1e-5)


def test_dype_schedule_at_sigma_one_and_to_zero():
    """t = 1 (pure noise): Dy-YaRN is static YaRN, Dy-NTK is NTK with the exponent lambda_s = 2; t -> 0: both give
    the native frequencies back; in between every pair's frequency rises monotonically toward native as t falls."""
    s = 3.0
    settings_y, settings_n = dype.Settings(dype.YARN), dype.Settings(dype.NTK)
    w = dype.base_frequencies(D, THETA)
    assert torch.equal(settings_y.axis_frequencies(D, THETA, s, LENGTH, 1.0), dype.yarn_frequencies(D, THETA, s, LENGTH))
    assert torch.allclose(settings_n.axis_frequencies(D, THETA, s, LENGTH, 1.0),
                          dype.base_frequencies(D, THETA * s ** (2 * D / (D - 2))), rtol=1e-12, atol=0)
    for settings in (settings_y, settings_n):
        assert torch.allclose(settings.axis_frequencies(D, THETA, s, LENGTH, 1e-4), w, rtol=1e-6, atol=0)
        assert torch.equal(settings.axis_frequencies(D, THETA, s, LENGTH, 0.0), w)
        previous = None
        for t in (1.0, 0.8, 0.6, 0.4, 0.2, 0.05, 0.0):
            f = settings.axis_frequencies(D, THETA, s, LENGTH, t)
            assert torch.all(f <= w * (1 + 1e-12))
            if previous is not None:
                assert torch.all(f >= previous * (1 - 1e-12)), (settings.method, t)
            previous = f
    # Static (dynamic off) ignores t.
    static = dype.Settings(dype.YARN, dynamic=False)
    assert torch.equal(static.axis_frequencies(D, THETA, s, LENGTH, 0.1), dype.yarn_frequencies(D, THETA, s, LENGTH))
    assert dype.diffusion_time(0.5, 1.0) == 0.5 and dype.diffusion_time(20.0, 14.6) == 1.0
    assert dype.diffusion_time(-1.0, 1.0) == 0.0


def test_size_scales():
    assert dype.size_scales(16, 16, 16) is None and dype.size_scales(8, 32, 16) is None  # area <= native
    assert dype.size_scales(32, 32, 16) == (2.0, 2.0)
    assert dype.size_scales(16, 48, 16) == (1.0, 3.0)
    assert dype.size_scales(8, 64, 16, dype.BY_AREA) == pytest.approx((math.sqrt(2), math.sqrt(2)))


# --- the patched model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", dype.METHODS)
def test_identity_at_and_below_native(flux, method):
    patched = dype.apply_dype(flux, dype.Settings(method), native_size=NATIVE)
    for w, h in ((NATIVE, NATIVE), (NATIVE // 2, NATIVE), (NATIVE // 2, NATIVE * 2)):  # last: same area, wide
        assert torch.equal(sample(patched, FLUX, w, h), sample(flux, FLUX, w, h)), (w, h)


def test_above_native_differs_and_fades(flux):
    """Above native the output changes (NTK and YaRN differently); the static variant differs from the dynamic
    one; at a late sigma Dy-NTK is back to the native positions exactly."""
    outs = {}
    for name, settings in (("yarn", dype.Settings(dype.YARN)), ("ntk", dype.Settings(dype.NTK)),
                           ("static", dype.Settings(dype.YARN, dynamic=False))):
        patched = dype.apply_dype(flux, settings, native_size=NATIVE)
        outs[name] = sample(patched, FLUX, 2 * NATIVE, 2 * NATIVE, TWO_STEPS)
    vanilla = sample(flux, FLUX, 2 * NATIVE, 2 * NATIVE, TWO_STEPS)
    assert all(torch.isfinite(o).all() for o in outs.values())
    for a, b in (("yarn", "ntk"), ("yarn", "static")):
        assert not torch.equal(outs[a], outs[b])
    assert all(not torch.equal(o, vanilla) for o in outs.values())
    late = (1e-6, 0.0)  # t^2 ~ 1e-12: Dy-NTK's base is theta * s^(2e-12 * d/(d-2)) -> native within float32
    ntk = dype.apply_dype(flux, dype.Settings(dype.NTK), native_size=NATIVE)
    assert torch.allclose(sample(ntk, FLUX, 2 * NATIVE, 2 * NATIVE, late),
                          sample(flux, FLUX, 2 * NATIVE, 2 * NATIVE, late), atol=1e-6)


def test_input_model_untouched(flux):
    """The input ModelPatcher keeps its options, patches, wrappers and weights; after sampling the patched clone,
    sampling the input model again loads it without DyPE (ComfyUI undoes the clone's object patch) and gives the
    same result as before."""
    embedder = flux.get_model_object("diffusion_model.pe_embedder")
    before = snapshot(flux)
    reference = sample(flux, FLUX, 2 * NATIVE, 2 * NATIVE)
    patched = dype.apply_dype(flux, native_size=NATIVE)
    assert not torch.equal(sample(patched, FLUX, 2 * NATIVE, 2 * NATIVE), reference)
    assert not flux.object_patches and not flux.get_all_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL)
    assert torch.equal(sample(flux, FLUX, 2 * NATIVE, 2 * NATIVE), reference)
    assert snapshot(flux) == before
    assert flux.model.diffusion_model.pe_embedder is embedder
    assert isinstance(patched.object_patches["diffusion_model.pe_embedder"], dype.DyPEEmbedder)
    assert dype.dype_on(patched).original is embedder


def test_low_vram_partial_load_keeps_the_patch(flux):
    """A partial (low-VRAM) load applies object patches too, and unpatching restores the original embedder."""
    patched = dype.apply_dype(flux, native_size=NATIVE)
    original = flux.get_model_object("diffusion_model.pe_embedder")
    device = comfy.model_management.get_torch_device()
    patched.patch_model(device_to=device, lowvram_model_memory=1, load_weights=True)
    try:
        assert isinstance(patched.model.diffusion_model.pe_embedder, dype.DyPEEmbedder)
    finally:
        patched.unpatch_model(device_to=patched.offload_device)
    assert patched.model.diffusion_model.pe_embedder is original


def test_works_with_a_weight_patch(flux):
    """A LoRA-style weight patch on top: identical to the same patch on the unpatched model at native size, and DyPE
    still acts above it."""
    key = next(k for k in flux.model.state_dict() if k.endswith("img_in.weight"))
    delta = torch.randn(flux.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(3)) * 0.1

    def with_lora(model):
        m = model.clone()
        m.add_patches({key: (delta,)}, 1.0)
        return m

    patched = dype.apply_dype(flux, native_size=NATIVE)
    assert torch.equal(sample(with_lora(patched), FLUX, NATIVE, NATIVE), sample(with_lora(flux), FLUX, NATIVE, NATIVE))
    spy = CallSpy(with_lora(patched))
    out = sample(spy.model, FLUX, 2 * NATIVE, 2 * NATIVE)
    assert torch.isfinite(out).all() and spy.calls and all(call[2] is not None for call in spy.calls)
    assert not torch.equal(out, sample(with_lora(flux), FLUX, 2 * NATIVE, 2 * NATIVE))


def test_embedder_builds_the_scaled_rotations(flux):
    """The patched embedder's output, axis by axis: ComfyUI's own rope on the index axis and on unscaled axes,
    the Dy-YaRN frequencies times the temperature on the scaled ones (Flux: 1024 px native = 64 tokens)."""
    embedder = dype.dype_on(dype.apply_dype(flux))
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(6.0), torch.arange(9.0) * 3, indexing="ij"),
                      dim=-1).reshape(1, -1, 3)
    assert torch.equal(embedder(ids), flux.get_model_object("diffusion_model.pe_embedder")(ids))  # no call: original
    embedder.call = ((1.0, 3.0), 0.7)
    try:
        out = embedder(ids)
    finally:
        embedder.call = None
    d0, d1, d2 = embedder.axes_dim
    theta = embedder.theta
    w = dype.yarn_frequencies(d2, theta, 3.0, 64.0, kappa=0.7 ** 2)
    expected = torch.cat([rope(ids[..., 0], d0, theta), rope(ids[..., 1], d1, theta),
                          dype.rotations(ids[..., 2], w, 1 + 0.1 * math.log(3.0))], dim=-3).unsqueeze(1)
    assert torch.equal(out, expected)


def test_plan_per_call(flux):
    """Each call reads its own latent size and sigma: scales per axis, t = sigma / sigma_max."""
    spy = CallSpy(dype.apply_dype(flux, native_size=NATIVE))
    sample(spy.model, FLUX, 3 * NATIVE, NATIVE, sigmas=(1.0, 0.5, 0.0))
    assert [(h, w) for h, w, _ in spy.calls] == [(NATIVE // 8, 3 * NATIVE // 8)] * 2
    (scales1, t1), (scales2, t2) = (call for _, _, call in spy.calls)
    assert scales1 == scales2 == (1.0, 3.0) and (t1, t2) == (1.0, 0.5)


# --- refusals and node inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", REFUSED)
def test_refused_families(family):
    model = tiny_dits.tiny_dit(family, seed=0)
    with pytest.raises(dype.UnsupportedModelError) as err:
        dype_nodes.DyPENode.execute(model)
    text = str(err.value)
    assert text.startswith(f"{dype_nodes.SIMPLE_NAME}: model:") and "Flux.1" in text and "Qwen-Image" in text
    assert "Fix:" in text and not model.object_patches


def test_refused_unet(sd15):
    with pytest.raises(dype.UnsupportedModelError, match="no rotary position embedder.*Fix: connect one of those"):
        dype_nodes.DyPEAdvanced.execute(sd15, "yarn", True, 2.0, 2.0, 1.25, 0.75, 16.0, 2.0, True, "per axis")


def test_node_inputs(flux):
    out = dype_nodes.DyPENode.execute(flux, "ntk", False, NATIVE).result[0]
    embedder = dype.dype_on(out)
    assert embedder.settings == dype.Settings(dype.NTK, dynamic=False) and embedder.family.native_px == NATIVE
    with pytest.raises(ValueError, match=r"DyPE \(RoPE extrapolation\): model: the model already has DyPE"):
        dype_nodes.DyPENode.execute(out)
    with pytest.raises(ValueError, match=r"native_size: 100 px .*Fix.*\(1024 px for Flux.1 dev\)"):
        dype_nodes.DyPENode.execute(flux, native_size=100)
    with pytest.raises(ValueError, match=r"advanced\): beta_fast \(0.5\) must be larger than beta_slow"):
        dype_nodes.DyPEAdvanced.execute(flux, "yarn", True, 2.0, 2.0, 0.5, 0.75, 16.0, 2.0, True, "per axis")
    with pytest.raises(ValueError, match=r"gamma_slow \(1.0\) must not be below beta_fast"):
        dype_nodes.DyPEAdvanced.execute(flux, "yarn", True, 2.0, 2.0, 1.25, 0.75, 16.0, 1.0, True, "per axis")
    adv = dype_nodes.DyPEAdvanced.execute(flux, "yarn", True, 1.0, 3.0, 2.0, 1.0, 32.0, 4.0, False, "by area").result[0]
    assert dype.dype_on(adv).settings == dype.Settings(dype.YARN, True, 1.0, 3.0, (2.0, 1.0), (32.0, 4.0), False,
                                                       dype.MSCALE_COEFFICIENT, dype.BY_AREA)


# --- composition --------------------------------------------------------------------------------------------------
def test_relay_two_stages(flux):
    """Under the relay sampler (native -> 2x, one schedule): stage 1 runs unpatched (bit-identical to the plain
    model's stage), stage 2 runs with DyPE at scale 2 and the sigmas of the schedule's tail."""
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    def run(model):
        guider = comfy.samplers.CFGGuider(model)
        cond = tiny_dits.conditioning(FLUX)
        guider.set_conds(cond, cond)
        guider.set_cfg(1.0)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)
        latent = {"samples": tiny_dits.empty_latent(FLUX, NATIVE, NATIVE)}
        return relay.relay_sampler_custom(Noise_RandomNoise(7), guider, comfy.samplers.sampler_object("euler"),
                                          sigmas, latent, stages="1, 2", step_split="3/1")[0]["samples"], sigmas

    spy = CallSpy(dype.apply_dype(flux, native_size=NATIVE))
    out, sigmas = run(spy.model)
    plain, _ = run(flux)
    assert out.shape == (1, 16, NATIVE // 4, NATIVE // 4) and torch.isfinite(out).all()
    assert [(h, call is None) for h, _, call in spy.calls] == [(16, True)] * 3 + [(32, False)]
    scales, t = spy.calls[-1][2]
    assert scales == (2.0, 2.0) and t == pytest.approx(spy.timesteps[-1]) and 0 < t < spy.timesteps[-2]
    assert not torch.equal(out, plain)


def test_autoguidance_guider(flux, weak_flux):
    """Both the main and the weak model patched: the guider runs them above native, each with DyPE active."""
    main, weak = CallSpy(dype.apply_dype(flux, native_size=NATIVE)), CallSpy(dype.apply_dype(weak_flux,
                                                                                            native_size=NATIVE))
    guider = AutoguidanceGuider(main.model, weak.model, cfg=1.0, w=2.0)
    _SAMPLED.append(guider)  # it loads clones of both models that it holds (see _SAMPLED)
    cond = tiny_dits.conditioning(FLUX)
    guider.set_conds(cond, cond)
    latent = tiny_dits.empty_latent(FLUX, 2 * NATIVE, 2 * NATIVE)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    sigmas = comfy.samplers.calculate_sigmas(flux.get_model_object("model_sampling"), "simple", 2)
    out = guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=0, disable_pbar=True)
    assert torch.isfinite(out).all()
    for spy in (main, weak):
        assert len(spy.calls) == 2 and all(call is not None and call[0] == (2.0, 2.0) for _, _, call in spy.calls)


# --- every RoPE family of the tiny DiTs ---------------------------------------------------------------------------
@pytest.mark.parametrize("family", ROPE_FAMILIES)
def test_every_rope_family(family):
    """Bit-identical at native size, different above it (both methods), and the axes it scales are the image's
    height and width: on a wide image the width axis takes more distinct positions than the height axis."""
    model = tiny_dits.tiny_dit(family, seed=0)
    ratio, patch = tiny_dits.latent_ratio(family), tiny_dits.patch_size(family)
    native = max(NATIVE, 4 * ratio * patch)
    for method in dype.METHODS:
        patched = dype.apply_dype(model, dype.Settings(method), native_size=native)
        assert torch.equal(sample(patched, family, native, native), sample(model, family, native, native))
        assert not torch.equal(sample(patched, family, 2 * native, native), sample(model, family, 2 * native, native))
    embedder = dype.dype_on(patched)
    seen = []
    recorder = model.clone()
    original = model.get_model_object(f"diffusion_model.{embedder.family.embedder_key}")

    class Record(torch.nn.Module):
        def forward(self, ids):
            seen.append(ids)
            return original(ids)

    recorder.add_object_patch(f"diffusion_model.{embedder.family.embedder_key}", Record())
    sample(recorder, family, 4 * native, native // 2)  # 8 times as wide as tall
    ids = torch.cat([i.reshape(-1, i.shape[-1]) for i in seen])
    h_axis, w_axis = embedder.family.spatial_axes
    distinct = [ids[:, a].unique().numel() for a in range(ids.shape[-1])]
    assert distinct[w_axis] > distinct[h_axis] > 1, (family, distinct)


@pytest.mark.parametrize("field, value", [("lambda_s", float("nan")), ("lambda_t", float("inf")),
                                          ("beta", (float("nan"), 0.75)), ("gamma", (16.0, -2.0))])
def test_unusable_numbers_are_refused_naming_the_input(field, value):
    import dataclasses

    settings = dataclasses.replace(dype.Settings(), **{field: value})
    with pytest.raises(ValueError, match=rf"DyPE: {field}(_fast|_slow)?: .* Fix:"):
        dype.apply_dype(tiny_dits.tiny_dit(tiny_dits.FLUX_DEV), settings)
