"""Regenerate the committed Python code from ``anypu_v1.proto`` and ``inference_v2.proto``.

Run ``make protos`` (or ``python -m anypu.protos.generate``). The protos are compiled
from a staging tree laid out as ``anypu/protos/…`` so the generated gRPC module imports
its messages as ``anypu.protos.anypu_v1_pb2`` instead of a bare top-level name.
``inference_v2.proto`` has messages only (its service is served by name, see the proto),
so no gRPC module is kept for it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("anypu_v1.proto", "inference_v2.proto")
GENERATED = (
    "anypu_v1_pb2.py",
    "anypu_v1_pb2.pyi",
    "anypu_v1_pb2_grpc.py",
    "inference_v2_pb2.py",
    "inference_v2_pb2.pyi",
)


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto into ``out_dir`` and return the generated files."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    with tempfile.TemporaryDirectory() as staging:
        package = Path(staging) / "anypu" / "protos"
        package.mkdir(parents=True)
        for proto in PROTOS:
            shutil.copy(HERE / proto, package / proto)
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{staging}",
            f"-I{include}",
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            *(str(package / proto) for proto in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {', '.join(PROTOS)} in {HERE}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            shutil.copy(package / name, out_dir / name)
            written.append(out_dir / name)
        return written


def main() -> None:
    for path in generate(HERE):
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
