"""Where the lab's committed weights live, and how a ComfyUI server gets them (standard library only, so the demo
can use it from any Python)."""
from __future__ import annotations

from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = LAB_DIR / "weights"
UNET_FILE = "megapixel-lab-unet.safetensors"
WEAK_UNET_FILE = "megapixel-lab-unet-weak.safetensors"
VAE_FILE = "megapixel-lab-taesd.safetensors"
NATIVE_PX = 128


def server_layout() -> dict:
    """Keyword arguments for ``ComfyServer`` that install the lab: its weights in ``models/diffusion_models`` and
    ``models/vae``, its loader node in ``custom_nodes/megapixel_lab``."""
    return {
        "models": {"diffusion_models": [WEIGHTS_DIR / UNET_FILE, WEIGHTS_DIR / WEAK_UNET_FILE],
                   "vae": [WEIGHTS_DIR / VAE_FILE]},
        "custom_nodes": {"megapixel_lab": LAB_DIR / "nodes"},
    }
