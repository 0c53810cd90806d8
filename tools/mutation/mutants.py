"""Dev-only mutation check: do the unit tests catch plausible one-line bugs?

Each mutant below is one hand-made, one-line bug (a text replacement) in ``patches/`` or ``samplers/``.  They are
applied one at a time to a temporary copy of this checkout (the checkout itself is never changed), and the unit test
files that cover the mutated code run against it (``nice -n 19``, stopping at the first failure).  A mutant is
*killed* when a test fails, *survived* when they all pass.  Not run in CI: it takes several minutes on 2 cores.

    python3 tools/mutation/mutants.py                 # every mutant; exit status 1 if one survives
    python3 tools/mutation/mutants.py --list          # the mutants, without running anything
    python3 tools/mutation/mutants.py --only pool-max --only window-low-inclusive

Only the standard library is used; the tests run in the host's Python (``tools/harness/host.py``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/
from harness.host import HOST_DIR, PACK_DIR, locate_host  # noqa: E402

RAU = ["tests/test_hidiffusion_rau_net.py"]
RAU_NODES = ["tests/test_hidiffusion_nodes.py"]
CONTROLNET = ["tests/test_hidiffusion_controlnet.py"]
MSW = ["tests/test_hidiffusion_msw_msa.py"]
STAGES = ["tests/test_relay_stages.py"]
RELAY = ["tests/test_relay.py"]
RELAY_ALL = ["tests/test_relay_stages.py", "tests/test_relay_patches.py", "tests/test_relay.py",
             "tests/test_relay_nodes.py"]
AG = ["tests/test_autoguidance.py", "tests/test_autoguidance_relay.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the checkout
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]
    why: str  # the bug it stands for


def m(name, path, old, new, tests, why) -> Mutant:
    return Mutant(name, path, old, new, tuple(tests), why)


MUTANTS: list[Mutant] = [
    # --- patches/rau_net.py --------------------------------------------------------------------------------------
    m("pool-max", "patches/rau_net.py",
      "return F.avg_pool2d(h, kernel_size=2, ceil_mode=True)", "return F.max_pool2d(h, kernel_size=2, ceil_mode=True)",
      RAU, "RAU-Net's average pooling replaced by max pooling"),
    m("resize-ignores-method", "patches/rau_net.py",
      'return comfy.utils.common_upscale(h, size[1], size[0], method, "disabled")',
      'return comfy.utils.common_upscale(h, size[1], size[0], "bicubic", "disabled")',
      RAU, "the resize back ignores the chosen upsample method"),
    m("resize-block-off-by-one", "patches/rau_net.py",
      "self.layout.skip_consumer(self.layout.first_block(level) - 1)",
      "self.layout.skip_consumer(self.layout.first_block(level))",
      RAU, "the features are resized back one output block off"),
    m("sizes-round-down", "patches/rau_net.py",
      "return (-(-size[0] // factor), -(-size[1] // factor))", "return (size[0] // factor, size[1] // factor)",
      RAU, "planned feature sizes round down instead of up for odd sides"),
    m("conv-dilation-1", "patches/rau_net.py",
      "stride=4, padding=2, dilation=2, groups=op.groups", "stride=4, padding=2, dilation=1, groups=op.groups",
      RAU, "the stride-4 conv loses its dilation"),
    m("pool-block-off-by-one", "patches/rau_net.py",
      "pools = {layout.first_block(l) for l in active.pool_levels}",
      "pools = {layout.first_block(l) + 1 for l in active.pool_levels}",
      RAU, "the size plan pools one input block late"),
    m("controlnet-residual-max", "patches/rau_net.py",
      "return F.adaptive_avg_pool2d(t, size)", "return F.adaptive_max_pool2d(t, size)",
      CONTROLNET, "ControlNet residuals shrunk by max instead of area average"),
    m("rau-twice-undetected", "patches/rau_net.py",
      'owner = getattr(patch, "__self__", None)', 'owner = getattr(patch, "__func__", None)',
      RAU_NODES, "a RAU-Net already on the model is not found, so a second one is not refused"),
    # --- patches/schedule.py --------------------------------------------------------------------------------------
    m("window-low-inclusive", "patches/schedule.py",
      "return self.low < sigma <= self.high", "return self.low <= sigma <= self.high",
      RAU + MSW, "the sigma window includes its lower end (sigma_end)"),
    m("window-high-exclusive", "patches/schedule.py",
      "return self.low < sigma <= self.high", "return self.low < sigma < self.high",
      RAU + MSW, "the sigma window excludes its upper end (sigma_start)"),
    m("window-ends-swapped", "patches/schedule.py",
      "return cls(float(model_sampling.percent_to_sigma(start)), float(model_sampling.percent_to_sigma(end)))",
      "return cls(float(model_sampling.percent_to_sigma(end)), float(model_sampling.percent_to_sigma(start)))",
      RAU, "start and end swapped when the fractions become sigmas"),
    m("sigma-read-per-block", "patches/schedule.py",
      "_sigma_cache = (sigmas, value)", "_sigma_cache = (None, value)",
      RAU + MSW, "the sigma is read from the device at every block (a GPU sync per call)"),
    m("step-index-off-by-one", "patches/schedule.py",
      "index = int(hits[0]) if hits.numel() > 0", "index = int(hits[0]) + 1 if hits.numel() > 0",
      MSW, "the step index (and so the window shift) is one step late"),
    # --- patches/msw_msa.py ----------------------------------------------------------------------------------------
    m("pad-wrong-edge-rows", "patches/msw_msa.py",
      "x = torch.cat([x, x[:, -1:]], dim=1)", "x = torch.cat([x, x[:, :1]], dim=1)",
      MSW, "odd grids padded with the first row instead of the last"),
    m("pad-wrong-edge-columns", "patches/msw_msa.py",
      "x = torch.cat([x, x[:, :, -1:]], dim=2)", "x = torch.cat([x, x[:, :, :1]], dim=2)",
      MSW, "odd grids padded with the first column instead of the last"),
    m("pad-prepended", "patches/msw_msa.py",
      "x = torch.cat([x, x[:, -1:]], dim=1)", "x = torch.cat([x[:, -1:], x], dim=1)",
      MSW, "the padding row goes on top, so the crop removes a real row"),
    m("shift-axes-swapped", "patches/msw_msa.py",
      "return cls(h, w, ((wh // 4) * k, (ww // 4) * k))", "return cls(h, w, ((ww // 4) * k, (wh // 4) * k))",
      MSW, "the shift's height and width parts swapped"),
    m("cycle-starts-at-1", "patches/msw_msa.py", "return step % 4", "return (step + 1) % 4",
      MSW, "the shift cycle starts at offset 1"),
    m("reverse-roll-sign", "patches/msw_msa.py", "shifts=g.shift,", "shifts=(-g.shift[0], -g.shift[1]),",
      MSW, "the windows are rolled back the wrong way"),
    # --- samplers/relay_stages.py ----------------------------------------------------------------------------------
    m("stage-size-half-even", "samplers/relay_stages.py",
      "return math.floor(x + 0.5 + 1e-9)", "return round(x)",
      STAGES, "stage sizes round half to even"),
    m("default-split-floor", "samplers/relay_stages.py",
      "(total_steps * 2 + 5) // 10", "(total_steps * 2) // 10",
      STAGES, "MegaFusion's 20% for the later stages rounded down"),
    m("split-smallest-remainder", "samplers/relay_stages.py",
      "key=lambda i: (-(exact[i] - counts[i]), i)", "key=lambda i: ((exact[i] - counts[i]), i)",
      STAGES, "leftover steps go to the smallest remainders"),
    m("slice-one-short", "samplers/relay_stages.py",
      "out.append(sigmas[start:start + c + 1])", "out.append(sigmas[start:start + c])",
      STAGES, "a stage's slice loses its last sigma"),
    m("pixel-sizes-transposed", "samplers/relay_stages.py",
      "out = [(h // LATENT_PX, w // LATENT_PX) for w, h in spec.sizes]",
      "out = [(h // LATENT_PX, w // LATENT_PX) for h, w in spec.sizes]",
      STAGES, "WIDTHxHEIGHT read as HEIGHTxWIDTH"),
    # --- samplers/relay.py -----------------------------------------------------------------------------------------
    m("stage-seed-constant", "samplers/relay.py",
      "(int(seed) + stage * _SEED_STRIDE) % (1 << 64)", "(int(seed) + _SEED_STRIDE) % (1 << 64)",
      RELAY, "every later stage gets the same fresh noise"),
    m("seedless-noise-fixed", "samplers/relay.py",
      'return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")', "return 0",
      RELAY, "a NOISE without a seed gives every prompt the same later-stage noise"),
    m("mask-inverted", "samplers/relay.py",
      "current = current * m + known * (1.0 - m)", "current = current * (1.0 - m) + known * m",
      RELAY, "the inpainting mask keeps the wrong region"),
    m("scale-is-area", "samplers/relay.py",
      "scale = math.sqrt((h * w) / (h0 * w0))", "scale = (h * w) / (h0 * w0)",
      RELAY_ALL, "the stage scale is the area ratio, not the side ratio"),
    m("relay-noisy-latent", "samplers/relay.py", 'reported["x0"] = x0', 'reported["x0"] = x',
      RELAY, "the noisy latent is relayed instead of the clean estimate"),
    m("area-axes-swapped", "samplers/relay.py",
      "y2, x2 = min(round(y * fy), height - 1), min(round(x * fx), width - 1)",
      "y2, x2 = min(round(y * fx), height - 1), min(round(x * fy), width - 1)",
      RELAY, "area positions scaled with the other axis' factor"),
    # --- samplers/relay_schedule.py, relay_dilate.py ---------------------------------------------------------------
    m("reschedule-scale-squared", "samplers/relay_schedule.py",
      "    return sigma * scale\n", "    return sigma * scale * scale\n",
      RELAY_ALL, "re-scheduled noise scaled by s² instead of s"),
    m("unmap-not-inverse", "samplers/relay_schedule.py",
      "return comfy.model_sampling.time_snr_shift(1.0 / scale, sigma)",
      "return comfy.model_sampling.time_snr_shift(scale, sigma)",
      RELAY_ALL, "the flow time shift is not undone for the timestep label"),
    m("dilation-padding-1", "samplers/relay_dilate.py",
      "new.padding = (DILATION, DILATION)", "new.padding = (1, 1)",
      RELAY_ALL, "the dilated conv keeps padding 1"),
    # --- samplers/autoguidance.py ----------------------------------------------------------------------------------
    m("weight-w-not-w-minus-1", "samplers/autoguidance.py",
      "return (cond - weak) * (w - 1.0)", "return (cond - weak) * w",
      AG, "the autoguidance term uses w instead of w - 1"),
    m("weight-1-minus-w", "samplers/autoguidance.py",
      "return (cond - weak) * (w - 1.0)", "return (cond - weak) * (1.0 - w)",
      AG, "the autoguidance term points towards the weak model"),
    m("interval-low-inclusive", "samplers/autoguidance.py",
      "return (sigma > sigma_lo) & (sigma <= sigma_hi)", "return (sigma >= sigma_lo) & (sigma <= sigma_hi)",
      AG, "the guidance interval includes its lower end"),
    m("interval-ends-swapped", "samplers/autoguidance.py",
      "sigma_hi = float(model_sampling.percent_to_sigma(start_percent))",
      "sigma_hi = float(model_sampling.percent_to_sigma(end_percent))",
      AG, "start_percent and end_percent swapped"),
    m("cfg-from-cond", "samplers/autoguidance.py",
      "guided = cond if uncond is None else uncond + (cond - uncond) * cfg",
      "guided = cond if uncond is None else cond + (cond - uncond) * cfg",
      AG, "CFG computed from C instead of U (one cfg step too many)"),
    m("reach-min-max-swapped", "samplers/autoguidance.py",
      "return sigma_lo < float(values.max()) and sigma_hi >= float(values.min())",
      "return sigma_lo < float(values.min()) and sigma_hi >= float(values.max())",
      AG, "the weak model loaded only when the whole schedule lies inside the interval"),
    m("weak-always-loaded", "samplers/autoguidance.py",
      "self._attach_weak(self.needs_weak(sigmas))", "self._attach_weak(not math.isclose(self.w, 1.0))",
      AG, "the weak model loaded although the schedule never reaches the interval"),
]


def copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".host", "__pycache__", ".pytest_cache", "out", "weights", "*.pyc")
    shutil.copytree(PACK_DIR, dest, ignore=ignore, symlinks=True)
    if not os.environ.get("COMFYUI_PATH"):
        (dest / ".host").symlink_to(HOST_DIR, target_is_directory=True)  # the provisioned host, shared


def run_tests(python: Path, root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str, float]:
    cmd = ["nice", "-n", "19", str(python), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not e2e",
           *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f"timed out after {timeout:.0f} s\n{e.stdout or ''}"
    return rc, out, time.monotonic() - start


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line[:150]
    return output.strip().splitlines()[-1][:150] if output.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", default=[], help="run only this mutant (repeatable)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run")
    args = parser.parse_args()

    chosen = [mu for mu in MUTANTS if not args.only or mu.name in args.only]
    if args.list:
        for mu in chosen:
            print(f"{mu.name:28} {mu.path:28} {mu.why}")
        return 0
    unknown = set(args.only) - {mu.name for mu in MUTANTS}
    if unknown:
        print(f"unknown mutants: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    python = locate_host().python
    with tempfile.TemporaryDirectory(prefix="megapixel-mutants-") as tmp:
        root = Path(tmp) / "pack"
        copy_checkout(root)
        stale = [mu for mu in chosen if (root / mu.path).read_text().count(mu.old) != 1]
        for mu in stale:
            print(f"STALE     {mu.name}: the text to mutate is not in {mu.path} exactly once; update tools/mutation/mutants.py")
        chosen = [mu for mu in chosen if mu not in stale]

        test_files = tuple(sorted({t for mu in chosen for t in mu.tests}))
        print(f"baseline: {len(test_files)} test files on the unmutated copy ...", flush=True)
        rc, out, secs = run_tests(python, root, test_files, args.timeout * 3)
        if rc != 0:
            print(f"the unmutated copy fails its tests ({first_failure(out)}); fix that first", file=sys.stderr)
            return 2
        print(f"baseline passed in {secs:.0f} s", flush=True)

        survived = []
        for i, mu in enumerate(chosen, 1):
            target = root / mu.path
            original = target.read_text()
            target.write_text(original.replace(mu.old, mu.new))
            try:
                rc, out, secs = run_tests(python, root, mu.tests, args.timeout)
            finally:
                target.write_text(original)
            if rc == 0:
                survived.append(mu)
                verdict = "SURVIVED"
            else:
                verdict = "killed  " if rc == 1 else f"killed* (pytest exit {rc})"
            print(f"[{i:2}/{len(chosen)}] {verdict} {mu.name:28} {secs:5.0f} s  {mu.why}", flush=True)
            if rc not in (0, 1):
                print(f"          {first_failure(out)}")

    killed = len(chosen) - len(survived)
    print(f"\nkilled {killed}/{len(chosen)} mutants" + (f", {len(stale)} stale" if stale else ""))
    for mu in survived:
        print(f"  survived: {mu.name} ({mu.path}): {mu.why}")
    return 1 if survived or stale else 0


if __name__ == "__main__":
    sys.exit(main())
