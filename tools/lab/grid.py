"""The comparison grid: one column per branch of :func:`lab.graphs.comparison_graph` (the High-Res Sampler,
vanilla, hires fix, Deep Shrink), one row per image, and under each column the objects counted in its images.

    .host/venv/bin/python tools/lab/grid.py OUT.png IMAGE.png ...     # images named <prefix>-<branch>_NNNNN_.png
    .host/venv/bin/python tools/lab/grid.py --sample tools/lab/grid-4x.png  # the README's picture, in process:
                                                       # the same branches through lab.pipeline, seeds 0-3, 12 steps

Runs in the host's Python (it measures with torch and scipy); the demo calls it after its server run.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab import measure  # noqa: E402
from lab.graphs import BRANCHES, TITLES  # noqa: E402

PAD, TEXT_H = 6, 58


def _branch(path: Path) -> str | None:
    for branch in BRANCHES:
        if re.search(rf"-{branch}_\d+_?\.png$", path.name):
            return branch
    return None


def _font(size: int):
    for name in ("DejaVuSans.ttf", "LiberationSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def make_grid(paths: list[Path], out: Path, tile: int = 256) -> dict[str, list[int]]:
    """Write the grid to ``out``; returns the object counts per branch."""
    columns: dict[str, list[Image.Image]] = {b: [] for b in BRANCHES}
    for path in sorted(paths):
        branch = _branch(Path(path))
        if branch:
            columns[branch].append(Image.open(path).convert("RGB"))
    columns = {b: imgs for b, imgs in columns.items() if imgs}
    if not columns:
        raise SystemExit("no lab images among the given files (expected names like lab-vanilla_00001_.png)")
    counts = {}
    for branch, imgs in columns.items():
        counts[branch] = [measure.measure_image(torch.from_numpy(np.asarray(im)).float() / 255).count for im in imgs]
    rows = max(len(v) for v in columns.values())
    width = len(columns) * (tile + PAD) + PAD
    height = PAD + 30 + rows * (tile + PAD) + TEXT_H
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    title, body = _font(18), _font(14)
    for c, (branch, imgs) in enumerate(columns.items()):
        x = PAD + c * (tile + PAD)
        draw.text((x, PAD + 4), TITLES[branch], fill=(0, 0, 0), font=title)
        for r, im in enumerate(imgs):
            grid.paste(im.resize((tile, tile), Image.LANCZOS), (x, PAD + 30 + r * (tile + PAD)))
        n = counts[branch]
        y = PAD + 30 + rows * (tile + PAD)
        draw.text((x, y), "objects: " + " ".join(str(v) for v in n), fill=(0, 0, 0), font=body)
        draw.text((x, y + 20), f"duplicated: {sum(v > 1 for v in n)} of {len(n)}", fill=(0, 0, 0), font=body)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return counts


# The demo's branches as lab.pipeline rows (the same code paths as the nodes of lab.graphs).
SAMPLE_ROWS = {"megapixel": "megapixel", "vanilla": "vanilla", "hires_fix": "hires_fix_0.6",
               "deep_shrink": "deep_shrink"}


def sample(out: Path, seeds=range(4), scale: int = 4, steps: int = 12) -> dict[str, list[int]]:
    """Sample every branch in process and write the grid (the README's picture)."""
    import tempfile

    from harness.host import import_in_process

    import_in_process("cpu")
    from lab import pipeline

    lab = pipeline.load_lab()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for branch in BRANCHES:
            images = pipeline.sample_images(lab, SAMPLE_ROWS[branch], seeds, scale * pipeline.NATIVE_PX, steps)
            for i, image in enumerate(images):
                path = Path(tmp) / f"lab-{branch}_{i + 1:05d}_.png"
                Image.fromarray((image.clamp(0, 1) * 255).round().byte().numpy()).save(path)
                paths.append(path)
        return make_grid(paths, out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--sample":
        counts = sample(Path(sys.argv[2]))
        for branch, n in counts.items():
            print(f"{TITLES[branch]}: objects per image {n}")
        return
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    counts = make_grid([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]))
    for branch, n in counts.items():
        print(f"{TITLES[branch]}: objects per image {n}, duplicated {sum(v > 1 for v in n)} of {len(n)}")


if __name__ == "__main__":
    main()
