"""The Megapixel High-Res Sampler through a real ComfyUI server: its shipped workflows run (random full-size SD1.5
checkpoint, sizes and steps lowered for a CPU) and give the target size; bad input is refused with the node's name,
the input and the fix, before anything samples."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.comfy_server import ServerError, load_workflow, png_size, workflow_to_api

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
SIZE = 128  # px: the latent the test gives the node; the shipped workflows double it


def quick(ckpt_name: str, **node_inputs):
    def edit(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = ckpt_name
        if class_type == "EmptyLatentImage":
            inputs.update(width=SIZE, height=SIZE)
        if class_type == "MegapixelHighRes":
            inputs.update(steps=2, cfg=1.0, **node_inputs)
    return edit


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["megapixel-highres-sd15-1024", "megapixel-highres-sdxl-2048"])
def test_shipped_workflow_runs_to_the_target_size(comfy_server, random_checkpoint, name):
    prompt = workflow_to_api(load_workflow(WORKFLOWS / f"{name}.json"), comfy_server.object_info(),
                             quick(random_checkpoint.name))
    node = next(n for n in prompt.values() if n["class_type"] == "MegapixelHighRes")
    assert node["inputs"]["scale_by"] == 2.0 and node["inputs"]["sampler_name"] == "dpmpp_2m"  # widgets in order
    images = comfy_server.images(comfy_server.run(prompt, timeout=600))
    assert len(images) == 1 and png_size(images[0][1]) == (2 * SIZE, 2 * SIZE)


@pytest.mark.e2e
@pytest.mark.parametrize("inputs, message", [
    ({"scale_by": 0.5}, "scale_by: 0.5 is out of range"),
    ({"width": 64, "height": 64}, "is smaller than the input latent"),
])
def test_bad_targets_are_refused_by_name(comfy_server, random_checkpoint, inputs, message):
    prompt = workflow_to_api(load_workflow(WORKFLOWS / "megapixel-highres-sd15-1024.json"),
                             comfy_server.object_info(), quick(random_checkpoint.name, **inputs))
    with pytest.raises(ServerError, match="Megapixel High-Res Sampler: ") as err:
        comfy_server.run(prompt, timeout=600)
    assert message in str(err.value) and "Fix:" in str(err.value)
