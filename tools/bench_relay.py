"""Benchmark: the MegaFusion relay (default step split) against direct sampling at the final size, same total steps.

    .host/venv/bin/python tools/bench_relay.py                      # CPU-sized default: 192 -> 288 -> 384 px, 10 steps
    .host/venv/bin/python tools/bench_relay.py --size 1024 --steps 50 --gpu   # the paper's SD1.5 setting

Both run the full-size SD1.5 U-Net (random weights: real shapes, real FLOPs) with random conditioning through
ComfyUI's own CFGGuider and sampler, side by side in one process, alternating, after a warm-up of each.  Printed: the
wall time of each, their ratio, and the ideal ratio from pixel counts (sum over stages of steps x pixels, over
steps x final pixels).  The relay here upscales in latent space (bicubic); the VAE round trips of pixel-space
upscaling are not included.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from host import locate_host  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=384, help="final size in px (default 384 on CPU; paper: 1024)")
    parser.add_argument("--stages", default="1, 1.5, 2", help="stage factors (default MegaFusion's SD1.5 1 -> 1.5 -> 2)")
    parser.add_argument("--steps", type=int, default=10, help="total steps (default 10 -> 8/1/1; paper: 50 -> 40/5/5)")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each (median reported)")
    parser.add_argument("--gpu", action="store_true", help="use the GPU (default: CPU, as ComfyUI --cpu)")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights (GPU)")
    args = parser.parse_args()

    host = locate_host()
    sys.path.insert(0, str(host.root))
    import torch
    from comfy.cli_args import args as comfy_args
    if not args.gpu:
        comfy_args.cpu = True
    comfy_args.use_pytorch_cross_attention = True

    import importlib.util
    spec = importlib.util.spec_from_file_location("megapixel", PACK_DIR / "__init__.py",
                                                  submodule_search_locations=[str(PACK_DIR)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["megapixel"] = pack
    spec.loader.exec_module(pack)

    import comfy.model_management
    import comfy.sample
    import comfy.samplers
    import model_factory
    from megapixel.samplers import relay
    from megapixel.samplers.relay_stages import parse_stages

    model = model_factory.full_unet("sd15", seed=0, dtype=torch.float16 if args.fp16 else None)
    gen = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]

    factors = parse_stages(args.stages).factors
    if not factors:
        parser.error("--stages takes scale factors here, e.g. '1, 1.5, 2'")
    final_latent = args.size // 8
    first_latent = round(final_latent / factors[-1])
    first_px = first_latent * 8

    stamps: list[float] = []  # wall clock at every step callback of the current run

    def run_relay(steps: int) -> None:
        import comfy.utils
        comfy.utils.set_progress_bar_global_hook(lambda *a, **k: stamps.append(time.perf_counter()))
        try:
            relay.relay_ksampler(model, 1, steps, args.cfg, args.sampler, "normal", positive, negative,
                                 {"samples": torch.zeros(1, 4, first_latent, first_latent)}, stages=args.stages)
        finally:
            comfy.utils.set_progress_bar_global_hook(None)

    def run_direct(steps: int) -> None:
        lat = torch.zeros(1, 4, final_latent, final_latent)
        comfy.sample.sample(model, comfy.sample.prepare_noise(lat, 1), steps, args.cfg, args.sampler, "normal",
                            positive, negative, lat, disable_pbar=True,
                            callback=lambda *a: stamps.append(time.perf_counter()))

    def sync() -> None:
        if args.gpu and torch.cuda.is_available():
            torch.cuda.synchronize()

    cpu_times: dict = {}

    def timed(fn, steps: int) -> float:
        """Wall time of one run; its CPU time (this process, all threads) goes to cpu_times[fn]: on a shared
        machine the CPU time is the steadier figure."""
        sync()
        stamps.clear()
        start, cpu_start = time.perf_counter(), time.process_time()
        stamps.append(start)
        fn(steps)
        sync()
        cpu_times.setdefault(fn, []).append(time.process_time() - cpu_start)
        return time.perf_counter() - start

    def step_costs() -> list[float]:
        """Seconds per step of the last run (a step ends at the next step's callback; the last one is left out)."""
        return [b - a for a, b in zip(stamps[1:], stamps[2:])]

    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False  # no tqdm; the step hook above still fires
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", args.steps)
    plan = relay.plan_relay(sigmas, (1, 4, first_latent, first_latent), args.stages)
    ideal = sum(s.steps * s.height * s.width for s in plan.stages) / (args.steps * final_latent ** 2)
    device = comfy.model_management.get_torch_device()
    print(f"SD1.5 full-size U-Net (random weights), {device}, cfg {args.cfg}, {args.sampler}, {args.steps} steps")
    print("relay: " + " -> ".join(f"{s.width * 8}px x {s.steps}" for s in plan.stages)
          + f"   direct: {final_latent * 8}px x {args.steps}")

    timed(run_relay, len(plan.stages))  # warm-up: every stage size once, model loaded
    timed(run_direct, 1)
    relay_times, direct_times = [], []
    first_stage_steps, final_steps = [], []
    n0 = plan.stages[0].steps
    for _ in range(args.repeat):
        relay_times.append(timed(run_relay, args.steps))
        first_stage_steps += step_costs()[: n0 - 1]  # steps inside the first stage (no boundary work)
        direct_times.append(timed(run_direct, args.steps))
        final_steps += step_costs()
    t_relay, t_direct = statistics.median(relay_times), statistics.median(direct_times)
    print(f"relay   {t_relay:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in relay_times)})")
    print(f"direct  {t_direct:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in direct_times)})")
    print(f"ratio relay/direct {t_relay / t_direct:.3f}   ideal from pixel counts {ideal:.3f}   target <= 0.36")
    c_relay, c_direct = (statistics.median(cpu_times[f][1:]) for f in (run_relay, run_direct))
    print(f"CPU time: relay {c_relay:.2f} s, direct {c_direct:.2f} s, ratio {c_relay / c_direct:.3f}")
    if first_stage_steps and final_steps:
        small, big = statistics.median(first_stage_steps), statistics.median(final_steps)
        print(f"one step: {first_px}px {small:.2f} s, {final_latent * 8}px {big:.2f} s -> cost ratio "
              f"{small / big:.3f} for a pixel ratio of {(first_latent / final_latent) ** 2:.3f} (on a GPU these two "
              "agree at SD sizes; where they do not, the step cost, not the relay, sets the achievable ratio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
