"""The end-to-end harness against a real ComfyUI server: start-up, pack import, a core-only graph."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from harness.comfy_server import ServerError, cached_nodes, png_size, workflow_to_api

pytestmark = pytest.mark.e2e


def core_graph(ckpt_name: str, size: int = 128, steps: int = 2, seed: int = 1) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                  "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": 5.0,
                                                  "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "e2e_core"}},
    }



def test_pack_imported_without_failure(comfy_server):
    status = comfy_server.pack_import_status()
    assert status, "the start-up log has no import line for the pack:\n" + comfy_server.log_tail()
    assert "IMPORT FAILED" not in status
    assert f"Cannot import" not in comfy_server.log_text() or "megapixel" not in comfy_server.log_text().split(
        "Cannot import")[-1].splitlines()[0]


def test_core_graph_runs_on_random_checkpoint(comfy_server, random_checkpoint):
    entry = comfy_server.run(core_graph(random_checkpoint.name))
    images = comfy_server.images(entry)
    assert len(images) == 1
    assert png_size(images[0][1]) == (128, 128)


def test_freeing_a_server_drops_its_models(comfy_server, random_checkpoint):
    """What keeps two servers' full-size models from being resident at once in the suites that start their own: a
    freed server drops its cached models (it loads them again for the next prompt) and holds no second copy after.

    How much of the freed memory the process gives back to the system is the C allocator's choice (the CI run gave
    back 1.25 of 5.12 GB, a quiet run more), so the memory bound is on the reload: a server that kept the old
    models while loading new ones would grow by a whole U-Net (3.4 GB in float32)."""
    import psutil

    from harness.comfy_server import ComfyServer

    graph = core_graph(random_checkpoint.name, size=64, steps=1, seed=2)
    comfy_server.run(graph)
    assert "1" in cached_nodes(comfy_server.run(graph)), "the same graph twice should come from the cache"
    process = psutil.Process(comfy_server._proc.pid)
    loaded = process.memory_info().rss
    ComfyServer.free_all_memory()
    # The server frees between prompts; the first prompt queued after /free may run before it does, the second not.
    reloaded = [("1" not in cached_nodes(comfy_server.run(graph))) for _ in range(2)]
    assert any(reloaded), "after /free the checkpoint loader still came from the cache: the server kept its models"
    grown = process.memory_info().rss - loaded
    assert grown < 1.0e9, f"the server grew by {grown / 1e9:.2f} GB reloading its freed models: it kept the old ones"


def test_bad_graph_is_refused_with_the_servers_message(comfy_server):
    graph = core_graph("no-such-checkpoint.safetensors")
    with pytest.raises(ServerError, match="ckpt_name"):
        comfy_server.queue(graph)


def test_ui_workflow_converts_to_the_same_api_graph(comfy_server, random_checkpoint):
    """A UI-format workflow (as the browser saves it) converts to an API graph the server runs."""
    info = comfy_server.object_info()
    api = core_graph(random_checkpoint.name)
    ui = api_to_ui(api, info)
    converted = workflow_to_api(ui, info, overrides={"*": {"steps": 1}})
    expected = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in api.items()}
    expected["5"]["inputs"]["steps"] = 1
    assert converted == expected
    entry = comfy_server.run(converted)
    assert len(comfy_server.images(entry)) == 1


def api_to_ui(api: dict, info: dict) -> dict:
    """Build the UI format the frontend saves for an API graph (widgets_values in widget order, links)."""
    from harness.comfy_server import _extra_widget_values, _input_order, _is_widget

    nodes, links = [], []
    for node_id, node in api.items():
        widgets, inputs = [], []
        for name, typ, opts in _input_order(info[node["class_type"]]):
            value = node["inputs"].get(name)
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), typ])
                inputs.append({"name": name, "type": typ, "link": link_id})
            elif _is_widget(typ):
                widgets.append(value)
                widgets.extend(["fixed"] * _extra_widget_values(name, typ, opts))
        nodes.append({"id": int(node_id), "type": node["class_type"], "mode": 0, "inputs": inputs,
                      "widgets_values": widgets})
    return {"nodes": nodes, "links": links, "version": 0.4}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death guard is Linux only")
def test_server_dies_with_the_process_that_started_it(host, tmp_path):
    """A test run killed from outside (CI timeout, Ctrl-C twice, OOM killer) must not leave its server running."""
    import psutil

    driver = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / "tools")!r})
from harness.comfy_server import ComfyServer
from harness.host import locate_host
server = ComfyServer(locate_host(), base_dir=__import__("pathlib").Path({str(tmp_path)!r})).start()
print(server._proc.pid, flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        server = psutil.Process(pid)
        assert "main.py" in server.cmdline(), server.cmdline()  # the guard exec'd ComfyUI in place
    finally:
        proc.kill()
        proc.wait()
    try:
        server.wait(timeout=60)
    except psutil.TimeoutExpired:
        server.kill()
        pytest.fail("the ComfyUI server outlived the process that started it")
