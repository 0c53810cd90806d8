"""Quality lab benchmark: does each technique do what its paper claims, on a model trained here?

    .host/venv/bin/python tools/bench/quality.py [--seeds 0-23] [--scales 1,2,4] [--rows vanilla,hidiffusion,...]
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
import dataclasses
import json
import math
import statistics
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK_DIR / "tools"))

from harness.host import import_in_process  # noqa: E402

DEFAULT_SEEDS = "0-63"
QUICK_SEEDS = "0-5"
# The rows every candidate is compared with, seed by seed: the incumbents a user has for free, and the model alone.
BASELINES = ("vanilla", "deep_shrink", "hires_fix_0.5", "hires_fix_0.6", "hires_fix_pixel_0.5")


def _duplicated(stats) -> float:
    return sum(s.count > 1 for s in stats) / len(stats) if stats else 0.0


def _malformed(stats) -> float:
    from lab.measure import MALFORMED_IOU

    fids = [f for s in stats for f in s.fidelities]
    return sum(f < MALFORMED_IOU for f in fids) / len(fids) if fids else 0.0


def _mean(attr: str):
    return lambda stats: statistics.fmean(getattr(s, attr) for s in stats) if stats else 0.0


def _object_scale(stats) -> float:
    drawn = [s.largest_side for s in stats if s.count]
    return statistics.fmean(drawn) if drawn else 0.0


# figure name -> per-row figure over a row's ImageStats (the same figures are compared pairwise)
FIGURES = {
    "duplication_rate": _duplicated,
    "malformed_share": _malformed,
    "object_scale": _object_scale,
    "background_noise": _mean("background_noise"),
    "edge_band": _mean("edge_band"),
}
PAIRED_FIGURES = ("duplication_rate", "malformed_share", "object_scale", "background_noise", "edge_band")


def summarise(row: str, scale: int, stats, seeds=None, seconds_per_image: float | None = None) -> dict:
    """One record: a row at a scale over its images (``per_image`` keeps each seed's figures for pairing)."""
    from lab.stats import bootstrap, wilson

    n = len(stats)
    duplicated = sum(s.count > 1 for s in stats)
    fids = [f for s in stats for f in s.fidelities]
    record = {
        "row": row, "scale": scale, "images": n,
        "duplication_rate": duplicated / n if n else 0.0, "duplication_ci95": list(wilson(duplicated, n)),
        "mean_count": statistics.fmean(s.count for s in stats) if n else 0.0,
        "no_object_rate": sum(s.count == 0 for s in stats) / n if n else 0.0,
        "object_scale": _object_scale(stats), "object_scale_ci95": list(bootstrap(list(stats), _object_scale)),
        "shape_fidelity": statistics.fmean(fids) if fids else 0.0,
        "malformed_share": _malformed(stats),
        "malformed_ci95": list(bootstrap(list(stats), _malformed)),
        "background_noise": FIGURES["background_noise"](stats),
        "background_noise_ci95": list(bootstrap(list(stats), FIGURES["background_noise"])),
        "edge_band": FIGURES["edge_band"](stats), "edge_band_ci95": list(bootstrap(list(stats), FIGURES["edge_band"])),
        "seconds_per_image": seconds_per_image,
    }
    if seeds is not None:
        record["per_image"] = [{"seed": int(seed), **dataclasses.asdict(st)} for seed, st in zip(seeds, stats)]
    return record


def image_stats(record: dict) -> list:
    """A record's per-image figures back as ImageStats, in seed order."""
    from lab.measure import ImageStats

    return [ImageStats(**{k: (tuple(v) if k == "fidelities" else v) for k, v in image.items() if k != "seed"})
            for image in record["per_image"]]


def paired(records: list[dict], baselines=BASELINES) -> list[dict]:
    """Each row against each baseline at the same scale, seed by seed: figure(row) - figure(baseline), 95 % CI."""
    from lab.stats import paired_difference

    by_key = {(r["row"], r["scale"]): r for r in records if "per_image" in r}
    out = []
    for r in records:
        for base in baselines:
            b = by_key.get((base, r["scale"]))
            if b is None or b is r or "per_image" not in r:
                continue
            if [i["seed"] for i in r["per_image"]] != [i["seed"] for i in b["per_image"]]:
                continue  # not the same seeds: no pairing
            a_stats, b_stats = image_stats(r), image_stats(b)
            entry = {"row": r["row"], "baseline": base, "scale": r["scale"], "images": len(a_stats)}
            for name in PAIRED_FIGURES:
                diff, ci = paired_difference(a_stats, b_stats, FIGURES[name])
                entry[name] = {"diff": diff, "ci95": list(ci)}
            if r.get("seconds_per_image") and b.get("seconds_per_image"):
                entry["time_ratio"] = r["seconds_per_image"] / b["seconds_per_image"]
            out.append(entry)
    return out


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
    from lab import measure as lab_measure, pipeline

    lab = pipeline.load_lab()
    steps = steps or pipeline.STEPS
    records = []
    for row in rows or [r for r in pipeline.ROWS if r not in pipeline.SEARCH_ROWS]:
        for scale in scales:
            if row in pipeline.NATIVE_ONLY and scale != 1:
                continue
            if row in pipeline.SIZE_ONLY and scale == 1:
                continue  # DyPE is off at or below the native size: the plain DiT row
            if row.startswith(("relay", "dit_relay", "megapixel")) and scale == 1:
                continue  # a one-stage relay is the core KSampler (tested bit-for-bit): the vanilla row
            if row in pipeline.UPSCALE_ONLY and scale == 1:
                continue  # a hires fix or Deep Shrink at the native size is the model alone
            started = time.perf_counter()
            images = pipeline.sample_images(lab, row, seeds, pipeline.NATIVE_PX * scale, steps)
            per_image = (time.perf_counter() - started) / len(seeds)  # sampling and decoding: what a user waits for
            record = summarise(row, scale, lab_measure.measure_batch(images), seeds, round(per_image, 3))
            record["seconds"] = round(time.perf_counter() - started, 1)
            records.append(record)
            log(format_record(record))
    return records


def format_record(r: dict) -> str:
    lo, hi = r["duplication_ci95"]
    return (f"{r['row']:<20} {r['scale']}x  n={r['images']:<3} duplicated {r['duplication_rate']:.2f} "
            f"[{lo:.2f}, {hi:.2f}]  objects {r['mean_count']:.2f}  none {r['no_object_rate']:.2f}  "
            f"scale {r['object_scale']:.2f}  fidelity {r['shape_fidelity']:.2f}  malformed {r['malformed_share']:.2f}"
            f"  background {r.get('background_noise', 0):.3f}  edge {r.get('edge_band', 0):.3f}"
            f"  {r.get('seconds_per_image') or 0:.2f} s/image")


def _ci(r: dict, name: str, fmt: str = ".2f") -> str:
    value, ci = r.get(name, 0.0), r.get(f"{name}_ci95")
    return f"{value:{fmt}}" + (f" ({ci[0]:{fmt}}–{ci[1]:{fmt}})" if ci else "")


def markdown(records: list[dict]) -> str:
    from lab import pipeline

    head = ("| row | scale | images | duplicated (95 % CI) | mean objects | no object | object scale | shape fidelity "
            "| malformed | background noise | edge band | s / image |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in records:
        seconds = r.get("seconds_per_image")
        lines.append(f"| {pipeline.ROWS[r['row']][0]} | {r['scale']}x | {r['images']} | "
                     f"{_ci(dict(r, duplication_rate_ci95=r['duplication_ci95']), 'duplication_rate')} | "
                     f"{r['mean_count']:.2f} | {r['no_object_rate']:.2f} | {_ci(r, 'object_scale')} | "
                     f"{r['shape_fidelity']:.2f} | {_ci(dict(r, malformed_share_ci95=r.get('malformed_ci95')), 'malformed_share')} | "
                     f"{_ci(r, 'background_noise', '.3f')} | {_ci(r, 'edge_band', '.3f')} | "
                     f"{'' if seconds is None else f'{seconds:.2f}'} |")
    return "\n".join(lines)


def paired_markdown(comparisons: list[dict]) -> str:
    """Paired differences (row - baseline, same seeds), 95 % CI; a bold entry's interval excludes zero."""
    from lab.stats import excludes_zero

    def cell(entry: dict, name: str, fmt: str) -> str:
        d = entry[name]
        text = f"{d['diff']:+{fmt}} ({d['ci95'][0]:+{fmt}}, {d['ci95'][1]:+{fmt}})"
        return f"**{text}**" if excludes_zero(d["ci95"]) else text

    lines = ["| row | vs | scale | duplicated | malformed | object scale | background noise | edge band | time ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in comparisons:
        ratio = e.get("time_ratio")
        lines.append(f"| {e['row']} | {e['baseline']} | {e['scale']}x | {cell(e, 'duplication_rate', '.2f')} | "
                     f"{cell(e, 'malformed_share', '.2f')} | {cell(e, 'object_scale', '.2f')} | "
                     f"{cell(e, 'background_noise', '.3f')} | {cell(e, 'edge_band', '.3f')} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} |")
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
    parser.add_argument("--markdown", action="store_true", help="print the tables (rows, paired) as Markdown")
    parser.add_argument("--plot", type=Path, default=None, help="draw quality against seconds per image to this PNG")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] or None
    records = run(seeds, scales, rows, args.steps, args.device)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
        print(f"wrote {len(records)} records to {args.json}")
    comparisons = paired(records)
    if args.json:
        args.json.with_suffix(".paired.json").write_text(json.dumps(comparisons, indent=1))
    if args.plot:
        from lab.plot import quality_vs_time

        quality_vs_time(records, args.plot)
        print(f"wrote {args.plot}")
    if args.markdown:
        print(markdown(records))
        print()
        print(paired_markdown(comparisons))


if __name__ == "__main__":
    main()
