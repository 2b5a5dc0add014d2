"""Auditors' reads on a real PostgreSQL hot standby, against real `goldtrail serve` processes.

The tests start their own primary and a `pg_basebackup -R` streaming standby (as the `postgres` OS user, on
free ports), with hot_standby_feedback off and a short max_standby_streaming_delay, so that replay cancels
long reads on the standby quickly (recovery conflicts) and the service must survive them.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from service.storage.replicas import recovery_conflict
from tests.clusters import Cluster, Standby, cluster_problem, new_cluster_folder
from tests.helpers import ALL_SCOPES, SECRET, assert_error, auth, create_label, label_url, labels_url, new_account
from tests.servers import clean_environment, goldtrail_serve, run_goldtrail

HEADER = "Goldtrail-Consistency"
CLIENT_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Cluster, Standby]]:
    """A primary and its streaming hot standby, for the whole module."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    primary = Cluster(new_cluster_folder())
    standby = Standby(new_cluster_folder(), primary, hot_standby_feedback="off", max_standby_streaming_delay="100ms")
    try:
        primary.init()
        primary.start()
        standby.init()
        standby.start()
        standby.wait_for_primary()
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


def standby_env(pair: tuple[Cluster, Standby], tmp_path: Path, **extra: str) -> dict[str, str]:
    primary, standby = pair
    return clean_environment(
        GOLDTRAIL_DATABASE_URL=primary.url,
        GOLDTRAIL_READ_REPLICA_URLS=standby.url,
        GOLDTRAIL_REPLICA_CHECK_SECONDS="0.2",
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_DATA_DIR=str(tmp_path / "data"),
        GOLDTRAIL_DB_TIMEOUT_SECONDS="3",
        **extra,
    )


@pytest.fixture
def served(pair, tmp_path) -> Iterator[str]:
    with goldtrail_serve(tmp_path, standby_env(pair, tmp_path), "--workers", "1") as base:
        yield base


def api(base: str, account: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers=auth(account, scope=ALL_SCOPES), timeout=CLIENT_TIMEOUT)


def reads_by_database(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=CLIENT_TIMEOUT).text
    found = re.findall(r'^goldtrail_db_reads_total\{database="([^"]+)"\} ([0-9.e+]+)$', text, re.M)
    return {name: float(count) for name, count in found}


def standby_name(standby: Standby) -> str:
    return f"127.0.0.1:{standby.port}/postgres"


def wait_for_standby_in_use(base: str, standby: Standby, client: httpx.Client, probe: str) -> None:
    """Until a read is served by the standby again (after it started, or came back)."""
    deadline = time.monotonic() + 30
    while True:
        before = reads_by_database(base).get(standby_name(standby), 0)
        assert client.get(probe).status_code == 200
        if reads_by_database(base).get(standby_name(standby), 0) > before:
            return
        assert time.monotonic() < deadline, "the standby was not used within 30s"
        time.sleep(0.2)


def history_versions(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [entry["version"] for entry in response.json()]


def test_audit_reads_go_to_the_standby_and_writes_answer_a_consistency_token(pair, served):
    _, standby = pair
    run = str(uuid.uuid4())
    with api(served, new_account()) as client:
        response = client.post(labels_url(run), json={"output_resource_name": "summary", "text_value": "v1"})
        assert response.status_code == 201, response.text
        token = response.headers[HEADER]
        assert token.startswith("1.") and len(token) < 100
        label = response.json()
        history = f"{label_url(run, label['id'])}/history"
        wait_for_standby_in_use(served, standby, client, history)
        # Every write answers a token, each one different (it is sealed: no WAL position can be read off it).
        put = client.put(label_url(run, label["id"]), json={"text_value": "v2"})
        assert put.status_code == 200 and put.headers[HEADER] not in (token, "")
        delete = client.delete(label_url(run, label["id"]))
        assert delete.status_code == 204 and delete.headers[HEADER]
        assert history_versions(client.get(history, headers={HEADER: delete.headers[HEADER]})) == [1, 2, 3]
        # The documented routes' answers are unchanged, and a failed write answers no token.
        missing = client.put(label_url(run, str(uuid.uuid4())), json={"text_value": "x"})
        assert_error(missing, 404)
        assert HEADER not in missing.headers
        # A token that does not open (mangled, or another deployment's) is no error: the primary answers.
        assert history_versions(client.get(history, headers={HEADER: "1.not-a-token"})) == [1, 2, 3]


def test_read_your_writes_with_the_token_is_never_stale_and_without_it_a_standby_can_be(pair, served):
    _, standby = pair
    run = str(uuid.uuid4())
    with api(served, new_account()) as client:
        label = create_label(client, run, output_resource_name="summary", text_value="v1")
        url = label_url(run, label["id"])
        wait_for_standby_in_use(served, standby, client, f"{url}/history")
        used_before = reads_by_database(served).get(standby_name(standby), 0)
        for version in range(2, 302):
            put = client.put(url, json={"text_value": f"v{version}"})
            assert put.status_code == 200, put.text
            token = {HEADER: put.headers[HEADER]}
            # An audit read, and the documented GET (a token lets a standby that has it answer).
            assert history_versions(client.get(f"{url}/history", headers=token))[-1] == version
            got = client.get(url, headers=token)
            assert got.status_code == 200 and got.json()["text_value"] == f"v{version}", got.text
        assert reads_by_database(served).get(standby_name(standby), 0) > used_before + 100

        # Without the token, a standby that has not replayed the write yet answers what it has (replay paused
        # here, so the stale answer is certain rather than a matter of timing); with it, never.
        standby.pause_replay()
        try:
            put = client.put(url, json={"text_value": "while replay is paused"})
            assert put.status_code == 200, put.text
            stale = history_versions(client.get(f"{url}/history"))
            assert stale[-1] == 301, "the paused standby answered with the write it has not replayed"
            fresh = history_versions(client.get(f"{url}/history", headers={HEADER: put.headers[HEADER]}))
            assert fresh[-1] == 302
        finally:
            standby.resume_replay()


def test_a_follower_on_the_standby_never_skips_or_reorders_while_writers_write_to_the_primary(pair, served):
    primary, standby = pair
    account = new_account()
    stop = threading.Event()
    failures: list[str] = []

    def write() -> None:
        run = str(uuid.uuid4())
        with api(served, account) as client:
            labels = [create_label(client, run, text_value="v1")["id"] for _ in range(5)]
            n = 0
            while not stop.is_set():
                n += 1
                response = client.put(label_url(run, labels[n % 5]), json={"text_value": f"v{n}"})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")

    writers = [threading.Thread(target=write) for _ in range(4)]
    seen: list[dict] = []
    cursor = "0"
    with api(served, account) as follower:
        wait_for_standby_in_use(served, standby, follower, "/v1/events")
        used_before = reads_by_database(served).get(standby_name(standby), 0)
        for thread in writers:
            thread.start()
        started = time.monotonic()
        try:
            while time.monotonic() - started < 8:
                page = follower.get("/v1/events", params={"after": cursor, "limit": "200"})
                assert page.status_code == 200, page.text
                seen += page.json()["events"]
                cursor = page.json()["next"]
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        assert not failures, failures[:3]
        # Let the integrator and the standby catch up, then read to the end of the log.
        with psycopg.connect(primary.url) as conn:
            deadline = time.monotonic() + 30
            while True:
                logged = conn.execute("SELECT count(*) FROM log_leaves WHERE account_id = %s", (account,)).fetchone()[0]
                events = conn.execute("SELECT count(*) FROM events WHERE account_id = %s", (account,)).fetchone()[0]
                if logged == events:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
                conn.rollback()
            expected = [
                row[0]
                for row in conn.execute(
                    "SELECT e.hash FROM log_leaves l JOIN events e ON e.position = l.position"
                    " WHERE l.account_id = %s ORDER BY l.log_index",
                    (account,),
                )
            ]
        while len(seen) < len(expected):
            page = follower.get("/v1/events", params={"after": cursor, "limit": "1000"})
            assert page.status_code == 200, page.text
            seen += page.json()["events"]
            cursor = page.json()["next"]
        assert reads_by_database(served).get(standby_name(standby), 0) > used_before
    assert [event["log_index"] for event in seen] == list(range(len(expected)))
    assert [event["hash"] for event in seen] == expected
    versions: dict[str, int] = {}
    for event in seen:
        assert event["version"] == versions.get(event["label_id"], 0) + 1, event
        versions[event["label_id"]] = event["version"]
    assert len(seen) > 100


def test_a_standby_stopped_mid_test_makes_reads_fall_back_with_no_error(pair, served):
    _, standby = pair
    run = str(uuid.uuid4())
    with api(served, new_account()) as client:
        label = create_label(client, run, text_value="v1")
        history = f"{label_url(run, label['id'])}/history"
        wait_for_standby_in_use(served, standby, client, history)
        statuses: list[int] = []
        stop = threading.Event()

        def read() -> None:
            with api(served, new_account()) as other:
                while not stop.is_set():
                    statuses.append(client.get(history).status_code)
                    statuses.append(other.get("/v1/events").status_code)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            time.sleep(1)
            primary_reads = reads_by_database(served).get("primary", 0)
            standby.stop("fast")
            time.sleep(3)
        finally:
            stop.set()
            reader.join()
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert client.get(history).status_code == 200
        assert reads_by_database(served).get("primary", 0) > primary_reads + 10
        standby.start()
        # And once it is back, reads go to it again.
        wait_for_standby_in_use(served, standby, client, history)


def test_a_long_export_on_the_standby_during_writes_and_vacuum_has_every_event_exactly_once(pair, served, tmp_path):
    primary, standby = pair
    account = new_account()
    run = str(uuid.uuid4())
    with api(served, account) as client:
        batch = [{"output_resource_name": f"out-{n}", "text_value": "v1"} for n in range(5000)]
        for value in ("v1", "v2", "v3", "v4"):
            for item in batch:
                item["text_value"] = value
            response = client.post(f"{labels_url(run)}/batch", json={"labels": batch})
            assert response.status_code == 200, response.text
        token = {HEADER: response.headers[HEADER]}
        # Wait until the integrator has logged them all and the standby has replayed that.
        deadline = time.monotonic() + 60
        while client.get("/v1/audit/digest", headers=token).json()["tree_size"] < 20000:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        standby.wait_for_primary()

        stop = threading.Event()

        def churn() -> None:
            """Writers make dead rows; VACUUM removes them, which the standby must replay (recovery conflicts)."""
            n = 0
            with psycopg.connect(primary.url, autocommit=True) as conn, api(served, account) as writer:
                while not stop.is_set():
                    n += 1
                    writer.post(f"{labels_url(run)}/batch", json={"labels": batch[n * 50 % 5000 :][:50]})
                    conn.execute("VACUUM gold_labels, events")

        churner = threading.Thread(target=churn)
        churner.start()
        try:
            streamed = []
            with client.stream("GET", "/v1/events", headers={"Accept": "application/x-ndjson", **token}) as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    streamed.append(json.loads(line))
                    if len(streamed) % 2000 == 0:
                        time.sleep(0.2)  # a slow reader: the export spans many replays and vacuums
            env = standby_env(pair, tmp_path)
            exported = run_goldtrail(env, "export", "--account", account, "--output", str(tmp_path / "log.jsonl"))
            assert exported.returncode == 0, exported.stderr
        finally:
            stop.set()
            churner.join()
    assert "error" not in streamed[-1], streamed[-1]
    indexes = [event["log_index"] for event in streamed]
    assert indexes[:20000] == list(range(20000)) and indexes == list(range(len(indexes)))
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [event["log_index"] for event in lines] == list(range(len(lines))) and len(lines) >= 20000
    assert [event["hash"] for event in lines[:20000]] == [event["hash"] for event in streamed[:20000]]


def test_replay_cancelling_a_read_is_recognised_as_a_recovery_conflict_not_an_outage(pair):
    """What a standby does to a read that holds back replay: cancelled within max_standby_streaming_delay once
    VACUUM on the primary removes rows the read may still see. goldtrail retries it from its cursor."""
    primary, standby = pair
    table = f"scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary.url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n int)")
        conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 1000)")
    standby.wait_for_primary()
    with psycopg.connect(standby.url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 1000
        with psycopg.connect(primary.url, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {table}")
            conn.execute(f"VACUUM {table}")
        standby_error = None
        deadline = time.monotonic() + 20
        while standby_error is None and time.monotonic() < deadline:
            try:
                reader.execute(f"SELECT count(*) FROM {table}").fetchone()
                time.sleep(0.1)
            except psycopg.Error as error:
                standby_error = error
    assert standby_error is not None, "replay never cancelled the read"
    assert recovery_conflict(standby_error), repr(standby_error)
    assert not recovery_conflict(psycopg.OperationalError("connection refused"))


def test_a_server_on_the_standby_answers_writes_503_and_reads_200(pair, tmp_path):
    _, standby = pair
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=standby.url,
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_DATA_DIR=str(tmp_path / "data"),
        GOLDTRAIL_INTEGRATOR="off",
    )
    with goldtrail_serve(tmp_path, env, "--workers", "1") as base, api(base, new_account()) as client:
        response = client.post(labels_url(), json={"output_resource_name": "summary", "text_value": "v1"})
        assert_error(response, 503, "read-only")
        assert int(response.headers["retry-after"]) >= 1
        assert client.get("/v1/events").status_code == 200
        assert_error(client.get("/readyz"), 503, "read-only")
