"""Auditor workloads: rebuild and feed paging over a big log, run as-of on a big run, a long history,
and a follower tailing the feed while writers append."""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import sqlalchemy as sa

from events.types import format_time
from tests.bench.generate import EPOCH, insert_events, label_events
from tests.bench.harness import Bench, timed
from tests.helpers import token

ACCOUNT = "bench"


def _headers(scope: str | None = "gold_labels:read gold_labels:write audit:read") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(ACCOUNT, 'bench', ttl=36000, scope=scope)}"}


def _raw_scan(url: str) -> float:
    """Events/s of the plainest full read of the table a driver can do (the reference for rebuild)."""
    parsed = sa.make_url(url)
    started = time.perf_counter()
    rows = 0
    if parsed.get_backend_name() == "postgresql":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn) as conn, conn.cursor(name="scan") as cursor:
            cursor.itersize = 10_000
            cursor.execute("SELECT * FROM events ORDER BY position")
            for _ in cursor:
                rows += 1
    else:
        with sqlite3.connect(parsed.database) as conn:
            for _ in conn.execute("SELECT * FROM events ORDER BY position"):
                rows += 1
    return rows / (time.perf_counter() - started)


def rebuild_and_feed(bench: Bench, backend: str) -> None:
    labels, versions = bench.n(100_000), 10
    with bench.database(backend) as url:
        started = time.perf_counter()
        count = insert_events(url, label_events(ACCOUNT, str(uuid.uuid4()), labels, versions))
        bench.record(
            "generate",
            backend,
            "events written",
            count / (time.perf_counter() - started),
            "events/s",
            f"{count:,} events",
        )
        scan = _raw_scan(url)
        bench.record("replay", backend, "raw scan", scan, "events/s", "driver cursor, no decoding")
        output = bench.goldtrail(url, "rebuild").stdout
        rate = float(output.rsplit("(", 1)[1].split()[0].replace(",", ""))
        bench.record("replay", backend, "goldtrail rebuild", rate, "events/s", f"{rate / scan:.2f}x raw scan")
        with bench.servers(url) as (base,), httpx.Client(base_url=base, headers=_headers(), timeout=120) as client:
            started, seen, cursor = time.perf_counter(), 0, None
            while True:
                page = client.get("/v1/events", params={"limit": 1000, **({"after": cursor} if cursor else {})})
                body = page.json()
                if not body["events"]:
                    break
                seen += len(body["events"])
                cursor = body["next"]
            bench.record(
                "feed paging",
                backend,
                "limit=1000 pages",
                seen / (time.perf_counter() - started),
                "events/s",
                f"{seen:,} events",
            )


def run_as_of(bench: Bench, backend: str) -> None:
    labels = bench.n(10_000)
    run = str(uuid.uuid4())
    with bench.database(backend) as url:
        insert_events(url, label_events(ACCOUNT, run, labels, 3))
        bench.goldtrail(url, "rebuild")
        # Halfway through the third round of updates: half the labels at version 2, half at 3.
        middle = format_time(EPOCH + timedelta(microseconds=labels * 2 + labels // 2))
        with bench.servers(url) as (base,), httpx.Client(base_url=base, headers=_headers(), timeout=60) as client:
            path = f"/v1/run/{run}/gold-labels"
            assert len(client.get(path, params={"as_of": middle}).json()) == labels
            median, best = timed(lambda: client.get(path, params={"as_of": middle}).raise_for_status())
            bench.record("run as-of", backend, f"{labels:,} labels", median * 1000, "ms", f"best {best * 1000:.0f} ms")
            median, best = timed(lambda: client.get(path).raise_for_status())
            bench.record("run list", backend, f"{labels:,} labels", median * 1000, "ms", f"best {best * 1000:.0f} ms")


def long_history(bench: Bench, backend: str) -> None:
    versions = bench.n(10_000)
    run = str(uuid.uuid4())
    with bench.database(backend) as url:
        rows = list(label_events(ACCOUNT, run, 1, versions))
        label_id = rows[0][0].stream_id
        insert_events(url, iter(rows))
        bench.goldtrail(url, "rebuild")
        with bench.servers(url) as (base,), httpx.Client(base_url=base, headers=_headers(), timeout=60) as client:
            path = f"/v1/run/{run}/gold-label/{label_id}/history"
            assert len(client.get(path).json()) == versions
            median, best = timed(lambda: client.get(path).raise_for_status())
            bench.record("history", backend, f"{versions:,} events", median * 1000, "ms", f"best {best * 1000:.0f} ms")


def feed_under_writers(bench: Bench, backend: str, writers: int = 16, seconds: float = 10) -> None:
    with bench.database(backend) as url, bench.servers(url, count=2) as servers:
        run = str(uuid.uuid4())
        stop, writers_done = threading.Event(), threading.Event()
        acknowledged, failed = [], []

        def writer(n: int) -> None:
            with httpx.Client(base_url=servers[n % 2], headers=_headers(None), timeout=60) as client:
                label = client.post(f"/v1/run/{run}/gold-labels", json={"output_resource_name": f"w{n}"})
                (acknowledged if label.status_code == 201 else failed).append(label.status_code)
                while not stop.is_set():
                    response = client.put(f"/v1/run/{run}/gold-label/{label.json()['id']}", json={"text_value": "x"})
                    (acknowledged if response.status_code == 200 else failed).append(response.status_code)

        delays: list[float] = []

        def follower() -> int:
            seen, cursor, give_up = 0, None, float("inf")
            with httpx.Client(base_url=servers[1], headers=_headers(), timeout=60) as client:
                while True:
                    finished = writers_done.is_set()  # read before the page: the last page follows every write
                    if finished and give_up == float("inf"):
                        give_up = time.monotonic() + 60
                    params = {"limit": 1000, **({"after": cursor} if cursor else {})}
                    body = client.get("/v1/events", params=params).json()
                    now = datetime.now(UTC)
                    delays.extend(
                        (now - datetime.fromisoformat(event["recorded_at"])).total_seconds() for event in body["events"]
                    )
                    seen += len(body["events"])
                    cursor = body["next"]
                    # Events enter the account's log within about a second of commit: once the writers are done,
                    # follow until every acknowledged write is there (or a minute passed).
                    if finished and not body["events"] and (seen >= len(acknowledged) or time.monotonic() > give_up):
                        return seen
                    if not body["events"]:
                        time.sleep(0.01)

        started = time.perf_counter()
        with ThreadPoolExecutor(writers + 1) as pool:
            tail = pool.submit(follower)
            writing = [pool.submit(writer, n) for n in range(writers)]
            time.sleep(seconds)
            stop.set()
            for future in writing:
                future.result()
            elapsed = time.perf_counter() - started
            writers_done.set()
        seen = tail.result()
        assert not failed, f"writes failed: {failed[:10]}"
        assert seen == len(acknowledged), (seen, len(acknowledged))
        bench.record(
            "feed under writers",
            backend,
            f"{writers} writers, 2 servers",
            len(acknowledged) / elapsed,
            "writes/s",
            f"follower saw all {seen:,} events",
        )
        bench.record(
            "feed under writers",
            backend,
            "follower delay p50",
            statistics.median(delays) * 1000,
            "ms",
            f"p99 {statistics.quantiles(delays, n=100)[98] * 1000:.0f} ms",
        )
