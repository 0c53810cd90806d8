"""Per-step cost of autoguidance + CFG against CFG alone, measured side by side in one run.

    .host/venv/bin/python tools/bench/autoguidance.py [--size 512] [--steps 3] [--repeats 3] [--device cpu|cuda]

Full-size SD1.5 U-Net (random weights, real shapes and FLOPs) with random 77-token conditioning; the weak model is
(a) another full-size SD1.5 U-Net and (b) a narrower SD1.5-shaped one (model_channels 192 instead of 320).  A CFG
step is one batch-2 pass (cond + uncond); an autoguidance step adds a batch-1 pass of the weak model, so the ideal
same-size ratio is about 1.5x (three model evaluations instead of two; more where a batch-1 pass costs more than
half a batch-2 pass, as on CPUs).  The weak models' batch-1 passes are timed alone too, so the overhead of the guider
itself (measured ratio minus what the passes alone predict) is visible.  Each variant runs `steps` Euler steps after
a warm-up, the variants interleaved `repeats` times; the median per-step time is reported.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK_DIR / "tools"))

from bench.timing import timed_sample  # noqa: E402
from harness.host import import_in_process  # noqa: E402



def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the table; returns the median seconds per step of every variant."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image side in px (latent side = size / 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed Euler steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every variant")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--w", type=float, default=2.0)
    opts = parser.parse_args(argv)
    import_in_process(opts.device)

    import torch  # noqa: PLC0415

    import comfy.model_management  # noqa: PLC0415
    import comfy.samplers  # noqa: PLC0415
    from harness import model_factory  # noqa: PLC0415
    from megapixel.samplers.autoguidance import AutoguidanceGuider  # noqa: PLC0415

    device = comfy.model_management.get_torch_device()
    dtype = torch.float16 if device.type == "cuda" else None
    main_model = model_factory.full_unet("sd15", seed=0, dtype=dtype)
    weak_same = model_factory.full_unet("sd15", seed=1, dtype=dtype)
    narrow = dict(model_factory._full_config("sd15"), model_channels=192)
    if dtype is not None:
        narrow["dtype"] = dtype
    weak_small = model_factory.build_unet_model("sd15", narrow, seed=2)

    def params(m) -> float:
        return sum(p.numel() for p in m.model.diffusion_model.parameters()) / 1e6

    gen = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    latent = torch.zeros(1, 4, opts.size // 8, opts.size // 8)
    noise = torch.randn(latent.shape, generator=gen)
    sampler = comfy.samplers.sampler_object("euler")
    sigmas = comfy.samplers.calculate_sigmas(main_model.get_model_object("model_sampling"), "normal", opts.steps)

    def cfg_only():
        g = comfy.samplers.CFGGuider(main_model)
        g.set_conds(positive, negative)
        g.set_cfg(opts.cfg)
        return g

    def autoguided(weak):
        g = AutoguidanceGuider(main_model, weak, cfg=opts.cfg, w=opts.w)
        g.set_conds(positive, negative)
        return g

    def single_pass(model):  # cfg 1: one batch-1 pass per step, the cost of the weak model's extra pass
        g = comfy.samplers.CFGGuider(model)
        g.set_conds(positive, negative)
        g.set_cfg(1.0)
        return g

    variants = {"CFG alone": cfg_only(), "autoguidance + CFG, same-size weak": autoguided(weak_same),
                "autoguidance + CFG, smaller weak": autoguided(weak_small),
                "same-size weak, one batch-1 pass": single_pass(weak_same),
                "smaller weak, one batch-1 pass": single_pass(weak_small)}
    predicted = {"autoguidance + CFG, same-size weak": "same-size weak, one batch-1 pass",
                 "autoguidance + CFG, smaller weak": "smaller weak, one batch-1 pass"}

    def timed(guider, sig) -> float:
        return timed_sample(guider, noise, latent, sampler, sig, device)

    for guider in variants.values():  # warm-up: loading, allocator, kernels
        timed(guider, sigmas[-2:])
    times = {name: [] for name in variants}
    for _ in range(opts.repeats):
        for name, guider in variants.items():
            times[name].append(timed(guider, sigmas) / opts.steps)

    print(f"device {device}, dtype {dtype or torch.float32}, {opts.size}x{opts.size} px, {opts.steps} steps x "
          f"{opts.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"main U-Net {params(main_model):.0f}M params; same-size weak {params(weak_same):.0f}M; "
          f"smaller weak {params(weak_small):.0f}M")
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["CFG alone"]
    for name, per_step in median.items():
        line = f"{name:<38} {per_step * 1000:9.1f} ms/step   {per_step / base:5.2f}x"
        if name in predicted:  # what the model passes alone account for: CFG step + one weak batch-1 pass
            line += f"   (model passes alone: {(base + median[predicted[name]]) / base:4.2f}x)"
        print(line)
    return median


def measure(quick: bool = False, device: str = "auto") -> list[dict]:
    """Rows for tools/bench/report.py: autoguidance + CFG against CFG alone, per step, side by side."""
    import contextlib
    import io

    size, steps, repeats = (256, 2, 2) if quick else (512, 3, 3)
    with contextlib.redirect_stdout(io.StringIO()):
        median = main(["--size", str(size), "--steps", str(steps), "--repeats", str(repeats), "--device", device])
    base = median["CFG alone"]
    return [{"comparison": f"{name} vs CFG alone, SD1.5 U-Net {size} px, per step",
             "ratio": median[name] / base, "baseline_ms": base * 1000, "variant_ms": median[name] * 1000,
             "note": f"model passes alone: {(base + median[alone]) / base:.2f}x"}
            for name, alone in (("autoguidance + CFG, same-size weak", "same-size weak, one batch-1 pass"),
                                ("autoguidance + CFG, smaller weak", "smaller weak, one batch-1 pass"))]


if __name__ == "__main__":
    main()
