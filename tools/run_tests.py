"""Run the test suite against real ComfyUI hosts: provision them if needed, then pytest in each host's Python.

    python3 tools/run_tests.py [--host VERSION ...] [pytest args...]

1. The whole suite (or the pytest arguments given) on the pinned ComfyUI 0.3.75.
2. The end-to-end suites of the same selection (tests marked ``e2e``: the server harness, the shipped workflows,
   the browser, hostile inputs, soak) on the newest ComfyUI tested, 0.30.0, as well.  That host is provisioned in
   the background while the first run's tests run.

The exit status is non-zero when either run fails; pytest's "no tests collected" (5) is a failure too, except for
the end-to-end run of an explicit selection that holds no end-to-end test.  ``--host 0.3.75`` (or ``0.30.0``,
repeatable) runs only that host.  Each run prints its ten slowest tests.

Set COMFYUI_PATH (and COMFYUI_PYTHON) to test against your own ComfyUI instead: the whole suite runs once, on it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.browser import ensure_chromium
from harness.host import (E2E_HOST_VERSIONS, HOST_DIR, HOST_VERSION, HOST_VERSION_ENV, HOSTS, PACK_DIR, ensure_comfy_cli,
                  provision)

NO_TESTS_COLLECTED = 5
DURATIONS = ["--durations=10"]  # the ten slowest tests of each run, at its end


def _split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(``--host`` versions, the arguments for pytest)."""
    hosts, rest = [], []
    it = iter(argv)
    for arg in it:
        if arg == "--host":
            hosts.append(next(it, ""))
        elif arg.startswith("--host="):
            hosts.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    unknown = [h for h in hosts if h not in HOSTS]
    if unknown:
        raise SystemExit(f"--host {unknown[0]!r}: known hosts are {', '.join(HOSTS)}")
    return hosts, rest


def _only_e2e(args: list[str]) -> list[str]:
    """``args`` narrowed to the tests marked e2e (a ``-m`` expression given is kept: both must hold)."""
    out, marks, it = [], [], iter(args)
    for arg in it:
        if arg == "-m":
            marks.append(next(it, ""))
        elif arg.startswith("-m") and len(arg) > 2:
            marks.append(arg[2:].lstrip("="))
        else:
            out.append(arg)
    expr = " and ".join(f"({m})" for m in [*marks, "e2e"]) if marks else "e2e"
    return [*out, "-m", expr]


_background: dict[str, tuple[subprocess.Popen, Path]] = {}  # version -> its provisioning, started early


def _provision_in_background(version: str) -> None:
    """Provision a host while the tests of another run (downloads and pip overlap the first run's tests)."""
    log = HOST_DIR / f"provision-{version}.log"
    HOST_DIR.mkdir(exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "harness" / "host.py"), "--version",
                                 version], stdout=out, stderr=subprocess.STDOUT, cwd=PACK_DIR)
    _background[version] = (proc, log)
    print(f"=== provisioning ComfyUI {version} in the background (log: {log})", flush=True)


def _pytest(version: str | None, args: list[str]) -> int:
    """pytest in the host's Python (``version`` None: a user's COMFYUI_PATH); returns its exit status."""
    if version in _background:
        proc, log = _background.pop(version)
        started = time.monotonic()
        if proc.wait() != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            print(f"=== could not provision ComfyUI {version} (exit {proc.returncode}):\n{tail}", flush=True)
            return 1
        print(f"=== ComfyUI {version} provisioned (waited {time.monotonic() - started:.0f}s for it)", flush=True)
    try:
        host = provision(version)
    except (subprocess.CalledProcessError, OSError, SystemExit) as e:
        print(f"=== could not provision ComfyUI {version}: {e}", flush=True)
        return 1
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if version:
        env[HOST_VERSION_ENV] = version  # tests/conftest.py and tools/harness/host.py pick this host
    cmd = [str(host.python), "-m", "pytest", *DURATIONS, *args]
    label = f"ComfyUI {version}" if version else f"COMFYUI_PATH={host.root}"
    print(f"\n=== {label}: " + " ".join(cmd), flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=PACK_DIR, env=env)
    print(f"=== {label}: pytest exited {code} after {time.monotonic() - started:.0f}s", flush=True)
    return code


def main() -> int:
    hosts, args = _split_args(sys.argv[1:])
    # The browser test drives Debian's chromium; install it when missing (root with apt-get only).
    # ... and comfy-cli (tests/test_registry.py runs `comfy node validate` offline), in its own venv.
    for note in (ensure_chromium(), ensure_comfy_cli()):
        if note:
            print(note, flush=True)
    selection = args or ["tests"]

    if os.environ.get("COMFYUI_PATH"):
        return 1 if _pytest(None, selection) else 0

    runs = []  # (version, pytest args, whether "no tests collected" is acceptable)
    if not hosts or HOST_VERSION in hosts:
        runs.append((HOST_VERSION, selection, False))
    for version in E2E_HOST_VERSIONS:
        if not hosts or version in hosts:
            # An explicit selection may hold no end-to-end test; the default one (CI) always does.
            runs.append((version, _only_e2e(selection), bool(args)))
    failed = []
    started = time.monotonic()
    if len(runs) > 1:
        try:
            provision(runs[0][0])  # first, alone: the background job below must not race it for the pip cache
        except (subprocess.CalledProcessError, OSError, SystemExit) as e:
            print(f"=== could not provision ComfyUI {runs[0][0]}: {e}", flush=True)
        for version, _, _ in runs[1:]:
            _provision_in_background(version)
    for version, pytest_args, may_be_empty in runs:
        code = _pytest(version, pytest_args)
        if code == NO_TESTS_COLLECTED and may_be_empty:
            print(f"=== ComfyUI {version}: no end-to-end test in this selection", flush=True)
        elif code != 0:
            failed.append(f"ComfyUI {version} (pytest exit {code}"
                          + (": no tests collected" if code == NO_TESTS_COLLECTED else "") + ")")
    took = time.monotonic() - started
    print(f"\n=== {len(runs)} run(s) in {took / 60:.1f} min: " + ("FAILED on " + ", ".join(failed) if failed
                                                                  else "all passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
