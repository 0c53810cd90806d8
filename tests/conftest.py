"""Test set-up: the real ComfyUI host on sys.path, the pack importable as ``megapixel``, shared fixtures.

Runs inside the host's Python (``tools/run_tests.py`` sees to that).  Nothing of ``comfy.*`` is mocked.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from host import HOST_DIR, PACK_NAME, locate_host  # noqa: E402

HOST = locate_host()
sys.path.insert(0, str(HOST.root))

import torch  # noqa: E402
from comfy.cli_args import args  # noqa: E402

# What `main.py --cpu --use-pytorch-cross-attention` sets, before comfy.model_management reads it.
if not torch.cuda.is_available():
    args.cpu = True
args.use_pytorch_cross_attention = True
# The tiny models run fastest on one thread, and the e2e server (a separate process) keeps the cores for itself.
torch.set_num_threads(1)


def _import_pack():
    """Import this checkout as the package ``megapixel``, as ComfyUI would import it from custom_nodes."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_DIR / "__init__.py",
                                                  submodule_search_locations=[str(PACK_DIR)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


_import_pack()

import model_factory  # noqa: E402  (needs ComfyUI on sys.path)

FIXTURE_DIR = HOST_DIR / "fixtures"


@pytest.fixture(scope="session")
def host():
    return HOST


@pytest.fixture(scope="session")
def sd15():
    """Tiny SD1.5-shaped EPS U-Net in a real ModelPatcher."""
    return model_factory.tiny_unet("sd15", seed=1)


@pytest.fixture(scope="session")
def sd2v():
    """Tiny SD2-shaped V-prediction U-Net (linear transformer in/out, 1024-style context)."""
    return model_factory.tiny_unet("sd2", seed=2, v_prediction=True)


@pytest.fixture(scope="session")
def sdxl():
    """Tiny SDXL-shaped U-Net: ADM conditioning, depth-2 and depth-3 transformer levels."""
    return model_factory.tiny_unet("sdxl", seed=3)


@pytest.fixture(scope="session")
def random_checkpoint() -> Path:
    """Full-size SD1.5-architecture checkpoint with random weights (built once, cached under .host/fixtures)."""
    return model_factory.random_checkpoint(FIXTURE_DIR)


@pytest.fixture(scope="session")
def random_weak_checkpoint() -> Path:
    """A second random SD1.5 checkpoint with other weights: autoguidance's weak model (another file, so ComfyUI's
    loader cache gives another model object)."""
    return model_factory.random_checkpoint(FIXTURE_DIR, weak=True)


@pytest.fixture(scope="session")
def comfy_server(host, random_checkpoint, random_weak_checkpoint):
    """A real ComfyUI server on 127.0.0.1 with this pack loaded and the random checkpoints (main, weak) installed."""
    from comfy_server import ComfyServer

    server = ComfyServer(host, checkpoints=[random_checkpoint, random_weak_checkpoint],
                         cpu=not torch.cuda.is_available())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
