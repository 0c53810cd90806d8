"""mutmut over ``patches/`` and ``samplers/`` with the unit-level tests, and a per-module report of what it found.

    python3 tools/mutation/mutmut_run.py                       # every module (several hours on 2 cores)
    python3 tools/mutation/mutmut_run.py --only patches/schedule.py --only samplers/relay_stages.py
    python3 tools/mutation/mutmut_run.py --report              # the table of the last run, without running
    python3 tools/mutation/mutmut_run.py --show megapixel.patches.schedule.x_current_sigma__mutmut_3

Development only, not in CI.  mutmut picks the mutants itself (unlike ``mutants.py``'s hand-made list).  It runs in
the provisioned host's Python (the tests need ComfyUI) and gets installed there on first use.

Why a staging tree: mutmut names a mutant after its file's path (``src.`` stripped) and activates it only when the
running function's ``__module__`` matches, while ComfyUI imports this pack as the package ``megapixel``.  So the
checkout is copied to ``.host/mutation/src/megapixel/`` (git's tracked files), where ``src/megapixel/patches/x.py``
is the module ``megapixel.patches.x`` in both mutmut's eyes and the tests'.  The tests there find the pack at
``src/megapixel`` (the harness locates it from its own path) and the provisioned ComfyUI through ``COMFYUI_PATH``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/

from harness.host import HOST_DIR, PACK_DIR, PACK_NAME, locate_host, provision  # noqa: E402

STAGE = HOST_DIR / "mutation"
SRC = Path("src") / PACK_NAME
MUTMUT = "mutmut==3.8.1"
MUTATED = ("patches", "samplers")
# The unit-level tests: real ModelPatchers over tiny real models, no server, no browser, no lab model.  (The lab's
# quality tests sample dozens of images per call; a relay mutant would spend minutes in each.)
UNIT_TESTS = ("test_autoguidance.py", "test_autoguidance_relay.py", "test_dype.py", "test_hidiffusion_controlnet.py",
              "test_hidiffusion_msw_msa.py", "test_hidiffusion_native_size.py", "test_hidiffusion_nodes.py",
              "test_hidiffusion_rau_net.py", "test_hidiffusion_support.py", "test_highres.py", "test_relay.py",
              "test_relay_dits.py", "test_relay_nodes.py", "test_relay_patches.py", "test_relay_stages.py",
              "test_schedule.py", "test_tiny_dits.py")
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def _stage() -> None:
    """The checkout's tracked files under STAGE/src/megapixel, and mutmut's configuration beside them."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PACK_DIR, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    for name in filter(None, files):
        if name.startswith("tools/lab/weights/"):
            continue  # the lab's weights: not used by the unit tests
        target = STAGE / SRC / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACK_DIR / name, target)
    copied = sorted(p.name for p in (STAGE / SRC).iterdir() if p.name not in MUTATED)
    tests = "\n    ".join(str(SRC / "tests" / t) for t in UNIT_TESTS)
    (STAGE / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths =\n    " + "\n    ".join(str(SRC / m) for m in MUTATED) + "\n"
        "also_copy =\n    " + "\n    ".join(str(SRC / c) for c in copied) + "\n"
        f"pytest_add_cli_args_test_selection =\n    {tests}\n"
        "pytest_add_cli_args =\n    -m\n    not e2e\n    -p\n    no:cacheprovider\n"
        "process_isolation = forkserver\n")


def _python() -> Path:
    host = provision()
    check = subprocess.run([str(host.python), "-c", "import mutmut"], capture_output=True)
    if check.returncode:
        subprocess.run([str(host.python), "-m", "pip", "install", "-q", MUTMUT], check=True)
    return host.python


def _env() -> dict[str, str]:
    host = locate_host()
    return {**os.environ, "COMFYUI_PATH": str(host.root), "COMFYUI_PYTHON": str(host.python),
            "MEGAPIXEL_NO_COMFY_CLI": "1", "OMP_NUM_THREADS": "1"}


def results() -> dict[str, dict[str, str]]:
    """module -> {mutant: status}, from the .meta files mutmut leaves beside each mutated file."""
    by_module = {}
    for meta in sorted((STAGE / "mutants" / SRC).rglob("*.py.meta")):
        module = meta.relative_to(STAGE / "mutants" / SRC).as_posix()[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        by_module[module] = {key: STATUS.get(code, "suspicious") for key, code in codes.items()}
    return by_module


def markdown(by_module: dict[str, dict[str, str]]) -> str:
    lines = ["| module | mutants | killed | survived | timeouts | no tests | killed % |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    total = Counter()
    for module, statuses in by_module.items():
        c = Counter(statuses.values())
        n = sum(c.values())
        total += c
        share = 100 * (c["killed"] + c["timeout"]) / n if n else 100.0
        lines.append(f"| `{module}` | {n} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['no tests']} "
                     f"| {share:.0f} % |")
    n = sum(total.values())
    lines.append(f"| **all** | {n} | {total['killed']} | {total['survived']} | {total['timeout']} | "
                 f"{total['no tests']} | {100 * (total['killed'] + total['timeout']) / max(n, 1):.0f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="PATH",
                        help="mutate only this file (patches/x.py or samplers/y.py); repeatable")
    parser.add_argument("--report", action="store_true", help="print the last run's table and survivors, run nothing")
    parser.add_argument("--show", metavar="MUTANT", help="print one mutant's diff")
    parser.add_argument("--children", type=int, default=2, help="parallel test processes (default 2)")
    args = parser.parse_args()
    if args.show:
        subprocess.run([str(_python()), "-m", "mutmut", "show", args.show], cwd=STAGE, env=_env(), check=True)
        return
    if not args.report:
        python = _python()
        _stage()
        if args.only:
            with (STAGE / "setup.cfg").open("a") as cfg:
                cfg.write("only_mutate =\n    " + "\n    ".join(str(SRC / p) for p in args.only) + "\n")
        subprocess.run([str(python), "-m", "mutmut", "run", "--max-children", str(args.children)],
                       cwd=STAGE, env=_env(), check=False)
    by_module = results()
    print(markdown(by_module))
    left = [key for statuses in by_module.values() for key, status in statuses.items() if status == "survived"]
    print(f"\n{len(left)} survivors" + (":\n  " + "\n  ".join(left) if left else ""))


if __name__ == "__main__":
    main()
