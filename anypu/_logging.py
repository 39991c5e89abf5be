"""How the command line logs: levels, text or JSON lines, and gRPC's own chatter kept down.

Servers (``anypu scheduler``, ``anypu agent``) log what happened at INFO: joins, leaves,
enrolments, placements with their reason, retries, failures, each line ending with the
``[stimulus id]`` that caused it. ``--log-format json`` writes one JSON object per line
(``time``, ``level``, ``logger``, ``message``, and ``stimulus_id`` when the message ends
with one) for log shippers. gRPC's C core prints TLS handshake failures and the like to
stderr on its own; ``GRPC_VERBOSITY`` is set to ERROR unless the level is DEBUG (an
operator's own ``GRPC_VERBOSITY`` wins), and the ``grpc`` Python loggers to WARNING.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
_STIMULUS = re.compile(r"\s*\[([^\[\]\s]+)\]$")


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        document: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        found = _STIMULUS.search(message)
        if found:
            document["stimulus_id"] = found.group(1)
            message = message[: found.start()]
        document["message"] = message
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (as ``logging.lastResort`` does),
    so a redirected or replaced stderr never leaves a handler on a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Set up the root logger for a command; call before gRPC is imported."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    if level != "debug":
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    handler = _StderrHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # libraries: warnings and worse
    logging.getLogger("anypu").setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
