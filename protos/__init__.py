"""The wire protocol: ``anypu_v1.proto``, its generated code, and the plain messages.

``messages`` holds the protocol's messages as frozen dataclasses, which agents, the
scheduler and the SDK speak; ``convert`` is the one module that maps them to and from the
generated ``anypu_v1_pb2`` classes (a test keeps it that way); servers and stubs come from
``anypu_v1_pb2_grpc``. ``PROTOCOL_VERSION`` is what a Join must carry.
"""

from anypu import PROTOCOL_VERSION
from anypu.protos import convert, messages

__all__ = ["PROTOCOL_VERSION", "convert", "messages"]
