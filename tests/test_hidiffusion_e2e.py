"""The shipped HiDiffusion workflows through a real ComfyUI server, on the random full-size SD1.5 checkpoint, with
steps and sizes lowered so a CPU run stays short."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.comfy_server import load_workflow, png_size, workflow_to_api

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SD15 = WORKFLOWS / "hidiffusion-sd15-2048.json"
SDXL = WORKFLOWS / "hidiffusion-sdxl-4096.json"
SIZE = 384  # px: small enough for a CPU (the VAE decode dominates); the one-click node is told the real target
HIDIFFUSION_TYPES = {"MegapixelHiDiffusion", "MegapixelHiDiffusionRAUNet", "MegapixelHiDiffusionMSWMSA"}



@pytest.mark.parametrize("path, width, types", [
    (SD15, 2048, {"MegapixelHiDiffusion"}),
    (SDXL, 4096, {"MegapixelHiDiffusionRAUNet", "MegapixelHiDiffusionMSWMSA"}),
])
def test_workflow_files_are_ui_format(path, width, types):
    wf = load_workflow(path)
    assert wf["version"] == 0.4 and {"last_node_id", "last_link_id", "groups", "config", "extra"} <= set(wf)
    links = {l[0]: l for l in wf["links"]}
    assert wf["last_link_id"] == max(links) and wf["last_node_id"] == max(n["id"] for n in wf["nodes"])
    for node in wf["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                "widgets_values"} <= set(node)
        assert node["properties"]["Node name for S&R"] == node["type"]
        for slot, inp in enumerate(node["inputs"]):
            link = links[inp["link"]]
            assert link[3] == node["id"] and link[4] == slot and link[5] == inp["type"]
        for slot, out in enumerate(node["outputs"]):
            assert out["slot_index"] == slot
            assert all(links[l][1] == node["id"] and links[l][2] == slot for l in out["links"])
    by_type = {n["type"]: n for n in wf["nodes"]}
    assert types <= set(by_type) and by_type["EmptyLatentImage"]["widgets_values"][:2] == [width, width]


def quick(ckpt_name: str):
    """Lower the cost for a CPU: the random checkpoint, 384 px, one step, cfg 1 (one pass per step).  The one-click
    node gets the workflow's own size as its target, so it picks the settings it would at that size and acts."""
    def edit(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = ckpt_name
        if class_type == "EmptyLatentImage":
            inputs.update(width=SIZE, height=SIZE)
        if class_type == "KSampler":
            inputs.update(steps=1, cfg=1.0)
        if class_type == "MegapixelHiDiffusion":
            inputs.update(target_width=2048, target_height=2048)
    return edit


def untiled(prompt: dict) -> dict:
    """The same graph with VAEDecodeTiled swapped for VAEDecode: the shipped workflows decode in tiles to save memory
    at 2048/4096 px, which ComfyUI does as three overlapping passes; on a CPU test run that triples the slowest part."""
    for node in prompt.values():
        if node["class_type"] == "VAEDecodeTiled":
            node["class_type"] = "VAEDecode"
            node["inputs"] = {k: node["inputs"][k] for k in ("samples", "vae")}
    return prompt


@pytest.mark.e2e
@pytest.mark.parametrize("path, tile", [(SD15, 512), (SDXL, 1024)], ids=["sd15-2048", "sdxl-4096"])
def test_shipped_workflow_runs(comfy_server, random_checkpoint, path, tile):
    prompt = workflow_to_api(load_workflow(path), comfy_server.object_info(), quick(random_checkpoint.name))
    assert HIDIFFUSION_TYPES & {n["class_type"] for n in prompt.values()}
    decode = next(n for n in prompt.values() if n["class_type"] == "VAEDecodeTiled")
    assert decode["inputs"]["tile_size"] == tile and len(decode["inputs"]) == 6  # widgets read in the right order
    images = comfy_server.images(comfy_server.run(untiled(prompt), timeout=600))
    assert len(images) == 1 and png_size(images[0][1]) == (SIZE, SIZE)


def small_graph(ckpt_name: str, hidiffusion: bool) -> dict:
    """128 px, one step, the one-click node told to choose the settings for 2048 px (so it acts at this size)."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["2", 0] if hidiffusion else ["1", 0],
                                                  "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0],
                                                  "seed": 3, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
                                                  "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "e2e_hidiffusion"}},
    }
    if hidiffusion:
        graph["2"] = {"class_type": "MegapixelHiDiffusion",
                      "inputs": {"model": ["1", 0], "target_width": 2048, "target_height": 2048}}
    return graph


@pytest.mark.e2e
def test_hidiffusion_acts_inside_the_server(comfy_server, random_checkpoint):
    with_hd = comfy_server.images(comfy_server.run(small_graph(random_checkpoint.name, True), timeout=600))
    without = comfy_server.images(comfy_server.run(small_graph(random_checkpoint.name, False), timeout=600))
    # Compare pixels: the PNGs also embed the (different) graphs.
    assert pixels(with_hd[0][1]) != pixels(without[0][1])


def pixels(data: bytes) -> bytes:
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()
