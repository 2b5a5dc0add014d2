"""Log lines: JSON when stderr is not a terminal (what log shippers read), one readable line of text when it is,
and GOLDTRAIL_LOG_FORMAT=json|text to force either. Neither ever holds a token or a label value."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from litestar.testing import TestClient

from service.http.app import create_app
from service.http.request_log import JsonFormatter, TextFormatter, configure_logging
from service.settings import load_settings
from service.storage.migrate import migrate

SECRET = "log-secret-" + uuid.uuid4().hex
GOLDTRAIL = str(Path(sys.executable).with_name("goldtrail"))
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+ \S")


def bearer(account: str = "acme", user: str = "alice") -> str:
    now = int(time.time())
    claims = {"sub": user, "account_id": account, "iat": now, "exp": now + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


class Stream(io.StringIO):
    """A stream that is, or is not, a terminal."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.fixture
def root_logging() -> Iterator[None]:
    """configure_logging replaces the root logger's handlers: put back what the test run had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def is_json_line(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


# --- Choosing the format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log_format", "terminal", "text"),
    [
        ("auto", True, True),
        ("auto", False, False),
        ("json", True, False),
        ("json", False, False),
        ("text", True, True),
        ("text", False, True),
    ],
)
def test_the_format_is_text_on_a_terminal_json_otherwise_unless_forced(root_logging, log_format, terminal, text):
    stream = Stream(terminal)
    configure_logging("INFO", log_format, stream)
    logging.getLogger("goldtrail.test").info("hello", extra={"request_id": "r-1"})
    (line,) = stream.getvalue().splitlines()
    if text:
        assert TEXT_LINE.match(line) and line.endswith(" INFO    goldtrail.test hello request_id=r-1"), line
    else:
        assert json.loads(line)["message"] == "hello" and json.loads(line)["request_id"] == "r-1"


class Writer:
    """A stream with no isatty at all."""

    def write(self, text: str) -> None: ...

    def flush(self) -> None: ...


@pytest.mark.parametrize("stream", [Writer(), io.StringIO()], ids=["no isatty", "closed"])
def test_a_stream_that_cannot_say_whether_it_is_a_terminal_gets_json(root_logging, stream):
    if isinstance(stream, io.StringIO):
        stream.close()
    configure_logging("INFO", "auto", stream)
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)


def test_the_default_format_is_auto():
    env = {"GOLDTRAIL_DATABASE_URL": "sqlite:///unused.sqlite3", "GOLDTRAIL_JWT_SECRET": SECRET}
    assert load_settings(env).log_format == "auto"
    assert load_settings({**env, "GOLDTRAIL_LOG_FORMAT": "JSON"}).log_format == "json"


# --- The text line ------------------------------------------------------------------------------------


def record(message: str = "request", exc_info=None, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("goldtrail.access", logging.INFO, __file__, 1, message, None, exc_info)
    made.__dict__.update(extra)
    return made


def test_a_request_reads_method_path_status_duration_then_its_fields():
    line = TextFormatter().format(
        record(
            method="GET",
            path="/v1/run/r/gold-labels",
            status=200,
            duration_ms=3.25,
            request_id="trace-1",
            account="acme",
            user="alice",
        )
    )
    assert TEXT_LINE.match(line)
    assert line.endswith(
        " goldtrail.access GET /v1/run/r/gold-labels 200 3.25ms request_id=trace-1 account=acme user=alice"
    )


def test_unset_fields_are_left_out_and_odd_values_quoted_so_a_record_stays_one_line():
    line = TextFormatter().format(
        record(method="GET", path="/a b\nforged 200", status=404, duration_ms=1.0, request_id="x", account=None)
    )
    assert "\n" not in line and "account=" not in line
    assert ' GET "/a b\\nforged 200" 404 1.0ms request_id=x' in line
    assert (
        TextFormatter().format(record("two\nlines", detail='say "hi"')).endswith(' two\\nlines detail="say \\"hi\\""')
    )


def test_a_traceback_is_indented_below_its_line():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("unhandled exception", exc_info=sys.exc_info(), request_id="boom-1")
    first, *rest = TextFormatter().format(failed).splitlines()
    assert first.endswith(" unhandled exception request_id=boom-1")
    assert rest[0] == "    Traceback (most recent call last):" and rest[-1] == "    RuntimeError: boom"
    assert all(row.startswith("    ") for row in rest)


def test_both_formats_give_the_time_in_utc():
    at = record()
    at.created, at.msecs = 0.0, 0.0
    assert TextFormatter().format(at).startswith("1970-01-01T00:00:00.000Z ")
    assert json.loads(JsonFormatter().format(at))["time"] == "1970-01-01T00:00:00.000Z"


def test_text_lines_hold_the_request_and_never_a_token_or_a_label_value(tmp_path, caplog):
    settings = load_settings(
        {
            "GOLDTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
            "GOLDTRAIL_DATA_DIR": str(tmp_path),
            "GOLDTRAIL_JWT_SECRET": SECRET,
        }
    )
    migrate(settings.database_url)
    caplog.set_level(logging.INFO, logger="goldtrail")
    token, value, run = bearer(), f"confidential-{uuid.uuid4().hex}", str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "text-1"}
    with TestClient(app=create_app(settings)) as client:
        label = client.post(
            f"/v1/run/{run}/gold-labels", json={"output_resource_name": "o", "text_value": value}, headers=headers
        ).json()
        client.put(f"/v1/run/{run}/gold-label/{label['id']}", json={"object_value": {"k": value}}, headers=headers)
        client.get(f"/v1/run/{run}/gold-labels", headers={"Authorization": f"Bearer {token}x"})  # a 401
        client.post(f"/v1/run/{run}/gold-labels", json={"output_resource_name": value + "\u0000"}, headers=headers)
    lines = [TextFormatter().format(each) for each in caplog.records]
    created = next(line for line in lines if "request_id=text-1" in line and " POST " in line)
    assert f" POST /v1/run/{run}/gold-labels 201 " in created and created.endswith(" account=acme user=alice")
    text = "\n".join(lines)
    for forbidden in (token, token.split(".")[2], SECRET, value):
        assert forbidden not in text


# --- A real `goldtrail serve` -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Output:
    """Everything a process writes to a terminal (or a pipe), read as it comes so the process never blocks."""

    def __init__(self, fd: int) -> None:
        self.fd, self.chunks, self.lock = fd, [], threading.Lock()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the terminal's other end closed: the process is gone
                return
            if not chunk:
                return
            with self.lock:
                self.chunks.append(chunk)

    @property
    def text(self) -> str:
        with self.lock:
            return b"".join(self.chunks).decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, fragment: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while fragment not in self.text:
            assert time.monotonic() < deadline, f"{fragment!r} never logged; got:\n{self.text[-3000:]}"
            time.sleep(0.05)
        return self.text


@contextmanager
def serving(tmp_path: Path, terminal: bool, **settings: str) -> Iterator[tuple[str, Output]]:
    """`goldtrail serve` whose stderr is a terminal (a pseudo-terminal) or a pipe."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOLDTRAIL_")}
    env.update(
        GOLDTRAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        GOLDTRAIL_DATA_DIR=str(tmp_path),
        GOLDTRAIL_JWT_SECRET=SECRET,
        **settings,
    )
    reader, writer = pty.openpty() if terminal else os.pipe()
    port = free_port()
    process = subprocess.Popen(
        [GOLDTRAIL, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=writer,
        start_new_session=True,
    )
    os.close(writer)
    output = Output(reader)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"goldtrail serve exited:\n{output.text[-3000:]}"
            assert time.monotonic() < deadline, f"goldtrail serve did not come up:\n{output.text[-3000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base, output
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output.thread.join(timeout=5)
        os.close(reader)


def exercise(base: str, request_id: str) -> tuple[str, str, str]:
    """A create, carrying a label value, under a token: the (token, value, run) that must not leak or must show."""
    token, value, run = bearer(), f"confidential-{uuid.uuid4().hex}", str(uuid.uuid4())
    response = httpx.post(
        f"{base}/v1/run/{run}/gold-labels",
        json={"output_resource_name": "o", "text_value": value},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return token, value, run


@pytest.mark.e2e
def test_serve_on_a_terminal_writes_readable_lines(tmp_path):
    with serving(tmp_path, terminal=True) as (base, output):
        token, value, run = exercise(base, "tty-1")
        text = output.wait_for("request_id=tty-1")
    line = next(line for line in text.splitlines() if "request_id=tty-1" in line)
    assert TEXT_LINE.match(line), line
    assert re.search(rf" INFO +goldtrail\.access POST /v1/run/{run}/gold-labels 201 [\d.]+ms request_id=tty-1 ", line)
    assert line.endswith(" account=acme user=alice")
    assert not any(is_json_line(each) for each in text.splitlines()), text
    assert token not in text and value not in text and SECRET not in text


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("terminal", "forced", "text"),
    [(False, None, False), (True, "json", False), (False, "text", True)],
    ids=["pipe, auto: json", "terminal, forced json", "pipe, forced text"],
)
def test_serve_writes_json_unless_on_a_terminal_and_a_forced_format_wins(tmp_path, terminal, forced, text):
    settings = {"GOLDTRAIL_LOG_FORMAT": forced} if forced else {}
    with serving(tmp_path, terminal, **settings) as (base, output):
        token, value, _run = exercise(base, "fmt-1")
        logged = output.wait_for("fmt-1")
    lines = [line for line in logged.splitlines() if line.strip()]
    if text:
        assert all(TEXT_LINE.match(line) or line.startswith("    ") for line in lines), logged
    else:
        assert all(is_json_line(line) for line in lines), logged
        request = next(json.loads(line) for line in lines if '"fmt-1"' in line)
        assert (request["method"], request["status"], request["user"]) == ("POST", 201, "alice")
    assert token not in logged and value not in logged
