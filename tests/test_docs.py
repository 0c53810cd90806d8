"""The node docs in web/docs/ (what the frontend's node library shows) say exactly what the nodes say.

``tools/generate/docs.py`` writes them from each node's ``define_schema()``; here they are generated again in memory
and compared with the committed files, so a changed tooltip, default or description without regenerated docs
fails.  Fast: no server, no model.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from generate import docs as make_docs
from harness.host import PACK_NAME

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


# --- README.md and docs/: the pages a person reads -------------------------------------------------------------
README_MAX_BYTES = 12_500  # the front page a user reads in two minutes (issue 19: "at most about 12 KB")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def markdown_pages() -> list[Path]:
    return [make_docs.PACK_DIR / "README.md", *sorted((make_docs.PACK_DIR / "docs").glob("*.md")),
            make_docs.PACK_DIR / "tools" / "README.md"]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings (outside code blocks)."""
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(make_docs.github_anchor(line.lstrip("#")))
    return found


def broken_links(path: Path) -> list[str]:
    """Relative links (and #anchors into markdown files) of ``path`` that do not resolve."""
    problems = []
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.name}: {target} (no {file_part})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.name}: {target} (no heading #{anchor} in {resolved.name})")
    return problems


def test_every_relative_link_resolves():
    pages = markdown_pages()
    assert all(p.is_file() for p in pages), [str(p) for p in pages if not p.is_file()]
    problems = [problem for page in pages for problem in broken_links(page)]
    assert not problems, "broken links:\n  " + "\n  ".join(problems)


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "real.md").write_text("# Real heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](real.md#real-heading) [gone](missing.md) [bad anchor](real.md#nope) "
                    "![img](pic.png) [web](https://example.com/x)\n```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["page.md: missing.md (no missing.md)",
                                  "page.md: real.md#nope (no heading #nope in real.md)",
                                  "page.md: pic.png (no pic.png)"]


def test_the_front_page_is_short_and_lists_every_node(schemas):
    readme = make_docs.PACK_DIR / "README.md"
    assert readme.stat().st_size <= README_MAX_BYTES, f"README.md is {readme.stat().st_size} bytes: move detail to docs/"
    text = readme.read_text(encoding="utf-8")
    missing = [s.node_id for s in schemas if f"`{s.node_id}`" not in text]
    assert not missing, f"README.md's node table lacks {missing}"


def test_every_node_has_its_docs_page(schemas):
    for schema in schemas:
        page = make_docs.NODE_PAGES.get(schema.node_id) or make_docs.CATEGORY_PAGES.get(schema.category)
        assert page and (make_docs.PACK_DIR / page).is_file(), f"{schema.node_id}: no docs/ page"
