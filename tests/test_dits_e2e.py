"""The relay and the guider on every DiT family through the real server: tiny stand-ins from the development node
``MegapixelTinyDiT``, stock empty latents, guiders and schedulers, 2 and 3 stages in factors and pixels; the latent the
relay saves has the last stage's size; a weak model of another family is refused naming both as users know them."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from harness import tiny_dits
from harness.comfy_server import Graph, ServerError

pytestmark = pytest.mark.e2e


def base_px(family: str) -> int:
    return 8 * tiny_dits.latent_ratio(family) * tiny_dits.patch_size(family)


def relay_graph(family: str, stages: str, prefix: str, weak_family: str | None = None) -> Graph:
    """Tiny model -> (CFG or Autoguidance) guider -> Relay Sampler (custom) -> SaveLatent.  The empty latent is the
    stock SD one at the size that gives the family's latent grid; the sampler fixes its channels (and frame axis) for
    the model, as it does for any empty latent."""
    g = Graph()
    model = g.add("MegapixelTinyDiT", family=family, seed=0)
    pos = g.add("MegapixelTinyDiTTextEncode", family=family, text="a fox")
    neg = g.add("MegapixelTinyDiTTextEncode", family=family, text="")
    if weak_family:
        weak = g.add("MegapixelTinyDiT", family=weak_family, seed=1)
        guider = g.add("MegapixelAutoguidanceGuider", model=g.out(model), weak_model=g.out(weak), positive=g.out(pos),
                       negative=g.out(neg), cfg=1.0, w=2.0, start_percent=0.0, end_percent=1.0)
    else:
        guider = g.add("CFGGuider", model=g.out(model), positive=g.out(pos), negative=g.out(neg), cfg=2.0)
    side = base_px(family) * 8 // tiny_dits.latent_ratio(family)  # EmptyLatentImage works at 1/8
    latent = g.add("EmptyLatentImage", width=side, height=side, batch_size=1)
    sigmas = g.add("BasicScheduler", model=g.out(model), scheduler="simple", steps=4, denoise=1.0)
    relay = g.add("MegapixelRelaySamplerCustom", noise=g.out(g.add("RandomNoise", noise_seed=5)),
                  guider=g.out(guider), sampler=g.out(g.add("KSamplerSelect", sampler_name="euler")),
                  sigmas=g.out(sigmas), latent_image=g.out(latent), stages=stages, step_split="",
                  upscale_method="bicubic", noise_rescheduling=False, dilated_middle_block=False)
    g.add("SaveLatent", samples=g.out(relay), filename_prefix=prefix)
    return g


def saved_latent(server, entry: dict) -> torch.Tensor:
    files = [f for out in entry["outputs"].values() for f in out.get("latents", [])]
    assert len(files) == 1, entry["outputs"]
    path = server.base_dir / "output" / files[0].get("subfolder", "") / files[0]["filename"]
    return safetensors.torch.load_file(str(path))["latent_tensor"]  # SaveLatent writes safetensors as .latent


@pytest.mark.parametrize("family", tiny_dits.FAMILIES)
def test_two_and_three_stages_on_every_family(comfy_server, family):
    px, r, p = base_px(family), tiny_dits.latent_ratio(family), tiny_dits.patch_size(family)
    slug = "".join(c for c in family if c.isalnum())
    for stages, final in ((f"{px}x{px}, {2 * px}x{2 * px}", 2 * px), ("1, 1.5, 2", 2 * px)):
        entry = comfy_server.run(relay_graph(family, stages, f"dit_{slug}"), timeout=300)
        out = saved_latent(comfy_server, entry)
        assert tuple(out.shape[-2:]) == (final // r, final // r) and (final // r) % p == 0
        assert out.shape[1] == tiny_dits.latent_channels(family) and torch.isfinite(out.float()).all()


def test_autoguidance_on_a_dit_through_the_server(comfy_server):
    entry = comfy_server.run(relay_graph(tiny_dits.QWEN_IMAGE, "1, 2", "dit_ag", weak_family=tiny_dits.QWEN_IMAGE),
                             timeout=300)
    out = saved_latent(comfy_server, entry)
    assert out.shape == (1, 16, 1, 32, 32)  # Qwen-Image's frame axis kept through the relay


def test_a_weak_model_of_another_family_is_refused_through_the_server(comfy_server):
    with pytest.raises(ServerError) as err:
        comfy_server.run(relay_graph(tiny_dits.FLUX_DEV, "1, 2", "dit_bad", weak_family=tiny_dits.CHROMA), timeout=300)
    message = str(err.value)
    assert "Autoguidance Guider" in message and "Chroma" in message and "Flux.1 dev" in message and "Fix:" in message
