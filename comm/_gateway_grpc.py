"""The Open Inference Protocol (v2) over gRPC, at any gateway.

``inference.GRPCInferenceService`` as KServe's and Triton's gRPC clients call it
(``ServerLive``, ``ServerReady``, ``ModelReady``, ``ServerMetadata``, ``ModelMetadata``,
``ModelInfer``): at the scheduler on the same port and TLS as the SDK's ``JobService``,
at a gateway agent on its direct port beside ``DirectService``. A thin adapter:
the gateway (``_gateway.InferenceGateway``) finds the deployment, checks the token and
calls a replica, as for HTTP; ``anypu._oip_grpc`` turns the messages into tensors and
back.

- ``ServerLive`` and ``ServerReady`` need no token (probes call them); every other
  method needs ``authorization: Bearer <token>`` metadata: the scheduler's token, or
  for a model's methods that deployment's caller token.
- ``ModelReady`` answers ``ready: false`` (not an error) while no replica is ready; an
  unknown model is NOT_FOUND.
- Refusals carry the gRPC code KServe and Triton use (INVALID_ARGUMENT for a bad
  tensor, NOT_FOUND, UNAVAILABLE while no replica can answer, UNAUTHENTICATED,
  RESOURCE_EXHAUSTED for an oversized request) and a message saying what to change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import grpc

from anypu import _oip_grpc
from anypu._oip import InferenceProtocolError
from anypu._oip_grpc import pb
from anypu.comm._gateway import (
    MAX_INFER_BYTES,
    GatewayRefusal,
    InferenceGateway,
    model_metadata,
    server_metadata,
)

__all__ = ["inference_handler"]

log = logging.getLogger("anypu.inference")


def inference_handler(gateway: InferenceGateway) -> grpc.GenericRpcHandler:
    """The protocol's service for a ``grpc.Server`` (``add_generic_rpc_handlers``)."""
    servicer = _Servicer(gateway)
    methods: dict[str, tuple[Callable[..., Any], Any, Any]] = {
        "ServerLive": (servicer.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (servicer.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (servicer.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (
            servicer.server_metadata,
            pb.ServerMetadataRequest,
            pb.ServerMetadataResponse,
        ),
        "ModelMetadata": (
            servicer.model_metadata,
            pb.ModelMetadataRequest,
            pb.ModelMetadataResponse,
        ),
        "ModelInfer": (servicer.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    return grpc.method_handlers_generic_handler(
        _oip_grpc.SERVICE,
        {
            name: grpc.unary_unary_rpc_method_handler(
                _answered(gateway, name, method),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response) in methods.items()
        },
    )


def _answered(
    gateway: InferenceGateway, name: str, method: Callable[[Any, grpc.ServicerContext], Any]
) -> Callable[[Any, grpc.ServicerContext], Any]:
    """``method`` with its refusals as gRPC statuses, each answer counted."""

    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        model = getattr(request, "model_name", "") or getattr(request, "name", "")
        started = time.monotonic()
        try:
            response = method(request, context)
        except GatewayRefusal as refused:
            status, message = refused.status, refused.message
            if refused.headers:  # each call replaces the last: all of them at once
                context.set_trailing_metadata(
                    tuple((key.lower(), value) for key, value in refused.headers.items())
                )
        except InferenceProtocolError as error:
            status, message = error.status, str(error)
        except Exception:
            log.exception("%s of the inference protocol failed", name)
            status, message = 500, "internal error in the gateway; see its log"
        else:
            seconds = time.monotonic() - started if name == "ModelInfer" else None
            gateway.record("grpc", gateway.label(model), 200, seconds)
            return response
        gateway.record("grpc", gateway.label(model), status)
        context.abort(_oip_grpc.grpc_code(status), message)

    return handler


class _Servicer:
    def __init__(self, gateway: InferenceGateway) -> None:
        self.gateway = gateway

    def _authorize(self, context: grpc.ServicerContext, model: str = "") -> None:
        metadata = dict(context.invocation_metadata())
        header = metadata.get("authorization", "")
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        scheme, _, token = header.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        self.gateway.authorize(bearer, context.peer(), model)

    def server_live(self, request: pb.ServerLiveRequest, context: grpc.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def server_ready(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=True)

    def server_metadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        self._authorize(context)
        return pb.ServerMetadataResponse(**server_metadata())

    def model_ready(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> Any:
        self._authorize(context, request.name)
        info = self.gateway.deployment(request.name, request.version)
        return pb.ModelReadyResponse(ready=bool(info.ready))

    def model_metadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> Any:
        self._authorize(context, request.name)
        described = model_metadata(self.gateway.deployment(request.name, request.version))
        return pb.ModelMetadataResponse(
            name=described["name"],
            versions=described["versions"],
            platform=described["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in described["outputs"]],
        )

    def model_infer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> Any:
        self._authorize(context, request.model_name)
        size = request.ByteSize()
        if size > MAX_INFER_BYTES:
            raise GatewayRefusal(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"an inference request is at most {MAX_INFER_BYTES} bytes, this one is {size}:"
                " send smaller inputs",
            )
        info = self.gateway.deployment(request.model_name, request.model_version)
        parsed = _oip_grpc.parse_model_infer(request)
        named, version = self.gateway.infer(info, parsed, request.model_version)
        return _oip_grpc.encode_model_infer(
            info.name,
            parsed,
            named,
            raw=bool(request.raw_input_contents),
            model_version=str(version),
        )
