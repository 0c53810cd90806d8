"""Interrupt and soak through the real server: POST /interrupt in the middle of sampling, then many mixed prompts in
a row; afterwards good prompts give exactly a fresh server's pixels, the server's resident memory has not grown by
10% or more after warm-up, and the loaded models carry nothing a prompt left behind.

The server is the one the hostile-input suite ran on (conftest's ``hostile_server``), so the fresh-server checks cover
what those cases left behind as well.  "Nothing left behind" is checked from inside the server by a test-only probe
node (installed in that test server, never shipped): it reports the loader's ModelPatcher state (model_options,
patches, object patches, wrappers, callbacks, additional models) and the U-Net's structure (conv strides, paddings
and dilations, forward hooks, instance-level forward overrides), which must match what the freshly loaded model
showed.

Tiny sizes (64-128 px) and 1-2 steps keep it to a few minutes on CPU.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from typing import Callable

import psutil
import pytest

from harness.comfy_server import ComfyServer, ServerError, execution_error
from test_hostile_inputs import (AG, DYPE, HD, RELAY, Graph, Models, autoguidance, base, dype, ksampler, patched, relay,
                                 still_serving)

pytestmark = pytest.mark.e2e

SOAK_PROMPTS = 30
MAX_RSS_GROWTH = 0.10

PROBE_NODE = "MegapixelSoakProbe"
PROBE_SOURCE = r'''
"""Test-only probe (tests/test_soak.py): what a MODEL carries, as JSON in the prompt's UI output."""
import hashlib
import json

import torch


def _describe(value, depth=0):
    if depth > 6:
        return "..."
    if isinstance(value, dict):
        return {str(k): _describe(v, depth + 1) for k, v in value.items() if v not in ({}, [], None)}
    if isinstance(value, (list, tuple)):
        return [_describe(v, depth + 1) for v in value]
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return type(value).__name__


def _structure(module):
    lines = []
    for name, m in module.named_modules():
        line = [name, type(m).__name__]
        if isinstance(m, torch.nn.Conv2d):
            line += [m.stride, m.padding, m.dilation]
        if m._forward_hooks or m._forward_pre_hooks:
            line.append(f"hooks {len(m._forward_hooks)}/{len(m._forward_pre_hooks)}")
        if "forward" in m.__dict__:
            line.append("forward overridden")
        lines.append(repr(line))
    return lines


class MegapixelSoakProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "nonce": ("INT", {"default": 0, "min": 0, "max": 2**31})},
                "optional": {"after": ("LATENT",)}}

    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def probe(self, model, nonce, after=None):
        lines = _structure(model.model.diffusion_model)
        irregular = [l for l in lines if "hooks" in l or "overridden" in l]
        report = {
            "model_options": _describe(model.model_options),
            "weight_patches": len(model.patches),
            "object_patches": sorted(model.object_patches),
            "additional_models": {k: len(v) for k, v in model.additional_models.items() if v},
            "callbacks": _describe(model.callbacks),
            "wrappers": _describe(model.wrappers),
            "injections": sorted(model.injections),
            "attachments": sorted(model.attachments),
            "hook_patches": len(model.hook_patches),
            "model_sampling": type(model.model.model_sampling).__name__,
            "structure_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
            "convs": [l for l in lines if "Conv2d" in l],
            "irregular": irregular,
        }
        return {"ui": {"text": [json.dumps(report)]}}


NODE_CLASS_MAPPINGS = {"MegapixelSoakProbe": MegapixelSoakProbe}
'''


# --- progress over the websocket ---------------------------------------------------------------------------------
class ProgressWatcher:
    """Listens on the server's websocket (as the frontend does) and records each prompt's sampling progress."""

    def __init__(self, server: ComfyServer):
        self.url = server.url.replace("http://", "ws://") + f"/ws?clientId={server.client_id}"
        self.progress: dict[str, tuple[int, int]] = {}
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._listen(),), daemon=True)
        self._thread.start()
        if not self._connected.wait(30):
            raise RuntimeError(f"could not connect to {self.url}")

    async def _listen(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url, heartbeat=30) as ws:
                self._ws = ws
                self._connected.set()
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(message.data)
                    if data.get("type") == "progress":
                        body = data["data"]
                        with self._changed:
                            self.progress[body.get("prompt_id")] = (body["value"], body["max"])
                            self._changed.notify_all()

    def wait_for(self, prompt_id: str, at_least: int, timeout: float = 300) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.progress.get(prompt_id, (0, 0))[0] < at_least:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prompt {prompt_id} did not reach step {at_least}: {self.progress}")
                self._changed.wait(left)
            return self.progress[prompt_id]

    def close(self) -> None:
        if getattr(self, "_ws", None) is not None:
            asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop)
        self._thread.join(10)


# --- fixtures ----------------------------------------------------------------------------------------------------
def probe(server: ComfyServer, models: Models, nonce: int, after_sampling: bool = False) -> dict:
    """The probe's report on the main checkpoint's loader output (after a plain KSampler run, if asked)."""
    if after_sampling:
        g = ksampler(base(models), seed=10_000 + nonce)
        sampled = next(k for k, v in g.items() if v["class_type"] == "KSampler")
        g.add(PROBE_NODE, model=["1", 0], nonce=nonce, after=[sampled, 0])
    else:
        g = Graph()
        loader = g.add("CheckpointLoaderSimple", ckpt_name=models.main)
        g.add(PROBE_NODE, model=g.out(loader), nonce=nonce)
    entry = server.run(g, timeout=600)
    texts = [t for out in entry["outputs"].values() for t in out.get("text", [])]
    assert len(texts) == 1, entry["outputs"]
    return json.loads(texts[0])


@pytest.fixture(scope="module")
def soak(hostile_server):
    """The server the hostile-input suite ran on (conftest's ``hostile_server``): its fresh probe and reference were
    taken before any prompt, so whatever the hostile cases left behind counts against the soak's checks too."""
    _node_types.update(hostile_server.node_types)
    return hostile_server


def rss(server: ComfyServer) -> int:
    return psutil.Process(server._proc.pid).memory_info().rss


# --- interrupt ---------------------------------------------------------------------------------------------------
def long_core(m: Models) -> Graph:
    return ksampler(base(m, width=64, height=64), seed=4242, steps=400)


def with_steps(g: Graph, class_type: str, steps: int) -> Graph:
    """``g`` with the steps of its ``class_type`` node set to ``steps``."""
    for node in g.values():
        if node["class_type"] == class_type:
            node["inputs"]["steps"] = steps
    return g


def long_autoguidance(m: Models) -> Graph:
    return with_steps(autoguidance(m, seed=4243), "BasicScheduler", 400)


def long_patched(m: Models) -> Graph:
    return with_steps(patched(m, seed=4244), "KSampler", 400)


def long_dype(m: Models) -> Graph:
    return with_steps(dype(m, seed=4246, width=256, height=256), "BasicScheduler", 400)


RELAY_FIRST_STAGE_STEPS = 5


def long_relay(m: Models) -> Graph:
    """A relay whose first stage is short, so the interrupt lands in the second stage, after a relay boundary."""
    return relay(m, seed=4245, steps=400, step_split=f"{RELAY_FIRST_STAGE_STEPS}, {400 - RELAY_FIRST_STAGE_STEPS}",
                 model="hidiffusion" if HD in _node_types else "main")


_node_types: set[str] = set()

# (name, graph, node type it needs, step to reach before the interrupt)
INTERRUPTS: list[tuple[str, Callable[[Models], Graph], str, int]] = [
    ("core-ksampler", long_core, "", 3),
    ("autoguidance", long_autoguidance, AG, 3),
    ("hidiffusion-patched-sampling", long_patched, HD, 3),
    ("relay-second-stage", long_relay, RELAY, RELAY_FIRST_STAGE_STEPS + 3),
    ("dype", long_dype, DYPE, 3),
]


@pytest.mark.parametrize("name, build, needs, at_step", INTERRUPTS, ids=[i[0] for i in INTERRUPTS])
def test_interrupt_in_the_middle_of_sampling(name, build, needs, at_step, soak):
    if needs and needs not in soak.node_types:
        pytest.skip(f"{needs} is not in the pack yet")
    server = soak.server
    watcher = ProgressWatcher(server)
    try:
        prompt_id = server.queue(build(soak.models))
        watcher.wait_for(prompt_id, at_least=at_step, timeout=900)
        server.interrupt()
        entry = server.wait(prompt_id, timeout=300)
    finally:
        watcher.close()
    kinds = [kind for kind, _ in entry["status"].get("messages", [])]
    assert "execution_interrupted" in kinds, (kinds, execution_error(entry))
    last, total = watcher.progress[prompt_id]
    assert at_step <= last < total, f"{name}: interrupted at step {last} of {total}: not in the middle"
    still_serving(server)


# --- soak --------------------------------------------------------------------------------------------------------
def mixed_prompts(m: Models, node_types: set[str]) -> list[tuple[str, Callable[[int], Graph], str]]:
    """(kind, graph for a seed, expected outcome: 'ok' | 'error' | 'refused') for every kind the pack can run."""
    kinds = [
        ("core", lambda seed: ksampler(base(m, width=64 + 32 * (seed % 3), height=64), seed=seed), "ok"),
        ("core-batch-2", lambda seed: ksampler(base(m, batch=2), seed=seed, steps=2), "ok"),
        ("core-refused", lambda seed: ksampler(base(m), seed=seed, steps=0), "refused"),
    ]
    if HD in node_types:
        kinds += [
            ("hidiffusion", lambda seed: patched(m, seed=seed, width=128, height=64 + 32 * (seed % 3)), "ok"),
            ("hidiffusion-wrong-family", lambda seed: patched(m, seed=seed, model="sd3"), "error"),
        ]
    if RELAY in node_types:
        kinds += [
            ("relay", lambda seed: relay(m, seed=seed, width=64, height=64 + 32 * (seed % 2)), "ok"),
            ("relay-refused", lambda seed: relay(m, seed=seed, stages="1, 0.5"), "refused"),
        ]
    if AG in node_types:
        kinds += [
            ("autoguidance", lambda seed: autoguidance(m, seed=seed, width=64, height=64 + 32 * (seed % 3)), "ok"),
            ("autoguidance-same-model", lambda seed: autoguidance(m, weak="same-output", seed=seed), "error"),
            ("autoguidance-other-latent-space", lambda seed: autoguidance(m, weak="sd3", seed=seed), "error"),
        ]
    if DYPE in node_types:
        kinds += [
            ("dype", lambda seed: dype(m, seed=seed, width=256, height=128 + 64 * (seed % 3)), "ok"),
            ("dype-on-a-u-net", lambda seed: dype(m, model="sd15", seed=seed), "error"),
        ]
    return kinds


def run_mixed(server: ComfyServer, kind: str, build: Callable[[int], Graph], expect: str, seed: int) -> None:
    graph = build(seed)
    if expect == "refused":
        with pytest.raises(ServerError):
            server.queue(graph)
        return
    entry = server.wait(server.queue(graph), timeout=600)
    status = entry["status"].get("status_str")
    assert status == ("success" if expect == "ok" else "error"), f"{kind} (seed {seed}): {execution_error(entry)}"


def test_soak_mixed_prompts(soak):
    server, kinds = soak.server, mixed_prompts(soak.models, soak.node_types)
    # Warm-up: every kind once, at its largest size, so every model is loaded and allocator pools are warm.
    for i, (kind, build, expect) in enumerate(kinds):
        run_mixed(server, kind, build, expect, seed=2 + 3 * i)
    before = rss(server)
    order = random.Random(0).choices(range(len(kinds)), k=SOAK_PROMPTS)
    started = time.monotonic()
    for n, index in enumerate(order):
        kind, build, expect = kinds[index]
        run_mixed(server, kind, build, expect, seed=100 + n)
    took = time.monotonic() - started
    after = rss(server)
    growth = after / before - 1
    print(f"soak: {SOAK_PROMPTS} prompts of {[k for k, _, _ in kinds]} in {took:.0f}s; "
          f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB ({growth:+.1%})")
    still_serving(server)
    assert growth < MAX_RSS_GROWTH, f"resident memory grew {growth:.1%} over {SOAK_PROMPTS} prompts"

    # Nothing left behind: the loader's model as freshly loaded, the U-Net's modules as built, after a plain run.
    now = probe(server, soak.models, nonce=2, after_sampling=True)
    assert not now["irregular"], now["irregular"]
    assert now == soak.fresh_probe, json.dumps({"fresh": soak.fresh_probe, "after soak": now}, indent=1)[:6000]

    soak.reference.assert_unchanged("after the interrupts and the soak")  # one comparison covers both: what an
    # interrupt left behind would still be there
