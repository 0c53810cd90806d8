"""The shipped DiT workflows: what ``tools/generate/workflows.py`` writes, and a run through a real ComfyUI server on tiny
stand-ins (sizes and steps lowered through the widgets).  The pinned host's loaders cannot build a tiny Flux nor tiny
text encoders, so the run swaps the diffusion-model loaders and the text encoder for the development nodes
``MegapixelTinyDiT`` / ``MegapixelTinyDiTTextEncode``; everything else is the workflow as shipped, the VAE a stand-in
TAESD file loaded by the stock *Load VAE*."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from generate import workflows as make_workflows
from harness import tiny_dits
from harness.comfy_server import load_workflow, png_size, workflow_to_api

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


@pytest.mark.parametrize("name", sorted(make_workflows.BUILDERS))
def test_workflow_files_are_what_the_script_writes(name):
    assert json.loads((WORKFLOWS / f"{name}.json").read_text()) == make_workflows.BUILDERS[name]().to_json(), (
        f"workflows/{name}.json is stale: run python3 tools/generate/workflows.py")


def stand_in(prompt: dict, family: str) -> dict:
    """``prompt`` with the tiny ``family`` model in place of the diffusion-model loaders (main seed 0, weak seed 1,
    in node order) and its text conditioning in place of the text encoder; the text-encoder loader dropped."""
    seeds = iter(range(100))
    out = {}
    for node_id, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("DualCLIPLoader", "CLIPLoader", "TripleCLIPLoader"):
            continue
        if kind == "UNETLoader":
            node = {"class_type": "MegapixelTinyDiT", "inputs": {"family": family, "seed": next(seeds)}}
        elif kind == "CLIPTextEncode":
            node = {"class_type": "MegapixelTinyDiTTextEncode", "inputs": {"family": family, "text": inputs["text"]}}
        elif kind == "VAELoader":
            node = {"class_type": kind, "inputs": {"vae_name": tiny_dits.STAND_IN_VAE}}
        out[node_id] = node
    return out



@pytest.mark.e2e
def test_flux_relay_autoguidance_workflow_runs_on_a_tiny_flux(comfy_server):
    """1024 -> 2048 lowered to 128 -> 256 px (8x8 then 16x16 tokens), 4 steps; the relay, the guider and the weak
    model all run (an autoguidance output differs from w = 1's)."""
    info = comfy_server.object_info()

    def lowered(w: float):
        def edit(node_id: str, class_type: str, inputs: dict) -> None:
            if class_type == "EmptySD3LatentImage":
                inputs.update(width=128, height=128)
            if class_type == "BasicScheduler":
                inputs["steps"] = 4
            if class_type == "MegapixelRelaySamplerCustom":
                inputs["stages"] = "128x128, 256x256"
            if class_type == "MegapixelAutoguidanceGuider":
                inputs["w"] = w
            if class_type == "SaveImage":
                inputs["filename_prefix"] = f"flux_relay_w{w}"
        return edit

    workflow = load_workflow(WORKFLOWS / f"{make_workflows.FLUX_RELAY}.json")
    images = {}
    for w in (2.0, 1.0):
        prompt = stand_in(workflow_to_api(workflow, info, lowered(w)), tiny_dits.FLUX_DEV)
        found = comfy_server.images(comfy_server.run(prompt, timeout=600))
        assert len(found) == 1 and png_size(found[0][1]) == (256, 256)
        images[w] = found[0][1]
    assert images[2.0] != images[1.0]


@pytest.mark.e2e
def test_flux_dype_relay_workflow_runs_on_a_tiny_flux(comfy_server):
    """1024 -> 2048 -> 4096 lowered to 128 -> 256 -> 512 px (8x8 to 32x32 tokens), 6 steps (4/1/1), DyPE's native
    size lowered to 128 px so it acts above the first stage; the tiled decode as shipped."""
    info = comfy_server.object_info()

    def lowered(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "EmptySD3LatentImage":
            inputs.update(width=128, height=128)
        if class_type == "BasicScheduler":
            inputs["steps"] = 6
        if class_type == "MegapixelRelaySamplerCustom":
            inputs["stages"] = "128x128, 256x256, 512x512"
        if class_type == "MegapixelDyPE":
            inputs["native_size"] = 128

    workflow = load_workflow(WORKFLOWS / f"{make_workflows.FLUX_DYPE}.json")
    prompt = stand_in(workflow_to_api(workflow, info, lowered), tiny_dits.FLUX_DEV)
    assert any(n["class_type"] == "MegapixelDyPE" for n in prompt.values())
    found = comfy_server.images(comfy_server.run(prompt, timeout=600))
    assert len(found) == 1 and png_size(found[0][1]) == (512, 512)
