"""Type-check anypu with mypy as it is installed: ``anypu.<pkg>`` from the top-level folders.

The repository keeps each package in a top-level folder (``devices/`` is
``anypu.devices``, see ``[tool.setuptools] package-dir``), which mypy cannot map by
itself; this builds ``build/typecheck/anypu`` as a tree of symbolic links in the
installed layout and runs ``mypy -p anypu`` there, with the settings of
``[tool.mypy]`` in ``pyproject.toml``.  Run by ``make test`` (``make typecheck``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def build_tree() -> Path:
    """``build/typecheck/anypu`` linked to the folders ``package-dir`` names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "anypu"
    top.mkdir(parents=True)
    for source in (ROOT / package_dir["anypu"]).iterdir():
        if source.suffix == ".py":
            (top / source.name).symlink_to(source)
    for package, folder in package_dir.items():
        if package != "anypu":
            (top / package.removeprefix("anypu.")).symlink_to(ROOT / folder)
    return TREE


def main() -> int:
    tree = build_tree()
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    command += ["-p", "anypu", *sys.argv[1:]]
    return subprocess.call(command, cwd=tree, env={**os.environ, "MYPYPATH": str(tree)})


if __name__ == "__main__":
    sys.exit(main())
