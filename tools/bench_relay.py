"""Benchmark: the MegaFusion relay (default step split) against direct sampling at the final size, same total steps.

    .host/venv/bin/python tools/bench_relay.py                      # CPU-sized: 256 -> 384 -> 512 px, 10 steps
    .host/venv/bin/python tools/bench_relay.py --size 1024 --steps 50 --device cuda   # the paper's SD1.5 setting

Both run the full-size SD1.5 U-Net (random weights: real shapes, real FLOPs) with random conditioning through
ComfyUI's own CFGGuider and sampler, side by side in one process, after a warm-up of each.  Printed: the wall time
of each, their ratio, the ideal ratio from pixel counts (sum over stages of steps x pixels, over steps x final
pixels), the CPU-time ratio (steadier on a shared machine) and the measured cost of one step at the first and the
final size, which bounds what any relay can reach on that machine.  The relay upscales in latent space (bicubic);
pixel-space upscaling would add its VAE round trips.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from host import import_in_process  # noqa: E402



def bench(size: int = 512, stages: str = "1, 1.5, 2", steps: int = 10, cfg: float = 7.5, sampler: str = "euler",
          repeat: int = 1, device: str = "auto", fp16: bool = False, log=print) -> dict:
    """Time the relay and direct sampling; returns the figures (seconds, ratios)."""
    import_in_process(device)
    import torch

    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import model_factory
    from megapixel.samplers import relay
    from megapixel.samplers.relay_stages import parse_stages

    factors = parse_stages(stages).factors
    if not factors:
        raise ValueError("stages: give scale factors here, e.g. '1, 1.5, 2'")
    model = model_factory.full_unet("sd15", seed=0, dtype=torch.float16 if fp16 else None)
    gen = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    final_latent = size // 8
    first_latent = round(final_latent / factors[-1])
    stamps: list[float] = []  # wall clock at every step of the current run

    def run_relay(n: int) -> None:
        comfy.utils.set_progress_bar_global_hook(lambda *a, **k: stamps.append(time.perf_counter()))
        try:
            relay.relay_ksampler(model, 1, n, cfg, sampler, "normal", positive, negative,
                                 {"samples": torch.zeros(1, 4, first_latent, first_latent)}, stages=stages)
        finally:
            comfy.utils.set_progress_bar_global_hook(None)

    def run_direct(n: int) -> None:
        lat = torch.zeros(1, 4, final_latent, final_latent)
        comfy.sample.sample(model, comfy.sample.prepare_noise(lat, 1), n, cfg, sampler, "normal", positive, negative,
                            lat, disable_pbar=True, callback=lambda *a: stamps.append(time.perf_counter()))

    def sync() -> None:
        if torch.cuda.is_available() and comfy.model_management.get_torch_device().type == "cuda":
            torch.cuda.synchronize()

    cpu_times: dict = {run_relay: [], run_direct: []}

    def timed(fn, n: int) -> float:
        """Wall time of one run; its CPU time (this process) goes to cpu_times[fn]."""
        sync()
        stamps.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        stamps.append(start)
        fn(n)
        sync()
        cpu_times[fn].append(time.process_time() - cpu_start)
        return time.perf_counter() - start

    def step_costs() -> list[float]:
        """Seconds per step of the last run (a step ends at the next step's callback; the last one is left out)."""
        return [b - a for a, b in zip(stamps[1:], stamps[2:])]

    progress = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm; the step hook still fires
    try:
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
        plan = relay.plan_relay(sigmas, (1, 4, first_latent, first_latent), stages)
        ideal = sum(s.steps * s.height * s.width for s in plan.stages) / (steps * final_latent ** 2)
        log(f"SD1.5 full-size U-Net (random weights), {comfy.model_management.get_torch_device()}, cfg {cfg}, "
            f"{sampler}, {steps} steps")
        log("relay: " + " -> ".join(f"{s.width * 8}px x {s.steps}" for s in plan.stages)
            + f"   direct: {final_latent * 8}px x {steps}")
        timed(run_relay, len(plan.stages))  # warm-up: every stage size once, model loaded
        timed(run_direct, 1)
        for fn in cpu_times:
            cpu_times[fn].clear()
        relay_times, direct_times, first_steps, final_steps = [], [], [], []
        for _ in range(repeat):
            relay_times.append(timed(run_relay, steps))
            first_steps += step_costs()[: plan.stages[0].steps - 1]  # inside the first stage: no boundary work
            direct_times.append(timed(run_direct, steps))
            final_steps += step_costs()
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = progress
    r = {"relay_s": statistics.median(relay_times), "direct_s": statistics.median(direct_times),
         "relay_runs": relay_times, "direct_runs": direct_times, "ideal": ideal,
         "cpu_ratio": statistics.median(cpu_times[run_relay]) / statistics.median(cpu_times[run_direct]),
         "first_px": first_latent * 8, "final_px": final_latent * 8, "steps": steps,
         "split": [s.steps for s in plan.stages],
         "first_step_s": statistics.median(first_steps) if first_steps else None,
         "final_step_s": statistics.median(final_steps) if final_steps else None}
    r["ratio"] = r["relay_s"] / r["direct_s"]
    log(f"relay   {r['relay_s']:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in relay_times)})")
    log(f"direct  {r['direct_s']:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in direct_times)})")
    log(f"ratio relay/direct {r['ratio']:.3f}   ideal from pixel counts {ideal:.3f}   target <= 0.36   "
        f"(CPU-time ratio {r['cpu_ratio']:.3f})")
    if r["first_step_s"] and r["final_step_s"]:
        log(f"one step: {r['first_px']}px {r['first_step_s']:.2f} s, {r['final_px']}px {r['final_step_s']:.2f} s -> "
            f"cost ratio {r['first_step_s'] / r['final_step_s']:.3f} for a pixel ratio of "
            f"{(r['first_px'] / r['final_px']) ** 2:.3f} (where these differ, the machine's step cost, not the relay, "
            "sets the ratio a relay can reach)")
    return r


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """Rows for tools/bench_report.py."""
    size, steps = (256, 10) if quick else (512, 10)
    if device == "cuda" and not quick:
        size, steps = 1024, 50
    r = bench(size=size, steps=steps, device=device, log=lambda *a: None)
    split = "/".join(map(str, r["split"]))
    return [{"comparison": f"relay {r['first_px']}->{r['final_px']} px ({split}) vs direct {r['final_px']} px, "
                           f"SD1.5, {steps} steps",
             "ratio": r["ratio"], "baseline_ms": r["direct_s"] * 1000, "variant_ms": r["relay_s"] * 1000,
             "flop_ratio": r["ideal"], "limit": 0.36,
             "note": f"pixel-count ideal {r['ideal']:.3f}; CPU-time ratio {r['cpu_ratio']:.3f}"}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="final size in px (default 512 on CPU; paper: 1024)")
    parser.add_argument("--stages", default="1, 1.5, 2", help="stage factors (default MegaFusion's SD1.5 1 -> 1.5 -> 2)")
    parser.add_argument("--steps", type=int, default=10, help="total steps (default 10 -> 8/1/1; paper: 50 -> 40/5/5)")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of each (median reported)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the GPU when there is one, as ComfyUI would")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (GPU)")
    args = parser.parse_args()
    bench(size=args.size, stages=args.stages, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
          repeat=args.repeat, device=args.device, fp16=args.fp16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
