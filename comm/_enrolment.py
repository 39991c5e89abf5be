"""The enrolment messages: how a node spends a join token on a certificate.

Two unary calls on the scheduler's client port (TLS, server-authenticated):

- ``/anypu.v1.Enrolment/Enrol``: ``EnrolRequest`` (token, node name, tier, device count
  and memory for the token's caps, a CSR) → ``EnrolAnswer`` (certificate, CA, agent port,
  expiry);
- ``/anypu.v1.Enrolment/Info``: ``{}`` → ``AgentPortInfo`` (where the mutual-TLS agent
  port is, and the CA's hash).

They are small JSON objects over a generic gRPC handler rather than protobuf: a
bootstrap side-channel of a few fields, kept out of the versioned agent protocol. Both
sides use these classes, so the schema is written once; a message that is not a small
JSON object of the right fields is a ``ConfigError`` naming what was wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from anypu.errors import ConfigError

__all__ = [
    "ENROL_METHOD",
    "INFO_METHOD",
    "MAX_JSON_BYTES",
    "AgentPortInfo",
    "EnrolAnswer",
    "EnrolRequest",
    "decode_json",
    "encode_json",
]

ENROL_METHOD = "/anypu.v1.Enrolment/Enrol"
INFO_METHOD = "/anypu.v1.Enrolment/Info"
MAX_JSON_BYTES = 64 << 10

_M = TypeVar("_M", bound="_JsonMessage")


def encode_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value).encode()


def decode_json(data: bytes) -> dict[str, Any]:
    """Parse an enrolment message; ``ConfigError`` for anything but a small JSON object."""
    if len(data) > MAX_JSON_BYTES:
        raise ConfigError(f"enrolment message of {len(data)} bytes; at most {MAX_JSON_BYTES}")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"enrolment message is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError("enrolment message must be a JSON object")
    return value


class _JsonMessage:
    """A dataclass sent as a JSON object: every field present, of its declared type."""

    def encode(self) -> bytes:
        return encode_json(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def decode(cls: type[_M], data: bytes) -> _M:
        return cls.from_dict(decode_json(data))

    @classmethod
    def from_dict(cls: type[_M], value: Mapping[str, Any]) -> _M:
        kinds: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}
        args: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            item = value.get(f.name)
            kind = kinds[str(f.type)]
            if not isinstance(item, kind) or isinstance(item, bool):
                raise ConfigError(f"{cls.__name__} needs {f.name!r} as {f.type}")
            args[f.name] = float(item) if f.type == "float" else item  # type: ignore[arg-type]
        return cls(**args)


@dataclass(frozen=True)
class EnrolRequest(_JsonMessage):
    token: str
    name: str
    tier: str
    devices: int
    memory_bytes: int
    csr: str  # PEM


@dataclass(frozen=True)
class EnrolAnswer(_JsonMessage):
    cert: str  # PEM, CN = the node's name
    ca: str  # PEM
    agent_port: int
    expires_at: float


@dataclass(frozen=True)
class AgentPortInfo(_JsonMessage):
    agent_port: int
    ca_hash: str
