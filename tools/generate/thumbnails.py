"""Thumbnails for the template browser: ``workflows/<name>.jpg`` beside each shipped workflow, showing what the
workflow's technique makes — rendered from the quality lab's models (``tools/lab/``: its U-Net, and its DiT for the
Flux workflows), the models trained here.

    .host/venv/bin/python tools/generate/thumbnails.py

Each workflow maps to the lab row of its technique (HiDiffusion, relay, relay over HiDiffusion, autoguidance; relay
and relay over DyPE on the lab DiT) at the size that shows it; deterministic (fixed seeds).  ComfyUI serves them to
the template browser as ``/api/workflow_templates/megapixel/<name>.jpg``.
"""
from __future__ import annotations

import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK_DIR / "tools"))

from harness.host import import_in_process  # noqa: E402

WORKFLOWS = PACK_DIR / "workflows"
THUMB_PX = 256
SEED = 2
# Workflow name -> (lab row, multiple of the native side).
TECHNIQUE = {
    "autoguidance-sd15": ("autoguidance_w2", 1),
    "hidiffusion-sd15-2048": ("hidiffusion", 4),
    "hidiffusion-sdxl-4096": ("hidiffusion", 4),
    "megapixel-all-three-sd15": ("relay_hidiffusion", 4),
    "megapixel-highres-sd15-1024": ("megapixel", 2),
    "megapixel-highres-sdxl-2048": ("megapixel", 2),
    "relay-sd15-512-768-1024": ("relay", 2),
    "relay-sdxl-1024-2048": ("relay", 2),
    "relay-autoguidance-flux1-1024-2048": ("dit_relay", 2),  # the lab DiT (a ComfyUI Flux); it has no weak model
    "dype-relay-flux1-1024-2048-4096": ("dit_relay_dype_yarn", 4),
}


def row_for(name: str) -> tuple[str, int]:
    if name in TECHNIQUE:
        return TECHNIQUE[name]
    for key, row in (("all-three", "relay_hidiffusion"), ("hidiffusion", "hidiffusion"), ("relay", "relay"),
                     ("autoguidance", "autoguidance_w2")):
        if key in name:
            return row, 1 if row.startswith("autoguidance") else 4
    raise SystemExit(f"no lab technique known for workflows/{name}.json: add it to TECHNIQUE")


def main() -> None:
    import_in_process("cpu")
    from PIL import Image

    from lab import pipeline

    lab = pipeline.load_lab()
    rendered: dict[tuple[str, int], Image.Image] = {}  # workflows that show the same technique share one render
    for path in sorted(WORKFLOWS.glob("*.json")):
        row, scale = row_for(path.stem)
        if (row, scale) not in rendered:
            image = pipeline.sample_images(lab, row, [SEED], pipeline.NATIVE_PX * scale)[0]
            pixels = (image.clamp(0, 1) * 255).round().byte().numpy()
            rendered[row, scale] = Image.fromarray(pixels).resize((THUMB_PX, THUMB_PX), Image.LANCZOS)
        thumb = rendered[row, scale]
        target = path.with_suffix(".jpg")
        thumb.save(target, quality=85)
        print(f"{target.relative_to(PACK_DIR)}: lab {row} at {scale}x")


if __name__ == "__main__":
    main()
