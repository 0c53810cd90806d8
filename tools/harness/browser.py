"""Drive the real ComfyUI frontend in headless Chromium: load workflows as a user drops them, queue, screenshot.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``) driven by PyPI ``playwright``; Playwright never
downloads a browser here.  :func:`ensure_chromium` installs the Debian package when it is missing (root with
apt-get only); ``tools/run_tests.py`` calls it, so the test command works on a fresh CI machine.

The module imports only the standard library at the top, so provisioning (which runs before any venv exists)
can use :func:`ensure_chromium`; Playwright is imported by :func:`launch`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("MEGAPIXEL_CHROMIUM", "/usr/bin/chromium"))
APT_PACKAGES = ["chromium", "fonts-liberation"]
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
PAGE_TIMEOUT_MS = 180_000

# Settings the page sees instead of a first-time user's (which opens the template browser over the canvas).
# They are answered to the page only: the server's own user settings are never written.
PAGE_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Validation.Workflows": True,             # the frontend's schema + link validation, as shipped
    "Comfy.Workflow.ShowMissingNodesWarning": True,  # the dialog a user sees for unknown node types
    "Comfy.Workflow.ShowMissingModelsWarning": True,
    "Comfy.Workflow.Persist": False,                # each page starts clean, nothing restored from a previous one
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Window.UnloadConfirmation": False,
}


# --- provisioning (standard library only) ----------------------------------------------------------------
def chromium_path() -> Path | None:
    return CHROMIUM if CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK) else None


def playwright_available(python: str | Path | None = None) -> bool:
    if python is None:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            return False
        return True
    return subprocess.run([str(python), "-c", "import playwright.sync_api"], capture_output=True).returncode == 0


def why_no_browser() -> str:
    """'' when the browser test can run here, else the reason it cannot."""
    if chromium_path() is None:
        return (f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`; "
                "tools/run_tests.py does it when run as root with apt-get)")
    if not playwright_available():
        return "the Python package playwright is not installed in the host's venv (tools/harness/host.py TEST_REQUIREMENTS)"
    return ""


def can_install_chromium() -> bool:
    return (shutil.which("apt-get") is not None and os.geteuid() == 0
            and not os.environ.get("MEGAPIXEL_NO_BROWSER_INSTALL"))


def ensure_chromium() -> str:
    """Install Debian's chromium when it is missing and this process may (root, apt-get).  Returns what it did
    ('' when it was already there)."""
    if chromium_path() is not None:
        return ""
    if os.environ.get("MEGAPIXEL_NO_BROWSER_INSTALL"):
        return "chromium missing; not installing (MEGAPIXEL_NO_BROWSER_INSTALL is set): the browser test skips"
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return "chromium missing and this is not root with apt-get: the browser test skips"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("+ apt-get update && apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES), flush=True)
    started = time.monotonic()
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]):
        result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-20:])
            return f"installing chromium failed ({' '.join(cmd[:2])} -> {result.returncode}):\n{tail}"
    found = chromium_path()
    took = time.monotonic() - started
    return f"installed chromium at {found} in {took:.0f}s" if found else f"apt-get ran but {CHROMIUM} is missing"


# --- the page ------------------------------------------------------------------------------------------------
class BrowserSession:
    """One headless Chromium (fresh user-data dir) for many pages; use as a context manager."""

    def __init__(self):
        self._pw = None
        self._context = None
        self._profile = None

    def __enter__(self) -> "BrowserSession":
        from playwright.sync_api import sync_playwright

        os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        self._profile = tempfile.mkdtemp(prefix="megapixel-chromium-")
        self._pw = sync_playwright().start()
        try:
            self._context = self._pw.chromium.launch_persistent_context(
                self._profile, executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS,
                viewport=VIEWPORT, accept_downloads=False)
        except Exception:
            self._pw.stop()
            raise
        self._context.set_default_timeout(PAGE_TIMEOUT_MS)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._context is not None:
                self._context.close()
        finally:
            if self._pw is not None:
                self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)

    def open(self, server_url: str) -> "ComfyPage":
        return ComfyPage(self._context.new_page(), server_url).load()


@dataclass
class Queued:
    """What happened when the page queued its graph."""

    status: int                       # HTTP status of POST /api/prompt
    response: dict                    # its JSON body (prompt_id, or error and node_errors)
    prompt: dict = field(default_factory=dict)  # the API graph the frontend sent

    @property
    def prompt_id(self) -> str | None:
        return self.response.get("prompt_id")


_SETTINGS_RE = "**/api/settings"

# A widget edit as a user's click makes it: LiteGraph's widget.setValue runs the widget's callback and the node's
# onWidgetChanged, where newer frontends clear what they had marked on that widget (a missing model, an input
# error).  Frontends without setValue get the value and the callback, as their own widgets set them.
_SET_WIDGET_VALUE = """
window.setWidgetValue = (node, w, v) => {
    if (typeof w.setValue === 'function') {
        try { w.setValue(v, {e: undefined, node, canvas: app.canvas}); return; } catch (e) { /* below */ }
    }
    w.value = v;
    if (w.callback) { try { w.callback(v, app.canvas, node); } catch (e) {} }
};
"""


class ComfyPage:
    """The ComfyUI web page of a running server, with the operations a user performs."""

    def __init__(self, page, server_url: str):
        self.page = page
        self.url = server_url.rstrip("/")
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    # -- start-up -----------------------------------------------------------------------------------------
    def _answer_settings(self, route) -> None:
        request = route.request
        if request.method == "GET":
            response = route.fetch()
            try:
                values = response.json()
            except Exception:  # noqa: BLE001 - not JSON: pass it through untouched
                route.fulfill(response=response)
                return
            values.update(PAGE_SETTINGS)
            route.fulfill(response=response, json=values)
        else:  # writes stay in the page: the shared server's user directory is not touched
            route.fulfill(status=200, content_type="application/json", body="{}")

    def load(self) -> "ComfyPage":
        self.page.route(_SETTINGS_RE, self._answer_settings)
        self.page.route("**/api/settings/*", self._answer_settings)
        self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        self.page.add_init_script(_SET_WIDGET_VALUE)
        self.page.goto(self.url + "/")
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.LiteGraph"
            " && Object.keys(window.LiteGraph.registered_node_types).length > 10", timeout=PAGE_TIMEOUT_MS)
        self.page.keyboard.press("Escape")  # anything that popped up anyway
        return self

    def close(self) -> None:
        self.page.close()

    # -- what the frontend knows -------------------------------------------------------------------------
    def registered_node_types(self) -> list[str]:
        return self.page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")

    def graph_nodes(self) -> list[dict]:
        return self.page.evaluate("""() => app.graph.nodes.map(n => ({
            id: n.id, type: n.type, mode: n.mode, registered: n.type in LiteGraph.registered_node_types,
            has_errors: !!n.has_errors,
            widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type, value: w.value}))}))""")

    def problems(self) -> list[str]:
        """What a user would see go wrong: open dialogs, warning/error toasts, error cards (newer frontends show
        missing nodes and models in a card over the canvas instead of a dialog), unknown or errored nodes."""
        return self.page.evaluate("""() => {
            const out = [];
            const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
            for (const d of document.querySelectorAll('.p-dialog')) {
                if (visible(d)) out.push('dialog: ' + d.innerText.replace(/\\s+/g, ' ').slice(0, 400));
            }
            for (const t of document.querySelectorAll('.p-toast-message')) {
                if (/(error|warn)/.test(t.className)) out.push('toast: ' + t.innerText.replace(/\\s+/g, ' ').slice(0, 400));
            }
            for (const c of document.querySelectorAll('[data-testid="error-overlay"]')) {
                if (visible(c)) out.push('card: ' + c.innerText.replace(/\\s+/g, ' ').slice(0, 400));
            }
            for (const n of app.graph.nodes) {
                if (!(n.type in LiteGraph.registered_node_types)) out.push(`node ${n.id}: unknown type ${n.type}`);
                else if (n.has_errors) out.push(`node ${n.id} (${n.type}) is marked with errors`);
            }
            return out;
        }""")

    # -- what a user does --------------------------------------------------------------------------------
    def drop_workflow(self, name: str, workflow: dict, timeout_s: float = 60) -> None:
        """Drop a workflow file on the canvas: the frontend's own drop handler reads and loads it."""
        text = json.dumps(workflow)
        self.page.evaluate("""([name, text]) => {
            const file = new File([text], name, {type: 'application/json'});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            const canvas = document.querySelector('#graph-canvas') || document.body;
            canvas.dispatchEvent(new DragEvent('dragover', {bubbles: true, cancelable: true, dataTransfer: transfer}));
            canvas.dispatchEvent(new DragEvent('drop', {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }""", [name, text])
        wanted = sorted(int(n["id"]) for n in workflow.get("nodes", []))
        self.page.wait_for_function("""(wanted) => {
            const ids = app.graph.nodes.map(n => Number(n.id)).sort((a, b) => a - b);
            return JSON.stringify(ids) === JSON.stringify(wanted);
        }""", arg=wanted, timeout=timeout_s * 1000)
        self.page.wait_for_timeout(300)  # dialogs and toasts open asynchronously after configure()
        try:  # the loading spinner's overlay
            self.page.wait_for_selector(".p-blockui-mask", state="detached", timeout=5_000)
        except Exception:  # noqa: BLE001 - a stuck overlay is handled where it matters (queue)
            pass

    def set_widgets(self, rules: dict[str, dict[str, Any]]) -> list[str]:
        """Edit widget values as a user would in the graph: ``{node type or '*': {widget name: value}}``.

        A value may be a dict ``{"max": n}`` (lower only if larger) or ``{"scale_max_side": n}`` for width/height
        pairs.  Returns what was changed, for the log."""
        return self.page.evaluate("""(rules) => {
            const changed = [];
            const set = (node, w, v) => {
                if (w.value === v) return;
                changed.push(`${node.id} ${node.type}.${w.name}: ${JSON.stringify(w.value)} -> ${JSON.stringify(v)}`);
                setWidgetValue(node, w, v);
            };
            for (const node of app.graph.nodes) {
                const widgets = node.widgets || [];
                for (const key of ['*', node.type]) {
                    const table = rules[key] || {};
                    const sizeRule = table['__size__'];
                    if (sizeRule) {
                        const wW = widgets.find(w => w.name === 'width'), wH = widgets.find(w => w.name === 'height');
                        if (wW && wH && typeof wW.value === 'number' && typeof wH.value === 'number') {
                            const side = Math.max(wW.value, wH.value);
                            if (side > sizeRule.max_side) {
                                const k = sizeRule.max_side / side, m = sizeRule.multiple || 64;
                                set(node, wW, Math.max(m, Math.round(wW.value * k / m) * m));
                                set(node, wH, Math.max(m, Math.round(wH.value * k / m) * m));
                            }
                        }
                    }
                    for (const [name, rule] of Object.entries(table)) {
                        if (name === '__size__') continue;
                        const w = widgets.find(w => w.name === name);
                        if (!w) continue;
                        if (rule !== null && typeof rule === 'object' && 'max' in rule) {
                            if (typeof w.value === 'number' && w.value > rule.max) set(node, w, rule.max);
                        } else {
                            set(node, w, rule);
                        }
                    }
                }
            }
            app.graph.setDirtyCanvas(true, true);
            return changed;
        }""", rules)

    def set_widget(self, node_id: int, name: str, value: Any) -> None:
        """Set one widget of one node (e.g. pick a checkpoint in a loader's combo)."""
        found = self.page.evaluate("""([id, name, value]) => {
            const node = app.graph.getNodeById(id);
            const w = node && (node.widgets || []).find(w => w.name === name);
            if (!w) return false;
            setWidgetValue(node, w, value);
            app.graph.setDirtyCanvas(true, true);
            return true;
        }""", [node_id, name, value])
        if not found:
            raise LookupError(f"node {node_id} has no widget {name!r}")

    def queue(self, timeout_s: float = 60) -> Queued:
        """Press the Queue button (app.queuePrompt if there is none) and return the server's answer."""
        button = self.page.locator('[data-testid="queue-button"] button').first
        with self.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST",
                                       timeout=timeout_s * 1000) as answer:
            if button.count() and button.is_visible():
                try:
                    button.click(timeout=15_000)
                except Exception:  # noqa: BLE001 - the spinner's overlay can stay stuck in its leave transition
                    self.console.append("note: the Queue button was covered by an overlay; clicked it directly")
                    button.dispatch_event("click")
            else:
                self.page.evaluate("() => app.queuePrompt(0, 1)")
        response = answer.value
        try:
            body = response.json()
        except Exception:  # noqa: BLE001
            body = {"error": response.text()}
        try:
            sent = json.loads(response.request.post_data or "{}").get("prompt", {})
        except ValueError:
            sent = {}
        return Queued(response.status, body, sent)

    def wait_for_outputs(self, node_ids: list[str], timeout_s: float = 30) -> bool:
        """Wait until the page shows the outputs of ``node_ids`` (the executed messages reached the UI)."""
        try:
            self.page.wait_for_function("""(ids) => {
                const outs = app.nodeOutputs || {};
                return ids.every(id => Object.keys(outs).some(k => k === String(id) || k.endsWith(':' + id)));
            }""", arg=[str(i) for i in node_ids], timeout=timeout_s * 1000)
            self.page.wait_for_timeout(500)  # let the canvas draw the preview
            return True
        except Exception:  # noqa: BLE001 - a screenshot without the preview is still worth keeping
            return False

    # -- a node's documentation -----------------------------------------------------------------------------
    def open_node_help(self, folders: list[str], display_name: str, timeout_s: float = 30) -> dict | None:
        """As a user does: open the Node Library sidebar, expand ``folders`` (e.g. ``["megapixel", "hidiffusion"]``),
        hover the node and press its help button.  Returns :meth:`node_help`, or None where the library has no
        help button (the redesigned library of newer frontends: there the docs open from the selection toolbox's
        Info button, :meth:`open_node_info`).

        Works with the PrimeVue tree of frontend 1.32 (tree items nest their children) and a flat tree: the item
        wanted is the last tree item that holds the name, i.e. the innermost one."""
        page = self.page
        ms = timeout_s * 1000

        def item(name: str):
            return page.locator("[role=treeitem]").filter(has=page.get_by_text(name, exact=True)).last

        if not item(folders[0]).is_visible():  # the sidebar may still be open from an earlier page
            page.locator(".node-library-tab-button").first.click()
        for folder in folders:  # folder names must be unique in the tree (core has a "sampling" folder too)
            folder_item = item(folder)
            folder_item.wait_for(state="visible", timeout=ms)
            if folder_item.get_attribute("aria-expanded", timeout=ms) != "true":
                folder_item.get_by_text(folder, exact=True).first.click()
        row = item(display_name)
        row.wait_for(state="visible", timeout=ms)
        row.hover()
        page.wait_for_timeout(300)
        if row.locator(".help-button").count() == 0:
            return None
        row.locator(".help-button").first.click(timeout=ms)
        return self.node_help(timeout_s)

    def open_node_info(self, node_id: int, timeout_s: float = 30) -> dict:
        """As a user does: click a node of the graph (on its title) and press the Info button of the selection
        toolbox above it; the frontend shows the node's docs (in the Node Library sidebar in frontend 1.32, in the
        right-hand panel's Info tab in newer ones).  Returns :meth:`node_help`."""
        page = self.page
        ms = timeout_s * 1000
        page.evaluate("""(id) => {  // the view a user scrolls to: the node at 100%, its title well inside the canvas
            const node = app.graph.getNodeById(id), ds = app.canvas.ds;
            ds.scale = 1;
            ds.offset[0] = 250 - node.pos[0];
            ds.offset[1] = 200 - node.pos[1];
            app.canvas.setDirty(true, true);
        }""", node_id)
        page.wait_for_timeout(500)
        x, y = page.evaluate("""(id) => {
            const node = app.graph.getNodeById(id), canvas = app.canvas;
            const title = (window.LiteGraph && LiteGraph.NODE_TITLE_HEIGHT) || 30;
            const [cx, cy] = canvas.ds.convertOffsetToCanvas([node.pos[0] + Math.min(40, node.size[0] / 4),
                                                               node.pos[1] - title / 2]);
            const box = canvas.canvas.getBoundingClientRect();
            return [box.left + cx, box.top + cy];
        }""", node_id)
        page.mouse.click(x, y)
        page.wait_for_function("(id) => !!app.canvas.selected_nodes && String(id) in app.canvas.selected_nodes",
                               arg=node_id, timeout=ms)
        button = page.locator('[data-testid="info-button"]').first
        button.wait_for(state="visible", timeout=ms)
        button.click(timeout=ms)
        return self.node_help(timeout_s)

    def node_help(self, timeout_s: float = 30) -> dict:
        """What the frontend's node help shows once it has loaded: ``text``, ``fallback`` (True when the frontend
        found no docs and shows its own summary of description, inputs and outputs instead of rendered markdown)
        and ``links`` (the hrefs in it)."""
        page = self.page
        help_box = page.locator(".node-help-content").first
        help_box.wait_for(state="visible", timeout=timeout_s * 1000)
        page.wait_for_function("""() => {
            const box = document.querySelector('.node-help-content');
            return box && box.innerText.trim().length > 0 && !box.querySelector('.p-progressspinner, .pi-spin');
        }""", timeout=timeout_s * 1000)
        return {"text": help_box.inner_text(), "fallback": help_box.locator(".fallback-content").count() > 0,
                "links": help_box.locator("a[href]").evaluate_all("els => els.map(a => a.getAttribute('href'))")}

    # -- the template browser -------------------------------------------------------------------------------
    TEMPLATE_ROUTES = ("menu", "sidebar")

    def open_templates(self, via: str = "menu", timeout_s: float = 90):
        """As a user does: the main menu (the ComfyUI logo at the top left) -> *Browse Templates*, or the sidebar's
        *Templates* button (``via`` "menu" or "sidebar"; frontends 1.32 and 1.47 have both).  Returns the template
        dialog (a Playwright locator) once it shows template cards."""
        page = self.page
        ms = timeout_s * 1000
        if via == "menu":
            page.locator(".comfy-menu-button-wrapper").first.click(timeout=ms)
            page.get_by_role("menuitem", name="Browse Templates").first.click(timeout=ms)
        elif via == "sidebar":
            page.locator(".templates-tab-button").first.click(timeout=ms)
        else:
            raise ValueError(f"open_templates(via={via!r}): one of {self.TEMPLATE_ROUTES}")
        dialog = page.locator("[role=dialog]").filter(has=page.locator('[data-testid^="template-workflow-"]')).first
        dialog.wait_for(state="visible", timeout=ms)
        return dialog

    def template_section(self, dialog, section: str, timeout_s: float = 90) -> dict[str, dict]:
        """Click ``section`` in the template dialog's navigation (a custom node pack's templates are listed under
        *Extensions*, by the pack's folder name) and return the cards it shows: template name -> ``title`` (the
        card's heading), ``src`` of its thumbnail ``<img>`` (the frontend fetches the image and shows a blob: URL),
        ``complete``, ``naturalWidth``, ``naturalHeight``.  Each card is scrolled into view and its image given
        ``timeout_s`` to load (thumbnails load lazily); a card whose image never loads is returned as it is."""
        page = self.page
        ms = timeout_s * 1000
        item = dialog.locator("[role=button]").filter(has=page.get_by_text(section, exact=True)).first
        try:
            item.click(timeout=ms)
        except Exception:  # noqa: BLE001 - a loaded machine can keep the dialog's grid animating past the timeout
            self.console.append(f"note: the template section {section!r} did not take a click; clicked it directly")
            item.dispatch_event("click")
        page.wait_for_function("""([d, section]) => Array.from(d.querySelectorAll('span')).some(
            s => s.textContent.trim() === section && !s.closest('nav') && s.getClientRects().length > 0)""",
                               arg=[dialog.element_handle(timeout=ms), section], timeout=ms)  # the section's title
        page.wait_for_timeout(500)  # the grid re-renders for the section
        cards = dialog.locator('[data-testid^="template-workflow-"]')
        shown: dict[str, dict] = {}
        for i in range(cards.count()):  # each card read while in view: newer frontends drop the images of cards
            card = cards.nth(i)         # scrolled out of view
            card.scroll_into_view_if_needed(timeout=ms)
            try:
                card.locator("img").first.wait_for(state="attached", timeout=ms)
                page.wait_for_function("(el) => { const img = el.querySelector('img');"
                                       " return !!img && img.complete && img.naturalWidth > 0; }",
                                       arg=card.element_handle(), timeout=ms)
            except Exception:  # noqa: BLE001 - reported below: the test says which thumbnail did not load
                pass
            name, info = card.evaluate("""(card) => {
                const img = card.querySelector('img'), title = card.querySelector('h3');
                return [card.dataset.testid.slice('template-workflow-'.length), {
                    title: title ? title.innerText.trim() : null, src: img ? img.getAttribute('src') : null,
                    complete: !!img && img.complete, naturalWidth: img ? img.naturalWidth : 0,
                    naturalHeight: img ? img.naturalHeight : 0}];
            }""")
            shown[name] = info
        return shown

    def screenshot(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=False)
        return path


# --- UI-format workflows from API graphs -------------------------------------------------------------------
def api_to_ui_workflow(api: dict, object_info: dict) -> dict:
    """A complete UI-format workflow (what the browser saves, version 0.4) for an API graph.

    Used for workflows the test writes itself; shipped ones are saved from the frontend."""
    from harness.comfy_server import _extra_widget_values, _input_order, _is_widget  # noqa: PLC0415 (tools/ on sys.path)

    links: list[list] = []
    nodes: dict[str, dict] = {}
    order = list(api)
    for index, node_id in enumerate(order):
        node = api[node_id]
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        for name, typ, opts in _input_order(info):
            value = node["inputs"].get(name)
            is_link = isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            if is_link:
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), typ if isinstance(typ, str) else "COMBO"])
                inputs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": link_id})
            elif _is_widget(typ) and not opts.get("forceInput"):
                widgets.append(value if value is not None else opts.get("default"))
                widgets.extend(["fixed"] * _extra_widget_values(name, typ, opts))
        outputs = [{"name": name, "type": typ if isinstance(typ, str) else "COMBO", "links": [], "slot_index": slot}
                   for slot, (name, typ) in enumerate(zip(info.get("output_name", info["output"]), info["output"]))]
        nodes[node_id] = {"id": int(node_id), "type": node["class_type"], "pos": [40 + 300 * (index % 4), 40 + 320 * (index // 4)],
                          "size": [280, 120], "flags": {}, "order": index, "mode": 0, "inputs": inputs,
                          "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]},
                          "widgets_values": widgets}
    for link_id, origin, slot, _target, _target_slot, _typ in links:
        nodes[str(origin)]["outputs"][slot]["links"].append(link_id)
    return {"last_node_id": max(int(k) for k in api), "last_link_id": len(links), "nodes": list(nodes.values()),
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}
