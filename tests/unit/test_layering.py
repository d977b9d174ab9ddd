"""Import layering: proto and auth are sans-IO, pool opens no sockets, net and admin stay apart."""

from __future__ import annotations

import ast
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
