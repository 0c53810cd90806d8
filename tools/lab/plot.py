"""Quality against cost at a glance: one point per row, seconds per image across, a failure rate up.

Drawn with pillow (the host has it; the pack does not depend on it for this): a grid with one column per scale and
one panel per figure (duplication rate, malformed share), each point a row of ``bench_quality`` labelled by name, its
95 % interval as a vertical bar.  Lower and further left is better.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

PANEL_W, PANEL_H, MARGIN = 520, 330, 56
FIGURES = (("duplication_rate", "duplication_ci95", "duplicated"),
           ("malformed_share", "malformed_ci95", "malformed share"))
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int], records: list[dict], figure: tuple[str, str, str],
           title: str, colours: dict[str, tuple], x_max: float) -> None:
    x0, y0 = box
    left, top, right, bottom = x0 + MARGIN, y0 + 28, x0 + PANEL_W - 12, y0 + PANEL_H - 36
    font = ImageFont.load_default()
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, y0 + 8), title, fill=(0, 0, 0), font=font)
    y_max = max(0.1, max(max(r[figure[0]], (r.get(figure[1]) or [0, 0])[1]) for r in records) * 1.1)

    def at(sec: float, value: float) -> tuple[float, float]:
        return (left + (right - left) * sec / x_max, bottom - (bottom - top) * value / y_max)

    for k in range(5):
        v = y_max * k / 4
        _, y = at(0, v)
        draw.line([left - 4, y, left, y], fill=(0, 0, 0))
        draw.text((x0 + 6, y - 6), f"{v:.2f}", fill=(0, 0, 0), font=font)
        sec = x_max * k / 4
        x, _ = at(sec, 0)
        draw.line([x, bottom, x, bottom + 4], fill=(0, 0, 0))
        draw.text((x - 10, bottom + 6), f"{sec:.1f}", fill=(0, 0, 0), font=font)
    draw.text((right - 110, bottom + 20), "seconds per image", fill=(0, 0, 0), font=font)
    for r in records:
        sec = r.get("seconds_per_image") or 0.0
        x, y = at(sec, r[figure[0]])
        colour = colours[r["row"]]
        ci = r.get(figure[1])
        if ci:
            draw.line([x, at(sec, ci[0])[1], x, at(sec, ci[1])[1]], fill=colour, width=1)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        draw.text((x + 6, y - 6), r["row"], fill=colour, font=font)


def quality_vs_time(records: list[dict], path: Path) -> Path:
    """Draw the records (rows at scales > 1 that have a time) to ``path`` (PNG)."""
    records = [r for r in records if r["scale"] > 1 and r.get("seconds_per_image")]
    scales = sorted({r["scale"] for r in records})
    if not scales:
        raise ValueError("nothing to plot: no row above the native size with a time per image")
    names = sorted({r["row"] for r in records})
    colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(names)}
    image = Image.new("RGB", (PANEL_W * len(scales), PANEL_H * len(FIGURES)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for col, scale in enumerate(scales):
        rows = [r for r in records if r["scale"] == scale]
        x_max = max(r["seconds_per_image"] for r in rows) * 1.25
        for line, figure in enumerate(FIGURES):
            _panel(draw, (col * PANEL_W, line * PANEL_H), rows, figure,
                   f"{scale}x the native side: {figure[2]} (lower is better)", colours, x_max)
    path = Path(path)
    image.save(path)
    return path
