"""The package's modules depend on each other one way: no import cycle, not even for type checking."""
from __future__ import annotations

import ast
from pathlib import Path

import octohub_sync

ROOT = Path(octohub_sync.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = ("octohub_sync",) + path.relative_to(ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports, anywhere in the file (TYPE_CHECKING blocks too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names} & set(known)
            # "from pkg import submodule" needs the submodule; "from pkg import name" needs pkg.
            targets = submodules if len(submodules) == len(node.names) else submodules | {module}
        elif isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of module names, or [] (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_no_import_cycle() -> None:
    known = module_names()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert "octohub_sync.client" in graph and graph["octohub_sync.client"]  # the scan sees imports
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_collaborators_get_no_client() -> None:
    # The watchdog, the metrics server, the receiver and the delivery know nothing of the facade.
    known = module_names()
    for name in ("watchdog", "health", "receiver", "delivery", "runner", "timers", "reconnect"):
        module = f"octohub_sync.{name}"
        assert "octohub_sync.client" not in imports(module, known[module], known), module



#: Modules CPython on Windows does not have.
POSIX_ONLY_MODULES = {"fcntl", "termios", "pwd", "grp", "resource", "posix", "tty", "pty", "syslog", "crypt", "spwd",
                      "nis"}
#: Names that Windows' socket, signal and os modules lack.
POSIX_ONLY_NAMES = {("socket", "AF_UNIX"), ("signal", "SIGHUP"), ("signal", "SIGKILL"), ("signal", "SIGUSR1"),
                    ("signal", "SIGUSR2"), ("signal", "SIGQUIT"), ("signal", "SIGALRM"), ("signal", "SIGCHLD"),
                    ("signal", "SIGSTOP"), ("signal", "SIGCONT"), ("os", "getuid"), ("os", "geteuid"),
                    ("os", "fchmod"), ("os", "fchown"), ("os", "killpg"), ("os", "getpgid"), ("os", "setsid"),
                    ("os", "fork")}


def run_at_import(tree: ast.Module) -> list[ast.AST]:
    """The nodes a module runs when it is imported: not in a function (run later), nor under an ``if``
    or a ``try`` (a platform guard, or the fallback of an import that may fail)."""
    found: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.If, ast.IfExp, ast.Try)):
            continue
        found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def posix_only_uses(tree: ast.Module) -> list[str]:
    """POSIX-only modules and names a module uses when it is imported."""
    uses = []
    for node in run_at_import(tree):
        if isinstance(node, ast.Import):
            uses += [alias.name for alias in node.names if alias.name.split(".")[0] in POSIX_ONLY_MODULES]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module.split(".")[0] in POSIX_ONLY_MODULES:
                uses.append(module)
            uses += [f"{module}.{alias.name}" for alias in node.names if (module, alias.name) in POSIX_ONLY_NAMES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in POSIX_ONLY_NAMES:
            uses.append(f"{node.value.id}.{node.attr}")
    return uses


def test_no_posix_only_module_or_name_at_import_time() -> None:
    # The package imports on Windows: a POSIX-only module or name is used inside the function that needs
    # it, behind a guard (sys.platform, hasattr, try/except ImportError). .ci/windows-sim checks it by running.
    found = {name: posix_only_uses(ast.parse(path.read_text(encoding="utf-8")))
             for name, path in module_names().items()}
    assert {name: uses for name, uses in found.items() if uses} == {}


def test_the_posix_rule_finds_what_runs_at_import() -> None:
    caught = ast.parse("import fcntl\nfrom pwd import getpwnam\nfrom socket import AF_UNIX\n"
                       "class Kill:\n    how = signal.SIGKILL\n")
    assert posix_only_uses(caught) == ["fcntl", "pwd", "socket.AF_UNIX", "signal.SIGKILL"]
    guarded = ast.parse("def f():\n    import fcntl\n    return socket.AF_UNIX\n"
                        "if sys.platform != 'win32':\n    import termios\n"
                        "try:\n    import grp\nexcept ImportError:\n    grp = None\n")
    assert posix_only_uses(guarded) == []


#: The programs (they may handle signals); everything else is library code, which never does.
PROGRAMS = {"octohub_sync.cli", "octohub_sync.stop_signals", "octohub_sync.__main__", "octohub_sync.hub.__main__",
            "octohub_sync.child"}  # child: the program of an isolated handler's child process

#: Library modules that import signal only to name one (how a child process died): they use signal.Signals only.
NAMES_SIGNALS = {"octohub_sync.isolation"}


def test_only_the_programs_handle_signals() -> None:
    known = module_names()
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses_signal = any(isinstance(node, ast.Import) and any(a.name == "signal" for a in node.names)
                          or isinstance(node, ast.ImportFrom) and node.module == "signal" for node in ast.walk(tree))
        if name in NAMES_SIGNALS:
            used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name) and node.value.id == "signal"}
            assert used == {"Signals"}, f"{name} may only name signals, it uses signal.{used}"
            assert "octohub_sync.stop_signals" not in imports(name, path, known), name
        elif name not in PROGRAMS:
            assert not uses_signal, f"{name} imports signal: only {sorted(PROGRAMS)} may"
            assert "octohub_sync.stop_signals" not in imports(name, path, known), name
