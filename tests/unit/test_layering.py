"""Import layering: proto and auth are sans-IO, pool opens no sockets, net and admin stay apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "pyproxy"
SANS_IO_FORBIDDEN = ("asyncio", "socket", "ssl", "time", "logging")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every module an import statement in ``source`` names, relative imports made absolute.

    ``from a import b`` yields both ``a`` and ``a.b``, since ``b`` may be a submodule.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of(subpackage: str) -> dict[str, set[str]]:
    directory = PACKAGE_ROOT / subpackage
    assert directory.is_dir(), f"missing package directory {directory}"
    result = {}
    for path in sorted(directory.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        result[str(path)] = imported_modules(source, module_name(path), path.name == "__init__.py")
    return result


def violations(subpackage: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path, modules in imports_of(subpackage).items():
        for name in sorted(modules):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path} imports {name}")
    return bad


@pytest.mark.parametrize("subpackage", ["proto", "auth"])
def test_sans_io_layers_import_no_io_modules(subpackage: str) -> None:
    assert violations(subpackage, SANS_IO_FORBIDDEN) == []


def test_pool_never_imports_socket_or_ssl() -> None:
    assert violations("pool", ("socket", "ssl")) == []


def test_net_never_imports_admin() -> None:
    assert violations("net", ("pyproxy.admin",)) == []


def test_admin_never_imports_net() -> None:
    assert violations("admin", ("pyproxy.net",)) == []


def test_checker_sees_every_import_form() -> None:
    source = (
        "import time\n"
        "import asyncio.streams as s\n"
        "from logging import getLogger\n"
        "from .. import net\n"
        "from ..net.server import X\n"
        "def f():\n"
        "    import ssl\n"
    )
    found = imported_modules(source, "pyproxy.admin.api", is_package=False)
    assert {"time", "asyncio.streams", "logging", "ssl", "pyproxy.net", "pyproxy.net.server"} <= (
        found
    )
    assert imported_modules("from . import codec", "pyproxy.proto", is_package=True) >= {
        "pyproxy.proto.codec"
    }


def test_checker_walks_real_files() -> None:
    modules = imports_of("auth")
    assert any(path.endswith("scram.py") for path in modules)
    assert any("hashlib" in names for names in modules.values())


# ---- the direction of imports -------------------------------------------------------------------

# What each part of the package may import at run time (besides itself). Imports under
# ``if TYPE_CHECKING:`` are for annotations only and not counted.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "log": set(),
    "tls": {"errors"},
    "config": {"errors", "tls"},
    "proto": {"errors"},
    "auth": {"errors", "proto"},
    "session": {"errors", "proto", "config"},
    "pool": {"errors", "proto", "config"},
    "testing": {"errors", "proto", "auth"},
    "net": {"errors", "proto", "config", "auth", "session", "pool", "log", "tls"},
    "admin": {"errors", "proto", "config", "auth", "pool", "log", "tls"},
    "console": {"errors", "proto", "config", "auth", "session", "pool", "log"},
    "app": {
        "errors",
        "proto",
        "config",
        "auth",
        "session",
        "pool",
        "net",
        "admin",
        "console",
        "log",
        "tls",
    },
    "demo": {"errors", "config", "app", "testing", "log", "tls"},
    "cli": {"errors", "config", "app", "admin", "demo", "log", "auth"},
    "__main__": {"cli"},
}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def runtime_imports(path: Path) -> set[str]:
    """The pyproxy modules ``path`` imports when it runs (not those under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            typing_only.update(id(inner) for inner in ast.walk(node))
    module = module_name(path)
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names = imported_modules(ast.unparse(node), module, path.name == "__init__.py")
        found.update(n for n in names if n.startswith("pyproxy.") and part_of(n) != "")
    return found


def package_graph() -> dict[str, set[str]]:
    """Module -> the pyproxy modules it imports at run time (names that are not modules, such
    as ``from pyproxy.net.client import ClientConn``'s ``pyproxy.net.client.ClientConn``, are
    reduced to the module they come from)."""
    files = {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in runtime_imports(path):
            while name not in files and "." in name:
                name = name.rpartition(".")[0]
            if name in files and name != module and name != "pyproxy":
                targets.add(name)
        graph[module] = targets
    return graph


def test_every_part_imports_only_the_layers_below_it() -> None:
    bad = []
    for module, targets in package_graph().items():
        part = part_of(module)
        if part == "":
            continue
        assert part in ALLOWED, f"{module}: a new part of the package needs a place in ALLOWED"
        for target in targets:
            other = part_of(target)
            if other != part and other not in ALLOWED[part]:
                bad.append(f"{module} imports {target}")
    assert bad == []


def test_no_import_cycles() -> None:
    graph = package_graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    seen: list[str] = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                seen.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    visit("a", ["a"])
    assert seen == ["a -> b -> c -> a"]


# ---- where state changes, and where numbers are named ------------------------------------------

SERVER_PLACES = ("idle", "linked", "cleaning", "canceling")
MUTATORS = {"pop", "popitem", "clear", "add", "discard", "update", "remove", "append", "setdefault"}


def container_mutations(path: Path) -> list[str]:
    """Lines of ``path`` that change a pool's server containers (other than through Pool)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in MUTATORS:
                target = node.func.value
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for t in targets:
                target = t.value if isinstance(t, ast.Subscript) else t
        if isinstance(target, ast.Attribute) and target.attr in SERVER_PLACES:
            found.append(f"{path}:{node.lineno}")
    return found


def test_only_the_pool_changes_where_a_server_sits() -> None:
    owner = PACKAGE_ROOT / "pool" / "pool.py"
    bad = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path != owner:
            bad.extend(container_mutations(path))
    assert bad == []


def test_the_mutation_check_sees_each_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "pool.idle.pop(s)\n"
        "pool.linked[s] = None\n"
        "del pool.cleaning[s]\n"
        "pool.canceling = {}\n"
        "pool.idle.get(s)\n"  # reading is fine
        "x = pool.linked\n",
        encoding="utf-8",
    )
    assert sorted(line.rsplit(":", 1)[1] for line in container_mutations(sample)) == [
        "1",
        "2",
        "3",
        "4",
    ]


def test_message_types_are_named_only_in_codes() -> None:
    """No ``ord("Q")``-style or numeric message types outside proto/codes.py: a comparison of a
    message byte with a number is written with a name from codes."""
    codes = PACKAGE_ROOT / "proto" / "codes.py"
    bad = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path == codes:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "ord"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                bad.append(f"{path}:{node.lineno} ord({node.args[0].value!r})")
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    if _is_type_byte(node, side):
                        bad.append(f"{path}:{node.lineno} compares a byte with {side.value}")
    assert bad == []


def _is_type_byte(compare: ast.Compare, side: ast.AST) -> bool:
    """A number in the printable-letter range compared with a subscript (``data[off] == 81``)."""
    if not (isinstance(side, ast.Constant) and type(side.value) is int):
        return False
    others = [compare.left, *compare.comparators]
    return 65 <= side.value <= 122 and any(isinstance(o, ast.Subscript) for o in others)


SQLSTATE = re.compile(r"^[0-9A-Z]{2}[0-9A-Z]{3}$")


def test_sqlstates_are_named_only_in_errors() -> None:
    errors = PACKAGE_ROOT / "errors.py"
    bad = []
    for path in PACKAGE_ROOT.rglob("*.py"):
        if path == errors:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and SQLSTATE.match(node.value)
                and any(ch.isdigit() for ch in node.value[:2])
            ):
                bad.append(f"{path}:{node.lineno} {node.value!r}")
    assert bad == []


MAX_MODULE_LINES = 500


def test_every_module_stays_small() -> None:
    """One responsibility per module: a file past MAX_MODULE_LINES is split by what it does."""
    too_long = {
        str(path.relative_to(PACKAGE_ROOT.parent)): n
        for path in PACKAGE_ROOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}
