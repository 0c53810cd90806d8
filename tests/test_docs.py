"""The node docs in web/docs/ (what the frontend's node library shows) say exactly what the nodes say.

``tools/make_docs.py`` writes them from each node's ``define_schema()``; here they are generated again in memory
and compared with the committed files, so a changed tooltip, default or description without regenerated docs
fails.  Fast: no server, no model.
"""
from __future__ import annotations

import sys

import pytest

import make_docs
from host import PACK_NAME

PACK = sys.modules[PACK_NAME]
FIX = (f"run `{make_docs.COMMAND}` (it runs itself in the host's Python, .host/venv/bin/python) and commit "
       f"web/docs/")


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    return make_docs.render_all()


@pytest.fixture(scope="module")
def schemas():
    return [node.define_schema() for node in PACK.nodes.NODES]


def test_committed_docs_match_the_nodes(docs):
    problems = make_docs.differences(docs)
    assert not problems, "the node docs are out of date:\n  " + "\n  ".join(problems) + f"\nFix: {FIX}"


def test_every_node_has_a_doc(docs, schemas):
    assert sorted(docs) == sorted(f"{s.node_id}.md" for s in schemas)
    for schema in schemas:
        assert (make_docs.DOCS_DIR / f"{schema.node_id}.md").is_file(), f"no doc for {schema.node_id}. Fix: {FIX}"


def test_docs_are_served_from_the_pack_web_directory():
    """ComfyUI serves WEB_DIRECTORY at /extensions/<pack folder>/; the frontend asks for docs/<node id>.md there."""
    assert PACK.WEB_DIRECTORY == "./web"
    assert (make_docs.PACK_DIR / PACK.WEB_DIRECTORY).resolve() / "docs" == make_docs.DOCS_DIR.resolve()
    assert callable(PACK.comfy_entrypoint)


def test_every_node_has_a_description_and_every_input_a_tooltip(schemas):
    missing = [f"{s.node_id}: no description" for s in schemas if not (s.description or "").strip()]
    missing += [f"{s.node_id}.{i.id}: no tooltip" for s in schemas for i in s.inputs if not (i.tooltip or "").strip()]
    assert not missing, "\n".join(missing)


def test_a_doc_holds_every_input_its_tooltip_and_the_see_also(docs, schemas):
    for schema in schemas:
        text = docs[f"{schema.node_id}.md"]
        assert text.startswith(make_docs.GENERATED_NOTE)
        assert f"# {schema.display_name}\n" in text
        for inp in schema.inputs:
            assert f"| `{inp.id}`" in text, f"{schema.node_id}: input {inp.id} is not in its doc"
            assert make_docs._cell(inp.tooltip) in text, f"{schema.node_id}: the tooltip of {inp.id} is not in its doc"
        assert "## See also" in text and make_docs.repository_url() in text


def test_docs_name_the_workflows_that_use_the_node(docs):
    used = make_docs.workflows_using()
    assert used, "no shipped workflow uses a pack node"
    for node_id, workflows in used.items():
        if f"{node_id}.md" in docs:
            for name in workflows:
                assert f"`{name}`" in docs[f"{node_id}.md"]


def test_generation_is_deterministic(docs):
    assert make_docs.render_all() == docs


def test_host_option_lists_are_named_not_listed(docs):
    """Sampler and scheduler lists change between ComfyUI versions; listing them would make the docs differ per
    host."""
    import comfy.samplers

    text = docs["MegapixelRelayKSampler.md"]
    assert "any of ComfyUI's samplers" in text
    assert "`dpmpp_2m`" not in text and "`karras`" not in text
    assert "dpmpp_2m" in comfy.samplers.SAMPLER_NAMES


@pytest.mark.parametrize("heading,anchor", [
    ("HiDiffusion (RAU-Net, MSW-MSA)", "hidiffusion-rau-net-msw-msa"),
    ("Relay sampler (MegaFusion)", "relay-sampler-megafusion"),
    ("Install (users)", "install-users"),
])
def test_github_anchor(heading, anchor):
    assert make_docs.github_anchor(heading) == anchor
