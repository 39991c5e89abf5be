"""The walls between packages: public faces, no private borrowing, no import cycles.

Read from the source (``ast``), not from what happens to be imported: an import inside a
function counts (it is still a dependency), one under ``if TYPE_CHECKING:`` does not.
"""

from __future__ import annotations

import ast
import importlib
import re
import types
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
_SETUP = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
#: import name -> folder, as setuptools maps them (``anypu.sdk`` -> ``sdk``)
FOLDERS: dict[str, Path] = {name: ROOT / folder for name, folder in _SETUP["package-dir"].items()}
PACKAGES = sorted(_SETUP["packages"])
#: The sub-packages that are rooms of the architecture (``anypu`` itself holds the shared
#: errors, codec and command line).
ROOMS = sorted(name for name in PACKAGES if name.count(".") == 1)


def _folder(package: str) -> Path:
    if package in FOLDERS:
        return FOLDERS[package]
    parent, _, leaf = package.rpartition(".")
    return _folder(parent) / leaf


def _modules() -> Iterator[tuple[str, Path]]:
    """(module name, file) of every anypu module."""
    for package in PACKAGES:
        for path in sorted(_folder(package).glob("*.py")):
            stem = path.stem
            yield (package if stem == "__init__" else f"{package}.{stem}"), path


ALL_MODULES = dict(_modules())
#: What is read: all but the generated protobuf code.
MODULES = {
    name: path
    for name, path in ALL_MODULES.items()
    if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(module imported from, names) for every import in ``path`` that runs."""

    def walk(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                yield from (n for c in child.orelse for n in [c, *walk(c)])
                continue
            yield child
            yield from walk(child)

    for node in walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, tuple(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()


def _target(module: str, names: tuple[str, ...]) -> list[str]:
    """The anypu modules an import depends on: ``from anypu.x import y`` is ``anypu.x.y``
    when that is a module, else ``anypu.x``."""
    if module != "anypu" and not module.startswith("anypu."):
        return []
    submodules = [f"{module}.{name}" for name in names if f"{module}.{name}" in ALL_MODULES]
    if submodules:
        return [name for name in submodules if name in MODULES]
    return [module] if module in MODULES else []


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in ROOMS else "anypu"


def _graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for name, path in MODULES.items():
        for module, names in _imports(path):
            for target in _target(module, names):
                if target != name:
                    graph.add_edge(name, target)
    return graph


def test_no_module_imports_another_package_s_private_module():
    offenders = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            for target in [module, *(f"{module}.{n}" for n in names)]:
                parts = target.split(".")
                private = any(p.startswith("_") and not p.startswith("__") for p in parts[2:3])
                if private and _room(target) != _room(name) and _room(target) != "anypu":
                    offenders.append(f"{name} -> {target}")
    assert sorted(set(offenders)) == []


def test_no_import_cycles_between_modules_or_between_packages():
    graph = _graph()
    assert list(nx.simple_cycles(graph)) == []
    rooms = nx.DiGraph()
    rooms.add_edges_from(
        (_room(a), _room(b)) for a, b in graph.edges if _room(a) != _room(b) != "anypu"
    )
    assert list(nx.simple_cycles(rooms)) == []


@pytest.mark.parametrize(
    ("room", "never"),
    [
        ("anypu.comm", {"anypu.agents", "anypu.scheduler", "anypu.sdk", "anypu.placement"}),
        ("anypu.agents", {"anypu.scheduler", "anypu.sdk", "anypu.placement"}),
        ("anypu.scheduler", {"anypu.agents", "anypu.sdk"}),
        ("anypu.placement", {"anypu.agents", "anypu.scheduler", "anypu.sdk", "anypu.comm"}),
        ("anypu.protos", {"anypu.agents", "anypu.scheduler", "anypu.sdk", "anypu.placement"}),
        ("anypu.devices", {"anypu.agents", "anypu.scheduler", "anypu.sdk", "anypu.protos"}),
    ],
)
def test_the_two_sides_meet_only_on_the_wire(room, never):
    """Agents and scheduler are peers on ``anypu.comm``; only the SDK's embedded mode
    puts both in one process."""
    graph = _graph()
    reached = {_room(b) for a, b in graph.edges if _room(a) == room}
    assert reached & never == set()


# ---------------------------------------------------------------- public faces


#: ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical.
def _export_order(name: str) -> tuple[int, str]:
    bare = name.strip("_")
    if bare.isupper() or (bare.replace("_", "").isdigit()):
        return 0, name
    return (1 if bare[:1].isupper() else 2), name


def _package_face(name: str) -> tuple[types.ModuleType, list[str]]:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert exported is not None, f"{name} has no __all__: give it a public face"
    return package, list(exported)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_exports_a_sorted_complete_public_face(name):
    package, exported = _package_face(name)
    assert exported, f"{name}.__all__ is empty"
    assert exported == sorted(exported, key=_export_order), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    for member in exported:
        assert getattr(package, member, None) is not None, f"{name}.{member} does not resolve"
    public = {
        member
        for member in dir(package)
        if not member.startswith("_")
        and not isinstance(getattr(package, member), types.ModuleType)
        and member not in ("annotations", "TYPE_CHECKING")
    }
    assert public - set(exported) == set(), f"{name} defines public names it does not export"


def test_every_private_module_declares_what_it_offers():
    missing = [
        name
        for name, path in MODULES.items()
        if re.search(r"\._[a-z]", name)
        and "__all__" not in path.read_text()
        and not name.endswith("__main__")
    ]
    assert missing == []
