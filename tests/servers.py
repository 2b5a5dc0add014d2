"""Start real `goldtrail serve` processes for end-to-end tests, and stop them afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def goldtrail_serve(cwd: Path, env: dict[str, str], *args: str, timeout: float = 30) -> Iterator[str]:
    """Run `goldtrail serve` on a free port until the block ends; yields its base URL."""
    port = free_port()
    log = open(cwd / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed below, after the process
    process = subprocess.Popen(
        [GOLDTRAIL, "serve", "--port", str(port), *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"goldtrail serve exited with {process.returncode}: {_tail(cwd / log.name)}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"goldtrail serve did not come up in {timeout}s: {_tail(cwd / log.name)}")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]
