"""Write the quality lab's results into the docs from ``bench/quality.py --json`` records: the front page's table, the
High-Res Sampler's page (its bar, row by row, and the paired comparisons), the lab page's full table, and the
quality-against-time plot.

    .host/venv/bin/python tools/bench/quality.py --seeds 0-63 --scales 1,2,4 --steps 12 --json main.json
    .host/venv/bin/python tools/lab/report.py --steps 12 main.json [more.json ...]

Each block goes between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers; nothing else of a page changes.
The bar (issue 18) is checked here from the records, not written by hand: against the model alone at native size
(duplication at most +0.05, object scale within 0.05, malformed share at most), and seed by seed against core Deep
Shrink and every hires fix row (a paired interval below zero on duplication or malformed share, none above zero
on the others), and no slower than the fastest hires fix.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import quality as bench_quality  # noqa: E402
from lab.stats import excludes_zero  # noqa: E402

PACK_DIR = Path(__file__).resolve().parent.parent.parent
PLOT = PACK_DIR / "docs" / "quality-vs-time.png"
CANDIDATES = ("megapixel", "megapixel_weak")
INCUMBENTS = ("deep_shrink", "hires_fix_0.5", "hires_fix_0.6", "hires_fix_pixel_0.5")
FRONT_ROWS = ("megapixel", "megapixel_weak", "hires_fix_0.6", "hires_fix_0.5", "hires_fix_pixel_0.5", "deep_shrink",
              "hidiffusion", "vanilla")
NAMES = {"megapixel": "**Megapixel High-Res Sampler**", "megapixel_weak": "High-Res Sampler + weak model",
         "hires_fix_0.6": "hires fix (core), denoise 0.6", "hires_fix_0.5": "hires fix (core), denoise 0.5",
         "hires_fix_pixel_0.5": "hires fix in pixels (core), 0.5", "deep_shrink": "Deep Shrink (core)",
         "hidiffusion": "HiDiffusion", "vanilla": "the model alone", "relay_hidiffusion": "relay + HiDiffusion",
         "relay_split_80": "relay, the paper's 80/10/10 split"}


def load(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        records += json.loads(Path(path).read_text())
    return records


def _get(records: list[dict], row: str, scale: int) -> dict | None:
    return next((r for r in records if r["row"] == row and r["scale"] == scale), None)


def _ci(value: float, ci, fmt: str = ".2f") -> str:
    return f"{value:{fmt}} ({ci[0]:{fmt}}–{ci[1]:{fmt}})" if ci else f"{value:{fmt}}"


def bar(records: list[dict], comparisons: list[dict], row: str, scale: int) -> list[tuple[str, bool, str]]:
    """(criterion, met, the figures) for ``row`` at ``scale``."""
    r, native = _get(records, row, scale), _get(records, "vanilla", 1)
    if r is None or native is None:
        return []
    out = [
        ("duplication at most native + 0.05", r["duplication_rate"] <= native["duplication_rate"] + 0.05,
         f"{r['duplication_rate']:.2f} vs native {native['duplication_rate']:.2f}"),
        ("object scale within 0.05 of native", abs(r["object_scale"] - native["object_scale"]) <= 0.05,
         f"{r['object_scale']:.2f} vs native {native['object_scale']:.2f}"),
        ("malformed share at most native's", r["malformed_share"] <= native["malformed_share"],
         f"{r['malformed_share']:.2f} vs native {native['malformed_share']:.2f}"),
    ]
    hires_rows = [h for h in (_get(records, n, scale) for n in INCUMBENTS if n.startswith("hires")) if h]
    for base in ("deep_shrink", *(h["row"] for h in hires_rows)):
        entry = next((c for c in comparisons if c["row"] == row and c["baseline"] == base and c["scale"] == scale),
                     None)
        if entry is None:
            continue
        better = [n for n in ("duplication_rate", "malformed_share") if entry[n]["ci95"][1] < 0]
        worse = [n for n in ("duplication_rate", "malformed_share", "background_noise", "edge_band")
                 if entry[n]["ci95"][0] > 0]
        worse += ["object_scale"] if excludes_zero(entry["object_scale"]["ci95"]) and \
            abs(_get(records, base, scale)["object_scale"] - native["object_scale"]) < \
            abs(r["object_scale"] - native["object_scale"]) else []
        figures = ", ".join(f"{n.replace('_', ' ')} {entry[n]['diff']:+.2f} ({entry[n]['ci95'][0]:+.2f}, "
                            f"{entry[n]['ci95'][1]:+.2f})" for n in ("duplication_rate", "malformed_share"))
        out.append((f"better than {base} (paired), no worse elsewhere", bool(better) and not worse,
                    figures + (f"; worse on {', '.join(worse)}" if worse else "")))
    fastest = min((h for h in hires_rows if h.get("seconds_per_image")), key=lambda h: h["seconds_per_image"],
                  default=None)
    if fastest and r.get("seconds_per_image"):
        ratio = r["seconds_per_image"] / fastest["seconds_per_image"]
        out.append((f"no slower than the fastest hires fix ({fastest['row']})", ratio <= 1.0,
                    f"{ratio:.2f}x its time per image"))
    return out


def front_table(records: list[dict]) -> str:
    scales = sorted({r["scale"] for r in records if r["scale"] > 1})
    n = "/".join(str(v) for v in sorted({r["images"] for r in records}))
    head = f"| 128 px lab model, {n} seeds | " + " | ".join(
        f"{s}x: duplicated | {s}x: malformed | {s}x: s / image" for s in scales) + " |"
    lines = [head, "|---|" + "---|" * (3 * len(scales))]
    for row in FRONT_ROWS:
        cells = []
        for s in scales:
            r = _get(records, row, s)
            cells += ["–"] * 3 if r is None else [f"{r['duplication_rate']:.2f}", f"{r['malformed_share']:.2f}",
                                                  f"{r['seconds_per_image']:.2f}"]
        if any(c != "–" for c in cells):
            lines.append(f"| {NAMES.get(row, row)} | " + " | ".join(cells) + " |")
    native = _get(records, "vanilla", 1)
    if native:
        lines.append(f"| *the model at its native 128 px* | " + " | ".join(
            [f"*{native['duplication_rate']:.2f}*", f"*{native['malformed_share']:.2f}*", ""] * len(scales)) + " |")
    return "\n".join(lines)


def bar_table(records: list[dict], comparisons: list[dict]) -> str:
    lines = ["| row | scale | criterion | met | figures |", "|---|---|---|---|---|"]
    for row in CANDIDATES:
        for scale in sorted({r["scale"] for r in records if r["scale"] > 1}):
            for criterion, met, figures in bar(records, comparisons, row, scale):
                lines.append(f"| {row} | {scale}x | {criterion} | {'yes' if met else '**no**'} | {figures} |")
    return "\n".join(lines)


def replace_block(path: Path, name: str, text: str) -> None:
    content = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in content or end not in content:
        raise SystemExit(f"{path} has no {begin} ... {end} markers")
    content = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{text}\n{end}", content,
                     flags=re.S)
    path.write_text(content, encoding="utf-8")


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, required=True, help="the steps the records were sampled with")
    parser.add_argument("--times", type=Path, default=None, help=(
        "a bench/quality.py --json file of a run on a quiet machine whose times per image replace the records' "
        "(quality from the records, time from this run: all its rows side by side)"))
    parser.add_argument("records", nargs="+", type=Path, help="bench/quality.py --json files")
    args = parser.parse_args(argv)
    from harness.host import import_in_process

    import_in_process("cpu")  # the row labels live in lab.pipeline, which imports ComfyUI
    from lab import pipeline
    from lab.plot import quality_vs_time

    records = load(args.records)
    time_note = "all rows in one run"
    if args.times:
        timings = load([args.times])
        timed = {(t["row"], t["scale"]): t["seconds_per_image"] for t in timings}
        for r in records:
            r["seconds_per_image"] = timed.get((r["row"], r["scale"]), r["seconds_per_image"])
        time_note = (f"the times from one separate run of all these rows side by side on the quiet machine "
                     f"({'/'.join(str(n) for n in sorted({t['images'] for t in timings}))} seeds each)")
    comparisons = bench_quality.paired(records)
    seeds = {r["images"] for r in records}
    steps_note = f"{args.steps} euler steps"
    quality_vs_time([r for r in records if r["row"] in FRONT_ROWS], PLOT)
    front = (f"{front_table(records)}\n\nDuplicated: share of images with more than one object; malformed: share of "
             f"objects whose shape is off (IoU < 0.7); s / image on the 2-core CPU, sampling and decoding, {time_note} "
             f"({', '.join(map(str, sorted(seeds)))} seeds per row, {steps_note}). Intervals, paired "
             f"comparisons and the bar the sampler is held to: [docs/megapixel.md](docs/megapixel.md); every row: "
             f"[docs/quality-lab.md](docs/quality-lab.md).\n\n![quality against seconds per image]"
             f"(docs/quality-vs-time.png)")
    replace_block(PACK_DIR / "README.md", "results", front)
    candidates = [c for c in comparisons if c["row"] in CANDIDATES + ("relay_hidiffusion", "relay_split_80")
                  or c["baseline"] == "vanilla" and c["row"] in INCUMBENTS + ("hidiffusion",)]
    replace_block(PACK_DIR / "docs" / "megapixel.md", "megapixel",
                  f"The bar (issue 18), checked by `tools/lab/report.py` from the records:\n\n"
                  f"{bar_table(records, comparisons)}\n\nPaired differences, row − baseline on the same seeds, with "
                  f"95 % bootstrap intervals (bold: the interval excludes zero; negative is better for every figure "
                  f"but object scale, where closer to native is better):\n\n"
                  f"{bench_quality.paired_markdown(candidates)}\n\n![quality against seconds per image]"
                  f"(quality-vs-time.png)")
    replace_block(PACK_DIR / "docs" / "quality-lab.md", "ranking", bench_quality.markdown(
        sorted(records, key=lambda r: (r["scale"], list(pipeline.ROWS).index(r["row"])))))
    print(f"wrote README.md, docs/megapixel.md, docs/quality-lab.md and {PLOT.relative_to(PACK_DIR)}")


if __name__ == "__main__":
    main(sys.argv[1:])
