"""Drive a real ComfyUI server with this pack loaded: start it, queue graphs over HTTP, collect outputs, stop it.

Used by the end-to-end tests and by the demo.  Each server gets its own ``--base-directory`` (custom_nodes,
models, input, output, user), so it sees this checkout's pack, the checkpoints it is given and nothing else
of the install, and several can run side by side.  It also converts UI-format workflow files (what users
save, share and drag into the browser) to the API format ``/prompt`` takes, using ``/object_info``.

Standard library only, so any Python can drive a server.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable

from harness.host import PACK_DIR, PACK_NAME, Host

READY_TIMEOUT_S = 300

# Linux: the server gets SIGTERM when the process that started it dies, however it dies (a killed pytest or demo
# would otherwise leave a server holding gigabytes, since it runs in its own session).  The guard sets the parent-death
# signal in the fresh interpreter, then execs ComfyUI in place: same pid, nothing left running in between.
_PARENT_DEATH_GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the process that started ComfyUI is gone')\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def server_command(python: Path, args: list[str]) -> list[str]:
    """``python main.py args``, behind the parent-death guard where the platform has one."""
    if sys.platform.startswith("linux"):
        return [str(python), "-c", _PARENT_DEATH_GUARD, str(os.getpid()), "main.py", *args]
    return [str(python), "main.py", *args]


class ServerError(RuntimeError):
    """The server refused a prompt, a prompt failed, or the server did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI process on 127.0.0.1 with this pack in its custom_nodes; use as a context manager."""

    _running: "weakref.WeakSet[ComfyServer]" = weakref.WeakSet()  # started by this process and not stopped

    def __init__(self, host: Host, checkpoints: list[Path] = (), base_dir: Path | None = None,
                 cpu: bool = True, extra_args: list[str] = (), port: int | None = None,
                 models: dict[str, list[Path]] | None = None, custom_nodes: dict[str, Path] | None = None):
        self.host = host
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_base = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="megapixel-comfy-"))
        self.log_path = self.base_dir / "server.log"
        self.client_id = uuid.uuid4().hex
        self._proc: subprocess.Popen | None = None
        self._args = ["--listen", "127.0.0.1", "--port", str(self.port), "--base-directory", str(self.base_dir),
                      "--disable-auto-launch", "--disable-api-nodes", "--use-pytorch-cross-attention",
                      *(["--cpu"] if cpu else []), *host.server_args, *extra_args]
        self._layout(checkpoints, models or {}, custom_nodes or {})

    # --- lifecycle ---------------------------------------------------------------------------------------
    def _layout(self, checkpoints, models: dict[str, list[Path]], custom_nodes: dict[str, Path]) -> None:
        """``models``: model folder (``vae``, ``diffusion_models``, ...) -> files; ``custom_nodes``: folder name ->
        a node folder linked beside the pack (development-only nodes such as the quality lab's)."""
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        links = {self.base_dir / "custom_nodes" / PACK_NAME: PACK_DIR}
        links.update({self.base_dir / "custom_nodes" / name: Path(src) for name, src in custom_nodes.items()})
        for folder, files in {"checkpoints": list(checkpoints), **models}.items():
            links.update({self.base_dir / "models" / folder / Path(f).name: Path(f) for f in files})
        for link, source in links.items():
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source.resolve(), target_is_directory=source.is_dir())

    def start(self) -> "ComfyServer":
        log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._proc = subprocess.Popen(server_command(self.host.python, self._args), cwd=self.host.root,
                                      stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with {self._proc.returncode} during start-up:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                ComfyServer._running.add(self)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        ComfyServer._running.discard(self)
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._proc.wait(timeout=20)
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def pack_import_status(self) -> str:
        """The start-up log's line for this pack under 'Import times for custom nodes:'."""
        for line in self.log_text().splitlines():
            if line.rstrip().endswith(f"custom_nodes/{PACK_NAME}") or f"custom_nodes/{PACK_NAME} " in line:
                return line.strip()
        return ""

    # --- HTTP ----------------------------------------------------------------------------------------------
    def get(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def get_bytes(self, path: str, timeout: float = 60) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return r.read()

    def post(self, path: str, payload: dict | None = None, timeout: float = 30) -> Any:
        data = json.dumps(payload or {}).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise ServerError(f"POST {path} -> {e.code}: {e.read().decode(errors='replace')}") from None
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def free_memory(self) -> None:
        """Ask the server to unload its models and drop its cache (it does so between prompts)."""
        self.post("/free", {"unload_models": True, "free_memory": True})

    @classmethod
    def free_all_memory(cls) -> None:
        """Free every running server's models: call before starting another server that loads full-size models,
        so two sets of them are never resident at once (CI has 24 GiB)."""
        for server in list(cls._running):
            server.free_memory()

    def object_info(self) -> dict:
        return self.get("/object_info", timeout=120)

    def queue(self, prompt: dict) -> str:
        """POST an API-format graph; returns the prompt id.  Validation errors raise ServerError."""
        return self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def interrupt(self) -> None:
        self.post("/interrupt")

    def wait(self, prompt_id: str, timeout: float = 1800) -> dict:
        """Poll /history until the prompt finished; returns its history entry (status and outputs)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise ServerError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            try:
                history = self.get(f"/history/{prompt_id}")
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                # A busy CPU server (loading a checkpoint) can be slow to answer; the deadline above still holds.
                if isinstance(e, urllib.error.HTTPError):
                    raise
                time.sleep(1)
                continue
            entry = history.get(prompt_id) if isinstance(history, dict) else None
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("status_str") in ("success", "error") or entry["status"]["completed"]):
                return entry
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 1800) -> dict:
        """Queue a graph and wait for it; raises ServerError with the server's message if execution failed."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry["status"].get("status_str") != "success":
            raise ServerError(execution_error(entry) or f"prompt failed: {entry['status']}")
        return entry

    def images(self, entry: dict) -> list[tuple[str, bytes]]:
        """(filename, PNG bytes) of every image a finished prompt saved or previewed."""
        found = []
        for node_out in entry.get("outputs", {}).values():
            for img in node_out.get("images", []):
                query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                                "type": img.get("type", "output")})
                found.append((img["filename"], self.get_bytes(f"/view?{query}")))
        return found


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the PNG bytes a server saved (from /view), read from its header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def cached_nodes(entry: dict) -> list[str]:
    """The node ids a finished prompt took from the server's cache (its execution_cached message)."""
    return [node for kind, data in entry["status"].get("messages", []) if kind == "execution_cached"
            for node in data.get("nodes", [])]


def execution_error(entry: dict) -> str:
    """The exception message of a failed prompt's history entry, or ''."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message', '').strip()}"
    return ""


# --- UI-format workflows ----------------------------------------------------------------------------------
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_MUTED, MODE_BYPASSED = 2, 4


def _input_order(info: dict) -> list[tuple[str, Any, dict]]:
    """(name, type, options) of a node's inputs in the order the frontend lays out widgets."""
    spec = info.get("input", {})
    order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
    result = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            entry = spec.get(section, {}).get(name)
            if entry is None:
                continue
            typ = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            result.append((name, typ, opts))
    return result


def _is_widget(typ: Any) -> bool:
    return isinstance(typ, list) or typ in WIDGET_TYPES


def _extra_widget_values(name: str, typ: Any, opts: dict) -> int:
    """Values the frontend stores after a widget's own: seed 'control after generate', image upload."""
    extra = 0
    if typ == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed")):
        extra += 1
    if opts.get("image_upload") or opts.get("video_upload"):
        extra += 1
    return extra


class Graph(dict):
    """An API graph under construction: ``add`` returns the new node's id, ``out(id, slot)`` a link to it."""

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self) + 1)
        self[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    @staticmethod
    def out(node_id: str, slot: int = 0) -> list:
        return [node_id, slot]


def workflow_to_api(workflow: dict, object_info: dict,
                    overrides: dict[str, dict[str, Any]] | Callable[[str, str, dict], None] | None = None) -> dict:
    """Convert a UI-format workflow (``nodes`` + ``links``) to the API format ``/prompt`` takes.

    ``overrides`` maps a class_type (or ``"*"`` for every node) to input values to force, e.g.
    ``{"*": {"steps": 2}}``, or is a callable ``(node_id, class_type, inputs)`` that edits inputs in place.
    Muted nodes are dropped; bypassed nodes pass their first input of a matching type through.
    """
    nodes = {str(n["id"]): n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow.get("links", [])}  # id -> [id, from, from_slot, to, to_slot, type]

    def source(link_id: int) -> list | None:
        """Follow a link back through reroutes and bypassed nodes to a real output: [node_id, slot]."""
        link = links.get(link_id)
        while link is not None:
            origin = nodes.get(str(link[1]))
            if origin is None:
                return None
            if origin["type"] == "Reroute" or origin.get("mode") == MODE_BYPASSED:
                wanted = link[5]
                nxt = None
                for inp in origin.get("inputs", []):
                    if inp.get("link") is not None and (origin["type"] == "Reroute" or inp.get("type") == wanted):
                        nxt = links.get(inp["link"])
                        break
                link = nxt
                continue
            if origin.get("mode") == MODE_MUTED:
                return None
            return [str(link[1]), link[2]]
        return None

    prompt = {}
    for node_id, node in nodes.items():
        class_type = node["type"]
        if class_type in FRONTEND_ONLY or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        info = object_info.get(class_type)
        if info is None:
            raise ServerError(f"workflow node {node_id} is of type {class_type!r}, which this server does not have")
        widget_values = node.get("widgets_values", [])
        if isinstance(widget_values, dict):  # some frontends save a name -> value map
            inputs = dict(widget_values)
        else:
            inputs, i = {}, 0
            for name, typ, opts in _input_order(info):
                if not _is_widget(typ) and not opts.get("forceInput"):
                    continue
                if opts.get("forceInput"):
                    continue
                if i < len(widget_values):
                    inputs[name] = widget_values[i]
                i += 1 + _extra_widget_values(name, typ, opts)
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                src = source(inp["link"])
                if src is not None:
                    inputs[inp["name"]] = src
                else:
                    inputs.pop(inp["name"], None)
        if callable(overrides):
            overrides(node_id, class_type, inputs)
        elif overrides:
            for key in ("*", class_type):
                for name, value in overrides.get(key, {}).items():
                    if key == class_type or name in inputs:
                        inputs[name] = value
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return prompt


def load_workflow(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)
