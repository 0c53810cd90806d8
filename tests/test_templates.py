"""The shipped workflows as ComfyUI's template browser lists them: ``workflows/<name>.json`` with a thumbnail
``workflows/<name>.jpg`` beside it (rendered from the quality lab's model by ``tools/generate/thumbnails.py``).

The file checks are fast (no server, no model); the server checks use the session's real ComfyUI server, which lists
the pack's ``workflows/`` folder at ``/api/workflow_templates`` and serves its files under
``/api/workflow_templates/megapixel/``.  ``tests/test_browser.py`` opens the template browser itself.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageStat

from generate import thumbnails as make_thumbnails
from harness.host import PACK_NAME

PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
THUMB_SIZE = (make_thumbnails.THUMB_PX, make_thumbnails.THUMB_PX)
MAX_BYTES = 60_000
FIX = "run `nice .host/venv/bin/python tools/generate/thumbnails.py` and commit workflows/*.jpg"


def test_workflows_are_shipped():
    assert WORKFLOWS, "workflows/ holds no workflow"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_workflow_has_a_thumbnail(path):
    """A 256x256 RGB JPEG under 60 KB beside the workflow, with a picture in it (not one flat colour)."""
    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"{thumb.relative_to(PACK_DIR)} is missing: {FIX}"
    size = thumb.stat().st_size
    assert 2_000 < size < MAX_BYTES, f"{thumb.name}: {size} bytes"
    with Image.open(thumb) as image:
        assert image.format == "JPEG", image.format
        assert image.size == THUMB_SIZE, image.size
        assert image.mode == "RGB", image.mode
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 8, f"{thumb.name} is nearly one flat colour (grey-level stddev {spread:.1f})"


def test_no_thumbnail_without_its_workflow():
    stray = sorted(p.name for p in (PACK_DIR / "workflows").glob("*.jpg") if not p.with_suffix(".json").exists())
    assert not stray, f"thumbnails without a workflow: {stray}"


def test_the_thumbnail_script_knows_every_workflow():
    """tools/generate/thumbnails.py maps each workflow to the lab technique it shows, by name (not the fallback)."""
    missing = sorted(p.stem for p in WORKFLOWS if p.stem not in make_thumbnails.TECHNIQUE)
    assert not missing, f"add these to TECHNIQUE in tools/generate/thumbnails.py: {missing}"


@pytest.mark.e2e
def test_server_lists_the_workflows_as_templates(comfy_server):
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed.get(PACK_NAME, [])) == sorted(p.stem for p in WORKFLOWS), listed


@pytest.mark.e2e
def test_server_serves_the_templates_and_thumbnails(comfy_server):
    """The URLs the template browser fetches: <name>.jpg for the card, <name>.json when it is opened."""
    for path in WORKFLOWS:
        for suffix in (".jpg", ".json"):
            local = path.with_suffix(suffix)
            served = comfy_server.get_bytes(f"/api/workflow_templates/{PACK_NAME}/{local.name}")
            assert served == local.read_bytes(), f"/api/workflow_templates/{PACK_NAME}/{local.name}"
