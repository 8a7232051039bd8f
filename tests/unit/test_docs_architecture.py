"""docs/architecture.md names every module of the provider, so the map cannot drift from the code.

A module is named by its path relative to the package, in backticks (``outbox/store.py``,
``operators/consent_updates.py``); ``__init__.py`` files are not modules of their own here.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "iys_provider" / "src" / "iys_provider"
SIMULATOR = ROOT / "include" / "iys_simulator" / "src" / "iys_simulator"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def package_modules() -> list[str]:
    return sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py") if path.name != "__init__.py")


def named_paths(text: str) -> set[str]:
    return set(re.findall(r"`([^`\s]+\.py)`", text))


def test_the_package_has_modules():
    modules = package_modules()
    assert "outbox/store.py" in modules
    assert "operators/consent_updates.py" in modules


def test_every_module_is_named_in_the_architecture_doc():
    missing = [module for module in package_modules() if module not in named_paths(ARCHITECTURE.read_text())]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_the_architecture_doc_names_no_module_that_is_gone():
    """A path the doc names (in the package, the simulator's package or the repository) exists; patterns aside."""
    gone = [
        path
        for path in named_paths(ARCHITECTURE.read_text())
        if "*" not in path and not any((base / path).exists() for base in (PACKAGE, SIMULATOR, ROOT))
    ]
    assert not gone, f"docs/architecture.md names modules that do not exist: {', '.join(sorted(gone))}"
