"""The README and the pages under docs/ stay true to the repository.

- Every ``tests/FILE.py::NAME`` a page cites names a test function defined in that file.
- Every relative link and picture resolves to a file, and every ``#anchor`` to a heading there.
- The README reaches every page, every picture under docs/ is shown somewhere, and the README
  stays a front door (at most 200 lines) that keeps the commands CI and users run verbatim.
- The bad-input table of docs/failures.md is the README's (which tests/test_bad_input.py checks
  against the code), row for row.
- The Python blocks of docs/*.md run as written (the README's: tests/test_readme.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
ALL = [README, *PAGES]

TEST_REF = re.compile(r"\btests/([\w/]+\.py)::(\w+)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`]*`")
BAD_INPUT = re.compile(r"<!-- bad-input-table:start -->.*?<!-- bad-input-table:end -->", re.S)

# The commands that must stay in the README word for word: .ci/run greps for the first, and the
# second is the main job as users copy it.
TEST_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && pytest'
MAIN_JOB = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . "
    "&& python -m experiments.mnist"
)
README_MAX_LINES = 200


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (no links live there)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(_prose(path.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http(s)://, mailto: ...
    ]


def _defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_there_are_pages_and_the_readme_reaches_every_one():
    assert {p.name for p in PAGES} >= {"api.md", "failures.md", "mnist.md", "training.md"}
    linked = {
        (README.parent / unquote(t.split("#")[0])).resolve()
        for t in _links(README)
        if t.split("#")[0]
    }
    missing = [_name(p) for p in PAGES if p.resolve() not in linked]
    assert not missing, f"README.md links none of {missing}"


@pytest.mark.parametrize("page", ALL, ids=_name)
def test_every_cited_test_exists(page):
    refs = TEST_REF.findall(page.read_text())
    bad = []
    for file, name in refs:
        path = ROOT / "tests" / file
        if not path.is_file():
            bad.append(f"tests/{file}::{name} (no such file)")
        elif name not in _defined_functions(path):
            bad.append(f"tests/{file}::{name} (no def {name} in that file)")
    assert not bad, f"{_name(page)} cites tests that do not exist: {bad}"


def test_the_failure_table_cites_tests_in_every_row():
    text = (DOCS / "failures.md").read_text()
    table = text.split("## Faults and what happens", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) > 10
    for row in rows[1:]:  # after the header
        assert TEST_REF.search(row), f"a row without a test: {row[:120]}"


@pytest.mark.parametrize("page", ALL, ids=_name)
def test_every_relative_link_resolves(page):
    bad = []
    for target in _links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file)).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target} (no file {dest.relative_to(ROOT)})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {_name(dest)})")
    assert not bad, f"{_name(page)} has broken links: {bad}"


def test_every_picture_under_docs_is_shown():
    shown = {
        (page.parent / unquote(t.split("#")[0])).resolve() for page in ALL for t in _links(page)
    }
    unused = [_name(p) for p in sorted(DOCS.glob("*.png")) if p.resolve() not in shown]
    assert not unused, f"pictures no page shows: {unused}"


def test_the_readme_is_a_front_door_with_the_commands_verbatim():
    text = README.read_text()
    assert TEST_COMMAND in text  # what .ci/run greps for and runs
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    assert MAIN_JOB in text
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_the_bad_input_table_of_the_docs_is_the_readmes():
    (readme_table,) = BAD_INPUT.findall(README.read_text())
    (docs_table,) = BAD_INPUT.findall((DOCS / "failures.md").read_text())
    assert docs_table == readme_table


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if "```python\n" in p.read_text()], ids=_name)
def test_python_blocks_run(page, capsys):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs"})
    out = capsys.readouterr().out
    if page.name == "api.md":
        assert "alphas_cumprod[-1]=4.036e-05" in out
        assert "DDPM: mean 1.50" in out
        assert "sample mean" in out
