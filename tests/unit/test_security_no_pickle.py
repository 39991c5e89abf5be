"""Nothing in anypu ever unpickles data: checked on the syntax tree of every module.

A call is flagged by what it resolves to through the module's imports (``from pickle
import loads as l; l(x)`` is caught as well as ``pickle.loads(x)``). Loaders that can be
made safe must be called safely: ``torch.load`` only with ``weights_only=True``,
``numpy.load`` never with ``allow_pickle=True``, ``yaml.load`` only with a safe loader.
The two torch loaders that parse untrusted archives are allowed in one place only,
``agents/_artifact.py``, behind its checks (see that module and test_security_models).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anypu", "agents", "scheduler", "sdk", "devices", "placement", "protos", "simulations")

#: Modules whose mere import means deserialising arbitrary objects.
UNPICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
#: Calls that run code from data, whatever their arguments.
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "yaml.unsafe_load",
    "yaml.full_load",
    "torch.serialization.load",
    "numpy.lib.format.read_array",
    "torch.package.PackageImporter",
}
#: Untrusted-archive loaders, allowed only where the archive is vetted first.
VETTED = {"torch.jit.load": "agents/_artifact.py", "torch.export.load": "agents/_artifact.py"}


def _sources() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_pb2" not in path.name:
                files.append(path)
    return files


class _Imports(ast.NodeVisitor):
    """Map local names to the dotted names they were imported as."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.modules: list[tuple[str, int]] = []

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for alias in node.names:
            self.names[(alias.asname or alias.name).split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )
            self.modules.append((alias.name, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        module = node.module or ""
        self.modules.append((module, node.lineno))
        for alias in node.names:
            self.names[alias.asname or alias.name] = f"{module}.{alias.name}"


def _dotted(node: ast.expr, names: dict[str, str]) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(names.get(node.id, node.id))
    name = ".".join(reversed(parts))
    return name.replace("np.", "numpy.", 1) if name.startswith("np.") else name


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def problems(path: Path, root: Path = ROOT) -> list[str]:
    """Every unsafe deserialisation in ``path``, as ``file:line: what``."""
    rel = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=rel)
    imports = _Imports()
    imports.visit(tree)
    found = []
    for module, line in imports.modules:
        if module.split(".")[0] in UNPICKLERS:
            found.append(f"{rel}:{line}: imports {module}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, imports.names)
        where = f"{rel}:{node.lineno}: {name}"
        if name in FORBIDDEN_CALLS or name.split(".")[0] in UNPICKLERS:
            found.append(f"{where} runs code from data")
        elif name == "torch.load":
            safe = _keyword(node, "weights_only")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                found.append(f"{where} without weights_only=True")
        elif name == "numpy.load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and not allow.value):
                found.append(f"{where} with allow_pickle")
        elif name == "yaml.load":
            loader = _keyword(node, "Loader")
            loader_name = _dotted(loader, imports.names) if loader is not None else ""
            if not loader_name.endswith(("SafeLoader", "CSafeLoader")):
                found.append(f"{where} without a safe Loader")
        elif name in VETTED and VETTED[name] != rel:
            found.append(f"{where} outside {VETTED[name]}, where archives are vetted")
    return found


def test_no_module_unpickles_user_data():
    files = _sources()
    assert len(files) > 40  # the scan really covers the code base
    found = [p for path in files for p in problems(path)]
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import pickle\npickle.loads(b'')", True),
        ("from pickle import loads as l\nl(b'')", True),
        ("import dill", True),
        ("import torch\ntorch.load('f')", True),
        ("import torch\ntorch.load('f', weights_only=False)", True),
        ("import torch\ntorch.load('f', weights_only=True)", False),
        ("import numpy as np\nnp.load('f', allow_pickle=True)", True),
        ("import numpy as np\nnp.load('f')", False),
        ("import yaml\nyaml.load(s)", True),
        ("import yaml\nyaml.load(s, Loader=yaml.SafeLoader)", False),
        ("import yaml\nyaml.safe_load(s)", False),
        ("import torch\ntorch.jit.load(b)", True),
        ("eval('1')", True),
    ],
)
def test_the_checker_catches_what_it_should(tmp_path, source, flagged):
    path = tmp_path / "scheduler" / "probe.py"
    path.parent.mkdir()
    path.write_text(source)
    assert bool(problems(path, tmp_path)) is flagged, problems(path, tmp_path)
