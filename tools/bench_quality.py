"""Quality lab benchmark: does each technique do what its paper claims, on a model trained here?

    .host/venv/bin/python tools/bench_quality.py [--seeds 0-23] [--scales 1,2,4] [--rows vanilla,hidiffusion,...]
                                                 [--steps 20] [--json out.json] [--device cpu|cuda]

The lab model (``tools/lab/``: an SD1.5-class U-Net trained at 128 px on scenes with exactly one vivid object; the
``dit*`` rows use the lab DiT instead, a small ComfyUI Flux with RoPE trained on the same latents, for DyPE) is
sampled for every seed at every scale of its native side, per row (a technique and its settings: see
``lab.pipeline.ROWS``); each decoded image is segmented and its objects counted (``lab.measure``).  Per row and
scale it reports:

- **duplication rate**: the share of images with more than one object, with its 95 % Wilson interval, and the mean
  object count; **no object**: the share with none (a technique must not win by drawing nothing);
- **object scale**: the largest object's side over the image side (native: 0.3-0.6 by construction);
- **shape fidelity**: each object's best IoU with an ideal circle, square or triangle in its bounding box (mean), and
  the share of malformed objects (IoU < 0.7, which 95 % of real scenes pass after the autoencoder round trip).

Autoguidance rows run at native size only (the paper's claim is about sample quality, not size).  ``--json`` writes one
record per row and scale.  Everything runs in one process through ComfyUI's own sampling code.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from host import import_in_process  # noqa: E402

DEFAULT_SEEDS = "0-23"
QUICK_SEEDS = "0-5"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(row: str, scale: int, stats) -> dict:
    """One record: a row at a scale over its images."""
    n = len(stats)
    duplicated = sum(s.count > 1 for s in stats)
    fids = [f for s in stats for f in s.fidelities]
    from lab.measure import MALFORMED_IOU

    return {
        "row": row, "scale": scale, "images": n,
        "duplication_rate": duplicated / n if n else 0.0, "duplication_ci95": list(wilson(duplicated, n)),
        "mean_count": statistics.fmean(s.count for s in stats) if n else 0.0,
        "no_object_rate": sum(s.count == 0 for s in stats) / n if n else 0.0,
        "object_scale": statistics.fmean(s.largest_side for s in stats if s.count) if any(s.count for s in stats)
        else 0.0,
        "shape_fidelity": statistics.fmean(fids) if fids else 0.0,
        "malformed_share": sum(f < MALFORMED_IOU for f in fids) / len(fids) if fids else 0.0,
    }


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.replace(" ", "").split(","):
        if "-" in part:
            first, last = (int(v) for v in part.split("-"))
            seeds.extend(range(first, last + 1))
        elif part:
            seeds.append(int(part))
    if not seeds:
        raise SystemExit("--seeds: give a range FIRST-LAST or a list, e.g. 0-23")
    return seeds


def run(seeds: list[int], scales: list[int], rows: list[str] | None = None, steps: int | None = None,
        device: str = "auto", log=print) -> list[dict]:
    """Records for every row (``rows`` or all) and scale."""
    import_in_process(device)
    from lab import pipeline

    lab = pipeline.load_lab()
    steps = steps or pipeline.STEPS
    records = []
    for row in rows or list(pipeline.ROWS):
        for scale in scales:
            if row in pipeline.NATIVE_ONLY and scale != 1:
                continue
            if row in pipeline.SIZE_ONLY and scale == 1:
                continue  # DyPE is off at or below the native size: the plain DiT row
            if row.startswith(("relay", "dit_relay")) and scale == 1:
                continue  # a one-stage relay is the core KSampler (tested bit-for-bit): the vanilla row
            started = time.perf_counter()
            stats = pipeline.measure_row(lab, row, seeds, pipeline.NATIVE_PX * scale, steps)
            record = summarise(row, scale, stats)
            record["seconds"] = round(time.perf_counter() - started, 1)
            records.append(record)
            log(format_record(record))
    return records


def format_record(r: dict) -> str:
    lo, hi = r["duplication_ci95"]
    return (f"{r['row']:<20} {r['scale']}x  n={r['images']:<3} duplicated {r['duplication_rate']:.2f} "
            f"[{lo:.2f}, {hi:.2f}]  objects {r['mean_count']:.2f}  none {r['no_object_rate']:.2f}  "
            f"scale {r['object_scale']:.2f}  fidelity {r['shape_fidelity']:.2f}  malformed {r['malformed_share']:.2f}"
            f"  ({r['seconds']:.0f} s)")


def markdown(records: list[dict]) -> str:
    from lab import pipeline

    head = ("| row | scale | images | duplicated (95 % CI) | mean objects | no object | object scale | shape fidelity "
            "| malformed |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in records:
        lo, hi = r["duplication_ci95"]
        lines.append(f"| {pipeline.ROWS[r['row']][0]} | {r['scale']}x | {r['images']} | {r['duplication_rate']:.2f} "
                     f"({lo:.2f}–{hi:.2f}) | {r['mean_count']:.2f} | {r['no_object_rate']:.2f} | "
                     f"{r['object_scale']:.2f} | {r['shape_fidelity']:.2f} | {r['malformed_share']:.2f} |")
    return "\n".join(lines)


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """For bench_report: quality rows (no time ratio) at 1x, 2x, 4x."""
    records = run(parse_seeds(QUICK_SEEDS if quick else DEFAULT_SEEDS), [1, 2, 4], device=device, log=lambda *_: None)
    return [{"comparison": f"{r['row']} {r['scale']}x", "quality": r} for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help="seed range FIRST-LAST or list (default %(default)s)")
    parser.add_argument("--scales", default="1,2,4", help="multiples of the native side (default %(default)s)")
    parser.add_argument("--rows", default="", help="comma-separated rows (default: all): " )
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 20)")
    parser.add_argument("--json", type=Path, default=None, help="write one record per row and scale here")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown at the end")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] or None
    records = run(seeds, scales, rows, args.steps, args.device)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
        print(f"wrote {len(records)} records to {args.json}")
    if args.markdown:
        print(markdown(records))


if __name__ == "__main__":
    main()
