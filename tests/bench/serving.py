"""The serving defaults, chosen by measurement: goldtrail's PUT on spread labels with 1, 2 and 4 worker
processes, with 5, 10 and 20 pooled connections per worker, and under granian instead of uvicorn,
interleaved round by round."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.bench.harness import Bench
from tests.bench.writes import ensure_package, put_script, record_wrk, run_wrk
from tests.servers import free_port

WORKERS = (1, 2, 4)
POOL_SIZES = (5, 10, 20)
DEFAULT_POOL = 10
GRANIAN = "granian>=2.0,<3"  # the `bench` extra


@contextmanager
def granian_serve(bench: Bench, url: str, workers: int) -> Iterator[list[str]]:
    """goldtrail's app under granian (uvloop, like uvicorn here), until the block ends."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="goldtrail-metrics-") as metrics:
        env = bench.environment(url, PROMETHEUS_MULTIPROC_DIR=metrics)
        command = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi", "--factory",
                   "--workers", str(workers), "--loop", "uvloop", "--port", str(port), "--log-level", "warning",
                   "--no-ws", "service.http.app:create_app_from_environment"]  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield [base]
        finally:
            process.terminate()
            process.wait(timeout=15)


def serving_defaults(bench: Bench, backend: str, rounds: int = 3) -> None:
    ensure_package("granian", GRANIAN)
    settings = [("uvicorn", workers, DEFAULT_POOL) for workers in WORKERS]
    settings += [("uvicorn", 2, pool) for pool in POOL_SIZES if pool != DEFAULT_POOL]
    settings += [("granian", 2, DEFAULT_POOL)]
    labels = bench.n(100_000)
    with bench.database(backend) as url:
        script = put_script(bench, url, labels, "serving")
        figures: dict[tuple[str, int, int], list[dict[str, float]]] = {setting: [] for setting in settings}
        for _ in range(rounds):
            for server, workers, pool in settings:
                if server == "granian":
                    serving = granian_serve(bench, url, workers)
                else:
                    serving = bench.servers(url, workers=workers, GOLDTRAIL_DB_POOL_SIZE=str(pool))
                with serving as (base,):
                    figures[server, workers, pool].append(run_wrk(base, script))
        for (server, workers, pool), rounds_figures in figures.items():
            name = f"serving: {server}, {workers} workers, pool {pool}"
            record_wrk(bench, name, backend, rounds_figures, workers, f"PUT spread ({labels:,} labels)")
