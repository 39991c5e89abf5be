"""The Open Inference Protocol's REST endpoints over HTTP(S), for any gateway.

``answer_over_http`` reads one request off a ``BaseHTTPRequestHandler`` (the body
bounded by ``MAX_INFER_BYTES``) and answers it through an ``InferenceGateway``: the
scheduler's dashboard server calls it for ``/v2/...``; ``GatewayHTTPServer`` serves
nothing else, for a gateway agent (``anypu agent --gateway-http``), over TLS with the
node's certificate when the agent has one.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from anypu.comm._gateway import MAX_INFER_BYTES, InferenceGateway
from anypu.comm._throttle import http_peer
from anypu.errors import ConfigError

__all__ = ["GatewayHTTPServer", "answer_over_http"]

log = logging.getLogger("anypu.inference")


def answer_over_http(
    request: BaseHTTPRequestHandler,
    gateway: InferenceGateway,
    method: str,
    path: str,
    open_reads: bool = False,
) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) for one protocol request; an oversized body is refused
    unread (413), and the connection then closed."""
    try:
        size = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        size = -1
    if not 0 <= size <= MAX_INFER_BYTES:
        request.close_connection = True  # the body is not read: this connection is spent
        message = (
            f"an inference request is at most {MAX_INFER_BYTES} bytes, this one says"
            f" {request.headers.get('Content-Length')!r}: send smaller inputs"
        )
        body = json.dumps({"error": message}).encode()
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, body, {"Content-Type": "application/json"}
    body = request.rfile.read(size) if size else b""
    return gateway.handle(
        method,
        path,
        dict(request.headers.items()),
        body,
        peer=http_peer(*request.client_address[:2]),
        open_reads=open_reads,
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._answer("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, method: str) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            status, payload, headers = answer_over_http(self, self.server.gateway, method, path)
        except (BrokenPipeError, ConnectionResetError):
            return
        except Exception:
            log.exception("%s %s failed", method, self.path)
            status, payload = 500, b'{"error": "internal error in the gateway; see its log"}'
            headers = {"Content-Type": "application/json"}
        content_type = headers.pop("Content-Type", "application/json")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", 'Bearer realm="anypu"')
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], gateway: InferenceGateway) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway
        self.tls: ssl.SSLContext | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The TLS handshake in the connection's own thread: a slow peer delays no one.
        if self.tls is not None:
            try:
                request.settimeout(10)
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        request.close()


class GatewayHTTPServer:
    """The protocol's REST endpoints at ``host``:``port`` (0: a free one); ``tls``:
    (certificate file, key file) to serve HTTPS with; ``address`` once started."""

    def __init__(
        self,
        gateway: InferenceGateway,
        host: str,
        port: int,
        tls: tuple[str, str] | None = None,
    ) -> None:
        try:
            self._server = _Server((host, port), gateway)
        except OSError as error:
            raise ConfigError(
                f"cannot serve the inference protocol on {host}:{port}: {error.strerror};"
                " choose another --gateway-http (port 0 picks a free one)"
            ) from None
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(*tls)
            self._server.tls = context
            self.scheme = "https"
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="anypu-gateway-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
