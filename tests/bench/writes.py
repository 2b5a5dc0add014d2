"""The write path under load: `goldtrail serve` PUT and POST throughput and latency from wrk, 64 connections."""

from __future__ import annotations

import importlib.util
import json
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

from service.storage.database import sync_url
from tests.bench.generate import insert_events, label_events
from tests.bench.harness import Bench
from tests.helpers import token
from tests.servers import free_port

ACCOUNT = "bench"
CONNECTIONS = 64
SECONDS = 10

# Numbers wrk's threads 1, 2, ... as `id` (`setup` runs once per thread, before its `init`).
THREAD_IDS = """
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("id", threads)
end
"""

# Each wrk thread writes its own half of the labels, in its own random order: with one seed for all, the
# threads would write the same labels in lockstep. (Connections within a thread still meet on a label.)
PUT_SCRIPT = (
    THREAD_IDS
    + """
init = function(args)
  math.randomseed(7919 * id)
end
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local half = math.max(1, math.floor(#ids / 2))
local n = 0
request = function()
  n = n + 1
  local label = ids[math.min(#ids, ((id - 1) %% 2) * half + math.random(half))]
  return wrk.format("PUT", "/v1/run/%(run)s/gold-label/" .. label,
    {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"},
    '{"text_value": "value ' .. n .. '"}')
end
"""
)

# Every POST must create a new label (a second create of a live name is 409), so a name is made unique
# by the round, the wrk thread and a counter.
POST_SCRIPT = (
    THREAD_IDS
    + """
init = function(args)
  math.randomseed(1000 * %(round)s + id)  -- else every thread and round picks the same runs in turn
end
local n = 0
request = function()
  n = n + 1
  local run = string.format("%(run_prefix)s%%012d", math.random(%(runs)d))
  return wrk.format("POST", "/v1/run/" .. run .. "/gold-labels",
    {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"},
    '{"output_resource_name": "out-%(round)s-' .. id .. '-' .. n .. '", "text_value": "v"}')
end
"""
)

# The `bench` extra of pyproject.toml, installed by the benchmark on first use like wrk
EVENTSOURCING = "eventsourcing[postgres]>=9.4,<10"
# Writers sharing one application, like requests sharing a server's pool. The library's table lock
# serializes the inserts, so threads overlap only the Python work around them; 1 thread measured about the same.
EVENTSOURCING_THREADS = 8


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing Debian's wrk package", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def ensure_package(module: str, requirement: str) -> None:
    """Install one of the `bench` extra's packages on first use, as wrk is."""
    # find_spec, not import: these are only ever imported by the benchmark processes that use them
    if importlib.util.find_spec(module) is None:
        print(f"{module} is missing: installing {requirement}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", requirement], check=True, capture_output=True)


def ensure_eventsourcing() -> None:
    ensure_package("eventsourcing", EVENTSOURCING)


def eventsourcing_rate(bench: Bench, threads: int = EVENTSOURCING_THREADS, seconds: int = SECONDS) -> float:
    """Events/s of tests/bench/eventsourcing_reference.py on a fresh database, in a process of its own
    (its own CPU, like the servers, and its imports and threads stay out of this one)."""
    ensure_eventsourcing()
    with bench.database("postgres") as url:
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.eventsourcing_reference", str(seconds), str(threads)],
            env=_reference_environment(bench, url),
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the eventsourcing reference failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)["rate"]


def _reference_environment(bench: Bench, url: str) -> dict[str, str]:
    env = bench.environment(url)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


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
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.reference_apps", kind, str(port), str(workers)],
        env=_reference_environment(bench, url),
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


def put_script(bench: Bench, url: str, labels: int, name: str) -> Path:
    """Create `labels` labels in one run, ANALYZE, and write the wrk script that PUTs to them at random."""
    run = str(uuid.uuid4())
    rows = list(label_events(ACCOUNT, run, labels, 1))
    insert_events(url, iter(rows))
    bench.goldtrail(url, "rebuild")
    bench.analyze(url)
    return write_put_script(bench, run, [event.stream_id for event, _, _ in rows], name)


def write_put_script(bench: Bench, run: str, label_ids: list[str], name: str) -> Path:
    ids = bench.workdir / f"ids-{name}.txt"
    ids.write_text("\n".join(label_ids) + "\n")
    script = bench.workdir / f"put-{name}.lua"
    script.write_text(PUT_SCRIPT % {"ids": ids, "run": run, "token": token(ACCOUNT, "bench", ttl=36000)})
    return script


# The labels the PUT benchmark writes to: wrk -t2 -c64, each thread on its own 1,000.
PUT_LABELS = 2_000


QUIET = "goldtrail, no request log"


def put_throughput(bench: Bench, backend: str, workers: int = 2, rounds: int = 3) -> None:
    """goldtrail's PUT next to its references on the same freshly ANALYZEd database, interleaved round by
    round so drift hits all alike."""
    for shape, labels in (("hot", 10), ("spread", PUT_LABELS)):
        with bench.database(backend) as url:
            script = put_script(bench, url, labels, shape)
            # goldtrail as deployed (its request log on, INFO), and without the request log to name its share.
            targets = ["goldtrail"] + ([QUIET, "prototype", "bare"] if shape == "spread" else [])
            if backend == "sqlite":
                targets = [t for t in targets if t != "prototype"]  # the prototype is psycopg-only
            figures: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
            # the eventsourcing library as a reference: PostgreSQL only, in-process, on a database of its own
            events: list[float] = []
            for _ in range(rounds):
                for target in targets:
                    if target == "goldtrail":
                        server = bench.servers(url, workers=workers, GOLDTRAIL_LOG_LEVEL="INFO")
                    elif target == QUIET:
                        server = bench.servers(url, workers=workers)
                    else:
                        server = _as_list(reference_server(bench, target, url, workers))
                    with server as (base,):
                        figures[target].append(run_wrk(base, script))
                    bench.analyze(url)  # each target meets statistics as fresh as the first one did
                if backend == "postgres" and shape == "spread":
                    events.append(eventsourcing_rate(bench))
            medians = {}
            for target in targets:
                name = (
                    f"PUT {shape} ({labels:,} labels)"
                    if target == "goldtrail"
                    else f"PUT {shape}, {target}"
                    if target == QUIET
                    else f"reference: {target} PUT"
                )
                medians[target] = record_wrk(bench, name, backend, figures[target], workers)
            rps = {target: figures["rps"] for target, figures in medians.items()}
            if QUIET in rps:
                share = 1 - rps["goldtrail"] / rps[QUIET]
                bench.record("PUT: what the request log costs", backend, "share of throughput", 100 * share, "%",
                             "one JSON line per request at INFO, as deployed")  # fmt: skip
            if "prototype" in rps:
                ratio = rps["goldtrail"] / rps["prototype"]
                bench.record("PUT vs prototype", backend, "throughput ratio", ratio, "x", "target >= 0.8")
                ratio = medians["goldtrail"]["p99"] / medians["prototype"]["p99"]
                bench.record("PUT vs prototype", backend, "p99 latency ratio", ratio, "x", "target <= 2")
            if events:
                appends = _median(events)
                bench.record("reference: eventsourcing", backend, f"{EVENTSOURCING_THREADS} threads, one app",
                             appends, "events/s", f"one event per save, in-process, median of {rounds}")  # fmt: skip
                ratio = rps["goldtrail"] / appends
                bench.record("PUT vs eventsourcing", backend, "throughput ratio", ratio, "x", "target >= 2")
        if backend == "postgres" and shape == "spread":
            with bench.database(backend) as url:
                bench.record("reference: pgbench", backend, "event INSERT + row UPSERT", pgbench_rate(url), "tx/s",
                             "8 clients")  # fmt: skip


def put_after_bulk_import(bench: Bench, backend: str, workers: int = 2) -> None:
    """PUT on labels just made by batch import, with the planner statistics the import left behind (autovacuum
    held off, as in the minute before it comes round), then the same after ANALYZE."""
    total = max(PUT_LABELS, bench.n(50_000))
    bearer = token(ACCOUNT, "bench", ttl=36000)
    with bench.database(backend) as url:
        if backend == "postgres":
            bench.sql(url, *(f"ALTER TABLE {table} SET (autovacuum_enabled = false)" for table in BULK_TABLES))
        bench.analyze(url)  # the statistics of a new deployment: empty tables
        run = str(uuid.uuid4())
        with bench.servers(url, workers=workers) as (base,):
            ids: list[str] = []
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {bearer}"}, timeout=600) as client:
                for start in range(0, total, 10_000):
                    batch = [{"output_resource_name": f"out-{n}", "text_value": "v"} for n in range(start, total)]
                    response = client.post(f"/v1/run/{run}/gold-labels/batch", json={"labels": batch[:10_000]})
                    assert response.status_code == 200, response.text
                    ids += [label["id"] for label in response.json()["labels"]]
            script = write_put_script(bench, run, ids[:: max(1, len(ids) // PUT_LABELS)][:PUT_LABELS], "bulk")
            # The verifiable log integrates the imported events meanwhile: wait, so that the figures measure the
            # statistics and not that catching up.
            caught_up = _integrated(url)
            bench.record("PUT after import: the log catching up", backend, f"{total:,} events", caught_up, "s",
                         "from the last batch's answer until every event is in the verifiable log")  # fmt: skip
            run_wrk(base, script, seconds=3)  # warm-up (connections, prepared statements), as the fresh run has had
            stale = run_wrk(base, script)
            bench.analyze(url)
            fresh = run_wrk(base, script)
        note = f"{total:,} labels imported just before, {PUT_LABELS:,} written to, {workers} workers"
        record_wrk(bench, "PUT after a batch import, statistics as it left them", backend, [stale], workers, note)
        record_wrk(bench, "PUT after a batch import and ANALYZE", backend, [fresh], workers, note)
        bench.record("PUT after import: stale vs fresh statistics", backend, "throughput ratio",
                     stale["rps"] / fresh["rps"], "x", "1 means the service does not suffer from them")  # fmt: skip


BULK_TABLES = ("events", "gold_labels", "log_leaves")


def _integrated(url: str, timeout: float = 600) -> float:
    """Seconds until every event of the database is an entry of its account's verifiable log."""
    started = time.monotonic()
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.connect() as connection:
            behind = "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM log_leaves)"
            while connection.exec_driver_sql(behind).scalar() and time.monotonic() - started < timeout:
                connection.rollback()
                time.sleep(0.2)
    finally:
        engine.dispose()
    return time.monotonic() - started


def post_throughput(bench: Bench, backend: str, workers: int = 2, rounds: int = 3) -> None:
    """goldtrail's POST: every request creates a label, all in one run (hot) or each in a random one of
    10,000 (spread). One database per shape, the server restarted each round, as for PUT."""
    bearer = token(ACCOUNT, "bench", ttl=36000)
    for shape, runs in (("hot", 1), ("spread", 10_000)):
        # the run ids share their first 24 characters, so the script can pick one by number
        prefix = str(uuid.uuid4())[:24]
        figures = []
        with bench.database(backend) as url:
            for round_ in range(rounds):
                script = bench.workdir / f"post-{shape}-{round_}.lua"
                script.write_text(POST_SCRIPT % {"run_prefix": prefix, "runs": runs, "token": bearer, "round": round_})
                with bench.servers(url, workers=workers) as (base,):
                    figures.append(run_wrk(base, script))
        record_wrk(bench, f"POST {shape} ({runs:,} {'run' if runs == 1 else 'runs'})", backend, figures, workers)


def record_wrk(
    bench: Bench, name: str, backend: str, figures: list[dict[str, float]], workers: int, settings: str = ""
) -> dict[str, float]:
    """One table row from the rounds of one target; returns the medians (rps, p50, p99)."""
    medians = {key: _median([f[key] for f in figures]) for key in ("rps", "p50", "p99")}
    errors = sum(f["non_2xx"] for f in figures)
    if errors:  # a target answering errors would be measured at its error path's speed: the figure would lie
        raise RuntimeError(f"{name}: {errors:.0f} answers were not 2xx")
    note = (
        f"p50 {medians['p50']:.0f} ms, p99 {medians['p99']:.0f} ms,"
        f" median of {len(figures)}, {settings or f'{workers} workers'}"
    )
    bench.record(name, backend, f"{CONNECTIONS} connections", medians["rps"], "req/s", note)
    return medians


@contextmanager
def _as_list(context) -> Iterator[list[str]]:
    with context as base:
        yield [base]


def batch_import(bench: Bench, backend: str, rounds: int = 3) -> None:
    """POST …/gold-labels/batch of 10,000 new labels against the raw SQL that writes the same events and
    read-model rows (INSERT … SELECT FROM unnest, the rows made beforehand): the database's own speed."""
    size = bench.n(10_000) if bench.n(10_000) < 10_000 else 10_000
    bearer = token(ACCOUNT, "bench", ttl=36000)
    with bench.database(backend) as url, bench.servers(url, workers=1, GOLDTRAIL_INTEGRATOR="off") as (base,):
        rates = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {bearer}"}, timeout=600) as client:
            for round_ in range(rounds):
                labels = [{"output_resource_name": f"o{round_}-{n}", "text_value": f"value {n}"} for n in range(size)]
                started = time.perf_counter()
                response = client.post(f"/v1/run/{uuid.uuid4()}/gold-labels/batch", json={"labels": labels})
                assert response.status_code == 200 and response.json()["created"] == size, response.text
                rates.append(size / (time.perf_counter() - started))
        rate = _median(rates)
        bench.record("batch import", backend, f"{size:,} new labels a request", rate, "labels/s",
                     f"median of {rounds}, over HTTP, 1 worker")  # fmt: skip
    if backend != "postgres":
        return
    with bench.database(backend) as url:
        raw = []
        dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        import psycopg

        from tests.bench.generate import label_events

        for _ in range(rounds):
            run = str(uuid.uuid4())
            events = [(event, payload, digest) for event, payload, digest in label_events(ACCOUNT, run, size, 1)]
            event_rows = [
                (e.account_id, e.stream_id, e.version, e.run_id, e.type, p.decode(), e.actor, e.recorded_at,
                 e.request_id, e.reason, e.prev_hash, d, 2) for e, p, d in events
            ]  # fmt: skip
            label_rows = [
                (e.account_id, e.stream_id, e.run_id, e.data.output_resource_name, e.data.text_value, None, None,
                 e.actor, e.recorded_at, e.actor, e.recorded_at, None, None, 1, d) for e, _, d in events
            ]  # fmt: skip
            with psycopg.connect(dsn) as conn:
                started = time.perf_counter()
                conn.execute(
                    "INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at,"
                    " request_id, reason, prev_hash, hash, chain) SELECT * FROM unnest(%s::text[], %s::text[],"
                    " %s::int[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[],"
                    " %s::text[], %s::text[], %s::text[], %s::smallint[])",
                    [list(column) for column in zip(*event_rows, strict=True)],
                )
                conn.execute(
                    "INSERT INTO gold_labels (account_id, id, run_id, output_resource_name, text_value, object_value,"
                    " object_value_is_partial, created_by, created_at, updated_by, updated_at, deleted_by, deleted_at,"
                    " version, hash) SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                    " %s::text[], %s::boolean[], %s::text[], %s::timestamptz[], %s::text[], %s::timestamptz[],"
                    " %s::text[], %s::timestamptz[], %s::int[], %s::text[])",
                    [list(column) for column in zip(*label_rows, strict=True)],
                )
                conn.commit()
                raw.append(size / (time.perf_counter() - started))
        reference = _median(raw)
        bench.record("reference: raw SQL", backend, f"{size:,} events + rows, INSERT … SELECT", reference,
                     "labels/s", "the same rows, made beforehand; one transaction")  # fmt: skip
        bench.record("batch vs raw SQL", backend, "throughput ratio", rate / reference, "x", "target >= 0.3")
