"""The shipped autoguidance workflow through a real ComfyUI server: main + weak checkpoint -> Autoguidance Guider ->
core SamplerCustomAdvanced; and the error a user gets for two loaders on the same file."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.comfy_server import ServerError, load_workflow, png_size, workflow_to_api

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "autoguidance-sd15.json"
SIZE = 128  # px; steps and size lowered so a CPU run takes seconds



def quick(main: str, weak: str):
    def edit(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = main if node_id == "1" else weak
        if "steps" in inputs:
            inputs["steps"] = 2
        if class_type == "EmptyLatentImage":
            inputs.update(width=SIZE, height=SIZE)
    return edit


def test_shipped_workflow_is_the_documented_graph():
    workflow = load_workflow(WORKFLOW)
    types = {n["type"] for n in workflow["nodes"]}
    assert {"MegapixelAutoguidanceGuider", "SamplerCustomAdvanced"} <= types
    assert [n["type"] for n in workflow["nodes"]].count("CheckpointLoaderSimple") == 2


def test_shipped_workflow_runs(comfy_server, random_checkpoint, random_weak_checkpoint):
    info = comfy_server.object_info()
    prompt = workflow_to_api(load_workflow(WORKFLOW), info, quick(random_checkpoint.name, random_weak_checkpoint.name))
    guider = next(n for n in prompt.values() if n["class_type"] == "MegapixelAutoguidanceGuider")["inputs"]
    assert guider["weak_model"][0] != guider["model"][0] and guider["w"] == 2.0 and guider["cfg"] == 4.0
    entry = comfy_server.run(prompt, timeout=600)
    images = comfy_server.images(entry)
    assert len(images) == 1 and png_size(images[0][1]) == (SIZE, SIZE)


def test_same_checkpoint_twice_is_refused_with_the_fix(comfy_server, random_checkpoint):
    info = comfy_server.object_info()
    prompt = workflow_to_api(load_workflow(WORKFLOW), info, quick(random_checkpoint.name, random_checkpoint.name))
    with pytest.raises(ServerError, match=r"Autoguidance Guider: the weak_model input is the very same model.*"
                                          r"load a different, weaker checkpoint"):
        comfy_server.run(prompt, timeout=600)
