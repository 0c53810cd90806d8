"""Every benchmark of the pack in one process, side by side, as one table with the machine it ran on.

    .host/venv/bin/python tools/bench/report.py [--quick] [--device auto|cpu|cuda] [--only NAME ...]
                                                [--markdown] [--update-docs]

It imports ``tools/bench_<name>.py`` for hidiffusion, relay, autoguidance and overhead (a missing one is noted, not
an error) and calls each one's ``measure(quick=..., device=...) -> list[dict]``; ``dype`` is the dype case of
``bench/overhead.py`` (its ``measure_dype``: DyPE on a Flux-shaped DiT at native size and at 2x).  A row is a dict with

    comparison   what is compared, e.g. "HiDiffusion vs vanilla, SD1.5 1024 px"   (required)
    ratio        time of the variant / time of the baseline (float)                  (required)
    baseline_ms, variant_ms   per-step or per-run times (optional)
    flop_ratio   FLOPs of the variant / FLOPs of the baseline (optional)
    peak_mib     peak memory of the variant, MiB (optional)
    limit        the most the ratio may be, e.g. 1.02 for an inactive patch's overhead (optional)
    note         anything else (optional)

A quality row (``bench/quality.py``: the lab model's duplication, object scale and shape fidelity) has ``quality``
(one of that benchmark's records) instead of ``ratio``; quality rows get a table of their own.

A benchmark without ``measure`` yet is run through its ``main()`` (quick arguments) and its printed output is shown
under the table.  Peak memory of each benchmark as a whole is measured here (CUDA: max_memory_allocated; CPU: the
process's resident set, sampled).  ``--update-docs`` writes the table between the bench_report markers in
docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import platform
import re
import sys
import threading
import time
import traceback
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK_DIR / "tools"))

from harness.host import HOST_VERSION, import_in_process  # noqa: E402

BENCHMARKS = ["hidiffusion", "relay", "autoguidance", "overhead", "dype", "quality"]
# Benchmarks that are a case of another file: name -> (module under tools/, its measure function).
ENTRY_POINTS = {"dype": ("bench_overhead", "measure_dype")}
# Arguments for main() of a benchmark that has no measure() yet: small enough for a report run on a CPU.
QUICK_ARGS = {
    "hidiffusion": [],
    "relay": ["--size", "256", "--steps", "10", "--repeat", "1"],
    "autoguidance": ["--size", "256", "--steps", "2", "--repeats", "2"],
}
README_BEGIN = "<!-- bench_report:begin -->"
README_END = "<!-- bench_report:end -->"



def machine() -> str:
    """One line: CPU, cores, memory, accelerator, torch, ComfyUI, OS."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        mem = "? RAM"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        accel = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    else:
        accel = "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem}, {accel}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), ComfyUI {HOST_VERSION}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak, or the process's resident set sampled every 20 ms."""

    def __init__(self):
        self.peak_mib = 0.0
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self.kind = "CUDA allocated"
            return self
        import psutil

        self.kind = "resident"
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._peak = self._proc.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(0.02):
                self._peak = max(self._peak, self._proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self._cuda:
            self.peak_mib = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self._peak, self._proc.memory_info().rss) / 2**20


def run_benchmark(name: str, quick: bool, device: str) -> dict:
    """Import tools/bench_<name>.py and measure; returns {'rows', 'raw', 'note', 'peak', 'seconds'}."""
    result = {"name": name, "rows": [], "raw": "", "note": "", "peak": None, "seconds": 0.0}
    module_name, entry = ENTRY_POINTS.get(name, (f"bench_{name}", "measure"))
    if not (PACK_DIR / "tools" / f"{module_name}.py").exists():
        result["note"] = f"tools/{module_name}.py does not exist yet"
        return result
    started = time.perf_counter()
    try:
        module = importlib.import_module(module_name)
        with PeakMemory() as peak:
            if hasattr(module, entry):
                result["rows"] = [dict(row) for row in getattr(module, entry)(quick=quick, device=device)]
            else:
                result["note"] = f"bench_{name}.py has no measure() yet: its own output follows the table"
                argv = sys.argv
                sys.argv = [f"bench_{name}.py", *QUICK_ARGS.get(name, []), *(["--device", device] if device != "auto"
                                                                              else [])]
                buffer = io.StringIO()
                try:
                    with contextlib.redirect_stdout(buffer):
                        module.main()
                finally:
                    sys.argv = argv
                result["raw"] = buffer.getvalue()
        result["peak"] = (peak.peak_mib, peak.kind)
    except SystemExit as e:  # argparse in a benchmark's main()
        result["note"] = f"bench_{name}.py exited ({e.code}) with arguments {QUICK_ARGS.get(name)}"
    except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
        result["note"] = "failed:\n" + traceback.format_exc(limit=6)
    result["seconds"] = time.perf_counter() - started
    return result


def _fmt(value, spec: str = ".2f") -> str:
    return "" if value is None else format(value, spec) if isinstance(value, (int, float)) else str(value)


def table(results: list[dict], markdown: bool) -> str:
    header = ["benchmark", "comparison", "time ratio", "FLOP ratio", "baseline ms", "variant ms", "peak MiB", "check",
              "note"]
    lines = []
    for result in results:
        for row in result["rows"]:
            if "quality" in row:
                continue
            limit = row.get("limit")
            check = "" if limit is None else ("ok" if row["ratio"] <= limit else "OVER") + f" (<= {limit:g}x)"
            lines.append([result["name"], row["comparison"], _fmt(row.get("ratio")) + "x",
                          (_fmt(row.get("flop_ratio")) + "x") if row.get("flop_ratio") is not None else "",
                          _fmt(row.get("baseline_ms"), ".1f"), _fmt(row.get("variant_ms"), ".1f"),
                          _fmt(row.get("peak_mib"), ".0f"), check, row.get("note", "")])
        peak = result["peak"]
        summary = f"{result['seconds']:.0f} s" + (f", peak {peak[0]:.0f} MiB {peak[1]}" if peak else "")
        if not result["rows"]:
            lines.append([result["name"], "(no rows)", "", "", "", "", "", "", f"{result['note']} [{summary}]"
                          .replace("\n", " ")[:200]])
        else:
            lines.append([result["name"], "(whole benchmark)", "", "", "", "", _fmt(peak[0], ".0f") if peak else "",
                          "", summary])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "/") for cell in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*l) for l in lines])


def quality_table(results: list[dict]) -> str:
    """The quality rows (Markdown), or '' when no benchmark gave any."""
    records = [row["quality"] for result in results for row in result["rows"] if "quality" in row]
    if not records:
        return ""
    from bench import quality as bench_quality

    return bench_quality.markdown(records)


BENCHMARKS_PAGE = PACK_DIR / "docs" / "benchmarks.md"


def update_docs(text: str) -> Path:
    readme = BENCHMARKS_PAGE
    content = readme.read_text()
    block = f"{README_BEGIN}\n{text}\n{README_END}"
    if README_BEGIN in content and README_END in content:
        content = re.sub(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), lambda _: block, content,
                         flags=re.S)
    else:
        raise SystemExit(f"{readme} has no {README_BEGIN} ... {README_END} markers")
    readme.write_text(content)
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark's small settings (CPU-friendly)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--update-docs", action="store_true", help="write the Markdown table into docs/benchmarks.md")
    opts = parser.parse_args()
    import_in_process(opts.device)
    results = [run_benchmark(name, opts.quick, opts.device) for name in (opts.only or BENCHMARKS)]
    about = f"Machine: {machine()}"
    command = "tools/bench/report.py" + (" --quick" if opts.quick else "") + (
        f" --device {opts.device}" if opts.device != "auto" else "")
    print(about)
    print(table(results, markdown=opts.markdown or opts.update_docs))
    quality = quality_table(results)
    if quality:
        print("\nQuality lab (tools/bench/quality.py):\n" + quality)
    for result in results:
        if result["raw"] or (result["note"] and not result["rows"]):
            print(f"\n--- {result['name']}: {result['note']}")
            if result["raw"]:
                print(result["raw"].rstrip())
    if opts.update_docs:
        md = table(results, markdown=True)
        raws = "".join(f"\n\n`bench_{r['name']}.py` output:\n\n```\n{r['raw'].rstrip()}\n```" for r in results
                       if r["raw"])
        stamp = time.strftime("%Y-%m-%d")
        quality_md = f"\n\nQuality lab (`tools/bench/quality.py`):\n\n{quality}" if quality else ""
        path = update_docs(f"Latest `{command}` ({stamp}). {about}\n\n{md}{quality_md}{raws}")
        print(f"\nwrote the table into {path}")


if __name__ == "__main__":
    main()
