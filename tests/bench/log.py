"""The verifiable log under load: PUT throughput with the integrator on and off, how long a write takes to be
covered by a signed checkpoint, how fast the integrator appends, proof latency on a big log, and offline
verification of an export."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx

from events import note
from service.settings import load_settings
from service.storage.database import Database
from service.usecases import log
from tests.bench.generate import insert_events, label_events
from tests.bench.harness import Bench
from tests.bench.writes import ACCOUNT, put_script, run_wrk
from tests.helpers import SECRET, token
from tests.servers import run_goldtrail

AUDITOR = "gold_labels:read gold_labels:write audit:read"


def _checkpoint_key(bench: Bench) -> str:
    """The key the benchmark's servers sign checkpoints with (made once per run)."""
    path = bench.workdir / "checkpoint-key"
    if not path.exists():
        path.write_text(note.generate_key("goldtrail.bench")[0] + "\n")
    return str(path)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _checkpoint_lag(base: str, run: str, label: str, stop: threading.Event, lags: list[float]) -> None:
    """While wrk writes, PUT one more version every 200 ms and time it until a checkpoint covers it."""
    headers = {"Authorization": f"Bearer {token(ACCOUNT, 'probe', scope=AUDITOR, ttl=36000)}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        while not stop.is_set():
            answered = client.put(f"/v1/run/{run}/gold-label/{label}", json={"text_value": "probe"})
            written = time.monotonic()
            version = int(answered.headers["etag"].strip('"'))
            index = None
            while not stop.is_set() and time.monotonic() - written < 30:
                if index is None:
                    history = client.get(f"/v1/run/{run}/gold-label/{label}/history").json()
                    index = next(e["log_index"] for e in history if e["version"] == version)
                if index is not None:
                    size = int(client.get("/v1/audit/checkpoint").text.splitlines()[1])
                    if size > index:
                        lags.append(time.monotonic() - written)
                        break
                time.sleep(0.02)
            time.sleep(0.2)


def put_with_and_without_the_log(bench: Bench, backend: str, workers: int = 2, rounds: int = 3) -> float:
    """PUT throughput with every process integrating (on) and with none (off), interleaved round by round;
    returns the median PUT rate with the log on."""
    with bench.database(backend) as url:
        script = put_script(bench, url, bench.n(2_000), "log")
        ids = Path(str(script).replace("put-log.lua", "ids-log.txt")).read_text().split()
        run = script.read_text().split("/v1/run/")[1].split("/")[0]
        rates: dict[str, list[float]] = {"on": [], "off": []}
        signing = {"GOLDTRAIL_CHECKPOINT_KEY": _checkpoint_key(bench)}
        for _ in range(rounds):
            for mode in ("on", "off"):
                with bench.servers(url, workers=workers, GOLDTRAIL_INTEGRATOR=mode, **signing) as (base,):
                    rates[mode].append(run_wrk(base, script)["rps"])
        # One more round with the log on, apart from the rates: the probe's own requests would weigh on them.
        lags: list[float] = []
        with bench.servers(url, workers=workers, **signing) as (base,):
            stop = threading.Event()
            probe = threading.Thread(target=_checkpoint_lag, args=(base, run, ids[0], stop, lags))
            probe.start()
            run_wrk(base, script)
            stop.set()
            probe.join()
        on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
        bench.record("log: PUT, integrator on", backend, "64 connections", on, "req/s", f"median of {rounds}")
        bench.record("log: PUT, integrator off", backend, "64 connections", off, "req/s", f"median of {rounds}")
        bench.record("log: PUT on vs off", backend, "throughput ratio", on / off, "x", "target >= 0.95")
        if lags:
            note = f"{len(lags)} probes during a PUT round; p99 {_percentile(lags, 0.99) * 1000:.0f} ms"
            bench.record("log: checkpoint lag", backend, "PUT answered to covered, p50", statistics.median(lags) * 1000,
                         "ms", note)  # fmt: skip
        return on


def integration_rate(bench: Bench, backend: str, events: int | None = None) -> float:
    """Events integrated per second by one integrator, catching up with a log written without it."""
    count = events or bench.n(1_000_000)
    with bench.database(backend) as url:
        rows = label_events(ACCOUNT, str(uuid.uuid4()), max(1, count // 5), 5)
        insert_events(url, rows)
        settings = load_settings({"GOLDTRAIL_DATABASE_URL": url, "GOLDTRAIL_JWT_SECRET": SECRET})

        async def catch_up() -> tuple[int, float]:
            db = Database.connect(settings)
            try:
                started, done = time.perf_counter(), 0
                while integrated := await log.integrate(db, None):
                    done += integrated
                return done, time.perf_counter() - started
            finally:
                await db.close()

        done, seconds = asyncio.run(catch_up())
        rate = done / seconds
        bench.record("log: integration", backend, f"{done:,} events, one integrator", rate, "events/s",
                     f"{seconds:.1f} s, batches of {log.BATCH}")  # fmt: skip
        return rate


def proofs_and_offline_verification(bench: Bench, backend: str) -> None:
    """Inclusion and consistency proof latency over HTTP on a big log, and `goldtrail verify-log` of its export."""
    count = bench.n(10_000_000)
    with bench.database(backend) as url:
        insert_events(url, label_events(ACCOUNT, str(uuid.uuid4()), max(1, count // 5), 5))
        with bench.servers(url, workers=1, GOLDTRAIL_CHECKPOINT_KEY=_checkpoint_key(bench)) as (base,):
            headers = {"Authorization": f"Bearer {token(ACCOUNT, 'auditor', scope=AUDITOR, ttl=36000)}"}
            with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
                deadline = time.monotonic() + 3600
                while time.monotonic() < deadline:
                    answer = client.get("/v1/audit/checkpoint")
                    if answer.status_code == 200 and int(answer.text.splitlines()[1]) == count:
                        break
                    time.sleep(1)
                checkpoint = answer.text
                latencies: dict[str, list[float]] = {"inclusion": [], "consistency": []}
                step = max(1, count // 500)
                for n in range(500):
                    index = (n * step * 7919) % count
                    for kind, params in (
                        ("inclusion", {"log_index": index, "tree_size": count}),
                        ("consistency", {"from": max(1, index), "to": count}),
                    ):
                        started = time.perf_counter()
                        assert client.get(f"/v1/audit/proof/{kind}", params=params).status_code == 200
                        latencies[kind].append(time.perf_counter() - started)
                for kind, values in latencies.items():
                    p99, p50 = _percentile(values, 0.99) * 1000, statistics.median(values) * 1000
                    note_ = f"p50 {p50:.1f} ms, 500 proofs; target < 20"
                    bench.record(f"log: {kind} proof", backend, f"{count:,} entries, p99", p99, "ms", note_)
                export = bench.workdir / "log-export.jsonl"
                ndjson = {"Accept": "application/x-ndjson"}
                with client.stream("GET", "/v1/events", headers=ndjson) as response, open(export, "wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                key = client.get("/v1/audit/key").text
        (bench.workdir / "log-checkpoint.txt").write_text(checkpoint)
        started = time.perf_counter()
        checked = run_goldtrail(
            {},
            "verify-log",
            str(export),
            "--checkpoint",
            str(bench.workdir / "log-checkpoint.txt"),
            "--key",
            key.strip(),
            cwd=bench.workdir,
        )
        seconds = time.perf_counter() - started
        assert checked.returncode == 0, checked.stdout + checked.stderr
        bench.record("log: verify-log", backend, f"{count:,} events exported", count / seconds, "events/s",
                     f"{seconds:.1f} s, offline; target >= 100,000")  # fmt: skip


def verifiable_log(bench: Bench, backend: str) -> None:
    put_rate = put_with_and_without_the_log(bench, backend)
    rate = integration_rate(bench, backend)
    bench.record("log: integration vs PUT", backend, "rate ratio", rate / put_rate, "x", "target >= 5")
    proofs_and_offline_verification(bench, backend)
