"""Imports flow one way: streams/ -> models/ -> features/; models' concern packages stand apart.

``docs/architecture.md`` draws the same picture; this test keeps it true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONCERNS = ("online", "intent", "decisioning", "alerts")
# The one arrow back: ``streamscore bench`` dispatches from the command line to benchmarks/.
EXCEPTIONS = {("streams/cli.py", "benchmarks.cli")}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # ``from models import alerts`` names a package as well as the module
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("package", ["features", "models", "streams", "benchmarks"])
def test_imports_flow_one_way(package: str) -> None:
    allowed = {
        "features": {"features"},
        "models": {"features", "models"},
        "streams": {"features", "models", "streams"},
        "benchmarks": {"features", "models", "streams", "benchmarks"},
    }[package]
    ours = {"features", "models", "streams", "benchmarks"}
    for path in (ROOT / package).rglob("*.py"):
        for name in _imports(path):
            where = path.relative_to(ROOT).as_posix()
            excepted = any(
                where == w and (name == m or name.startswith(m + ".")) for w, m in EXCEPTIONS
            )
            if _top(name) in ours and not excepted:
                assert _top(name) in allowed, f"{where} imports {name}"


@pytest.mark.parametrize("concern", CONCERNS)
def test_concern_packages_do_not_import_each_other(concern: str) -> None:
    others = {f"models.{c}" for c in CONCERNS if c != concern}
    for path in (ROOT / "models" / concern).rglob("*.py"):
        for name in _imports(path):
            hit = [o for o in others if name == o or name.startswith(o + ".")]
            assert not hit, f"{path.relative_to(ROOT)} imports {name}"


def test_only_the_bundle_composes_concerns_at_the_top_of_models() -> None:
    for path in (ROOT / "models").glob("*.py"):
        if path.name in {"bundle.py", "__init__.py"}:
            continue
        for name in _imports(path):
            assert not any(name.startswith(f"models.{c}") for c in CONCERNS), (
                f"{path.relative_to(ROOT)} imports {name}: shared modules stay below the concerns"
            )
