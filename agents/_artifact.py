"""The agent's side of model artifacts: check, load and run them without pickle.

An artifact is ``anypu._codec.pack_envelope({"format": ...}, payload)``. Two formats:

``torch.export``
    A ``torch.export.save`` archive. ``torch.export.load`` in torch 2.13 is *not* safe on
    untrusted bytes by itself: it unpickles (``weights_only=False``) any weight or constant
    whose config says ``use_pickle``, ``custom_obj_*``/``opaque_obj_*`` constants, and the
    sample inputs when the restricted unpickler refuses them; a zip it cannot read as a
    pt2 archive is retried as the legacy format, which unpickles too. So before torch sees
    the archive, ``check_export_archive`` allows only the files a plain export writes: raw
    weight and tensor-constant bytes, JSON configs with ``use_pickle: false``, the JSON
    graph and an *empty* sample-inputs file (the SDK drops example inputs on export).
    What is left is JSON and raw bytes: weights become tensors by ``as_strided`` views, and
    the graph names only registered ``torch.ops`` operators.

``torchscript``
    A ``torch.jit.save`` archive, loaded by ``torch.jit.load``. Its ``.pkl`` records are
    read by TorchScript's C++ unpickler, which only rebuilds tensors and TorchScript types
    and never imports Python globals; its code is TorchScript, compiled and interpreted by
    torch, never Python. That is no sandbox for the operators the code calls, but nothing
    arbitrary runs in the agent's Python interpreter.

A ``torch.export`` archive must be stored uncompressed (as torch writes it); TorchScript
deflates its code files, so their declared sizes may total at most 32× the archive's size.
Either way a zip bomb is refused before anything inflates.
"""

from __future__ import annotations

import io
import json
import re
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.export.passes import move_to_device_pass

from anypu._codec import CodecError, Tree, map_tensors, unpack_envelope

__all__ = [
    "ArtifactError",
    "LoadedModel",
    "check_export_archive",
    "load_artifact",
    "run_model",
]

FORMATS = ("torch.export", "torchscript")
_MAX_INFLATION = 32

_EXPORT_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/model\.json|data/sample_inputs/model\.pt"
    r"|data/weights/model_weights_config\.json|data/weights/weight_\d+"
    r"|data/constants/model_constants_config\.json|data/constants/tensor_\d+"
)
_PAYLOAD_NAMES = {
    "data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
    "data/constants/model_constants_config.json": re.compile(r"tensor_\d+"),
}


class ArtifactError(CodecError):
    """The bytes are not a loadable, safe model artifact."""


@dataclass
class LoadedModel:
    """A loaded artifact: call it like the original model; ``device`` is where it lives."""

    format: str
    module: Callable[..., Any]
    device: str = "cpu"
    program: torch.export.ExportedProgram | None = None
    """The exported program behind ``module``, kept to re-place it on another device."""
    _accepted: set[tuple[tuple[Any, ...], ...]] = field(default_factory=set, repr=False)

    def __call__(self, *args: Any) -> Any:
        if self.program is None:
            return self.module(*args)
        # An exported module's pre-hook checks the inputs against the graph's shape and
        # dtype constraints on every call (≈ 0.1 ms, half a small model's forward). The
        # verdict depends on nothing but those properties, so check each signature once.
        signature = _signature(args)
        if signature is not None and signature in self._accepted:
            return self.module.forward(*args)  # type: ignore[attr-defined]  # an nn.Module
        outputs = self.module(*args)
        if signature is not None:
            self._accepted.add(signature)
        return outputs

    def to(self, device: str) -> LoadedModel:
        """Move the model to ``device`` (a torch device string); returns ``self``."""
        if torch.device(device) == torch.device(self.device):
            return self
        if self.program is not None:
            self.program = _place(self.program, device)
            self.module = self.program.module()
            self._accepted.clear()
        else:
            to = getattr(self.module, "to", None)
            if to is None:
                raise ArtifactError(f"a {self.format} model cannot be moved to {device}")
            to(device)
        self.device = device
        return self


def _signature(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], ...] | None:
    """What an exported graph's input check looks at, for flat tensor arguments; else None."""
    if not all(type(a) is torch.Tensor for a in args):
        return None
    return tuple((a.shape, a.dtype, a.device, a.layout) for a in args)


def load_artifact(data: bytes | bytearray | memoryview, device: str = "cpu") -> LoadedModel:
    """Check and load an artifact onto ``device``; never unpickles Python objects.

    Raises ``ArtifactError`` (a ``ValueError``) for bytes that are not a valid artifact.
    """
    header, payload = unpack_envelope(data)
    fmt = header["format"]
    if fmt == "torch.export":
        check_export_archive(payload)
        return _load_exported(bytes(payload), device)
    if fmt == "torchscript":
        _open_archive(payload, fmt)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(io.BytesIO(bytes(payload)), map_location=device)
        except Exception as exc:
            raise ArtifactError(f"torchscript artifact does not load: {_first_line(exc)}") from exc
        return LoadedModel(fmt, module.eval(), device)
    raise ArtifactError(
        f"artifact format {fmt!r} is unknown; this agent loads {', '.join(FORMATS)} — "
        "upgrade the agent or export with a matching anypu"
    )


def _load_exported(payload: bytes, device: str) -> LoadedModel:
    try:
        program = _place(torch.export.load(io.BytesIO(payload)), device)
        return LoadedModel("torch.export", program.module(), device, program)
    except Exception as exc:
        raise ArtifactError(f"torch.export artifact does not load: {_first_line(exc)}") from exc


def _place(program: torch.export.ExportedProgram, device: str) -> torch.export.ExportedProgram:
    # The pass rewrites device literals in the graph too, which moving weights would miss.
    return move_to_device_pass(program, device)


def check_export_archive(payload: bytes | memoryview) -> None:
    """Refuse a ``torch.export`` archive holding anything ``torch.export.load`` would unpickle."""
    archive = _open_archive(payload, "torch.export")
    names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise ArtifactError("torch.export archive must hold exactly one top-level folder")
    root = roots.pop() + "/"
    members = {name[len(root) :]: archive.getinfo(name) for name in names}
    for rel in members:
        if not _EXPORT_MEMBERS.fullmatch(rel):
            raise ArtifactError(
                f"torch.export archive holds {rel!r}, which a plain export does not write "
                "(custom objects, pickled tensors and compiled code are refused)"
            )
    for required in ("archive_format", "models/model.json", *_PAYLOAD_NAMES):
        if required not in members:
            raise ArtifactError(f"torch.export archive lacks {required!r}")
    if archive.read(root + "archive_format") != b"pt2":
        raise ArtifactError("torch.export archive is not in the pt2 format")
    sample = members.get("data/sample_inputs/model.pt")
    if sample is not None and sample.file_size:
        raise ArtifactError("torch.export archive carries pickled sample inputs; re-export it")
    for config_name, allowed in _PAYLOAD_NAMES.items():
        _check_payload_config(archive.read(root + config_name), config_name, allowed)


def _check_payload_config(raw: bytes, name: str, allowed: re.Pattern[str]) -> None:
    try:
        config = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"torch.export archive: {name} is malformed ({exc})") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"torch.export archive: {name} is malformed")
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise ArtifactError(f"torch.export archive: {fqn!r} would be unpickled; refused")
        if not allowed.fullmatch(str(meta.get("path_name", ""))):
            raise ArtifactError(f"torch.export archive: {fqn!r} is not a raw tensor; refused")


def _open_archive(payload: bytes | memoryview, fmt: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{fmt} artifact is not a readable archive: {exc}") from None
    # torch.export stores everything raw; TorchScript deflates its code files, so bound
    # what they may inflate to (a zip bomb is refused before anything is read).
    inflated = sum(info.file_size for info in infos if info.compress_type != zipfile.ZIP_STORED)
    limit = _MAX_INFLATION * len(payload) if fmt == "torchscript" else 0
    if inflated > limit:
        raise ArtifactError(
            f"{fmt} archive has compressed members inflating to {inflated} bytes; "
            f"at most {limit} allowed — refused"
        )
    return archive


def run_model(module: Callable[..., Any], inputs: Tree, torch_device: str) -> tuple[Tree, float]:
    """Run ``module`` on ``inputs`` on ``torch_device``; return CPU outputs and run seconds.

    ``inputs`` is the tuple of positional arguments (anything else is one argument). The
    seconds cover the forward alone, synchronised on accelerators, not the copies.
    """
    device = torch.device(torch_device)
    if isinstance(module, LoadedModel):
        module.to(torch_device)
    elif isinstance(module, torch.nn.Module):
        module.to(device)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    with torch.inference_mode():
        moved = map_tensors(args, lambda t: t.to(device, non_blocking=True))
        _synchronize(device)
        start = time.perf_counter()
        outputs = module(*moved)
        _synchronize(device)
        seconds = time.perf_counter() - start
        return map_tensors(outputs, lambda t: t.to("cpu")), seconds


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
