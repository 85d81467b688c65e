"""What users were told to write keeps working after any reorganisation of the package: the import
paths the README, docs/ and examples/ show, the public modules, ``python -m``, and the entry points."""
from __future__ import annotations

import importlib
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The modules the README and docs/ name as public (issue 29): each imports, each says what it holds.
PUBLIC_MODULES = ("octohub_sync", "octohub_sync.client", "octohub_sync.cli", "octohub_sync.testing",
                  "octohub_sync.hub", "octohub_sync.pytest_plugin", "octohub_sync.sdnotify",
                  "octohub_sync.exceptions", "octohub_sync.app")
IMPORT = re.compile(r"^\s*from (octohub_sync[\w.]*) import ([\w, ]+)$|^\s*import (octohub_sync[\w.]*)$", re.MULTILINE)


def told_to_users() -> list[tuple[str, str, list[str]]]:
    """(file, module, names) of every import of the package that a user-facing file shows."""
    files = [ROOT / "README.md", ROOT / "run_node.py", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "examples").rglob("*.py"))]
    found = []
    for path in files:
        for match in IMPORT.finditer(path.read_text(encoding="utf-8")):
            module = match.group(1) or match.group(3)
            names = [name.strip() for name in (match.group(2) or "").split(",") if name.strip()]
            found.append((path.relative_to(ROOT).as_posix(), module, names))
    return found


def test_the_docs_show_imports_to_check() -> None:
    modules = {module for _, module, _ in told_to_users()}
    assert {"octohub_sync", "octohub_sync.hub", "octohub_sync.testing", "octohub_sync.cli"} <= modules


@pytest.mark.parametrize("where, module, names", told_to_users(), ids=lambda value: str(value))
def test_every_import_users_were_shown_works(where: str, module: str, names: list[str]) -> None:
    if module.split(".")[1:2] and module.split(".")[1].startswith("_"):
        assert where.startswith("docs/hooks/"), f"{where} shows users a private module: {module}"
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name, None) is not None, f"{where}: from {module} import {name}"


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_import_and_say_what_they_hold(module: str) -> None:
    assert importlib.import_module(module).__doc__


def test_the_package_exports_its_public_names() -> None:
    import octohub_sync
    for name in octohub_sync.__all__:
        assert getattr(octohub_sync, name) is not None, name
    from octohub_sync.client import NodeWebSocketClient
    assert octohub_sync.NodeWebSocketClient is NodeWebSocketClient  # the seed's import path, the same class


@pytest.mark.parametrize("module", ["octohub_sync", "octohub_sync.hub"])
def test_python_dash_m_answers_help(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0 and "usage:" in proc.stdout and proc.stderr == "", proc.stderr


def test_the_entry_points_load() -> None:
    selected = entry_points()
    scripts = [ep for ep in selected.select(group="console_scripts") if ep.name == "octohub-node"] \
        if hasattr(selected, "select") else [ep for ep in selected["console_scripts"] if ep.name == "octohub-node"]
    plugins = [ep for ep in selected.select(group="pytest11") if ep.name == "octohub"] \
        if hasattr(selected, "select") else [ep for ep in selected["pytest11"] if ep.name == "octohub"]
    # (A set: Python 3.9's importlib.metadata may list a distribution twice, e.g. an editable install's
    # egg-info beside its dist-info.)
    assert {ep.value for ep in scripts} == {"octohub_sync.cli:main"} and callable(scripts[0].load())
    assert {ep.value for ep in plugins} == {"octohub_sync.pytest_plugin"}
    assert plugins[0].load().__name__ == "octohub_sync.pytest_plugin"
