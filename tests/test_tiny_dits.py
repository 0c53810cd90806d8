"""tools/harness/tiny_dits.py against the real host: every DiT family builds as the host's own config/model classes, is
deterministic in its seed, samples (CFGGuider + euler, 2 steps) to a finite latent of the right shape, and the
families the host's detection allows load back through ComfyUI's UNETLoader path as themselves."""
from __future__ import annotations

import pytest
import torch

import comfy.sample
import comfy.samplers
import comfy.sd
import comfy.supported_models
from harness import tiny_dits as td
from harness.host import locate_host

REQUIRED = ("Flux.1 dev", "Flux.1 schnell", "Flux.2", "SD3", "AuraFlow", "Lumina 2", "Z-Image", "Qwen-Image",
            "HiDream", "Chroma", "HunyuanImage 2.1")
EXPECTED_CLASS = {"Flux.1 dev": "Flux", "Flux.1 schnell": "FluxSchnell", "Flux.2": "Flux2", "SD3": "SD3",
                  "AuraFlow": "AuraFlow", "Lumina 2": "Lumina2", "Z-Image": "ZImage", "Qwen-Image": "QwenImage",
                  "HiDream": "HiDream", "Chroma": "Chroma", "HunyuanImage 2.1": "HunyuanImage21",
                  "Chroma Radiance": "ChromaRadiance", "Omnigen2": "Omnigen2"}
# The empty latent of a 256 x 256 image, as the host's empty-latent nodes make it (Qwen-Image: after the sampler
# adds the frame axis its Wan 2.1 latent format has).
EMPTY_256 = {"Flux.1 dev": (1, 16, 32, 32), "Flux.1 schnell": (1, 16, 32, 32), "Flux.2": (1, 128, 16, 16),
             "SD3": (1, 16, 32, 32), "AuraFlow": (1, 4, 32, 32), "Lumina 2": (1, 16, 32, 32),
             "Z-Image": (1, 16, 32, 32), "Qwen-Image": (1, 16, 1, 32, 32), "HiDream": (1, 16, 32, 32),
             "Chroma": (1, 16, 32, 32), "HunyuanImage 2.1": (1, 64, 8, 8), "Chroma Radiance": (1, 3, 256, 256),
             "Omnigen2": (1, 16, 32, 32)}
# Which families load back as themselves, per managed host (see the tiny_dits docstring for why).
ROUND_TRIP = {
    "0.3.75": {"SD3", "HunyuanImage 2.1"},
    "0.30.0": {"Flux.1 dev", "Flux.1 schnell", "Flux.2", "SD3", "HunyuanImage 2.1"},
}
# A user's own ComfyUI (COMFYUI_PATH): at least SD3, whose MMDiT sizes have always been read from the weights.
HOST_ROUND_TRIP = ROUND_TRIP.get(locate_host().version, {"SD3"})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def sample(model, family: str, seed: int = 0) -> torch.Tensor:
    """Two euler steps of ComfyUI's own CFGGuider at cfg 1 on the family's empty 256 x 256 latent."""
    latent = td.empty_latent(family, 256, 256)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(td.conditioning(family, seed=0), td.conditioning(family, seed=1))
    guider.set_cfg(1.0)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 2)
    return guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=seed,
                         disable_pbar=True)


@pytest.fixture(scope="module")
def built() -> dict:
    """Every family's seed-0 model, built once for the module."""
    return {family: td.tiny_dit(family, seed=0) for family in td.FAMILIES}


def test_families_cover_the_hosts_dit_image_models():
    assert set(REQUIRED) <= set(td.FAMILIES)
    assert td.CONFIG_CLASS == {f: EXPECTED_CLASS[f] for f in td.FAMILIES}
    with pytest.raises(ValueError, match="unknown DiT family"):
        td.tiny_dit("SDXL")


@pytest.mark.parametrize("family", td.FAMILIES)
def test_builds_as_the_host_class_deterministic_in_its_seed(family, built):
    model = built[family]
    config_cls = getattr(comfy.supported_models, EXPECTED_CLASS[family])
    assert type(model.model.model_config) is config_cls
    net = model.model.diffusion_model
    assert not net.training
    params = list(net.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    assert sum(p.numel() for p in params) < 5_000_000  # tiny
    first = weights(model)
    assert all(torch.isfinite(v).all() for v in first.values())
    again = weights(td.tiny_dit(family, seed=0))
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = weights(td.tiny_dit(family, seed=1))
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].numel() > 1)


@pytest.mark.parametrize("family", td.FAMILIES)
def test_latent_conditioning_and_token_grid(family, built):
    latent = td.empty_latent(family, 256, 256, batch=1)
    assert tuple(latent.shape) == EMPTY_256[family] and not latent.any()
    assert td.empty_latent(family, 256, 512, batch=3).shape[0] == 3
    # The host's own view: its latent format's channels, and the sampler leaves the empty latent as it is.
    model = built[family]
    assert latent.shape[1] == model.get_model_object("latent_format").latent_channels
    assert comfy.sample.fix_empty_latent_channels(model, latent).shape == latent.shape
    assert latent.shape[-1] * td.latent_ratio(family) == 256
    tokens_per_side = latent.shape[-1] // td.patch_size(family)
    assert tokens_per_side >= 4

    cond = td.conditioning(family, batch=2, tokens=5, seed=3)
    assert len(cond) == 1 and cond[0][0].shape[:2] == (2, 5)
    again = td.conditioning(family, batch=2, tokens=5, seed=3)
    assert torch.equal(cond[0][0], again[0][0])
    assert not torch.equal(cond[0][0], td.conditioning(family, batch=2, tokens=5, seed=4)[0][0])
    extra = cond[0][1]
    assert "pooled_output" in extra  # the Flux-based models read the key, as CLIPTextEncode always sets it
    if family in ("Flux.1 dev", "Flux.2"):
        assert extra["guidance"] > 0
    if family == "HiDream":
        assert extra["conditioning_llama3"].shape == (2, 32, 5, 4096)


@pytest.mark.parametrize("family", td.FAMILIES)
def test_samples_two_euler_steps(family, built):
    model = built[family]
    out = sample(model, family)
    assert tuple(out.shape) == EMPTY_256[family]
    assert torch.isfinite(out).all()
    assert out.abs().sum() > 0


def test_round_trip_families_match_the_hosts_detection(host):
    trips = {family for family in td.FAMILIES if td.round_trips(family)}
    if host.version in ROUND_TRIP:
        assert trips == ROUND_TRIP[host.version]
    else:
        assert HOST_ROUND_TRIP <= trips
    # Detection picks each family's class from the tiny weights, except Z-Image: ZImage matches only dim 3840.
    for family in td.FAMILIES:
        detected = td.detected_config(family)
        expected = "Lumina2" if family == "Z-Image" else EXPECTED_CLASS[family]
        assert type(detected).__name__ == expected, family


@pytest.mark.parametrize("family", [f for f in td.FAMILIES if f in HOST_ROUND_TRIP])
def test_saved_model_loads_back_as_itself(family, built, tmp_path):
    """Through ``comfy.sd.load_diffusion_model`` (the UNETLoader node's path): the same class, the same weights,
    the same samples."""
    path = td.save_diffusion_model(family, tmp_path / "tiny.safetensors", seed=0)
    loaded = comfy.sd.load_diffusion_model(str(path))
    assert type(loaded.model.model_config) is type(built[family].model.model_config)
    theirs, ours = weights(loaded), weights(built[family])
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    torch.testing.assert_close(sample(loaded, family), sample(built[family], family))


def test_fp16_file_loads_with_fp16_rounded_weights(tmp_path):
    path = td.save_diffusion_model("SD3", tmp_path / "sd3-fp16.safetensors", seed=2, dtype=torch.float16)
    loaded = comfy.sd.load_diffusion_model(str(path))
    assert type(loaded.model.model_config) is comfy.supported_models.SD3
    ours = weights(td.tiny_dit("SD3", seed=2))
    theirs = weights(loaded)
    assert all(torch.equal(theirs[k], ours[k].half().float()) for k in ours)
