"""Request ids and the access log: every HTTP response carries X-Request-ID, and every request
leaves one structured log line (never a token or a label value) and is counted in the metrics."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's extra fields, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.formatter.converter = time.gmtime
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
