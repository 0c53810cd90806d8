"""Workflows as users meet them: dropped into the real ComfyUI frontend in headless Chromium, queued, finished.

Every file in ``workflows/`` is loaded through the frontend's own drop handler (the path a user's drag-and-drop
takes), must load without a missing-node dialog or card or a validation warning (a checkpoint the server lacks
is the user's to pick: newer frontends mark its loader until one is picked), has its steps and sizes lowered through
the graph's widgets (so a run takes seconds on CPU), is queued with the Queue button and must finish; a screenshot
of the page is kept under ``.host/artifacts/browser/`` (or ``$MEGAPIXEL_ARTIFACTS/browser/``).  A core-only
workflow written here runs the same way, so the machinery is proven even before (and independently of) the
shipped ones.

Needs Debian's chromium at /usr/bin/chromium and PyPI playwright; ``tools/run_tests.py`` installs chromium when
it runs as root with apt-get.  Elsewhere the tests skip with the reason; where it could have been installed (root
with apt-get, as in CI) or under ``CI``, a missing browser is a failure.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest

from harness import browser
from generate import workflows as make_workflows
from harness.comfy_server import load_workflow, workflow_to_api

pytestmark = pytest.mark.e2e

PACK_DIR = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((PACK_DIR / "workflows").glob("*.json"))
ARTIFACTS = Path(os.environ.get("MEGAPIXEL_ARTIFACTS", PACK_DIR / ".host" / "artifacts")) / "browser"
CHECKPOINT_LOADERS = {"CheckpointLoaderSimple": "ckpt_name"}

# Widget edits that make a shipped workflow quick on CPU, made in the page as a user would make them:
# {node type or "*": {widget: value | {"max": n}}}; "__size__" scales a node's width/height pair down so its
# longer side is at most max_side (keeping the aspect ratio, multiples of `multiple`).  Nodes of the pack get
# their own rows here as they land (stage lists, target sizes).
BROWSER_EDITS: dict[str, dict] = {
    "*": {"steps": {"max": 2}, "batch_size": {"max": 1}, "__size__": {"max_side": 128, "multiple": 64}},
}


RELAY_NODES = {"MegapixelRelayKSampler": "steps", "MegapixelRelaySamplerCustom": None}
_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


def relay_edits(nodes: list[dict]) -> list[tuple[int, str, object]]:
    """What a user would change on relay nodes to match the lowered sizes: stage sizes in pixels scaled like the
    first stage (which must equal the latent's size), and enough steps for every stage."""
    latents = [n for n in nodes if n["type"] == "EmptyLatentImage"]
    widget = lambda node, name: next((w["value"] for w in node["widgets"] if w["name"] == name), None)  # noqa: E731
    edits = []
    for node in nodes:
        if node["type"] not in RELAY_NODES:
            continue
        stages = widget(node, "stages")
        parts = [p for p in str(stages).split(",") if p.strip()]
        sizes = [_SIZE.match(p) for p in parts]
        if latents and parts and all(sizes):
            width, height = widget(latents[0], "width"), widget(latents[0], "height")
            k = width / int(sizes[0].group(1))
            scaled = [(max(8, round(int(m.group(1)) * k / 8) * 8), max(8, round(int(m.group(2)) * k / 8) * 8))
                      for m in sizes]
            scaled[0] = (width, height)
            edits.append((node["id"], "stages", ", ".join(f"{w}x{h}" for w, h in scaled)))
        steps = len(parts) + 1  # the default split's fewest: every later stage one step, the first two
        if RELAY_NODES[node["type"]]:
            edits.append((node["id"], RELAY_NODES[node["type"]], steps))
        else:  # the custom relay takes its schedule from a BasicScheduler
            edits += [(n["id"], "steps", steps) for n in nodes if n["type"] == "BasicScheduler"]
    return edits


def quick(page: browser.ComfyPage) -> list[str]:
    """Lower steps and sizes in the page (BROWSER_EDITS, then the relay nodes' stages and steps)."""
    changed = page.set_widgets(BROWSER_EDITS)
    for node_id, name, value in relay_edits(page.graph_nodes()):
        page.set_widget(node_id, name, value)
        changed.append(f"{node_id}.{name} -> {value!r}")
    return changed


def _reason_to_skip() -> str:
    """Why the browser cannot run here, or ''.  Where tools/run_tests.py could have installed it (root with
    apt-get: CI) or under CI, a missing browser is a failure, not a skip."""
    reason = browser.why_no_browser()
    if reason and (os.environ.get("CI") or browser.can_install_chromium()):
        pytest.fail(f"the browser test must run here: {reason}")
    return reason


@pytest.fixture(scope="module")
def session():
    reason = _reason_to_skip()
    if reason:
        pytest.skip(reason)
    with browser.BrowserSession() as s:
        yield s


@pytest.fixture
def page(session, comfy_server):
    p = session.open(comfy_server.url)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


def core_workflow(object_info: dict, ckpt_name: str) -> dict:
    """A core-only text-to-image workflow in UI format, at full size and 20 steps as a user would save it."""
    api = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                  "latent_image": ["5", 0], "seed": 42, "steps": 20, "cfg": 7.0,
                                                  "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "browser_core"}},
    }
    return browser.api_to_ui_workflow(api, object_info)


def _cases() -> list:
    cases = [pytest.param(None, id="core-txt2img")]
    cases += [pytest.param(path, id=path.stem) for path in WORKFLOWS]
    return cases


def _checkpoint_names(object_info: dict) -> list[str]:
    spec = object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    return list(spec[1]["options"] if len(spec) > 1 and "options" in spec[1] else spec[0])


def _pick_checkpoints(page: browser.ComfyPage, workflow: dict, available: list[str], main: str) -> None:
    """As a user would: the first loader gets the main checkpoint, any further one another checkpoint if the
    server has one (autoguidance's weak model), in the loader's combo."""
    others = [name for name in available if name != main] or [main]
    loaders = sorted((n for n in workflow["nodes"] if n["type"] in CHECKPOINT_LOADERS), key=lambda n: n["id"])
    for i, node in enumerate(loaders):
        page.set_widget(node["id"], CHECKPOINT_LOADERS[node["type"]], main if i == 0 else others[(i - 1) % len(others)])


# Loader -> its model-file widgets (in widget order): where a saved workflow names a user's own model files.
MODEL_LOADERS = {"CheckpointLoaderSimple": ("ckpt_name",), "UNETLoader": ("unet_name",), "VAELoader": ("vae_name",),
                 "DualCLIPLoader": ("clip_name1", "clip_name2")}


def _loaders_without_their_checkpoint(workflow: dict, object_info: dict) -> dict[int, list[str]]:
    """The loaders whose saved model files this server does not have (a user's own model, e.g.
    v1-5-pruned-emaonly, flux1-dev): node id -> those files."""
    missing = {}
    for node in workflow["nodes"]:
        widgets = MODEL_LOADERS.get(node["type"])
        if not widgets:
            continue
        values = node.get("widgets_values") or []
        required = object_info[node["type"]]["input"]["required"]
        for i, widget in enumerate(widgets):
            saved = values.get(widget) if isinstance(values, dict) else (values[i] if i < len(values) else None)
            spec = required[widget]
            options = spec[1]["options"] if len(spec) > 1 and "options" in spec[1] else spec[0]
            if saved not in options:
                missing.setdefault(int(node["id"]), []).append(str(saved))
    return missing


_MARKED = re.compile(r"^node (\d+) \(([^)]*)\) is marked with errors$")
_ERROR_COUNT = re.compile(r"^card: (\d+) errors? found\b")


def _unexpected(problems: list[str], missing_loaders: dict[int, list[str]]) -> list[str]:
    """``problems`` less the frontend's notice that those loaders' checkpoints are missing, which is right (the user
    picks one of their own): newer frontends mark such a loader with an error and show a card over the canvas
    ("v1-5-pruned-emaonly.safetensors is missing ... a required model file", or "2 errors found" for as many
    missing checkpoints).  Missing nodes, validation errors and any further error always stay."""
    out = []
    for problem in problems:
        marked = _MARKED.match(problem)
        if marked and int(marked.group(1)) in missing_loaders:
            continue
        if problem.startswith("card: ") and missing_loaders:
            count = _ERROR_COUNT.match(problem)
            if count and int(count.group(1)) <= sum(len(files) for files in missing_loaders.values()):
                continue
            if (re.search(r"missing a required model|required models? (is|are) missing", problem)
                    and any(f"{name} is missing" in problem for files in missing_loaders.values() for name in files)):
                continue
        out.append(problem)
    return out


def _output_nodes(prompt: dict, object_info: dict) -> list[str]:
    return [nid for nid, node in prompt.items() if object_info.get(node["class_type"], {}).get("output_node")]


@pytest.mark.parametrize("workflow_path", _cases())
def test_workflow_runs_from_the_browser(workflow_path, page, comfy_server, object_info, random_checkpoint):
    name = workflow_path.name if workflow_path else "core-txt2img.json"
    workflow = load_workflow(workflow_path) if workflow_path else core_workflow(object_info, "v1-5-pruned-emaonly.safetensors")

    page.drop_workflow(name, workflow)
    available = _checkpoint_names(object_info)
    problems = _unexpected(page.problems(), _loaders_without_their_checkpoint(workflow, object_info))
    assert not problems, f"{name} did not load cleanly in the frontend:\n" + "\n".join(problems)
    if workflow_path and workflow_path.stem in make_workflows.BUILDERS:
        return  # a DiT workflow: no DiT fits this server's loaders; tests/test_dit_workflows.py runs it on stand-ins

    _pick_checkpoints(page, workflow, available, random_checkpoint.name)
    edits = quick(page)
    print(f"{name}: widget edits:\n  " + "\n  ".join(edits or ["(none)"]))

    queued = page.queue()
    assert queued.status == 200 and queued.prompt_id, (
        f"{name}: the server refused the prompt the frontend built ({queued.status}):\n"
        f"{json.dumps(queued.response, indent=1)[:3000]}")
    shot = ARTIFACTS / (Path(name).stem + ".png")
    try:
        entry = comfy_server.wait(queued.prompt_id, timeout=600)
        status = entry["status"]
        assert status.get("status_str") == "success", f"{name} failed:\n{json.dumps(status, indent=1)[:3000]}"
        outputs = _output_nodes(queued.prompt, object_info)
        assert outputs, f"{name} has no output node"
        images = [img for out in entry.get("outputs", {}).values() for img in out.get("images", [])]
        assert images, f"{name} finished without an image: {entry.get('outputs')}"
        assert page.wait_for_outputs(outputs), f"{name}: the page never showed the outputs of {outputs}"
        late = page.problems()
        assert not late, f"{name}: the page shows problems after the run:\n" + "\n".join(late)
    finally:
        page.screenshot(shot)
        print(f"{name}: screenshot {shot}")


@pytest.mark.parametrize("workflow_path", _cases())
def test_harness_converts_workflows_like_the_frontend(workflow_path, page, object_info, random_checkpoint):
    """tools/harness/comfy_server.workflow_to_api (which every other e2e test relies on) gives exactly the API graph the
    frontend itself builds from the same workflow (app.graphToPrompt, what the Queue button sends)."""
    name = workflow_path.name if workflow_path else "core-txt2img.json"
    workflow = load_workflow(workflow_path) if workflow_path else core_workflow(object_info, random_checkpoint.name)
    page.drop_workflow(name, workflow)
    quick(page)
    built = page.page.evaluate("async () => { const p = await app.graphToPrompt();"
                               " return {output: p.output, workflow: p.workflow}; }")
    frontend = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in built["output"].items()}
    ours = workflow_to_api(copy.deepcopy(built["workflow"]), object_info)
    assert ours == frontend


def test_missing_node_types_are_detected(page):
    """The check above can fail: a workflow with a node type the server lacks shows the missing-nodes dialog (a card
    over the canvas in newer frontends)."""
    workflow = {"last_node_id": 1, "last_link_id": 0, "nodes": [
        {"id": 1, "type": "MegapixelNoSuchNode", "pos": [50, 50], "size": [200, 80], "flags": {}, "order": 0,
         "mode": 0, "inputs": [], "outputs": [], "properties": {"Node name for S&R": "MegapixelNoSuchNode"},
         "widgets_values": []}], "links": [], "groups": [], "config": {}, "extra": {}, "version": 0.4}
    page.drop_workflow("missing.json", workflow)
    problems = page.problems()
    assert any("MegapixelNoSuchNode" in p for p in problems), problems
    assert any(p.startswith(("dialog:", "card:")) for p in _unexpected(problems, {})), problems
    page.screenshot(ARTIFACTS / "negative-missing-node.png")


def test_validation_errors_are_detected(page, object_info):
    """A workflow the server refuses (a checkpoint it does not have) answers 400 with node errors in the page."""
    page.drop_workflow("bad-ckpt.json", core_workflow(object_info, "no-such-model.safetensors"))
    queued = page.queue()
    assert queued.status == 400, queued.response
    assert "4" in queued.response.get("node_errors", {}), queued.response
    page.page.wait_for_timeout(500)
    assert page.problems(), "the page shows nothing for a refused prompt"
    page.screenshot(ARTIFACTS / "negative-validation-error.png")


def test_pack_nodes_are_registered_in_the_frontend(page, object_info):
    """Every node the pack registers is known to the frontend's node registry, under its category."""
    ours = {name: info for name, info in object_info.items() if name.startswith("Megapixel")}
    registered = set(page.registered_node_types())
    missing = sorted(set(ours) - registered)
    assert not missing, f"the frontend does not know {missing}"
    categories = page.page.evaluate("(names) => names.map(n => LiteGraph.registered_node_types[n].category)",
                                    sorted(ours))
    assert all(c.startswith("megapixel/") for c in categories), categories


def test_server_serves_the_node_docs(comfy_server):
    """The real server serves every node's generated doc (web/docs/<node id>.md, tools/generate/docs.py) at
    /extensions/megapixel/docs/<node id>.md, the URL the frontend asks for after <node id>/<locale>.md."""
    from generate import docs as make_docs  # noqa: PLC0415 (tools/ is on sys.path)

    docs = make_docs.render_all()
    assert docs
    for name, text in docs.items():
        served = comfy_server.get_bytes(f"/extensions/{make_docs.PACK_NAME}/docs/{name}").decode("utf-8")
        assert served == text, f"/extensions/{make_docs.PACK_NAME}/docs/{name} is not the generated doc"


@pytest.mark.parametrize("route", ["node-library", "info-button"])
def test_frontend_shows_the_node_docs(route, page, comfy_server, object_info):
    """A user opens a Megapixel node's docs (the help button in the Node Library, or the Info button of the
    selection toolbox over a node in the graph) and reads our generated markdown, not the frontend's fallback
    summary of description and tooltips."""
    from generate import docs as make_docs  # noqa: PLC0415 (tools/ is on sys.path)

    asked: list[tuple[str, int]] = []
    page.page.on("response", lambda r: asked.append((r.url.split(comfy_server.url, 1)[-1], r.status))
                 if "/docs/" in r.url else None)
    if route == "node-library":
        shown = page.open_node_help(["megapixel", "sampling"], "Relay KSampler (MegaFusion)")
        if shown is None:
            pytest.skip("this frontend's Node Library (the redesigned one) has no help button; the docs open from "
                        "the selection toolbox's Info button (the info-button case)")
    else:
        page.drop_workflow("relay-node.json", browser.api_to_ui_workflow(
            {"1": {"class_type": "MegapixelRelayKSampler", "inputs": {}}}, object_info))
        shown = page.open_node_info(1)
    page.screenshot(ARTIFACTS / f"node-docs-{route}.png")

    doc_url = f"/extensions/{make_docs.PACK_NAME}/docs/MegapixelRelayKSampler.md"
    assert (doc_url, 200) in asked, f"the frontend did not fetch {doc_url}: {asked}"
    assert not shown["fallback"], f"the frontend found no docs and shows its fallback summary:\n{shown['text'][:800]}"
    text = " ".join(shown["text"].split())
    # Text only our markdown has (the fallback summary shows the description and tooltips, never these).
    for expected in ("Node id MegapixelRelayKSampler, category megapixel/sampling.", "See also",
                     "relay-sd15-512-768-1024.json", "Options: bicubic, bislerp, bilinear",
                     "Total steps over all stages (one schedule, split by step_split). Range: 1 to 10000."):
        assert expected in text, f"{expected!r} is not in the frontend's help page:\n{shown['text'][:3000]}"
    page_url = f"{make_docs.repository_url()}/blob/main/{make_docs.CATEGORY_PAGES['megapixel/sampling']}"
    assert page_url in shown["links"], shown["links"]


# --- the template browser ---------------------------------------------------------------------------------
def _thumbnail_size(path: Path) -> tuple[int, int]:
    from PIL import Image  # noqa: PLC0415

    with Image.open(path.with_suffix(".jpg")) as image:
        return image.size


@pytest.mark.parametrize("route", browser.ComfyPage.TEMPLATE_ROUTES)
def test_template_browser_lists_the_workflows_with_thumbnails(route, page, comfy_server):
    """A user opens the template browser (the main menu's Browse Templates, or the sidebar's Templates button),
    picks the pack under Extensions and sees every shipped workflow as a card with its thumbnail: the frontend
    fetched /api/workflow_templates/megapixel/<name>.jpg (200) and the card's <img> decoded it at its size."""
    from harness.host import PACK_NAME  # noqa: PLC0415 (tools/ is on sys.path)

    asked: list[tuple[str, int]] = []
    page.page.on("response", lambda r: asked.append((r.url.split(comfy_server.url, 1)[-1], r.status))
                 if "/workflow_templates" in r.url else None)
    dialog = page.open_templates(via=route)
    cards = page.template_section(dialog, PACK_NAME)
    page.screenshot(ARTIFACTS / f"templates-{route}.png")

    names = sorted(path.stem for path in WORKFLOWS)
    assert names, "no workflows shipped"
    assert sorted(cards) == names, f"the template browser's {PACK_NAME} section shows {sorted(cards)}, not {names}"
    for path in WORKFLOWS:
        name, card = path.stem, cards[path.stem]
        url = f"/api/workflow_templates/{PACK_NAME}/{name}.jpg"
        assert (url, 200) in asked, f"the frontend did not fetch {url} (200): {asked}"
        assert card["title"] == name, card
        assert card["complete"] and card["naturalWidth"] > 0, f"the thumbnail of {name} did not load: {card}"
        assert (card["naturalWidth"], card["naturalHeight"]) == _thumbnail_size(path), card


def test_a_template_opens_from_the_template_browser(page, comfy_server):
    """Clicking a card in the template browser loads that workflow into the graph (fetched from the pack's
    workflows/ folder through /api/workflow_templates/megapixel/<name>.json)."""
    from harness.host import PACK_NAME  # noqa: PLC0415 (tools/ is on sys.path)

    path = next(p for p in WORKFLOWS if p.stem == "megapixel-all-three-sd15")
    asked: list[tuple[str, int]] = []
    page.page.on("response", lambda r: asked.append((r.url.split(comfy_server.url, 1)[-1], r.status))
                 if "/workflow_templates" in r.url else None)
    dialog = page.open_templates()
    page.template_section(dialog, PACK_NAME)
    dialog.locator(f'[data-testid="template-workflow-{path.stem}"]').first.click()
    wanted = sorted(int(n["id"]) for n in load_workflow(path)["nodes"])
    page.page.wait_for_function("""(wanted) => {
        const ids = app.graph.nodes.map(n => Number(n.id)).sort((a, b) => a - b);
        return JSON.stringify(ids) === JSON.stringify(wanted);
    }""", arg=wanted, timeout=60_000)
    assert (f"/api/workflow_templates/{PACK_NAME}/{path.stem}.json", 200) in asked, asked
    types = sorted(n["type"] for n in page.graph_nodes())
    assert types == sorted(n["type"] for n in load_workflow(path)["nodes"])
    page.screenshot(ARTIFACTS / "template-opened.png")
