"""Finding and describing hardware: one small probe per vendor, and slices of devices."""

from anypu.devices._model import DEVICE_KINDS, Device

__all__ = ["DEVICE_KINDS", "Device"]
