"""Run the test suite against a real ComfyUI: provision the host if needed, then pytest in the host's Python.

    python3 tools/run_tests.py [pytest args...]

Set COMFYUI_PATH (and COMFYUI_PYTHON) to test against your own ComfyUI instead of the pinned 0.3.75.
"""
from __future__ import annotations

import os
import subprocess
import sys

from browser import ensure_chromium
from host import PACK_DIR, ensure_comfy_cli, provision


def main() -> int:
    host = provision()
    # The browser test drives Debian's chromium; install it when missing (root with apt-get only).
    # ... and comfy-cli (tests/test_registry.py runs `comfy node validate` offline), in its own venv.
    for note in (ensure_chromium(), ensure_comfy_cli()):
        if note:
            print(note, flush=True)
    cmd = [str(host.python), "-m", "pytest", *(sys.argv[1:] or ["tests"])]
    print("+", " ".join(cmd), flush=True)
    # pytest's exit code 5 ("no tests collected") is a failure here, as it is for CI.
    return subprocess.call(cmd, cwd=PACK_DIR, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


if __name__ == "__main__":
    sys.exit(main())
