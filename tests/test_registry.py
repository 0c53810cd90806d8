"""Ready for the Comfy Registry: metadata the registry reads, what comfy-cli checks, and what the pack's code may do.

tests/test_foundation.py already checks that pyproject.toml parses with ComfyUI's ``comfy_config`` (name, display
name, publisher, requires-comfyui, no host dependencies).  Here: the fields the registry reads beyond those,
``comfy node validate`` from comfy-cli when one is provisioned (``tools/harness/host.py``), and a scan of the files the
pack ships for network calls, ``eval``/``exec`` and pickle loading.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfy_config.config_parser import extract_node_configuration
from comfy_config.types import URLs

PACK_DIR = Path(__file__).resolve().parent.parent
# What the pack ships and ComfyUI imports (tests/ and tools/ are development-only).
SHIPPED = ["__init__.py", "nodes", "patches", "samplers"]


@pytest.fixture(scope="module")
def config():
    return extract_node_configuration(str(PACK_DIR))


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((PACK_DIR / "pyproject.toml").read_text())


# --- metadata --------------------------------------------------------------------------------------------
def test_every_project_url_is_one_the_registry_reads(config):
    urls = _pyproject()["project"].get("urls", {})
    known = {field.alias for field in URLs.model_fields.values()}
    unknown = sorted(set(urls) - known)
    assert not unknown, f"[project.urls] keys the registry ignores: {unknown}; it reads {sorted(known)}"
    assert re.match(r"^https://", config.project.urls.repository), "the registry needs a Repository URL"


def test_version_and_requirements_have_the_registry_formats(config):
    assert re.fullmatch(r"\d+\.\d+\.\d+", config.project.version), config.project.version
    # comfy-cli's validate_version pattern: [operator]major.minor.patch[-suffix], comma-separated
    part = r"(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?"
    for piece in config.project.supported_comfyui_version.split(","):
        assert re.fullmatch(part, piece.strip()), config.project.supported_comfyui_version


def test_names_have_the_registry_formats(config):
    name = config.project.name
    assert re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", name) and len(name) <= 100, name
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", config.tool_comfy.publisher_id), config.tool_comfy.publisher_id
    assert config.project.description.strip()
    icon = config.tool_comfy.icon
    assert icon == "" or icon.startswith("https://"), icon


def test_license_and_classifiers_are_understood(config):
    assert config.project.license.text or (PACK_DIR / config.project.license.file).is_file()
    classifiers = _pyproject()["project"].get("classifiers", [])
    if any(c.startswith("Operating System :: ") for c in classifiers):
        assert config.project.supported_os, f"the registry rejects these OS classifiers: {classifiers}"
    if any(c.startswith("Environment ::") for c in classifiers):
        assert config.project.supported_accelerators, f"the registry rejects these classifiers: {classifiers}"
    for include in config.tool_comfy.includes:
        assert (PACK_DIR / include).exists(), f"[tool.comfy] includes {include!r}, which does not exist"


def comfyignore_prefixes() -> list[str]:
    """The folders .comfyignore keeps out of the registry archive (only plain 'folder/' lines are used)."""
    lines = [l.strip() for l in (PACK_DIR / ".comfyignore").read_text().splitlines()]
    prefixes = [l for l in lines if l and not l.startswith("#")]
    assert all(p.endswith("/") and not any(c in p for c in "*?[!") for p in prefixes), prefixes
    return prefixes


def test_no_weights_or_large_files_are_packed():
    """The registry packs git-tracked files less .comfyignore: no checkpoints, pickles or large blobs among them.
    (The quality lab's weights are tracked for developers, under tools/lab/, which .comfyignore leaves out.)"""
    if shutil.which("git") is None or not (PACK_DIR / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PACK_DIR, capture_output=True, check=True).stdout
    ignored = comfyignore_prefixes()
    assert {"tools/lab/", "tools/", "tests/"} <= set(ignored)  # development only
    shipped = ("nodes/", "patches/", "samplers/", "web/", "workflows/", "docs/", "__init__.py")
    assert not [p for p in ignored if any(s.startswith(p) for s in shipped)], ignored  # what a user runs stays
    bad = []
    for name in filter(None, files.decode().split("\0")):
        if any(name.startswith(prefix) for prefix in ignored):
            continue
        path = PACK_DIR / name
        if re.search(r"\.(safetensors|ckpt|pt|pth|bin|pkl|pickle|npy|npz|onnx|gguf)$", name):
            bad.append(f"{name}: model or pickle file")
        elif path.is_file() and path.stat().st_size > 2_000_000:
            bad.append(f"{name}: {path.stat().st_size / 1e6:.1f} MB")
    assert not bad, bad


# --- comfy-cli -----------------------------------------------------------------------------------------------
def _comfy_cli() -> Path | None:
    from harness.host import comfy_cli_path  # noqa: PLC0415 (tools/ is on sys.path via conftest)

    return comfy_cli_path()


def test_comfy_node_validate_passes_offline(tmp_path):
    """comfy-cli's own publishing check (config + ruff's exec/eval/one-line-statement rules), with no network."""
    cli = _comfy_cli()
    if cli is None:
        pytest.skip("comfy-cli is not provisioned (tools/harness/host.py ensure_comfy_cli; MEGAPIXEL_NO_COMFY_CLI set?)")
    cmd = [str(cli), "--skip-prompt", "node", "validate"]
    if os.geteuid() == 0 and shutil.which("unshare"):
        cmd = ["unshare", "-n", *cmd]  # no network at all: proves it works offline
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), NO_COLOR="1",
               COLUMNS="200", RUFF_CACHE_DIR=str(tmp_path / "ruff-cache"))  # nothing written into the pack
    result = subprocess.run(cmd, cwd=PACK_DIR, env=env, capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "All validation checks passed" in out, out
    assert not re.search(r"warning|error", out, re.I), out


# --- what the shipped code may do ------------------------------------------------------------------------
NETWORK_MODULES = {"urllib", "urllib2", "urllib3", "requests", "http", "httpx", "aiohttp", "socket", "websocket",
                   "websockets", "ftplib", "smtplib", "telnetlib", "huggingface_hub", "paramiko"}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "shelve", "joblib", "marshal"}
PROCESS_MODULES = {"subprocess"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__", "compile"}
DOWNLOAD_CALLS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "from_pretrained",
                  "load_state_dict_from_url", "download_url_to_file", "system", "popen"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(source: str, path: str) -> list[Finding]:
    """Network use, eval/exec, pickle loading and process spawning in one Python source file."""
    found: list[Finding] = []
    tree = ast.parse(source, filename=path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                root = name.split(".")[0]
                if root in NETWORK_MODULES:
                    found.append(Finding(path, node.lineno, f"imports {name} (network)"))
                elif root in PICKLE_MODULES:
                    found.append(Finding(path, node.lineno, f"imports {name} (pickle)"))
                elif root in PROCESS_MODULES:
                    found.append(Finding(path, node.lineno, f"imports {name} (spawns processes)"))
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "numpy"):
                for alias in node.names:
                    if alias.name == "load":
                        found.append(Finding(path, node.lineno, f"imports {node.module}.load by name (unchecked)"))
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if name in FORBIDDEN_CALLS:
                found.append(Finding(path, node.lineno, f"calls {name}()"))
            elif last in DOWNLOAD_CALLS and (last not in ("system", "popen") or name.startswith("os.")):
                found.append(Finding(path, node.lineno, f"calls {name}() (network or processes)"))
            elif name == "torch.load" or name.endswith(".torch.load"):
                if not _is_true(_keyword(node, "weights_only")):
                    found.append(Finding(path, node.lineno, f"calls {name}() without weights_only=True (pickle)"))
            elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not None \
                    and not (isinstance(_keyword(node, "allow_pickle"), ast.Constant)
                             and _keyword(node, "allow_pickle").value is False):
                found.append(Finding(path, node.lineno, f"calls {name}() with allow_pickle (pickle)"))
            elif name.startswith("torch.hub."):
                found.append(Finding(path, node.lineno, f"calls {name}() (downloads)"))
            elif last in ("load", "loads", "Unpickler") and name.split(".")[0] in PICKLE_MODULES:
                found.append(Finding(path, node.lineno, f"calls {name}() (pickle)"))
    return found


def shipped_files() -> list[Path]:
    files = []
    for entry in SHIPPED:
        path = PACK_DIR / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_scanner_finds_what_it_looks_for():
    """The scan below can fail: every pattern it forbids is found in a planted sample."""
    sample = "\n".join([
        "import urllib.request", "from requests import get", "import socket", "import aiohttp", "import http.client",
        "import pickle", "import subprocess", "eval('1')", "exec('x = 1')", "torch.load(path)",
        "torch.load(path, weights_only=False)", "np.load(path, allow_pickle=True)", "pickle.loads(b'')",
        "torch.hub.load('a', 'b')", "urlopen('http://x')", "os.system('curl x')",
        "x.from_pretrained('repo')",
    ])
    found = scan_source(sample, "sample.py")
    lines = {f.line for f in found}
    assert lines == set(range(1, 18)), "\n".join(map(str, found))
    clean = "\n".join(["import torch", "torch.load(path, weights_only=True)", "np.load(path)",
                       "model.eval()", "node.execute()", "'see https://arxiv.org/abs/2406.02507'"])
    assert scan_source(clean, "clean.py") == []


def test_shipped_code_makes_no_network_calls_eval_exec_or_pickle_loads():
    files = shipped_files()
    assert any(f.name == "__init__.py" for f in files)
    findings = []
    for path in files:
        findings += scan_source(path.read_text(), str(path.relative_to(PACK_DIR)))
    assert not findings, "the pack's shipped files must not do this:\n" + "\n".join(map(str, findings))
