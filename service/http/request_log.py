"""Request ids and the access log: every HTTP response carries X-Request-ID, and every request
leaves one structured log line (never a token or a label value) and is counted in the metrics.
Log lines are JSON for log shippers, or readable text on a terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from litestar.types import Message, Receive, Scope, Send

from service.metrics import REQUESTS_IN_PROGRESS, observe_request

logger = logging.getLogger("goldtrail.access")

REQUEST_ID_KEY = "request_id"
# Accepted client ids: printable ASCII without spaces, so they are safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"^[!-~]{1,200}$")


def request_id_of(scope: Scope) -> str:
    """The id of this request: the client's X-Request-ID when usable, otherwise a fresh one."""
    state = scope.setdefault("state", {})
    if REQUEST_ID_KEY not in state:
        sent = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), b"")
        text = sent.decode("latin-1")
        state[REQUEST_ID_KEY] = text if _VALID_REQUEST_ID.match(text) else str(uuid.uuid4())
    return state[REQUEST_ID_KEY]


async def logged(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send
) -> None:
    started = time.perf_counter()
    request_id = request_id_of(scope)
    status = 500

    async def send_with_id(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [
                *(header for header in message.get("headers", ()) if header[0].lower() != b"x-request-id"),
                (b"x-request-id", request_id.encode()),
            ]
        await send(message)

    REQUESTS_IN_PROGRESS.inc()
    try:
        await app(scope, receive, send_with_id)
    finally:
        REQUESTS_IN_PROGRESS.dec()
        seconds = time.perf_counter() - started
        observe_request(scope["method"], scope.get("path_template"), status, seconds)
        principal = scope.get("user")
        logger.info(
            "request",
            extra={
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "request_id": request_id,
                "account": getattr(principal, "account", None),
                "user": getattr(principal, "user", None),
            },
        )


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call added with `extra=`."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def moment(self, record: logging.LogRecord) -> str:
        return self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"


class JsonFormatter(_UtcFormatter):
    """One JSON object per line: time, level, logger, message, the record's extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.moment(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_extra(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


_BARE = re.compile(r'^[^\s"=\\]+$')  # shown as is; anything else is quoted, so one record stays one line


def _shown(value: object) -> str:
    text = str(value)
    return text if _BARE.match(text) and text.isprintable() else json.dumps(text)


class TextFormatter(_UtcFormatter):
    """One line a person reads: time, level, logger, message, then key=value for each extra field; a request
    reads `GET /path 200 3.2ms request_id=... account=... user=...`. A traceback follows, indented."""

    def format(self, record: logging.LogRecord) -> str:
        # uvicorn's coloured copy of its message says nothing the message does not; unset fields say nothing.
        extra = {key: value for key, value in _extra(record).items() if value is not None and key != "color_message"}
        if {"method", "path", "status", "duration_ms"} <= extra.keys():
            message = " ".join(_shown(extra.pop(key)) for key in ("method", "path", "status"))
            message += f" {extra.pop('duration_ms')}ms"
        else:
            message = record.getMessage()
            message = message if message.isprintable() else json.dumps(message)[1:-1]
        fields = (f"{key}={_shown(value)}" for key, value in extra.items())
        line = " ".join([self.moment(record), f"{record.levelname:<7}", record.name, message, *fields])
        if record.exc_info:
            line += "\n" + "\n".join("    " + row for row in self.formatException(record.exc_info).splitlines())
        return line


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def configure_logging(level: str, log_format: str = "auto", stream: TextIO | None = None) -> None:
    """Every log record to stderr (or `stream`): JSON lines, as log shippers read them, unless the format is
    "text", or "auto" and the stream is a terminal."""
    stream = sys.stderr if stream is None else stream
    text = log_format == "text" or (log_format == "auto" and _is_terminal(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
