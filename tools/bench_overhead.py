"""What the pack costs where it does nothing: patched models and guiders at steps where their work is switched off,
against the plain model and core CFG, measured side by side in one run.  Each must stay at or below 1.02x.

    .host/venv/bin/python tools/bench_overhead.py [--size 512] [--rounds 5] [--device auto|cpu|cuda]

Full-size SD1.5 U-Net (random weights, real shapes), random 77-token prompts, one Euler step at a late sigma (step
``--at`` of a 20-step normal schedule), through ComfyUI's own guider path, so every patch, wrapper and post-CFG
function runs its "am I active?" check:

- one-click HiDiffusion at the model's native size (both RAU-Net and MSW-MSA patches installed, both idle);
- RAU-Net (official 1024 px phases) after its switching threshold;
- MSW-MSA limited to the first half of the schedule, at a step in the second half;
- autoguidance + CFG limited to the first half of the schedule, at a step in the second half (against CFG alone).

The variants run interleaved, in an order that rotates each round, for ``--rounds`` rounds after a warm-up; the
fastest round of each is compared (on a shared CPU the minimum is the figure least disturbed by other processes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from bench_timing import timed_sample  # noqa: E402
from host import import_in_process  # noqa: E402

LIMIT = 1.02


def bench(size: int = 512, rounds: int = 5, at: int = 17, device: str = "auto", log=print) -> list[dict]:
    """Rows (comparison, ratio, baseline_ms, variant_ms, limit) for every idle variant against its baseline."""
    import_in_process(device)
    import torch

    import comfy.model_management
    import comfy.samplers
    import model_factory
    from megapixel.patches.families import detect_layout
    from megapixel.patches.hidiffusion import apply_hidiffusion
    from megapixel.patches.msw_msa import apply_msw_msa, official_blocks
    from megapixel.patches.presets import official_phases
    from megapixel.patches.rau_net import apply_rau_net
    from megapixel.samplers.autoguidance import AutoguidanceGuider

    torch_device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if torch_device.type == "cuda" else None
    vanilla = model_factory.full_unet("sd15", seed=0, dtype=dtype)
    weak = model_factory.full_unet("sd15", seed=1, dtype=dtype)
    layout = detect_layout(vanilla, "auto", "bench")
    model_sampling = vanilla.get_model_object("model_sampling")
    schedule = comfy.samplers.calculate_sigmas(model_sampling, "normal", 20)
    sigmas = schedule[at:at + 2].clone()
    sigmas[-1] = 0.0  # one step from a late sigma
    percent = at / 20

    gen = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = torch.randn(latent.shape, generator=gen)
    sampler = comfy.samplers.sampler_object("euler")

    def guider(model, cfg: float):
        g = comfy.samplers.CFGGuider(model)
        g.set_conds(positive, negative)
        g.set_cfg(cfg)
        return g

    def autoguided():
        g = AutoguidanceGuider(vanilla, weak, cfg=5.0, w=2.0, start_percent=0.0, end_percent=0.5)
        g.set_conds(positive, negative)
        return g

    rau = apply_rau_net(vanilla, layout, official_phases(layout.family, "sd15_1024", True), node="bench")
    msw = apply_msw_msa(vanilla, official_blocks(layout, vanilla), start=0.0, end=0.5, node="bench")
    variants = {  # name: (guider, baseline name, what is compared)
        "vanilla, cfg 1": (guider(vanilla, 1.0), None, ""),
        "CFG alone": (guider(vanilla, 5.0), None, ""),
        "hidiffusion at native": (guider(apply_hidiffusion(vanilla, node="bench"), 1.0), "vanilla, cfg 1",
                                  f"one-click HiDiffusion at native {size} px (both patches idle) vs vanilla"),
        "rau-net past threshold": (guider(rau, 1.0), "vanilla, cfg 1",
                                   f"RAU-Net (1024 px phases) past its switching threshold vs vanilla, {size} px"),
        "msw-msa outside range": (guider(msw, 1.0), "vanilla, cfg 1",
                                  f"MSW-MSA (first half only) in the second half vs vanilla, {size} px"),
        "autoguidance outside interval": (autoguided(), "CFG alone",
                                          f"autoguidance + CFG (first half only) in the second half vs CFG alone, "
                                          f"{size} px"),
    }

    def timed(g) -> float:
        return timed_sample(g, noise, latent, sampler, sigmas, torch_device)

    for g, _, _ in variants.values():  # warm-up: loading, allocator, kernels
        timed(g)
    best = {name: float("inf") for name in variants}
    names = list(variants)
    for r in range(rounds):  # the order rotates each round: no variant always runs first, or after the same one
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], timed(variants[name][0]))
    log(f"SD1.5 {size}x{size} px, {torch_device.type} {'fp16' if dtype else 'fp32'}, one Euler step at step {at} of "
        f"20 ({percent:.0%} of the schedule), fastest of {rounds} interleaved rounds (rotating order)")
    rows = []
    for name, (_, baseline, comparison) in variants.items():
        if baseline is None:
            continue
        ratio = best[name] / best[baseline]
        log(f"{comparison:<80} {best[baseline] * 1e3:9.1f} ms {best[name] * 1e3:9.1f} ms {ratio:6.3f}x "
            f"({'ok' if ratio <= LIMIT else 'OVER'}, limit {LIMIT}x)")
        rows.append({"comparison": comparison, "ratio": ratio, "baseline_ms": best[baseline] * 1e3,
                     "variant_ms": best[name] * 1e3, "limit": LIMIT,
                     "note": f"one step at {percent:.0%} of 20, fastest of {rounds} interleaved rounds"})
    return rows


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """Rows for tools/bench_report.py."""
    return bench(size=512, rounds=3 if quick else 7, device=device, log=lambda *a: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image side in px (SD1.5 native: 512)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest of each is compared")
    parser.add_argument("--at", type=int, default=17, help="the step (of 20) timed; must be past the thresholds")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    opts = parser.parse_args()
    bench(opts.size, opts.rounds, opts.at, opts.device)


if __name__ == "__main__":
    main()
