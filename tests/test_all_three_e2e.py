"""The all-techniques workflow through a real ComfyUI server: HiDiffusion-patched main and weak models ->
Autoguidance Guider -> Relay Sampler (custom) -> VAE decode -> save.  The demo runs this workflow too."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.comfy_server import load_workflow, png_size, workflow_to_api

pytestmark = pytest.mark.e2e

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "megapixel-all-three-sd15.json"
FIRST, LAST = 256, 384  # px: two stages, lowered so a CPU run stays short



def test_workflow_holds_all_three_techniques():
    types = [n["type"] for n in load_workflow(WORKFLOW)["nodes"]]
    assert types.count("MegapixelHiDiffusion") == 2
    assert {"MegapixelAutoguidanceGuider", "MegapixelRelaySamplerCustom"} <= set(types)


def test_all_three_workflow_runs(comfy_server, random_checkpoint, random_weak_checkpoint):
    def quick(node_id: str, class_type: str, inputs: dict) -> None:
        if class_type == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = random_checkpoint.name if node_id == "1" else random_weak_checkpoint.name
        if class_type == "MegapixelHiDiffusion":
            # Choose the settings for a 2048 px image, so both patches act at this small test size.
            inputs.update(target_width=2048, target_height=2048)
        if class_type == "BasicScheduler":
            inputs["steps"] = 4
        if class_type == "EmptyLatentImage":
            inputs.update(width=FIRST, height=FIRST)
        if class_type == "MegapixelRelaySamplerCustom":
            inputs.update(stages=f"{FIRST}x{FIRST}, {LAST}x{LAST}", step_split="3/1")

    prompt = workflow_to_api(load_workflow(WORKFLOW), comfy_server.object_info(), quick)
    entry = comfy_server.run(prompt, timeout=900)
    images = comfy_server.images(entry)
    assert len(images) == 1 and png_size(images[0][1]) == (LAST, LAST)
