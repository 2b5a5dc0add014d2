"""The write path under load: `goldtrail serve` PUT throughput and latency from wrk, 64 connections."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.bench.generate import insert_events, label_events
from tests.bench.harness import Bench
from tests.conftest import token

ACCOUNT = "bench"
CONNECTIONS = 64
SECONDS = 15

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


def put_throughput(bench: Bench, backend: str, workers: int = 2) -> None:
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
            with bench.servers(url, workers=workers) as (base,):
                figures = run_wrk(base, script)
            note = f"p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms, {workers} workers"
            if figures["non_2xx"]:
                note += f", {figures['non_2xx']:.0f} non-2xx"
            bench.record(
                f"PUT {shape} ({labels:,} labels)", backend, f"{CONNECTIONS} connections", figures["rps"], "req/s", note
            )
