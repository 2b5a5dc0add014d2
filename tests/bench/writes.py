"""The write path under load: `goldtrail serve` PUT throughput and latency from wrk, 64 connections."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.bench.generate import insert_events, label_events
from tests.bench.harness import Bench
from tests.conftest import token
from tests.servers import free_port

ACCOUNT = "bench"
CONNECTIONS = 64
SECONDS = 10

PUT_SCRIPT = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local n = 0
request = function()
  n = n + 1
  local id = ids[math.random(#ids)]
  return wrk.format("PUT", "/v1/run/%(run)s/gold-label/" .. id,
    {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"},
    '{"text_value": "value ' .. n .. '"}')
end
done = function(summary, latency, requests)
  io.write(string.format("errors: %%d non2xx: %%d\\n", summary.errors.status, summary.errors.status))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's wrk package", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(base: str, script: Path, connections: int = CONNECTIONS, seconds: int = SECONDS) -> dict[str, float]:
    output = subprocess.run(
        [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def millis(label: str) -> float:
        found = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if found is None:
            raise RuntimeError(f"could not read the {label} latency from wrk:\n{output}")
        value, unit = found.groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": millis("50%"),
        "p99": millis("99%"),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


@contextmanager
def reference_server(bench: Bench, kind: str, url: str, workers: int) -> Iterator[str]:
    """One of tests/bench/reference_apps.py, on a free port, until the block ends."""
    port = free_port()
    env = bench.environment(url)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.reference_apps", kind, str(port), str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.put(f"{base}/v1/run/x/gold-label/y", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=15)


def pgbench_rate(url: str, seconds: int = SECONDS) -> float:
    """Raw transactions/s of one event INSERT plus one read-model UPSERT, from pgbench, 8 clients."""
    parsed = sa.make_url(url)
    setup = (
        "CREATE TABLE IF NOT EXISTS bench_events (position bigserial PRIMARY KEY, stream int, version int, data text);"
        "CREATE TABLE IF NOT EXISTS bench_labels (id int PRIMARY KEY, version int);"
    )
    psql = ["psql", "-q", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username,
            parsed.database]  # fmt: skip
    subprocess.run([*psql, "-c", setup], check=True, capture_output=True)
    script = Path(tempfile.mkdtemp()) / "write.sql"
    script.write_text(
        "\\set id random(1, 100000)\n"
        "BEGIN;\n"
        'INSERT INTO bench_events (stream, version, data) VALUES (:id, 1, \'{"type": "GoldLabelUpdated"}\');\n'
        "INSERT INTO bench_labels VALUES (:id, 1) ON CONFLICT (id) DO UPDATE SET version = bench_labels.version + 1;\n"
        "COMMIT;\n"
    )
    output = subprocess.run(
        ["pgbench", "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(script), *psql[2:8], parsed.database],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(re.search(r"tps = ([\d.]+)", output).group(1))


def _median(values: list[float]) -> float:
    return statistics.median(values)


def put_throughput(bench: Bench, backend: str, workers: int = 2, rounds: int = 3) -> None:
    """goldtrail's PUT next to its references, interleaved round by round so drift hits all alike."""
    for shape, labels in (("hot", 10), ("spread", bench.n(100_000))):
        run = str(uuid.uuid4())
        with bench.database(backend) as url:
            rows = list(label_events(ACCOUNT, run, labels, 1))
            insert_events(url, iter(rows))
            bench.goldtrail(url, "rebuild")
            ids = bench.workdir / f"ids-{shape}.txt"
            ids.write_text("\n".join(event.stream_id for event, _, _ in rows) + "\n")
            script = bench.workdir / f"put-{shape}.lua"
            script.write_text(PUT_SCRIPT % {"ids": ids, "run": run, "token": token(ACCOUNT, "bench", ttl=36000)})
            targets = ["goldtrail"] + (["prototype", "bare"] if shape == "spread" else [])
            if backend == "sqlite":
                targets = [t for t in targets if t != "prototype"]  # the prototype is psycopg-only
            figures: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
            for _ in range(rounds):
                for target in targets:
                    if target == "goldtrail":
                        server = bench.servers(url, workers=workers)
                    else:
                        server = _as_list(reference_server(bench, target, url, workers))
                    with server as (base,):
                        figures[target].append(run_wrk(base, script))
            for target in targets:
                rps = _median([f["rps"] for f in figures[target]])
                p50 = _median([f["p50"] for f in figures[target]])
                p99 = _median([f["p99"] for f in figures[target]])
                note = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, median of {rounds}, {workers} workers"
                errors = sum(f["non_2xx"] for f in figures[target])
                if errors:
                    note += f", {errors:.0f} non-2xx"
                name = f"PUT {shape} ({labels:,} labels)" if target == "goldtrail" else f"reference: {target} PUT"
                bench.record(name, backend, f"{CONNECTIONS} connections", rps, "req/s", note)
            if "prototype" in figures:
                ratio = _median([f["rps"] for f in figures["goldtrail"]]) / _median(
                    [f["rps"] for f in figures["prototype"]]
                )
                bench.record("PUT vs prototype", backend, "throughput ratio", ratio, "x", "target >= 0.8")
        if backend == "postgres" and shape == "spread":
            with bench.database(backend) as url:
                bench.record("reference: pgbench", backend, "event INSERT + row UPSERT", pgbench_rate(url), "tx/s",
                             "8 clients")  # fmt: skip


@contextmanager
def _as_list(context) -> Iterator[list[str]]:
    with context as base:
        yield [base]
