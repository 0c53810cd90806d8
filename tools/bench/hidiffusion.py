"""HiDiffusion against the vanilla U-Net, measured side by side in one run: time per model call, FLOPs, peak memory.

    .host/venv/bin/python tools/bench/hidiffusion.py                       # SD1.5 at 1024 px (CPU or GPU)
    .host/venv/bin/python tools/bench/hidiffusion.py --size 1024 2048      # also 2048 px (GPU advised)
    .host/venv/bin/python tools/bench/hidiffusion.py --family sdxl --size 2048 4096 --device cuda

The real full-size U-Net (``model_factory.full_unet``: ComfyUI's own SD1.5 / SDXL U-Net classes, random weights,
real shapes and FLOPs) is patched with the one-click HiDiffusion preset (``apply_hidiffusion``, exactly what the
node does) and called through ComfyUI's own sampler path (sample_custom -> CFGGuider -> model), so every patch and
wrapper runs as in real sampling.  cfg 1 (one batch-1 pass per call) unless ``--cfg`` is given.

What HiDiffusion does changes along the schedule (RAU-Net only in its first part), so each distinct *state* of the
patches met by a ``--steps`` schedule is timed at the first sigma of that state (the first state is the start of the
schedule, with RAU-Net active), and the full-schedule figure is the average of those, weighted by how many steps are
in each state.  ``--measure-schedule`` also times a real sampling run of ``--steps`` steps (GPU: worth it; CPU: slow).
FLOPs are counted with torch's FlopCounterMode (CPU flash attention counted with torch's SDPA formula).  Peak memory is
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU it is not measured (torch's allocations are not visible to
tracemalloc and the process's max RSS only grows), which the output says.
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



def _flop_counter():
    import torch  # noqa: PLC0415
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: PLC0415

    def cpu_flash(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = cpu_flash
    return FlopCounterMode(display=False, custom_mapping=mapping)


class Runner:
    """Calls a model through ComfyUI's sampler path at a given sigma: timings, FLOPs and peak memory per call."""

    def __init__(self, family: str, cfg: float, device):
        import comfy.samplers  # noqa: PLC0415
        import torch  # noqa: PLC0415

        self.torch = torch
        self.samplers = comfy.samplers
        self.cfg = cfg
        self.cuda = device.type == "cuda"
        gen = torch.Generator().manual_seed(0)
        context = 2048 if family == "sdxl" else 768

        def cond():
            extra = {}
            if family == "sdxl":
                extra = {"pooled_output": torch.randn(1, 1280, generator=gen), "width": 1024, "height": 1024,
                         "crop_w": 0, "crop_h": 0, "target_width": 1024, "target_height": 1024}
            return [[torch.randn(1, 77, context, generator=gen), extra]]

        self.positive, self.negative = cond(), cond()

    def _sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def calls(self, model, latent_hw, sigma: float, repeats: int) -> dict:
        """Median seconds per model call at ``sigma`` (after a warm-up call whose FLOPs are counted), and on a GPU
        the peak memory of one more call."""
        import comfy.sample  # noqa: PLC0415

        torch = self.torch
        result = {}

        def fn(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **kwargs):
            s = sigmas[0] * x.new_ones([x.shape[0]])
            with _flop_counter() as counter:  # the warm-up call, counted
                model_k(x, s, **extra_args)
            result["flops"] = counter.get_total_flops()
            times = []
            for _ in range(repeats):
                self._sync()
                start = time.perf_counter()
                model_k(x, s, **extra_args)
                self._sync()
                times.append(time.perf_counter() - start)
            result["seconds"] = statistics.median(times)
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                model_k(x, s, **extra_args)
                self._sync()
                result["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
            return x

        noise = torch.randn(1, 4, *latent_hw, generator=torch.Generator().manual_seed(1))
        comfy.sample.sample_custom(model, noise, self.cfg, self.samplers.KSAMPLER(fn),
                                   torch.tensor([float(sigma), 0.0]), self.positive, self.negative,
                                   torch.zeros_like(noise), seed=0, disable_pbar=True)
        return result

    def schedule_run(self, model, latent_hw, sigmas) -> float:
        """Seconds for a whole sampling run over ``sigmas`` (Euler)."""
        import comfy.sample  # noqa: PLC0415

        torch = self.torch
        noise = torch.randn(1, 4, *latent_hw, generator=torch.Generator().manual_seed(1))
        self._sync()
        start = time.perf_counter()
        comfy.sample.sample_custom(model, noise, self.cfg, self.samplers.sampler_object("euler"), sigmas,
                                   self.positive, self.negative, torch.zeros_like(noise), seed=0, disable_pbar=True)
        self._sync()
        return time.perf_counter() - start


def schedule_states(patched, latent_hw, sigmas) -> list[tuple[str, float, int]]:
    """(state label, first sigma in that state, number of steps) for the steps of ``sigmas``, in order."""
    import torch  # noqa: PLC0415

    from megapixel.patches.rau_net import RauNet  # noqa: PLC0415

    rau = next(p.__self__ for p in patched.model_options["transformer_options"]["patches"]["input_block_patch"]
               if isinstance(getattr(p, "__self__", None), RauNet))
    states: dict[str, list] = {}
    for sigma in sigmas[:-1].tolist():
        active = rau.schedule({"sigmas": torch.tensor([sigma])}, latent_hw)
        parts = [f"stride-4 conv L{l}" for l in sorted(active.conv_levels)] + \
                [f"pool L{l}" for l in sorted(active.pool_levels)]
        if getattr(rau.schedule, "row", lambda hw: True)(latent_hw) is None:
            label = "untouched (native size or below)"
        else:
            label = "RAU-Net " + " + ".join(parts) + " + MSW-MSA" if parts else "MSW-MSA only"
        states.setdefault(label, [sigma, 0])[1] += 1
    return [(label, s, n) for label, (s, n) in states.items()]


def bench(family: str, size: int, steps: int, repeats: int, cfg: float, device_name: str, measure_schedule: bool,
          log=print) -> list[dict]:
    import torch  # noqa: PLC0415

    import comfy.model_management  # noqa: PLC0415
    import comfy.samplers  # noqa: PLC0415
    from harness import model_factory  # noqa: PLC0415
    from megapixel.patches.hidiffusion import apply_hidiffusion  # noqa: PLC0415

    device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if device.type == "cuda" else None
    vanilla = model_factory.full_unet(family, seed=0, dtype=dtype)
    patched = apply_hidiffusion(vanilla, node="bench")
    runner = Runner(family, cfg, device)
    latent_hw = (size // 8, size // 8)
    sigmas = comfy.samplers.calculate_sigmas(vanilla.get_model_object("model_sampling"), "normal", steps)
    states = schedule_states(patched, latent_hw, sigmas)
    name = {"sd15": "SD1.5", "sdxl": "SDXL"}[family]
    log(f"\n{name} {size}x{size} px (latent {latent_hw[0]}x{latent_hw[1]}), {device.type} "
        f"{'fp16' if dtype else 'fp32'}, cfg {cfg:g} (batch {1 if cfg == 1 else 2} per call), median of {repeats} "
        f"call(s) per state, {steps}-step normal schedule")
    base = runner.calls(vanilla, latent_hw, float(sigmas[0]), repeats)
    rows = []
    header = f"{'state':44} {'steps':>5} {'vanilla s':>10} {'HiDiff s':>10} {'speed-up':>9} {'FLOP ratio':>11}"
    log(header + (f" {'peak MiB van/HD':>16}" if "peak_mib" in base else ""))
    weighted_time = weighted_flops = 0.0
    for label, sigma, n in states:
        hd = runner.calls(patched, latent_hw, sigma, repeats)
        speed, flop = base["seconds"] / hd["seconds"], base["flops"] / hd["flops"]
        weighted_time += n * hd["seconds"]
        weighted_flops += n * hd["flops"]
        peak = f" {base['peak_mib']:7.0f}/{hd['peak_mib']:<8.0f}" if "peak_mib" in hd else ""
        log(f"{label:44} {n:5d} {base['seconds']:10.3f} {hd['seconds']:10.3f} {speed:8.2f}x {flop:10.2f}x{peak}")
        rows.append(dict(comparison=f"HiDiffusion vs vanilla, {name} {size} px, {label}", ratio=hd["seconds"] /
                         base["seconds"], baseline_ms=base["seconds"] * 1e3, variant_ms=hd["seconds"] * 1e3,
                         flop_ratio=hd["flops"] / base["flops"], peak_mib=hd.get("peak_mib"),
                         note=f"{n}/{steps} steps; speed-up {speed:.2f}x, FLOPs {flop:.2f}x fewer"))
    avg_time, avg_flops = weighted_time / steps, weighted_flops / steps
    speed, flop = base["seconds"] / avg_time, base["flops"] / avg_flops
    log(f"{'full schedule (steps-weighted)':44} {steps:5d} {base['seconds']:10.3f} {avg_time:10.3f} {speed:8.2f}x "
        f"{flop:10.2f}x")
    rows.append(dict(comparison=f"HiDiffusion vs vanilla, {name} {size} px, full {steps}-step schedule",
                     ratio=avg_time / base["seconds"], baseline_ms=base["seconds"] * 1e3, variant_ms=avg_time * 1e3,
                     flop_ratio=avg_flops / base["flops"], note=f"speed-up {speed:.2f}x, FLOPs {flop:.2f}x fewer"))
    if "peak_mib" not in base:
        log("peak memory: not measured on CPU (torch's allocations are invisible to tracemalloc; max RSS only grows)")
    if measure_schedule:
        t_van = runner.schedule_run(vanilla, latent_hw, sigmas)
        t_hd = runner.schedule_run(patched, latent_hw, sigmas)
        log(f"{'measured sampling run':44} {steps:5d} {t_van:10.2f} {t_hd:10.2f} {t_van / t_hd:8.2f}x   (whole run)")
        rows.append(dict(comparison=f"HiDiffusion vs vanilla, {name} {size} px, measured {steps}-step run",
                         ratio=t_hd / t_van, baseline_ms=t_van * 1e3, variant_ms=t_hd * 1e3))
    return rows


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """Rows for tools/bench/report.py."""
    import_in_process(device)
    return bench("sd15", 1024, 10, 1 if quick else 2, 1.0, device, measure_schedule=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--size", type=int, nargs="+", default=[1024], help="image side(s) in px")
    parser.add_argument("--steps", type=int, default=20, help="schedule length the states are weighted over")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per state (median)")
    parser.add_argument("--cfg", type=float, default=1.0, help="1 = one batch-1 pass per call; >1 = cond+uncond")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--measure-schedule", action="store_true", help="also time whole sampling runs")
    opts = parser.parse_args()
    import_in_process(opts.device)
    for size in opts.size:
        bench(opts.family, size, opts.steps, opts.repeats, opts.cfg, opts.device, opts.measure_schedule)


if __name__ == "__main__":
    main()
