"""PUT throughput as the log grows: the spread-label PUT of writes.put_throughput on a database that
holds only the labels being written, and on one that holds them plus 10M events of other labels."""

from __future__ import annotations

import statistics
import subprocess
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from tests.bench.generate import EPOCH, RUN_LABELS, Clock, history_runs, run_rows, write_history
from tests.bench.harness import Bench
from tests.bench.writes import ACCOUNT, CONNECTIONS, PUT_SCRIPT, run_wrk
from tests.helpers import token

HISTORY = 10_000_000  # events besides the labels being written, at --scale 1
LABELS = 100_000  # the labels the PUTs go to, as in writes.put_throughput
VERIFY_UP_TO = 500_000  # events: `goldtrail verify` checks generated databases this small (seconds, not minutes)


def put_at_scale(bench: Bench, backend: str, workers: int = 2, rounds: int = 3) -> None:
    """Both databases stay up side by side and take turns, round by round, so drift hits both alike."""
    labels, runs = bench.n(LABELS), history_runs(bench.n(HISTORY))
    run = str(uuid.uuid4())
    # The labels under load: one run of the bench account, created after the history, the same in both.
    written = run_rows(ACCOUNT, run, [1] * labels, [False] * labels, 0, Clock(EPOCH, 1))
    with bench.database(backend) as empty, bench.database(backend) as full:
        try:
            write_history(empty, 0, written)
            started = time.perf_counter()
            events = write_history(full, runs, written)
            seconds = time.perf_counter() - started
            bench.record(
                "generate history",
                backend,
                "events + read model",
                events / seconds,
                "events/s",
                f"{events:,} events of {runs * RUN_LABELS + labels:,} labels in {seconds:.0f} s",
            )
            if events <= VERIFY_UP_TO:
                for url in (empty, full):
                    _verify(bench, url)
            ids = bench.workdir / "ids-scale.txt"
            ids.write_text("".join(f"{row[1]}\n" for row in written[1]))
            script = bench.workdir / "put-scale.lua"
            script.write_text(PUT_SCRIPT % {"ids": ids, "run": run, "token": token(ACCOUNT, "bench", ttl=36000)})
            figures: dict[str, list[dict[str, float]]] = {empty: [], full: []}
            for _ in range(rounds):
                for url in (empty, full):
                    with bench.servers(url, workers=workers) as (base,):
                        figures[url].append(run_wrk(base, script))
        finally:
            if backend == "sqlite":  # gigabytes at full scale: gone now, not when the whole suite ends
                _remove_sqlite(full)
                _remove_sqlite(empty)
    rates = {}
    for url, log in ((empty, "no other events"), (full, f"{events - labels:,} other events")):
        rates[url] = statistics.median(f["rps"] for f in figures[url])
        p50 = statistics.median(f["p50"] for f in figures[url])
        p99 = statistics.median(f["p99"] for f in figures[url])
        each = "/".join(f"{f['rps']:.0f}" for f in figures[url])
        note = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, median of {rounds} ({each}), {workers} workers"
        errors = sum(f["non_2xx"] for f in figures[url])
        if errors:
            note += f", {errors:.0f} non-2xx"
        name = f"PUT spread ({labels:,} labels), {log}"
        bench.record(name, backend, f"{CONNECTIONS} connections", rates[url], "req/s", note)
    ratio = rates[full] / rates[empty]
    note = f"{ratio:.2f}x, target >= 0.85"
    bench.record("PUT with history vs without", backend, "throughput ratio", ratio, "x", note)


def _verify(bench: Bench, url: str) -> None:
    try:
        bench.goldtrail(url, "verify")
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"the generated database fails goldtrail verify:\n{error.stdout}{error.stderr}") from error


def _remove_sqlite(url: str) -> None:
    path = Path(sa.make_url(url).database)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        file.unlink(missing_ok=True)
