"""The HTTP server's guard against hostile and slow clients: request heads over a size limit are
431, and connections that are slow to send a head or a body, or idle too long, are closed."""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import uuid
from collections.abc import Callable

import httptools
import msgspec
from litestar.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.metrics import CONNECTIONS_REFUSED
from service.settings import Settings

logger = logging.getLogger("goldtrail.http")


class HttpLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What the server allows a client; one frozen copy is handed to every worker process."""

    max_head_bytes: int
    head_timeout_seconds: float
    body_timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_head_bytes=settings.max_head_bytes,
            head_timeout_seconds=settings.head_timeout_seconds,
            body_timeout_seconds=settings.body_timeout_seconds,
        )


def guarded_protocol(settings: Settings) -> Callable[..., GuardedHttpToolsProtocol]:
    """The `http=` protocol factory for uvicorn. A partial of a module-level class, so it pickles into
    the worker processes that uvicorn spawns."""
    return functools.partial(GuardedHttpToolsProtocol, limits=HttpLimits.from_settings(settings))


# How long a refused connection is still read (and the bytes dropped) after its answer went out.
LINGER_SECONDS = 2.0


def raw_error_response(
    status: int, message: str, request_id: str, extra_headers: list[tuple[bytes, bytes]] = ()
) -> bytes:
    """A whole HTTP/1.1 response, `{"error": message}`, that closes the connection."""
    body = msgspec.json.encode({"error": message})
    lines = [
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(),
        *(name + b": " + value for name, value in extra_headers),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"x-request-id: " + request_id.encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with limits on what a client may hold:

    - the request head (request line and headers) may be at most `max_head_bytes`: bytes are counted
      as they arrive, before the parser sees them, so an oversized head is never buffered; it is
      answered 431 and the connection closed;
    - a connection must send a complete head within `head_timeout_seconds` of opening, and each later
      request within that time of its first byte (a deadline, not an idle timer, so trickling one
      byte at a time does not extend it): 408 if part of a head came, a silent close if nothing did;
    - a body must arrive within `body_timeout_seconds` of the end of its head, else the connection is
      closed and the application sees a disconnect;
    - between requests, uvicorn's keep-alive timeout closes an idle connection; bytes that do not
      start a request (stray blank lines) no longer reset it.
    """

    def __init__(self, *args, limits: HttpLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = True  # from the connection's start, or the end of the previous message, to a complete head
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None  # the head's or the body's
        self._refusal: bytes | None = None  # once set, nothing more is read; sent after any response in flight

    # Connection -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.head_timeout_seconds, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Fed to the parser in pieces: in a head, never past the room left under the limit (the parser
        # would buffer an oversized header whole); elsewhere at most one limit's worth, so a pipelined
        # head that starts inside a piece is counted from the next one.
        while data and self._refusal is None and self.parser is not None:
            if self._in_head:
                room = self.limits.max_head_bytes - self._head_bytes
                if room <= 0:
                    CONNECTIONS_REFUSED.labels("head_too_large").inc()
                    limit = self.limits.max_head_bytes
                    self._refuse(431, f"the request head (request line and headers) is larger than {limit} bytes")
                    return
                piece, data = data[:room], data[room:]
                self._head_bytes += len(piece)
            else:
                piece, data = data[: self.limits.max_head_bytes], data[self.limits.max_head_bytes :]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserError:
                self.send_400_response("Invalid HTTP request received.")
                return
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self._disarm()  # the connection is the WebSocket protocol's from here
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
                return

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "the request is not valid HTTP/1.1")

    # Parser callbacks -----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        if self._deadline is None:  # a later request on the connection: its own head deadline
            self._arm(self.limits.head_timeout_seconds, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()
        # Disarmed again at once by on_message_complete when there is no body.
        self._arm(self.limits.body_timeout_seconds, self._body_timed_out)

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._refusal is not None and not self.pipeline:
            self.server_state.total_requests += 1
            self._send_refusal()
            return
        super().on_response_complete()
        if self._deadline is not None:
            # The next request began while this response went out: its own deadline governs, not idleness.
            self._unset_keepalive_if_required()

    # Deadlines ------------------------------------------------------------------------------------

    def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        CONNECTIONS_REFUSED.labels("head_timeout").inc()
        if self._head_bytes or self.cycle is not None:
            self._refuse(408, f"the request head did not arrive within {self.limits.head_timeout_seconds:g} seconds")
        elif not self.transport.is_closing():
            self.transport.close()  # nothing was sent: there is no request to answer

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        waiting_for_us = self.flow.read_paused or (
            cycle is not None and cycle.waiting_for_100_continue and not cycle.response_complete
        )
        if waiting_for_us:
            # The server stopped reading (a pipelined request waits its turn, or the application has not
            # consumed what came), or the client waits for the application's 100 Continue: the client is
            # not the one holding the body back.
            self._arm(self.limits.body_timeout_seconds, self._body_timed_out)
            return
        CONNECTIONS_REFUSED.labels("body_timeout").inc()
        # The application is reading this body, or already answered: only closing is left. It then
        # receives a disconnect, and nothing half-sent is stored.
        if not self.transport.is_closing():
            self.transport.close()

    # Refusals -------------------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close; after the response in flight, if any (a pipelined request)."""
        if self._refusal is not None or self.transport.is_closing():
            return
        self._disarm()
        self._unset_keepalive_if_required()
        request_id = str(uuid.uuid4())
        self._refusal = raw_error_response(status, message, request_id, self.server_state.default_headers)
        logger.info("request refused", extra={"status": status, "detail": message, "request_id": request_id})
        if self.cycle is not None and not self.cycle.response_complete:
            self.flow.pause_reading()
        else:
            self._send_refusal()

    def _send_refusal(self) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(self._refusal or b"")
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Closing with unread request bytes pending makes the kernel reset the connection, and the client
        # may then lose the answer; so half-close, and read on for a moment, dropping what comes.
        self.transport.write_eof()
        self.flow.resume_reading()
        self._arm(LINGER_SECONDS, self.transport.close)


# The second line, for any ASGI server ------------------------------------------------------------


def head_bytes(scope: Scope) -> int:
    """The size of the request line and headers as they came on the wire, from what an ASGI server
    hands the application: never more than it was (no optional space after the colons counted), so a
    head that `goldtrail serve` let through is never refused here."""
    size = len(scope["method"]) + len(scope.get("raw_path") or scope["path"].encode()) + 12  # " ", " HTTP/1.1\r\n"
    if scope.get("query_string"):
        size += 1 + len(scope["query_string"])
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 3  # ":", "\r\n"
    return size + 2


async def refuse_oversized_head(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI application that answers 431 and asks the server to close the connection.

    For servers other than `goldtrail serve`, which refuses such heads before they are buffered: by the
    time an application sees the head, the server has read it whole, so this only keeps the promise."""
    body = msgspec.json.encode({"error": "the request head (request line and headers) is too large"})
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
