"""Test set-up: the real ComfyUI host on sys.path, the pack importable as ``megapixel``, shared fixtures.

Runs inside the host's Python (``tools/run_tests.py`` sees to that).  Nothing of ``comfy.*`` is mocked.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PACK_DIR / "tools"))

from harness.host import HOST_DIR, import_in_process, locate_host  # noqa: E402

HOST = locate_host()
import_in_process()  # ComfyUI on sys.path, `--cpu --use-pytorch-cross-attention` where there is no GPU, the pack

import torch  # noqa: E402

# The tiny models run fastest on one thread, and the e2e server (a separate process) keeps the cores for itself.
torch.set_num_threads(1)

from harness import model_factory  # noqa: E402  (needs ComfyUI on sys.path)

FIXTURE_DIR = HOST_DIR / "fixtures"  # shared by every host: the checkpoints are built once


def pytest_report_header(config):
    """Which ComfyUI this run is against ($MEGAPIXEL_COMFYUI or COMFYUI_PATH; tools/run_tests.py sets them)."""
    return f"ComfyUI host: {HOST.version or 'COMFYUI_PATH'} at {HOST.root}"


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
    """A real ComfyUI server on 127.0.0.1 with this pack loaded, the random checkpoints (main, weak) installed, and
    the quality lab (its U-Nets, its TAESD autoencoder and its development-only nodes, with the tiny DiT stand-ins) and
    a stand-in Flux.1 VAE."""
    from harness.comfy_server import ComfyServer
    from lab.files import server_layout
    from harness.tiny_dits import save_stand_in_vae

    layout = server_layout()
    layout["models"]["vae"] = [*layout["models"]["vae"], save_stand_in_vae(FIXTURE_DIR)]  # the DiT workflows' VAE
    server = ComfyServer(host, checkpoints=[random_checkpoint, random_weak_checkpoint],
                         cpu=not torch.cuda.is_available(), **layout)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class HostileServer:
    """The server the hostile-input and soak suites share, and what was taken on it before any prompt ran."""
    server: object
    models: object
    model_files: tuple
    node_types: set
    fresh_probe: dict
    reference: object


@pytest.fixture(scope="session")
def hostile_server(host, random_checkpoint, random_weak_checkpoint):
    """One server for tests/test_hostile_inputs.py and tests/test_soak.py (one start, one set of model loads, one
    fresh-server reference for both): the main and weak random checkpoints, a tiny SD3, the soak probe node and the
    development nodes.  The probe's report and the good prompts' pixels are taken first, on a server that has run
    nothing else."""
    from test_hostile_inputs import FreshReference, Models, start_server, tiny_sd3_model
    from test_soak import PROBE_SOURCE, probe

    files = (random_checkpoint, random_weak_checkpoint, tiny_sd3_model())
    models = Models(*(f.name for f in files))
    server = start_server(host, *files, custom_nodes={"megapixel_soak_probe": PROBE_SOURCE})
    try:
        fresh_probe = probe(server, models, nonce=1)
        node_types = set(server.object_info())
        reference = FreshReference(server, models, node_types)
        yield HostileServer(server, models, files, node_types, fresh_probe, reference)
    finally:
        server.cleanup()
