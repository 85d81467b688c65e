"""Import every module of octohub_sync and every public name; exit 1 naming each that fails.

Run under the simulated Windows (this folder on PYTHONPATH: see sitecustomize.py). ``__main__``
modules are left out: importing one runs its program.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback


def main() -> int:
    failed: list[str] = []

    def note(name: str) -> None:
        failed.append(f"{name}: {traceback.format_exc(limit=-3)}")

    try:
        package = importlib.import_module("octohub_sync")
    except Exception:
        note("octohub_sync")
        print("\n".join(failed), file=sys.stderr)
        return 1
    names = ["octohub_sync"] + sorted(
        module.name for module in pkgutil.walk_packages(package.__path__, "octohub_sync.", onerror=note)
        if not module.name.endswith(".__main__"))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            note(name)
    for name in package.__all__:
        try:
            getattr(package, name)
        except Exception:
            note(f"octohub_sync.{name}")
    hidden = [name for name in ("fcntl", "termios", "pwd", "grp") if sys.modules.get(name, False) is not None]
    if hidden:
        failed.append(f"the simulation is not active: {', '.join(hidden)} importable (PYTHONPATH?)")
    for line in failed:
        print(f"FAIL {line}", file=sys.stderr)
    print(f"imported {len(names)} modules and {len(package.__all__)} public names: "
          f"{'ok' if not failed else f'{len(failed)} failed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
