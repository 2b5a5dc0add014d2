"""Reliability under database outages and crashes, against real `goldtrail serve` processes.

Part 1 runs a throwaway PostgreSQL cluster (owned by the `postgres` OS user, on a free loopback port, in
a temporary folder) and stops, kills (`-m immediate`), freezes (SIGSTOP) and restarts it under a running
service, or before one starts: while the database is gone every /v1 request answers 503 quickly, with JSON
and Retry-After; once it is back the service recovers by itself and nothing acknowledged is lost or
half-applied. A TCP proxy that cuts the connection right after a COMMIT shows what a lost commit answer does.

Part 2 SIGKILLs a `goldtrail serve` in the middle of concurrent writes, on SQLite and on PostgreSQL, and
checks on a new server that every acknowledged write is there, whole, with gapless versions.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from tests.clusters import Cluster, cluster_problem
from tests.helpers import ALL_SCOPES, SECRET, assert_error, auth, create_label, label_history, label_url, labels_url
from tests.servers import clean_environment, goldtrail_serve, run_goldtrail, serving, spawn_serve

DB_TIMEOUT = 2  # GOLDTRAIL_DB_TIMEOUT_SECONDS given to every server here
FAIL_FAST = 5.0  # seconds a request may take to answer while the database is gone
RECOVERY = 20.0  # seconds the service may take to serve again once the database is back
CLIENT_TIMEOUT = 15.0  # a request that takes longer than this counts as a hang


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    # Not under pytest's tmp_path: that folder is root's, mode 0700, and the postgres user cannot enter it.
    db = Cluster(Path(tempfile.mkdtemp(prefix="goldtrail-pg-", dir="/tmp")))
    try:
        db.init()
        db.start()
        yield db
    finally:
        db.destroy()


def cluster_env(cluster: Cluster, tmp_path: Path) -> dict[str, str]:
    return clean_environment(
        GOLDTRAIL_DATABASE_URL=cluster.url,
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_DATA_DIR=str(tmp_path / "data"),
        GOLDTRAIL_DB_TIMEOUT_SECONDS=str(DB_TIMEOUT),
    )


@pytest.fixture
def served(cluster, tmp_path) -> Iterator[tuple[Cluster, str]]:
    """goldtrail serve on the throwaway cluster; yields (cluster, base URL)."""
    with goldtrail_serve(tmp_path, cluster_env(cluster, tmp_path)) as base:
        yield cluster, base


# ---------------------------------------------------------------------------------------------------
# Helpers


def api(base: str, timeout: float = CLIENT_TIMEOUT) -> httpx.Client:
    """A client of the service at `base` with every scope (its token made now, not at import)."""
    return httpx.Client(base_url=base, headers=auth(scope=ALL_SCOPES), timeout=timeout)


def timed(call: Callable[[], httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def assert_unavailable(what: str, elapsed: float, response: httpx.Response) -> None:
    """A quick 503 with a JSON error and a usable Retry-After."""
    assert elapsed < FAIL_FAST, f"{what} took {elapsed:.1f}s"
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), f"{what}: {response.headers}"
    assert isinstance(response.json()["error"], str) and response.json()["error"], f"{what}: {response.text}"
    assert int(response.headers["retry-after"]) >= 1, f"{what}: {response.headers}"


def wait_until_serving(client: httpx.Client, probe: str) -> float:
    """Poll /readyz and a real read until both answer 200; returns how long that took."""
    started = time.monotonic()
    while True:
        try:
            if client.get("/readyz").status_code == 200 and client.get(probe).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > RECOVERY:
            pytest.fail(f"the service did not serve again within {RECOVERY}s of the database coming back")
        time.sleep(0.2)


def run_verify(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_goldtrail(env, "verify", timeout=60)


def serve_log(tmp_path: Path, needle: str = "") -> str:
    """The lines of the test's serve-*.log files that contain the needle (the last 40 of them)."""
    lines = [
        line
        for path in sorted(tmp_path.glob("serve-*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if needle in line
    ]
    return "\n".join(lines[-40:])


# ---------------------------------------------------------------------------------------------------
# Part 1: the database goes away under a running service


def every_v1_request(run: str, label_id: str) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    label = label_url(run, label_id)
    return {
        "POST": lambda c: c.post(labels_url(run), json={"output_resource_name": f"n-{uuid.uuid4()}"}),
        "PUT": lambda c: c.put(label, json={"text_value": "during the outage"}),
        "GET": lambda c: c.get(label),
        "GET as of a version": lambda c: c.get(label, params={"version": "1"}),
        "list": lambda c: c.get(labels_url(run)),
        "DELETE": lambda c: c.delete(label),
        "history": lambda c: c.get(f"{label}/history"),
        "events page": lambda c: c.get("/v1/events"),
        "digest": lambda c: c.get("/v1/audit/digest"),
    }


def test_requests_fail_fast_with_503_while_the_database_is_down(served):
    cluster, base = served
    run = str(uuid.uuid4())
    with api(base) as client:
        label = create_label(client, run, output_resource_name="summary", text_value="before the outage")
        cluster.stop("fast")
        # Twice: the first round meets the pool's now-dead connections, the second finds no server at all.
        for round_ in (1, 2):
            for what, call in every_v1_request(run, label["id"]).items():
                assert_unavailable(f"round {round_}: {what}", *timed(lambda call=call: call(client)))
            elapsed, ready = timed(lambda: client.get("/readyz"))
            assert_unavailable(f"round {round_}: /readyz", elapsed, ready)
            assert "not ready" in ready.json()["error"]
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_the_event_export_stream_fails_with_503_while_the_database_is_down(served):
    cluster, base = served
    with api(base) as client:
        create_label(client, str(uuid.uuid4()), output_resource_name="summary", text_value="before the outage")
        cluster.stop("fast")
        started = time.monotonic()
        with client.stream("GET", "/v1/events", headers={"Accept": "application/x-ndjson"}) as response:
            elapsed = time.monotonic() - started
            try:
                body = response.read()
            except httpx.TransportError as error:
                body = repr(error).encode()
        assert response.status_code == 503, f"{response.status_code} {dict(response.headers)}, then {body!r}"
        assert_unavailable("NDJSON export", elapsed, response)


def test_the_service_recovers_by_itself_when_the_database_comes_back(served):
    cluster, base = served
    run = str(uuid.uuid4())
    with api(base) as client:
        first = create_label(client, run, output_resource_name="summary", text_value="written before the outage")
        second = create_label(client, run, output_resource_name="answer", text_value="also before")
        updated = client.put(label_url(run, second["id"]), json={"text_value": "updated before"})
        assert updated.status_code == 200
        before = {
            "list": client.get(labels_url(run)).json(),
            "history": [label_history(client, run, label["id"]) for label in (first, second)],
        }

        cluster.stop("fast")
        assert_unavailable("GET during the outage", *timed(lambda: client.get(labels_url(run))))
        cluster.start()

        took = wait_until_serving(client, labels_url(run))
        print(f"\nserving again {took:.1f}s after the database came back")
        assert client.get("/readyz").json() == {"status": "ready"}
        assert client.get(labels_url(run)).json() == before["list"]
        assert [label_history(client, run, label["id"]) for label in (first, second)] == before["history"]
        # and it writes again
        after = client.put(label_url(run, first["id"]), json={"text_value": "after the outage"})
        assert after.status_code == 200 and after.headers["etag"] == '"2"'
        third = create_label(client, run, output_resource_name="third", text_value="new after the outage")
        assert [label["id"] for label in client.get(labels_url(run)).json()] == [
            first["id"],
            second["id"],
            third["id"],
        ]


def test_an_outage_during_concurrent_writes_loses_and_half_applies_nothing(served, tmp_path):
    cluster, base = served
    run = str(uuid.uuid4())
    with api(base) as client:
        label_id = create_label(client, run, output_resource_name="hot", text_value="v1")["id"]
    path = label_url(run, label_id)
    stop = threading.Event()
    outcomes: list[tuple[str, int | str, str | None]] = []  # (value sent, status or error, ETag)

    def writer(n: int) -> None:
        with api(base) as client:
            i = 0
            while not stop.is_set():
                value = f"writer {n} put {i}"
                i += 1
                try:
                    response = client.put(path, json={"text_value": value})
                except httpx.TransportError as error:
                    outcomes.append((value, type(error).__name__, None))
                    continue
                outcomes.append((value, response.status_code, response.headers.get("etag")))
                if response.status_code != 200:
                    time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        cluster.stop("immediate")  # kills every backend mid-transaction, no shutdown checkpoint
        time.sleep(1.5)
        cluster.start()  # crash recovery replays the WAL
        with api(base) as client:
            wait_until_serving(client, path)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    statuses = Counter(status for _, status, _ in outcomes)
    assert set(statuses) <= {200, 503}, f"{statuses}\n{serve_log(tmp_path, 'error')}"
    assert statuses[503] > 0, f"the outage was not felt: {statuses}"
    acknowledged = {int(etag.strip('"')): value for value, status, etag in outcomes if status == 200}
    assert len(acknowledged) == statuses[200], "two acknowledged PUTs got the same version"

    with api(base) as client:
        entries = label_history(client, run, label_id)
        current = client.get(path)
    versions = [entry["version"] for entry in entries]
    assert versions == list(range(1, len(entries) + 1))
    stored = {entry["version"]: entry["state"]["text_value"] for entry in entries}
    lost = {version: value for version, value in acknowledged.items() if stored.get(version) != value}
    assert not lost, f"acknowledged writes missing or different after the outage: {lost}"
    # Every stored PUT was sent by a writer. Beyond the acknowledged ones, only a PUT whose COMMIT reached the
    # database just before it died can be there (answered 503 all the same): the rare case
    # test_a_write_whose_commit_answer_is_lost_is_not_answered_503 makes happen on purpose.
    sent = {value for value, _, _ in outcomes}
    assert all(entry["state"]["text_value"] in sent for entry in entries[1:])
    answered_503 = {value for value, status, _ in outcomes if status == 503}
    applied_anyway = [entry for entry in entries[1:] if entry["state"]["text_value"] in answered_503]
    assert len(entries) == 1 + len(acknowledged) + len(applied_anyway)
    print(
        f"\noutage during writes: {dict(statuses)}; {len(acknowledged)} acknowledged, {len(entries) - 1} stored, "
        f"{len(applied_anyway)} answered 503 but applied {[e['request_id'] for e in applied_anyway]}"
    )
    assert current.json() == entries[-1]["state"] and current.headers["etag"] == f'"{len(entries)}"'

    verified = run_verify(cluster_env(cluster, tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr


# A write that commits as it runs, in one statement: an optimistic write (storage.postgres.PostgresOneStatement)
# starts `WITH w0 AS (INSERT INTO events`, a group of updates (storage.group_commit) appends in a later CTE.
_ONE_STATEMENT_WRITE = re.compile(rb"WITH .*INSERT INTO events", re.DOTALL)


class CommitCuttingProxy:
    """A TCP proxy in front of the database. Once armed, it lets the COMMIT of the next transaction that
    appends an event (or the one statement that appends it as a transaction of its own) reach the server,
    holds back everything the server answers, and then cuts the connection: the write is committed, but
    goldtrail never hears so (a database or network dying at the worst moment, made to happen every time)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self._sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, server]
            holding = threading.Event()
            threading.Thread(target=self._to_server, args=(client, server, holding), daemon=True).start()
            threading.Thread(target=self._to_client, args=(server, client, holding), daemon=True).start()

    def _to_server(self, client: socket.socket, server: socket.socket, holding: threading.Event) -> None:
        appended = False
        with suppress(OSError):
            while data := client.recv(65536):
                appended = appended or b"INSERT INTO events" in data
                commits = b"COMMIT" in data or _ONE_STATEMENT_WRITE.search(data) is not None
                if appended and commits and self.armed.is_set():
                    self.armed.clear()
                    holding.set()  # from here on, nothing the server says reaches goldtrail
                    server.sendall(data)
                    time.sleep(0.5)  # the server commits and answers into the void
                    self.cut.set()
                    for end in (client, server):
                        with suppress(OSError):
                            end.shutdown(socket.SHUT_RDWR)
                    return
                server.sendall(data)
                if b"COMMIT" in data or b"ROLLBACK" in data:
                    appended = False

    def _to_client(self, server: socket.socket, client: socket.socket, holding: threading.Event) -> None:
        with suppress(OSError):
            while data := server.recv(65536):
                if holding.is_set():
                    continue
                client.sendall(data)

    def close(self) -> None:
        for sock in self._sockets:
            with suppress(OSError):
                sock.close()


@pytest.fixture
def commit_cutting(cluster, tmp_path) -> Iterator[tuple[CommitCuttingProxy, str]]:
    """goldtrail serve talking to the throwaway cluster through a CommitCuttingProxy; yields (proxy, base URL)."""
    proxy = CommitCuttingProxy(cluster.port)
    env = cluster_env(cluster, tmp_path)
    env["GOLDTRAIL_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    try:
        with goldtrail_serve(tmp_path, env) as base:
            yield proxy, base
    finally:
        proxy.close()


def test_a_write_whose_commit_answer_is_lost_is_not_answered_503(commit_cutting):
    proxy, base = commit_cutting
    run = str(uuid.uuid4())
    with api(base) as client:
        label_id = create_label(client, run, output_resource_name="summary", text_value="v1")["id"]
        proxy.armed.set()
        elapsed, response = timed(lambda: client.put(label_url(run, label_id), json={"text_value": "sent once"}))
        assert proxy.cut.is_set()
        assert elapsed < FAIL_FAST
        entries = label_history(client, run, label_id)
    assert [entry["state"]["text_value"] for entry in entries] == ["v1", "sent once"], "the COMMIT did not land"
    assert response.status_code != 503, (
        f"answered {response.status_code} {response.text} (Retry-After {response.headers.get('retry-after')}), "
        f"but the write was committed as version 2 (request id {entries[1]['request_id']})"
    )
    assert response.status_code == 200 and response.headers["etag"] == '"2"', response.text


def test_retrying_a_write_whose_commit_answer_was_lost_with_its_idempotency_key_applies_it_once(commit_cutting):
    proxy, base = commit_cutting
    run = str(uuid.uuid4())
    with api(base) as client:
        label_id = create_label(client, run, output_resource_name="summary", text_value="v1")["id"]
        put = lambda: client.put(  # noqa: E731
            label_url(run, label_id), json={"text_value": "sent once"}, headers={"Idempotency-Key": "k-1"}
        )
        proxy.armed.set()
        first = put()
        assert proxy.cut.is_set()
        assert first.status_code in (200, 503), first.text
        retry = put()
        # The lost answer's write was committed with its key: the retry replays it instead of writing again.
        assert retry.status_code == 200, retry.text
        assert retry.headers["etag"] == '"2"' and retry.headers.get("idempotent-replayed") == "true", retry.headers
        entries = label_history(client, run, label_id)
    assert [entry["state"]["text_value"] for entry in entries] == ["v1", "sent once"]


def test_no_request_fails_after_the_database_restarted_while_the_service_was_idle(served, tmp_path):
    cluster, base = served
    run = str(uuid.uuid4())
    with api(base) as client:
        path = label_url(run, create_label(client, run, output_resource_name="summary", text_value="v1")["id"])

        def put(i: int) -> int:
            with api(base) as other:
                return other.put(path, json={"text_value": f"warm {i}"}).status_code

        with ThreadPoolExecutor(10) as pool:  # several connections in the pool
            assert set(pool.map(put, range(30))) == {200}
        cluster.stop("fast")
        cluster.start()  # pg_ctl start -w: the database accepts connections again before anything is sent
        statuses = [client.put(path, json={"text_value": f"after {i}"}).status_code for i in range(12)]
        statuses += [client.get(path).status_code for _ in range(12)]
    assert statuses == [200] * 24, f"{statuses}\n{serve_log(tmp_path, 'database unavailable')}"


def requests_in_parallel(base: str, calls: dict[str, Callable[[httpx.Client], httpx.Response]]) -> dict:
    """Send every call at once; each comes back as (seconds, response or the transport error)."""

    def one(call: Callable[[httpx.Client], httpx.Response]) -> tuple[float, httpx.Response | Exception]:
        started = time.monotonic()
        with api(base) as client:
            try:
                answer: httpx.Response | Exception = call(client)
            except httpx.TransportError as error:
                answer = error
            return time.monotonic() - started, answer

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {what: pool.submit(one, call) for what, call in calls.items()}
        return {what: future.result() for what, future in futures.items()}


def test_requests_fail_fast_with_503_while_the_database_hangs(served, tmp_path):
    cluster, base = served
    run = str(uuid.uuid4())
    with api(base) as client:
        label_id = create_label(client, run, output_resource_name="summary", text_value="before the hang")["id"]
        cluster.freeze()
        try:
            answers = requests_in_parallel(base, every_v1_request(run, label_id))
            ready = timed(lambda: client.get("/readyz"))
            health = client.get("/healthz")
        finally:
            cluster.thaw()
        assert health.status_code == 200
        summary = {
            what: (round(elapsed, 1), answer.status_code if isinstance(answer, httpx.Response) else repr(answer))
            for what, (elapsed, answer) in answers.items()
        }
        for what, (elapsed, answer) in answers.items():
            assert isinstance(answer, httpx.Response), f"{what} did not answer: {summary}"
            assert_unavailable(what, elapsed, answer)
        assert_unavailable("/readyz", *ready)
        wait_until_serving(client, labels_url(run))


class Sent(NamedTuple):
    request_id: str
    path: str
    started: float
    status: int | str


WRITE_PATHS = ("create", "create with key", "update", "update with key", "update a hot label", "delete")


def mixed_writers(base: str, run: str, stop: threading.Event, sent: list[Sent], clients: int = 8) -> list:
    """`clients` threads, each writing along one of WRITE_PATHS until `stop`: the optimistic one-statement
    create, update and delete, the locking paths (an Idempotency-Key, a contended label)."""
    with api(base) as client:
        hot = create_label(client, run, output_resource_name="hot", text_value="v1")["id"]

    def writer(n: int) -> None:
        path = WRITE_PATHS[n % len(WRITE_PATHS)]
        own: str | None = None
        with api(base) as client:
            for i in itertools.count():
                if stop.is_set():
                    return
                request_id = f"{path.replace(' ', '-')}-{n}-{i}-{uuid.uuid4().hex[:6]}"
                extra = {"X-Request-ID": request_id}
                if path.endswith("with key"):
                    extra["Idempotency-Key"] = request_id
                label = label_url(run, own)
                started = time.monotonic()
                try:
                    if path.startswith("create") or (own is None and path != "update a hot label"):
                        body = {"output_resource_name": request_id, "text_value": "v1"}
                        response = client.post(labels_url(run), json=body, headers=extra)
                        if response.status_code == 201 and not path.startswith("create"):
                            own = response.json()["id"]
                    elif path == "delete":
                        response = client.delete(label, headers=extra)
                        own = None if response.status_code == 204 else own
                    else:
                        target = label_url(run, hot) if path == "update a hot label" else label
                        response = client.put(target, json={"text_value": request_id}, headers=extra)
                    status: int | str = response.status_code
                except httpx.TransportError as error:
                    status = type(error).__name__
                sent.append(Sent(request_id, path, started, status))
                if status != 200 and status != 201 and status != 204:
                    time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def stored_request_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {request_id for (request_id,) in conn.execute("SELECT request_id FROM events")}


@pytest.mark.parametrize("outage", ["freeze", "immediate stop", "restart"])
def test_no_write_answered_503_is_stored_on_any_write_path(served, tmp_path, outage):
    """DESIGN.md §5: a write answered 503 was not applied, except one whose COMMIT was in flight when the
    database went away; here that means a request that was already under way at that moment."""
    cluster, base = served
    run = str(uuid.uuid4())
    stop, sent = threading.Event(), []
    threads = mixed_writers(base, run, stop, sent)
    try:
        time.sleep(1.0)
        # Until the database is wholly gone (every process stopped, or the server exited), a request may still
        # reach it and have its COMMIT in flight when it goes: only requests begun after that count.
        if outage == "freeze":
            cluster.freeze()
            went_away = time.monotonic()
            time.sleep(2.5 * DB_TIMEOUT)  # every request sent meanwhile is answered 503 before the thaw
            cluster.thaw()
        elif outage == "immediate stop":
            cluster.stop("immediate")
            went_away = time.monotonic()
            time.sleep(1.5 * DB_TIMEOUT)
            cluster.start()
        else:
            cluster.stop("fast")
            went_away = time.monotonic()
            cluster.start()
        with api(base) as client:
            wait_until_serving(client, labels_url(run))
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    stored = stored_request_ids(cluster.url)
    statuses = Counter((request.path, request.status) for request in sent)
    assert {status for _, status in statuses} <= {200, 201, 204, 404, 503}, statuses
    unavailable = [request for request in sent if request.status == 503]
    if outage != "restart":
        assert unavailable, f"the {outage} was not felt: {statuses}"
    acknowledged = [request for request in sent if request.status in (200, 201, 204)]
    assert not [request for request in acknowledged if request.request_id not in stored], (
        "an acknowledged write is lost"
    )
    applied = [request for request in unavailable if request.request_id in stored]
    in_flight = [request for request in applied if request.started <= went_away]
    answered_503_yet_applied = sorted(
        (request.path, request.request_id, f"began {request.started - went_away:+.3f}s after it went away")
        for request in applied
        if request not in in_flight
    )
    print(
        f"\n{outage}: {dict(statuses)}; answered 503 but applied: {len(in_flight)} already under way when the "
        f"database went away, {len(answered_503_yet_applied)} sent after"
    )
    assert not answered_503_yet_applied, (
        f"sent after the database went away, answered 503, stored: {answered_503_yet_applied}"
    )
    logged = serve_log(tmp_path)
    assert "MissingGreenlet" not in logged and '"level": "error"' not in logged, logged
    verified = run_verify(cluster_env(cluster, tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_read_only_database_answers_writes_503_saying_so_and_readyz_says_so(fresh_database, tmp_path):
    """A hot standby (here: a database whose transactions default to read-only, which refuses writes with the
    same SQLSTATE 25006) serves reads; every write is a clear 503, not a 500, and stores nothing."""
    url = fresh_database("postgres")
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(tmp_path / "data")
    )
    run = str(uuid.uuid4())
    with goldtrail_serve(tmp_path, env) as base, api(base) as client:
        label = create_label(
            client, run, output_resource_name="summary", text_value="written while the database took writes"
        )
    name = sa.make_url(url).database
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    with goldtrail_serve(tmp_path, env) as base, api(base) as client:
        path = label_url(run, label["id"])
        writes = {
            "create": client.post(labels_url(run), json={"output_resource_name": "new"}),
            "create with key": client.post(
                labels_url(run), json={"output_resource_name": "k"}, headers={"Idempotency-Key": "k"}
            ),
            "update": client.put(path, json={"text_value": "refused"}),
            "update with key": client.put(path, json={"text_value": "x"}, headers={"Idempotency-Key": "u"}),
            "delete": client.delete(path),
        }
        for what, response in writes.items():
            assert_error(response, 503, "read-only")
            assert int(response.headers["retry-after"]) >= 1, what
        ready = client.get("/readyz")
        assert_error(ready, 503, "not ready", "read-only")
        assert client.get(path).json() == label
        assert client.get(f"{path}/history").status_code == 200
        assert [entry["version"] for entry in label_history(client, run, label["id"])] == [1]


def test_serve_exits_with_an_error_when_the_database_is_down_at_start(cluster, tmp_path):
    cluster.stop("fast")
    process, log = spawn_serve(tmp_path, cluster_env(cluster, tmp_path))
    try:
        code = process.wait(timeout=10 * DB_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"goldtrail serve neither served nor exited within {10 * DB_TIMEOUT}s: {log.read_text()[-2000:]}")
    output = log.read_text(errors="replace")
    assert code != 0
    assert "Connection refused" in output and str(cluster.port) in output, output[-2000:]


def test_serve_explains_in_one_line_that_the_database_is_unreachable(cluster, tmp_path):
    cluster.stop("fast")
    process, log = spawn_serve(tmp_path, cluster_env(cluster, tmp_path))
    try:
        process.wait(timeout=10 * DB_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    output = log.read_text(errors="replace")
    assert "Traceback" not in output, output[-1500:]
    assert output.startswith("goldtrail: "), output[-1500:]


def test_serve_gives_up_in_bounded_time_when_the_database_hangs_at_start(cluster, tmp_path):
    cluster.freeze(postmaster_only=True)  # the kernel still accepts connections; nobody answers
    bound = 5 * DB_TIMEOUT
    process, log = spawn_serve(tmp_path, cluster_env(cluster, tmp_path))
    try:
        code = process.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        cluster.thaw()
    assert code is not None, f"goldtrail serve was still starting after {bound}s; its output: {log.read_text()!r}"
    assert code != 0


# ---------------------------------------------------------------------------------------------------
# Part 2: the server is SIGKILLed in the middle of writes


WRITERS = 12
PUTS_PER_LABEL = 4


def test_a_sigkilled_server_loses_no_acknowledged_write(backend, fresh_database, tmp_path):
    crash_database = fresh_database(backend)
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=crash_database, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(tmp_path / "data")
    )
    run = str(uuid.uuid4())
    acknowledged: list[tuple[str, int, str]] = []  # (label id, version from the ETag, value sent)
    unexpected: list[tuple[str, int, str]] = []
    killed = threading.Event()

    def writer(n: int, base: str) -> None:
        with api(base) as client:
            try:
                for k in range(10_000):
                    value = f"writer {n} label {k} v1"
                    created = client.post(
                        labels_url(run), json={"output_resource_name": f"w{n}-{k}", "text_value": value}
                    )
                    if created.status_code != 201:
                        unexpected.append(("POST", created.status_code, created.text))
                        return
                    label_id = created.json()["id"]
                    acknowledged.append((label_id, int(created.headers["etag"].strip('"')), value))
                    for i in range(2, PUTS_PER_LABEL + 2):
                        value = f"writer {n} label {k} v{i}"
                        updated = client.put(label_url(run, label_id), json={"text_value": value})
                        if updated.status_code != 200:
                            unexpected.append(("PUT", updated.status_code, updated.text))
                            return
                        acknowledged.append((label_id, int(updated.headers["etag"].strip('"')), value))
            except httpx.TransportError:
                if not killed.is_set():
                    raise

    with serving(tmp_path, env) as served, ThreadPoolExecutor(WRITERS) as pool:
        process = served.process
        futures = [pool.submit(writer, n, served.base_url) for n in range(WRITERS)]
        deadline = time.monotonic() + 10
        while len(acknowledged) < 300 and time.monotonic() < deadline and not unexpected:
            time.sleep(0.02)
        killed.set()
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for future in futures:
            future.result(timeout=60)
    assert not unexpected, unexpected
    assert len(acknowledged) >= 50, f"only {len(acknowledged)} writes before the kill"

    with goldtrail_serve(tmp_path, env) as base, api(base, timeout=30) as client:
        listed = client.get(labels_url(run))
        assert listed.status_code == 200, listed.text
        listed_ids = [label["id"] for label in listed.json()]
        acknowledged_ids = {label_id for label_id, _, _ in acknowledged}
        assert acknowledged_ids <= set(listed_ids), "an acknowledged create is missing from the list"
        found, stored_writes = 0, 0
        for label in listed.json():
            entries = label_history(client, run, label["id"])
            stored_writes += len(entries)
            assert [entry["version"] for entry in entries] == list(range(1, len(entries) + 1)), entries
            current = client.get(label_url(run, label["id"]))
            assert current.json() == entries[-1]["state"] == label, "a label is not whole: GET, list and history differ"
            assert current.headers["etag"] == f'"{len(entries)}"'
            for entry in entries:
                assert entry["state"]["text_value"].endswith(f" v{entry['version']}"), entry  # no stray write
            stored = {entry["version"]: entry["state"]["text_value"] for entry in entries}
            for label_id, version, value in acknowledged:
                if label_id == label["id"]:
                    assert stored.get(version) == value, f"acknowledged write {label_id} v{version} lost"
                    found += 1
    print(
        f"\n{crash_database.split(':')[0]}: {len(acknowledged)} writes acknowledged before SIGKILL, {found} found "
        f"after restart; {stored_writes - found} more stored that were never acknowledged (in flight at the kill)"
    )
    assert found == len(acknowledged)

    verified = run_verify(env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
