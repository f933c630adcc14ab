"""The repository's shape: experiments import only the library, files stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").iterdir() if (p / "__init__.py").exists())


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("package", EXPERIMENTS, ids=lambda p: p.name)
def test_an_experiment_imports_the_library_not_another_experiment(package):
    allowed = {
        "experiments",
        "experiments._cli",
        "experiments._common",
        f"experiments.{package.name}",
    }
    for path in package.glob("*.py"):
        for name in _imports(path):
            if name.startswith("experiments"):
                assert any(name == a or name.startswith(a + ".") for a in allowed), (
                    f"{path.relative_to(ROOT)} imports {name}: experiments share code through "
                    "jaxdiff or experiments/_common.py, not through each other"
                )


def test_files_stay_small():
    big = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in sorted((ROOT / "jaxdiff").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 480  # about 450, with a little slack
    ]
    big += [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in sorted((ROOT / "experiments").glob("*/main.py"))
        if (n := len(p.read_text().splitlines())) > 150
    ]
    assert not big, "split these by job: " + ", ".join(big)


def test_the_layout_check_sees_a_cross_import(tmp_path):
    bad = tmp_path / "main.py"
    bad.write_text("def f():\n    from experiments.mnist import to_images\n")
    assert "experiments.mnist.to_images" in _imports(bad)
