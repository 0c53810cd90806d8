"""The shipped relay workflows through a real ComfyUI server (steps and sizes lowered for a CPU), and a bad stage
spec refused at validation with the node, the input and the fix."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.comfy_server import ServerError, load_workflow, png_size, workflow_to_api

pytestmark = pytest.mark.e2e

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SD15 = WORKFLOWS / "relay-sd15-512-768-1024.json"
SDXL = WORKFLOWS / "relay-sdxl-1024-2048.json"



def quick(ckpt: str, stages: str, first: int, steps: int):
    """Overrides: the random checkpoint, a small first stage, fewer steps (the split rule stays the default)."""
    def edit(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = ckpt
        if class_type == "EmptyLatentImage":
            inputs.update(width=first, height=first)
        if "steps" in inputs:
            inputs["steps"] = steps
        if "stages" in inputs:
            inputs["stages"] = stages
    return edit


@pytest.fixture(scope="module")
def info(comfy_server) -> dict:
    return comfy_server.object_info()


def widgets(workflow: dict, node_type: str) -> list:
    return next(n for n in workflow["nodes"] if n["type"] == node_type)["widgets_values"]


def test_shipped_workflows_are_the_papers_settings():
    sd15 = load_workflow(SD15)
    assert widgets(sd15, "MegapixelRelayKSampler")[2] == 50
    assert widgets(sd15, "MegapixelRelayKSampler")[7:9] == ["512x512, 768x768, 1024x1024", ""]
    assert widgets(sd15, "EmptyLatentImage")[:2] == [512, 512]
    sdxl = load_workflow(SDXL)
    assert widgets(sdxl, "MegapixelRelaySamplerCustom")[:2] == ["1024x1024, 2048x2048", ""]
    assert widgets(sdxl, "BasicScheduler")[1] == 50 and widgets(sdxl, "EmptyLatentImage")[:2] == [1024, 1024]
    for wf in (sd15, sdxl):
        assert wf["version"] == 0.4 and {"last_node_id", "last_link_id", "groups", "config", "extra"} <= set(wf)
        for node in wf["nodes"]:
            assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                    "widgets_values"} <= set(node)


def test_sd15_workflow_runs_three_stages_through_the_vae(comfy_server, random_checkpoint, info):
    prompt = workflow_to_api(load_workflow(SD15), info, quick(random_checkpoint.name, "64x64, 96x96, 128x128",
                                                              64, 5))
    relay = next(n for n in prompt.values() if n["class_type"] == "MegapixelRelayKSampler")["inputs"]
    assert relay["sampler_name"] == "ddim" and relay["step_split"] == "" and relay["vae"][1] == 2
    images = comfy_server.images(comfy_server.run(prompt, timeout=600))
    assert len(images) == 1 and png_size(images[0][1]) == (128, 128)


def test_sdxl_workflow_runs_the_custom_relay(comfy_server, random_checkpoint, info):
    prompt = workflow_to_api(load_workflow(SDXL), info, quick(random_checkpoint.name, "128x128, 256x256", 128, 5))
    relay = next(n for n in prompt.values() if n["class_type"] == "MegapixelRelaySamplerCustom")["inputs"]
    assert "vae" not in relay and relay["upscale_method"] == "bicubic"
    images = comfy_server.images(comfy_server.run(prompt, timeout=600))
    assert len(images) == 1 and png_size(images[0][1]) == (256, 256)


@pytest.mark.parametrize("stages, steps, fragment", [
    ("1, 0.75", 6, "stages: scale factor 0.75 is below 1"),
    ("128x128, 196x196", 6, "stages: size 196x196 is not a multiple of 8 px"),
    ("1, 1.5, 2", 2, "steps: 2 steps cannot be split over 3 stages"),
])
def test_bad_stage_specs_are_refused_before_anything_runs(comfy_server, random_checkpoint, info, stages, steps,
                                                          fragment):
    prompt = workflow_to_api(load_workflow(SD15), info, quick(random_checkpoint.name, stages, 128, steps))
    with pytest.raises(ServerError, match="Relay KSampler \\(MegaFusion\\): ") as err:
        comfy_server.queue(prompt)
    assert fragment in str(err.value) and "Fix:" in str(err.value)


def test_a_stage_spec_the_latent_contradicts_fails_with_the_fix(comfy_server, random_checkpoint, info):
    prompt = workflow_to_api(load_workflow(SD15), info, quick(random_checkpoint.name, "256x256, 512x512", 128, 4))
    with pytest.raises(ServerError, match="first stage is 256x256 but the input latent is 128x128 px. Fix:"):
        comfy_server.run(prompt, timeout=300)
