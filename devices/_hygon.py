"""Hygon DCUs, read from ``hy-smi``, Hygon's fork of AMD's ``rocm-smi``.

``hy-smi --showproductname --showuse --showmeminfo vram --json`` prints rocm-smi's
``{"card<N>": {label: text}}`` with Hygon's labels: memory in MiB under a lower-case
``vram``, utilisation under ``DCU use (%)`` (``HCU use (%)`` from the 6.3 driver on), and
on newer builds empty keys and missing commas, so ``_amd.parse_rocm_smi_json`` reads it
pair by pair.  The default table (``hy-smi`` alone) shows only percentages, no sizes, so
it is not used.  Recorded outputs and their sources: ``tests/fakes/hygon/SOURCES.md``.

DTK's PyTorch calls DCUs ``cuda:N`` (it is built on HIP); ``HIP_VISIBLE_DEVICES``
narrows a worker to one.  No Hygon source says whether ``ROCR_VISIBLE_DEVICES`` applies,
so it is not set.  Hygon publishes no throughput figures we could source: DCUs get the
default TFLOPS and say so (``tflops_source: default``).
"""

from __future__ import annotations

from typing import ClassVar

from anypu.devices._amd import parse_rocm_smi_json
from anypu.devices._model import Device
from anypu.devices._probe import physical_index
from anypu.devices._tool import ToolProbe

__all__ = ["HygonProbe"]


class HygonProbe(ToolProbe):
    """Hygon DCUs as ``dcu<N>`` / ``cuda:<N>``."""

    name = "hygon"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "hygon"
    binary: ClassVar[str] = "hy-smi"
    arguments: ClassVar[tuple[str, ...]] = (
        "--showproductname",
        "--showuse",
        "--showmeminfo",
        "vram",
        "--json",
    )
    id_prefix: ClassVar[str] = "dcu"
    torch_type: ClassVar[str] = "cuda"
    parse = staticmethod(parse_rocm_smi_json)

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        return {"HIP_VISIBLE_DEVICES": str(physical_index(device))}
