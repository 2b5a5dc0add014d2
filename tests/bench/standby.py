"""Auditors' reads on a hot standby: audit-read throughput (history, as-of of a 10,000-label run, feed
paging) with the reads on the primary and on one standby while PUTs run, the PUT rate in each case, and
the PUT rate with and without standbys configured (the consistency token's round trip).

Needs a throwaway primary and `pg_basebackup -R` standby (tests/clusters.py: root and the PostgreSQL 15
binaries); PostgreSQL only."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import httpx

from events.types import format_time
from service.storage.migrate import migrate
from tests.bench.audit import ACCOUNT, _headers
from tests.bench.generate import EPOCH, insert_events, label_events
from tests.bench.harness import Bench
from tests.bench.writes import SECONDS, put_script, run_wrk
from tests.clusters import Cluster, Standby, cluster_problem, new_cluster_folder

READERS = ("history", "run as-of", "feed page")


def _reader(base: str, kind: str, path: str, params: dict, stop: threading.Event, counts: dict[str, int]) -> None:
    with httpx.Client(base_url=base, headers=_headers(), timeout=120) as client:
        cursor = "0"
        while not stop.is_set():
            query = {**params, "after": cursor} if kind == "feed page" else params
            response = client.get(path, params=query)
            response.raise_for_status()
            if kind == "feed page":
                cursor = response.json()["next"] if response.json()["events"] else "0"
            counts[kind] += 1


def standby_reads(bench: Bench, backend: str) -> None:
    if backend != "postgres":
        return
    problem = cluster_problem()
    if problem:
        print(f"  standby: skipped ({problem})")
        return
    primary = Cluster(new_cluster_folder())
    standby = Standby(new_cluster_folder(), primary, hot_standby_feedback="off")
    try:
        primary.init()
        primary.start()
        url = primary.url
        migrate(url)
        labels, versions = bench.n(10_000), bench.n(1_000)
        run = str(uuid.uuid4())
        insert_events(url, label_events(ACCOUNT, run, labels, 3))
        history_rows = list(label_events(ACCOUNT, str(uuid.uuid4()), 1, versions))
        insert_events(url, iter(history_rows))
        bench.goldtrail(url, "rebuild")
        script = put_script(bench, url, 2_000, "standby")
        standby.init()
        standby.start()
        # Let the integrator put every event in the log, then let the standby catch up.
        with bench.servers(url) as (base,), httpx.Client(base_url=base, headers=_headers(), timeout=60) as client:
            total = labels * 3 + versions + 2_000
            deadline = time.monotonic() + 300
            while client.get("/v1/audit/digest").json()["tree_size"] < total and time.monotonic() < deadline:
                time.sleep(0.5)
        standby.wait_for_primary(timeout=120)
        middle = format_time(EPOCH + timedelta(microseconds=labels * 2 + labels // 2))
        label_id = history_rows[0][0].stream_id
        paths = {
            "history": (f"/v1/run/{history_rows[0][0].run_id}/gold-label/{label_id}/history", {}),
            "run as-of": (f"/v1/run/{run}/gold-labels", {"as_of": middle}),
            "feed page": ("/v1/events", {"limit": 1000}),
        }
        replicas = {"GOLDTRAIL_READ_REPLICA_URLS": standby.url}
        for where, extra in (("primary", {}), ("standby", replicas)):
            with bench.servers(url, workers=2, **extra) as (base,):
                counts = dict.fromkeys(READERS, 0)
                stop = threading.Event()
                readers = [
                    threading.Thread(target=_reader, args=(base, kind, *paths[kind], stop, counts)) for kind in READERS
                ]
                for thread in readers:
                    thread.start()
                started = time.perf_counter()
                figures = run_wrk(base, script, seconds=SECONDS)
                stop.set()
                for thread in readers:
                    thread.join()
                elapsed = time.perf_counter() - started
                bench.record("standby", backend, f"PUT with audit reads on the {where}", figures["rps"], "req/s",
                             f"p99 {figures['p99']:.0f} ms")  # fmt: skip
                for kind in READERS:
                    bench.record("standby", backend, f"{kind} on the {where}, under PUTs", counts[kind] / elapsed,
                                 "reads/s", "one client")  # fmt: skip
        # The consistency token: PUT alone, without and with a standby configured (one more round trip each).
        for where, extra in (("no standby configured", {}), ("a standby configured (tokens)", replicas)):
            with bench.servers(url, workers=2, **extra) as (base,):
                figures = run_wrk(base, script, seconds=SECONDS)
                bench.record("standby", backend, f"PUT alone, {where}", figures["rps"], "req/s",
                             f"p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms")  # fmt: skip
    finally:
        standby.destroy()
        primary.destroy()
