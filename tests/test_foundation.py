"""The pack's foundation: it loads in the real host, its metadata is valid, the fixtures are real models."""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import torch

import comfy.model_base
import comfy.model_patcher
import comfy.sd
import comfy.utils

import megapixel
from harness import model_factory

PACK_DIR = Path(megapixel.__file__).parent


def test_pyproject_validates_with_comfy_config():
    from comfy_config.config_parser import extract_node_configuration

    config = extract_node_configuration(str(PACK_DIR))
    assert config.project.name == "megapixel"
    assert "comfyui" not in config.project.name.lower()
    assert config.tool_comfy.display_name == "Megapixel"
    assert config.tool_comfy.publisher_id
    assert config.project.supported_comfyui_version.startswith(">=0.3.75")
    host_packages = {"torch", "torchvision", "torchaudio", "numpy", "pillow", "safetensors", "einops"}
    for dep in config.project.dependencies:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower()
        assert name not in host_packages, f"{dep} is provided by the host and must not be installed by the pack"


def test_top_level_layout_is_the_agreed_one():
    allowed = {"__init__.py", "nodes", "patches", "samplers", "workflows", "tests", "tools", "pyproject.toml",
               "README.md", "docs", ".ci", ".git", ".gitignore", ".comfyignore", "web",
               ".host", ".pytest_cache", "__pycache__", "out"}  # the last four are git-ignored (host, caches, demo output)
    assert {p.name for p in PACK_DIR.iterdir()} <= allowed


def test_v3_entrypoint_lists_prefixed_nodes():
    assert not hasattr(megapixel, "NODE_CLASS_MAPPINGS"), "V3 only: NODE_CLASS_MAPPINGS would hide comfy_entrypoint"
    extension = asyncio.run(megapixel.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    for node in nodes:
        schema = node.define_schema()
        assert schema.node_id.startswith("Megapixel"), schema.node_id
        assert schema.category.startswith("megapixel/"), schema.category
        assert schema.description, f"{schema.node_id} has no description"
        for inp in schema.inputs:
            assert inp.tooltip, f"{schema.node_id}.{inp.id} has no tooltip"


@pytest.mark.parametrize("family, v_pred", [("sd15", False), ("sd2", True), ("sdxl", False)])
def test_tiny_models_are_real_comfy_models(family, v_pred):
    patcher = model_factory.tiny_unet(family, seed=0, v_prediction=v_pred)
    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert isinstance(patcher.model, comfy.model_base.SDXL if family == "sdxl" else comfy.model_base.BaseModel)
    expected = comfy.model_base.ModelType.V_PREDICTION if v_pred else comfy.model_base.ModelType.EPS
    assert patcher.model.model_type == expected
    params = list(patcher.model.diffusion_model.parameters())
    assert all(torch.isfinite(p).all() for p in params)
    # Deterministic: same seed, same weights; another seed, other weights.
    again = model_factory.tiny_unet(family, seed=0, v_prediction=v_pred)
    other = model_factory.tiny_unet(family, seed=1, v_prediction=v_pred)
    first = next(iter(patcher.model.diffusion_model.parameters()))
    assert torch.equal(first, next(iter(again.model.diffusion_model.parameters())))
    assert not torch.equal(first, next(iter(other.model.diffusion_model.parameters())))


def test_sdxl_fixture_has_two_transformer_depths(sdxl):
    unet = sdxl.model.diffusion_model
    depths = {len(block[1].transformer_blocks) for block in unet.input_blocks if len(block) > 1}
    assert depths == {2, 3}
    assert unet.num_classes == "sequential" and unet.label_emb[0][0].in_features == 2816


def test_random_checkpoint_loads_as_sd15(random_checkpoint):
    import comfy.supported_models

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(random_checkpoint), output_vae=True,
                                                                output_clip=True)
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert model.model.diffusion_model.model_channels == 320
    assert clip is not None and vae is not None
    tokens = clip.tokenize("a photo of a cat")
    cond = clip.encode_from_tokens(tokens)
    assert cond.shape[-1] == 768 and torch.isfinite(cond).all()
    pixels = vae.decode(torch.zeros(1, 4, 8, 8))
    assert pixels.shape == (1, 64, 64, 3) and torch.isfinite(pixels).all()
