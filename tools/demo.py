"""The main job: provision ComfyUI, start it with this pack, run graphs headless, save the images.

    python3 tools/demo.py                      # the quality lab model: High-Res Sampler vs vanilla vs hires fix vs Deep Shrink
    python3 tools/demo.py --workflow NAME      # a shipped workflow on a random-weight SD1.5 checkpoint (noise)
    python3 tools/demo.py --ckpt my_sd15.safetensors [--weak-ckpt smaller.safetensors]
    python3 tools/demo.py --serve              # ...then leave ComfyUI running for the browser

With no checkpoint and no workflow given it runs the quality lab's model (``tools/lab/``, trained here on one-object
scenes at 128 px) at 4x its native side through four branches side by side (the pack's High-Res Sampler, the model
alone, the core two-pass hires fix, core Deep Shrink) and writes ``lab-grid.png``: one column per technique, the
objects counted under each.  A shipped workflow without ``--ckpt`` runs on a full-size SD1.5-architecture checkpoint with random weights (built once): the whole pipeline runs, the pictures are noise.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.host import HOST_DIR, PACK_DIR, provision
from harness.comfy_server import ComfyServer, load_workflow, workflow_to_api
from lab import graphs
from lab.files import NATIVE_PX, server_layout

WORKFLOWS = PACK_DIR / "workflows"
DEFAULT_WORKFLOW = "megapixel-all-three-sd15.json"
CHECKPOINT_LOADERS = {"CheckpointLoaderSimple"}
QUICK_SIZE, QUICK_STEPS = 256, 8


def _random_checkpoints(host) -> list[Path]:
    """Build (once) the random-weight checkpoints in the host's Python, which has ComfyUI."""
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]];"
            "from comfy.cli_args import args; args.cpu = True;"
            "from harness import model_factory as m; from pathlib import Path;"
            "print(m.random_checkpoint(Path(sys.argv[3])));"
            "print(m.random_checkpoint(Path(sys.argv[3]), weak=True))")
    out = subprocess.run([str(host.python), "-c", code, str(PACK_DIR / "tools"), str(host.root),
                          str(HOST_DIR / "fixtures")], check=True, capture_output=True, text=True).stdout
    return [Path(line) for line in out.split() if line.endswith(".safetensors")]


def _pick_workflow(name: str | None) -> Path:
    if name:
        path = Path(name)
        return path if path.exists() else WORKFLOWS / name
    default = WORKFLOWS / DEFAULT_WORKFLOW
    if default.exists():
        return default
    shipped = sorted(WORKFLOWS.glob("*.json"))
    if not shipped:
        raise SystemExit(f"no workflow in {WORKFLOWS}")
    return shipped[0]


def _assign_checkpoints(workflow: dict, main: str, weak: str) -> None:
    """Point the workflow's checkpoint loaders at our files: the first at the main one, any other at the weak."""
    loaders = [n for n in sorted(workflow["nodes"], key=lambda n: n["id"]) if n["type"] in CHECKPOINT_LOADERS]
    for i, node in enumerate(loaders):
        node["widgets_values"][0] = main if i == 0 else weak


def _save(server: ComfyServer, entry: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in server.images(entry):
        target = out / name
        target.write_bytes(data)
        written.append(target)
    return written


def lab_demo(host, args) -> None:
    """The lab model at 4x its native side, four branches, one grid with the measured object counts."""
    px = 4 * NATIVE_PX
    steps = args.steps or 20
    out = args.out
    for old in out.glob("lab-*.png"):
        old.unlink()
    server = ComfyServer(host, base_dir=HOST_DIR / "demo-lab", cpu=not args.gpu, **server_layout())
    server.start()
    try:
        print(f"Quality lab: {args.images} images at {px} px (4x the lab model's {NATIVE_PX} px), {steps} steps, "
              f"seed {args.seed}: {', '.join(graphs.TITLES[b] for b in graphs.BRANCHES)} ...", flush=True)
        started = time.monotonic()
        entry = server.run(graphs.comparison_graph(px, seed=args.seed, steps=steps, batch=args.images))
        written = _save(server, entry, out)
        print(f"Done in {time.monotonic() - started:.0f}s: {len(written)} image(s) in {out}")
        grid = out / "lab-grid.png"
        subprocess.run([str(host.python), str(PACK_DIR / "tools" / "lab" / "grid.py"), str(grid),
                        *map(str, written)], check=True)
        print(f"Grid: {grid}")
        _serve(server, args)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _serve(server: ComfyServer, args) -> None:
    if args.serve:
        print(f"ComfyUI is running at {server.url} (log: {server.log_path}); Ctrl-C stops it.")
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="an SD1.5 checkpoint to use instead of the random-weight one")
    parser.add_argument("--weak-ckpt", type=Path, help="the weaker checkpoint autoguidance steers away from (an "
                                                       "earlier or smaller one of the same family); needed with --ckpt "
                                                       "for workflows with two checkpoint loaders")
    parser.add_argument("--workflow", help=f"a workflow file or a name in workflows/ (default: {DEFAULT_WORKFLOW})")
    parser.add_argument("--steps", type=int, help="override every sampler's step count")
    parser.add_argument("--out", type=Path, default=PACK_DIR / "out", help="where to write the images")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--full", action="store_true", help="run the workflow at its shipped size and steps (the "
                                                            "default on CPU is a quick run: 256 px start, 8 steps)")
    parser.add_argument("--serve", action="store_true", help="leave ComfyUI running for the browser afterwards")
    parser.add_argument("--seed", type=int, default=0, help="lab demo: the seed of the first image (default 0)")
    parser.add_argument("--images", type=int, default=4, help="lab demo: images per technique (default 4)")
    args = parser.parse_args()

    host = provision()
    if args.ckpt is None and args.workflow is None:
        lab_demo(host, args)
        return
    if args.ckpt is None:
        main_ckpt, weak_ckpt = _random_checkpoints(host)
        print("No --ckpt given: using a random-weight SD1.5 checkpoint. The images will be noise, not pictures.")
    workflow_path = _pick_workflow(args.workflow)
    workflow = load_workflow(workflow_path)
    if args.ckpt is not None:
        loaders = sum(n["type"] in CHECKPOINT_LOADERS for n in workflow["nodes"])
        if loaders > 1 and args.weak_ckpt is None:
            raise SystemExit(f"{workflow_path.name} loads a main and a weak model (autoguidance): give the weaker "
                             "checkpoint with --weak-ckpt PATH (the same file twice would guide nothing).")
        main_ckpt = args.ckpt.resolve()
        weak_ckpt = (args.weak_ckpt or args.ckpt).resolve()
    _assign_checkpoints(workflow, main_ckpt.name, weak_ckpt.name)

    base = HOST_DIR / "demo"
    server = ComfyServer(host, checkpoints=sorted({main_ckpt, weak_ckpt}), base_dir=base, cpu=not args.gpu)
    server.start()
    try:
        quick = not (args.full or args.gpu)
        if quick:
            print(f"Quick CPU run: every latent starts at {QUICK_SIZE} px, at most {QUICK_STEPS} steps, HiDiffusion "
                  "tuned for a 2048 px image so it acts anyway (--full runs the workflow as shipped).")

        def overrides(node_id: str, class_type: str, inputs: dict) -> None:
            if "steps" in inputs and (args.steps or quick):
                inputs["steps"] = args.steps or min(int(inputs["steps"]), QUICK_STEPS)
            if quick and class_type == "EmptyLatentImage":
                inputs.update(width=QUICK_SIZE, height=QUICK_SIZE)
            if quick and class_type == "MegapixelHiDiffusion":
                inputs.update(target_width=2048, target_height=2048)
        prompt = workflow_to_api(workflow, server.object_info(), overrides)
        print(f"Running {workflow_path.name} on {main_ckpt.name} ...", flush=True)
        started = time.monotonic()
        entry = server.run(prompt)
        written = _save(server, entry, args.out)
        print(f"Done in {time.monotonic() - started:.0f}s: {len(written)} image(s) in {args.out}")
        for path in written:
            print(f"  {path}")
        _serve(server, args)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
