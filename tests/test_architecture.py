"""The package's shape: modules depend on each other one way (no import cycle, not even for type
checking), the package imports on Windows, and each concern has one owner (the state one writer, the
current connection one holder, the tasks one registry, the decisions no I/O)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

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
    for module in ("octohub_sync._node.watchdog", "octohub_sync._ops.status_server", "octohub_sync._node.receiver",
                   "octohub_sync._delivery.delivery", "octohub_sync._execution.runner", "octohub_sync._node.timers",
                   "octohub_sync._node.reconnect"):
        assert "octohub_sync.client" not in imports(module, known[module], known), module



# -- the layout: packages, what each may import -----------------------------------------------

#: What each part of the package may import besides itself: the layers, lowest first. A part is a
#: subpackage or a module at the top; the programs (PROGRAM_PARTS) may import anything.
MAY_IMPORT: dict[str, set[str]] = {
    "exceptions": set(),
    "_version": set(),
    # Values and operating-system differences: no node state.
    "_wire": {"exceptions"},
    "_platform": {"exceptions"},
    # Read once at start; what operators see.
    "_config": {"_wire", "_platform", "exceptions"},
    "_ops": {"_wire", "_platform", "_version", "exceptions"},
    # The way to the hub, then results on it, then tasks that make them.
    "_transport": {"_wire", "_config", "_ops", "_platform", "exceptions"},
    "_delivery": {"_wire", "_config", "_transport", "_ops", "_platform", "exceptions"},
    "_execution": {"_wire", "_config", "_delivery", "_ops", "_platform", "exceptions"},
    "_isolation": {"_wire", "_config", "_execution", "_ops", "_platform", "exceptions"},
    "sdnotify": {"_ops", "_platform", "exceptions"},
    # The node's life joins them all; the facade stands on it; the handler modules on the facade.
    "_node": {"_wire", "_platform", "_config", "_ops", "_transport", "_delivery", "_execution", "_isolation",
              "sdnotify", "exceptions"},
    "client": {"_node", "_config", "_execution", "_isolation", "_ops", "sdnotify", "exceptions"},
    "app": {"client", "_config", "_execution", "exceptions"},
    "__init__": {"_version", "_ops", "_config", "_execution", "app", "client", "exceptions"},
    # The local hub is the node's peer: it shares the wire format and nothing of the node.
    "hub": {"_wire", "exceptions"},
    "testing": {"hub", "client", "app", "_config", "_ops", "exceptions"},
    "pytest_plugin": {"hub", "testing"},
}
#: The programs: they put the parts together for a command line.
PROGRAM_PARTS = {"cli", "__main__", "hub.__main__"}
#: At most this many modules and packages at the top of the package.
TOP_LEVEL_MAX = 20
#: The longest a module may be.
MODULE_MAX_LINES = 450


def part_of(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return "__init__"
    return "hub.__main__" if parts[1:] == ["hub", "__main__"] else parts[1]


def test_each_part_imports_only_the_layers_below_it() -> None:
    known = module_names()
    parts = {part_of(name) for name in known}
    assert parts == set(MAY_IMPORT) | PROGRAM_PARTS, "a part of the package without a place in MAY_IMPORT"
    wrong = []
    for name, path in known.items():
        here = part_of(name)
        if here in PROGRAM_PARTS:
            continue
        wrong += [f"{name} -> {target}" for target in sorted(imports(name, path, known))
                  if part_of(target) != here and part_of(target) not in MAY_IMPORT[here]]
    assert wrong == []


def test_the_layers_have_no_cycle() -> None:
    assert find_cycle({part: allowed & set(MAY_IMPORT) for part, allowed in MAY_IMPORT.items()}) == []


def test_the_top_of_the_package_is_short_and_private_parts_say_what_they_hold() -> None:
    top = sorted(entry.name for entry in ROOT.iterdir()
                 if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()))
    assert len(top) <= TOP_LEVEL_MAX, top
    for entry in ROOT.iterdir():
        if entry.is_dir() and entry.name.startswith("_") and entry.name != "__pycache__":
            docstring = ast.get_docstring(ast.parse((entry / "__init__.py").read_text(encoding="utf-8")))
            assert docstring, f"{entry.name}/__init__.py says what the package holds"


def test_no_module_is_over_the_limit() -> None:
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in module_names().items()}
    assert {name: lines for name, lines in long.items() if lines > MODULE_MAX_LINES} == {}


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
PROGRAMS = {"octohub_sync.cli", "octohub_sync._platform.stop_signals", "octohub_sync.__main__", "octohub_sync.hub.__main__",
            "octohub_sync._isolation.child",  # child: the program of an isolated handler's child process
            # the child's process tree: its death signal (in the child only), and SIGKILL to a child's group
            "octohub_sync._platform.process_tree",
            "octohub_sync._platform.node_guard"}  # the watcher's program: SIGKILL to what a dead node left

#: Library modules that import signal only to name one (how a child process died): they use signal.Signals only.
NAMES_SIGNALS = {"octohub_sync._isolation.boundary"}


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
            assert "octohub_sync._platform.stop_signals" not in imports(name, path, known), name
        elif name not in PROGRAMS:
            assert not uses_signal, f"{name} imports signal: only {sorted(PROGRAMS)} may"
            assert "octohub_sync._platform.stop_signals" not in imports(name, path, known), name


# -- one owner per concern ---------------------------------------------------------------------------

#: Pure decisions: values in, values out. They never touch a thread, a socket, a file or the network,
#: so they are tested without one (and a change to them cannot hang the node).
DECISION_MODULES = ("_wire.protocol", "_node.dispatch", "_wire.signing", "_node.reconnect", "_node.backoff",
                    "_node.clock_jumps", "_wire.addresses", "_node.stop_sequence")
#: What a decision module never imports.
IO_MODULES = {"threading", "socket", "ssl", "select", "selectors", "websocket", "requests", "sqlite3", "subprocess",
              "multiprocessing", "concurrent", "asyncio", "http", "urllib3"}


def third_party_imports(tree: ast.Module) -> set[str]:
    """The top-level names of the modules a file imports (not relative imports)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_decision_modules_do_no_io() -> None:
    known = module_names()
    for name in DECISION_MODULES:
        tree = ast.parse(known[f"octohub_sync.{name}"].read_text(encoding="utf-8"))
        assert third_party_imports(tree) & IO_MODULES == set(), name


def calls_of(tree: ast.Module, attribute: str) -> list[str]:
    """``owner.attribute(...)`` calls in a file, as the source of ``owner`` (``self._link``)."""
    return [ast.unparse(node.func.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr == attribute]


def modules_calling(attribute: str, owner_suffix: str) -> set[str]:
    """The package's modules that call ``<...owner_suffix>.attribute(...)``."""
    found = set()
    for name, path in module_names().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(owner.endswith(owner_suffix) for owner in calls_of(tree, attribute)):
            found.add(name)
    return found


def test_the_node_state_has_one_writer() -> None:
    # _ops/node_state.py alone changes the state; its transitions are called by the node's assembly
    # only, which hears of the events from the parts that see them (receiver, watchdog, its own stop).
    for transition in ("starting", "ready", "lost", "gave_up", "stopping", "stopped"):
        assert modules_calling(transition, "status") <= {"octohub_sync._node.assembly"}, transition
    writes = {}
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Attribute) and \
                    isinstance(node.value.value, ast.Name) and node.value.value.id == "NodeState":
                writes.setdefault(name, []).append(ast.unparse(node))
    assert set(writes) == {"octohub_sync._ops.node_state"}, writes
    from octohub_sync._ops.node_state import NodeStatus
    status = NodeStatus()
    with pytest.raises(AttributeError):
        status.state = "connected"  # type: ignore[misc]  # the point: there is no setter


def test_the_rule_sees_a_second_writer() -> None:
    tree = ast.parse("def ended(self):\n    self._stats.status.lost()\n    self._status.ready()\n")
    assert calls_of(tree, "lost") == ["self._stats.status"] and calls_of(tree, "ready") == ["self._status"]


def test_one_owner_of_the_current_connection() -> None:
    # _transport/link.py holds which connection is current and whether it is ready; the watchdog says which,
    # the delivery says whether. Nobody else keeps a connection of the node's, or a ready flag.
    assert modules_calling("attach", "_link") == {"octohub_sync._node.watchdog"}
    assert modules_calling("set_ready", "link") == {"octohub_sync._delivery.delivery"}
    for name, path in module_names().items():
        if name.startswith("octohub_sync.hub") or name == "octohub_sync._transport.link":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    assert not (isinstance(target, ast.Attribute) and target.attr in ("conn", "ready")), \
                        f"{name}: {ast.unparse(node)}"


def test_one_registry_of_tasks() -> None:
    # _execution/task_run.py's TaskRun is a task from admission to its answer; only the runner admits tasks.
    for name, path in module_names().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        made = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "TaskRun"]
        if name != "octohub_sync._execution.runner":
            assert made == [], f"{name} makes a TaskRun: only the runner admits tasks"
        dicts = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)
                 and "dict[str" in ast.unparse(node.annotation) and ("_Slot" in ast.unparse(node.annotation)
                                                                      or "TaskRun" in ast.unparse(node.annotation))]
        assert name == "octohub_sync._execution.task_run" or dicts == [], f"{name} keeps its own registry of tasks: {dicts}"


#: ctypes' Windows names (typeshed declares them for win32 only): the bindings live in one module, under a guard.
WINDOWS_CTYPES = ("windll", "WinDLL", "WINFUNCTYPE", "wintypes", "oledll", "OleDLL", "WinError")
#: That module.
WINDOWS_BINDINGS = "octohub_sync._platform.windows"
#: At most this many `type: ignore` in the package: each where a library must be patched.
MAX_TYPE_IGNORES = 2
#: A `type: ignore` with its error codes, then its reason on the same line.
TYPE_IGNORE = re.compile(r"# type: ignore\[[a-z-]+(?:, [a-z-]+)*\]  # \S.{9,}$")


def test_at_most_two_type_ignores_each_with_its_reason_on_the_line() -> None:
    # mypy checks the package on Linux and on win32 (.ci/run): what it cannot check is a library patched at
    # run time, and the reason says which one.
    found = {f"{name}:{number}": line.strip() for name, path in module_names().items()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "type: ignore" in line}
    assert len(found) <= MAX_TYPE_IGNORES, found
    assert [where for where, line in found.items() if not TYPE_IGNORE.search(line)] == [], found


def test_the_rule_sees_a_type_ignore_without_its_reason() -> None:
    assert TYPE_IGNORE.search("x.f = g  # type: ignore[method-assign]  # patches websockets: no hook")
    assert not TYPE_IGNORE.search("x.f = g  # type: ignore[method-assign]")
    assert not TYPE_IGNORE.search("x.f = g  # type: ignore  # patches websockets: no hook")


def windows_names(text: str) -> set[str]:
    """The ctypes Windows names a module's code or text uses (as words: ``wintypes``, not ``mywintypes``)."""
    return {name for name in WINDOWS_CTYPES if re.search(rf"\b{name}\b", text)}


def test_the_windows_bindings_are_in_one_module_under_a_platform_guard() -> None:
    users = {name: windows_names(path.read_text(encoding="utf-8")) for name, path in module_names().items()}
    assert {name for name, used in users.items() if used} == {WINDOWS_BINDINGS}, users
    tree = ast.parse(module_names()[WINDOWS_BINDINGS].read_text(encoding="utf-8"))
    # Below the docstring and the imports, the module is one `if sys.platform == "win32":`.
    body = [node for node in tree.body if not isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom))]
    assert len(body) == 1 and isinstance(body[0], ast.If) and ast.unparse(body[0].test) == "sys.platform == 'win32'"
    assert windows_names(ast.unparse(body[0].orelse)) == set()


def test_the_rule_sees_a_windows_name_elsewhere() -> None:
    assert windows_names("kernel32 = ctypes.WinDLL('kernel32')") == {"WinDLL"}
    assert windows_names("from ctypes import wintypes") == {"wintypes"}
    assert windows_names("handle = mywintypes.HANDLE") == set()


#: Lines from which a module must say, at its top, why it is not split.
LONG_MODULE = 300


def test_long_modules_say_why() -> None:
    unexplained = []
    for name, path in module_names().items():
        text = path.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > LONG_MODULE and "Why one module:" not in docstring:
            unexplained.append(f"{name} ({len(text.splitlines())} lines)")
    assert unexplained == [], f"over {LONG_MODULE} lines without 'Why one module:' in the docstring"


def test_the_architecture_page_names_every_module() -> None:
    # docs/architecture.md lists the modules package by package: a module added or moved shows there too.
    page = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    listing = page.split("Module by module:", 1)[1].split("```", 2)[1]
    missing = []
    for name, path in module_names().items():
        relative = path.relative_to(ROOT)
        if relative.parts[0] == "hub" or relative.name in ("__init__.py", "__main__.py") and relative.parent.name:
            continue  # the local hub is listed as one package; a package's __init__ by its folder
        folder = f"{relative.parent.as_posix()}/" if relative.parent.name else None
        if relative.name not in listing or (folder and folder not in listing):
            missing.append(relative.as_posix())
    assert missing == []
