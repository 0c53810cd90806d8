"""Benchmark: the MegaFusion relay (default step split) against direct sampling at the final size, same total steps.

    .host/venv/bin/python tools/bench/relay.py                      # CPU-sized: 256 -> 384 -> 512 px, 10 steps
    .host/venv/bin/python tools/bench/relay.py --size 1024 --steps 50 --device cuda   # the paper's SD1.5 setting
    .host/venv/bin/python tools/bench/relay.py --model flux          # a Flux.1-shaped DiT: 256 -> 512 px, 10 steps

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

PACK_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK_DIR / "tools"))

from harness.host import import_in_process  # noqa: E402



def bench(size: int = 512, stages: str = "1, 1.5, 2", steps: int = 10, cfg: float = 7.5, sampler: str = "euler",
          repeat: int = 1, device: str = "auto", fp16: bool = False, log=print) -> dict:
    """Time the relay and direct sampling; returns the figures (seconds, ratios)."""
    import_in_process(device)
    import torch

    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    from harness import model_factory
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


# A Flux.1-shaped transformer for timing: Flux's real head width (128), MLP ratio, RoPE axes, patches and latent
# space, at a fraction of its width and depth (the full 3072-wide, 19+38-block model does not fit a CPU benchmark).
FLUX_SHAPE = dict(hidden_size=768, num_heads=6, depth=1, depth_single_blocks=2)
FLUX_TEXT_TOKENS = 64  # an eighth of T5's 512, as the image tokens are far fewer than at 1024 px


def bench_flux(size: int = 512, stages: str = "1, 2", steps: int = 10, repeat: int = 1, device: str = "auto",
               log=print) -> dict:
    """Time the relay (default split) against direct sampling at ``size`` px on a Flux.1-shaped model, cfg 1
    (guidance-distilled, one model pass per step), euler, its own size-dependent shift at every stage."""
    import_in_process(device)
    import torch

    import comfy.model_management
    import comfy.samplers
    import comfy.utils
    from harness import tiny_dits
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    from megapixel.samplers import relay

    model = tiny_dits.tiny_dit(tiny_dits.FLUX_DEV, seed=0, **FLUX_SHAPE)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(tiny_dits.conditioning(tiny_dits.FLUX_DEV, tokens=FLUX_TEXT_TOKENS, seed=1), [])
    guider.set_cfg(1.0)
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
    factors = relay.parse_stages(stages).factors
    first = round(size / factors[-1] / 16) * 16  # whole 16 px tokens

    def run_relay() -> None:
        relay.relay_sampler_custom(Noise_RandomNoise(1), guider, sampler, sigmas,
                                   {"samples": tiny_dits.empty_latent(tiny_dits.FLUX_DEV, first, first)}, stages=stages)

    def run_direct() -> None:
        lat = tiny_dits.empty_latent(tiny_dits.FLUX_DEV, size, size)
        guider.sample(torch.randn(lat.shape, generator=torch.Generator().manual_seed(1)), lat, sampler, sigmas,
                      disable_pbar=True, seed=1)

    def timed(fn) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - cpu

    plan = relay.plan_relay(sigmas, (1, 16, first // 8, first // 8), stages, ratio=8, patch=2,
                            model_sampling=model.get_model_object("model_sampling"))
    ideal = sum(st.steps * (st.height * st.width) for st in plan.stages) / (steps * (size // 8) ** 2)
    progress = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = False
    try:
        timed(run_relay), timed(run_direct)  # warm-up
        runs = [(timed(run_relay), timed(run_direct)) for _ in range(repeat)]
    finally:
        comfy.utils.PROGRESS_BAR_ENABLED = progress
    r = {"relay_s": statistics.median(a[0] for a, _ in runs), "direct_s": statistics.median(b[0] for _, b in runs),
         "cpu_ratio": statistics.median(a[1] for a, _ in runs) / statistics.median(b[1] for _, b in runs),
         "ideal": ideal, "first_px": first, "final_px": size, "steps": steps, "split": [st.steps for st in plan.stages]}
    r["ratio"] = r["relay_s"] / r["direct_s"]
    log(f"Flux.1-shaped DiT {FLUX_SHAPE} (random weights), {comfy.model_management.get_torch_device()}: relay "
        f"{first}->{size} px ({'/'.join(map(str, r['split']))}) {r['relay_s']:.2f} s, direct {size} px "
        f"{r['direct_s']:.2f} s: ratio {r['ratio']:.3f} (token-count ideal {ideal:.3f}, CPU-time ratio "
        f"{r['cpu_ratio']:.3f})")
    return r


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """Rows for tools/bench/report.py."""
    size, steps = (256, 10) if quick else (512, 10)
    if device == "cuda" and not quick:
        size, steps = 1024, 50
    r = bench(size=size, steps=steps, device=device, log=lambda *a: None)
    split = "/".join(map(str, r["split"]))
    return [{"comparison": f"relay {r['first_px']}->{r['final_px']} px ({split}) vs direct {r['final_px']} px, "
                           f"SD1.5, {steps} steps",
             "ratio": r["ratio"], "baseline_ms": r["direct_s"] * 1000, "variant_ms": r["relay_s"] * 1000,
             "flop_ratio": r["ideal"], "limit": 0.36,
             "note": f"pixel-count ideal {r['ideal']:.3f}; CPU-time ratio {r['cpu_ratio']:.3f}"},
            _flux_row(quick, device)]


def _flux_row(quick: bool, device: str) -> dict:
    size, steps = (256, 10) if quick else (512, 10)
    if device == "cuda" and not quick:
        size, steps = 2048, 28
    r = bench_flux(size=size, steps=steps, device=device, log=lambda *a: None)
    split = "/".join(map(str, r["split"]))
    return {"comparison": f"relay {r['first_px']}->{r['final_px']} px ({split}) vs direct {r['final_px']} px, "
                          f"Flux.1-shaped DiT, {steps} steps",
            "ratio": r["ratio"], "baseline_ms": r["direct_s"] * 1000, "variant_ms": r["relay_s"] * 1000,
            "flop_ratio": r["ideal"], "limit": 0.36,
            "note": f"token-count ideal {r['ideal']:.3f} (attention makes the real saving larger); CPU-time ratio "
                    f"{r['cpu_ratio']:.3f}"}


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
    parser.add_argument("--model", choices=["sd15", "flux"], default="sd15",
                        help="sd15: the full-size SD1.5 U-Net; flux: a Flux.1-shaped DiT (stages '1, 2' by default)")
    args = parser.parse_args()
    if args.model == "flux":
        bench_flux(size=args.size, stages="1, 2" if args.stages == "1, 1.5, 2" else args.stages, steps=args.steps,
                   repeat=args.repeat, device=args.device)
        return 0
    bench(size=args.size, stages=args.stages, steps=args.steps, cfg=args.cfg, sampler=args.sampler,
          repeat=args.repeat, device=args.device, fp16=args.fp16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
