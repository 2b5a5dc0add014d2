"""Real `goldtrail` processes for end-to-end tests: `goldtrail serve` started and stopped (or killed), the
other commands run to completion, and raw bytes exchanged with a server over a socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

GOLDTRAIL = str(Path(sys.executable).with_name("goldtrail"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any GOLDTRAIL_* setting, plus the given ones."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOLDTRAIL_")}
    env.update(settings)
    env["PATH"] = f"{Path(GOLDTRAIL).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_goldtrail(env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 120):
    """Run one `goldtrail` command to its end; its exit code and output (text)."""
    return subprocess.run([GOLDTRAIL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def spawn_serve(cwd: Path, env: dict[str, str], *args: str, port: int | None = None) -> tuple[subprocess.Popen, Path]:
    """Start `goldtrail serve` in a process group of its own, its output in a log file in `cwd`; returns the
    process and the log's path. Whoever calls this ends the process."""
    port = free_port() if port is None else port
    log = cwd / f"serve-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [GOLDTRAIL, "serve", "--port", str(port), *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


@dataclass(frozen=True)
class Served:
    """A running `goldtrail serve`: its base URL, its log file, and its process."""

    base_url: str
    log: Path
    process: subprocess.Popen

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.base_url.removeprefix("http://").split(":")
        return host, int(port)

    @property
    def port(self) -> int:
        return self.address[1]


@contextmanager
def serving(cwd: Path, env: dict[str, str], *args: str, timeout: float = 30) -> Iterator[Served]:
    """Run `goldtrail serve` on a free port until the block ends (SIGTERM, then SIGKILL to its process group
    if it lingers; a process the block killed itself is just reaped)."""
    port = free_port()
    process, log = spawn_serve(cwd, env, *args, port=port)
    served = Served(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"goldtrail serve exited with {process.returncode}: {_tail(log)}")
            try:
                if httpx.get(f"{served.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"goldtrail serve did not come up in {timeout}s: {_tail(log)}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        process.wait()


@contextmanager
def goldtrail_serve(cwd: Path, env: dict[str, str], *args: str, timeout: float = 30) -> Iterator[str]:
    """Run `goldtrail serve` on a free port until the block ends; yields its base URL."""
    with serving(cwd, env, *args, timeout=timeout) as served:
        yield served.base_url


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


# --- raw HTTP/1.1 over a socket, for what an HTTP client will not send --------------------------------


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, headers, body); the socket has a timeout. Reads no byte past the response,
    so pipelined responses can be read one after the other."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed without a response: {head!r}"
        head += byte
    status_line, *lines = head.decode("latin-1").strip().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    body = b""
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def exchange(served: Served, data: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection; read one response (status, headers, body)."""
    with socket.create_connection(served.address, timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)
