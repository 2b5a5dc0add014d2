"""Many clients writing one label through two real `goldtrail serve` processes on one database:
every acknowledged PUT is exactly one event, versions run 1..n without gaps, nothing is 5xx, and
with If-Match exactly one of the racers wins."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import pytest

from events.types import RecordedEvent, decode_data, parse_time
from projections.fold import LabelState, apply, fold
from service.storage import writes
from tests.helpers import (
    SECRET,
    auth,
    count_events,
    create_label,
    engine_of,
    label_url,
    labels_url,
    new_account,
    stored_labels,
    stored_stream,
)
from tests.servers import clean_environment, goldtrail_serve

THREADS = 16
PUTS_PER_THREAD = 20


@pytest.fixture
def two_servers(backend, fresh_database, tmp_path):
    """Two `goldtrail serve` processes on one database of the test's own: (its URL, their base URLs)."""
    url = fresh_database(backend)
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET)
    with goldtrail_serve(tmp_path, env) as first, goldtrail_serve(tmp_path, env) as second:
        yield url, [first, second]


def labels_on(server: str, headers: dict[str, str], run: str, *names: str) -> list[str]:
    """Create a label of each output resource name in the run, through one server; their ids."""
    with httpx.Client(base_url=server, headers=headers) as client:
        return [create_label(client, run, output_resource_name=name)["id"] for name in names]


def stored_events(url: str, account: str) -> int:
    with engine_of(url) as engine:
        return count_events(engine, account=account)


def test_concurrent_puts_without_if_match_are_all_applied(two_servers):
    url, servers = two_servers
    headers = auth()
    run = str(uuid.uuid4())
    (label_id,) = labels_on(servers[0], headers, run, "hot")

    def writer(n: int) -> list[tuple[int, str | None, str]]:
        results = []
        with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as client:
            for i in range(PUTS_PER_THREAD):
                value = f"writer {n} put {i}"
                response = client.put(label_url(run, label_id), json={"text_value": value})
                results.append((response.status_code, response.headers.get("etag"), value))
        return results

    with ThreadPoolExecutor(THREADS) as pool:
        results = [result for batch in pool.map(writer, range(THREADS)) for result in batch]

    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: THREADS * PUTS_PER_THREAD}, statuses
    etags = [etag for _, etag, _ in results]
    assert len(set(etags)) == len(etags)  # each acknowledged PUT got its own version

    history = stored_stream(url, None, label_id)
    assert [event.version for event in history] == list(range(1, THREADS * PUTS_PER_THREAD + 2))
    assert sorted(event.data.text_value for event in history[1:]) == sorted(value for _, _, value in results)
    assert all(a.recorded_at <= b.recorded_at for a, b in itertools.pairwise(history))
    final = httpx.get(f"{servers[1]}/v1/run/{run}/gold-label/{label_id}", headers=headers)
    assert final.headers["etag"] == f'"{len(history)}"'
    assert final.json()["text_value"] == fold(history).text_value


def race(servers: list[str], headers: dict[str, str], path: str, expected: int) -> list[int]:
    """THREADS clients PUT with the same If-Match at the same moment; returns their statuses."""
    start = threading.Barrier(THREADS)

    def racer(n: int) -> int:
        with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as client:
            start.wait()
            response = client.put(path, json={"text_value": f"racer {n}"}, headers={"If-Match": f'"{expected}"'})
            return response.status_code

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(racer, range(THREADS)))


def test_exactly_one_if_match_racer_wins(two_servers):
    url, servers = two_servers
    headers = auth()
    run = str(uuid.uuid4())
    (label_id,) = labels_on(servers[0], headers, run, "race")
    for expected in range(1, 4):
        statuses = Counter(race(servers, headers, label_url(run, label_id), expected))
        assert statuses == {200: 1, 412: THREADS - 1}, statuses
    assert [event.version for event in stored_stream(url, None, label_id)] == [1, 2, 3, 4]


def test_concurrent_creates_of_one_output_resource_make_one_label(two_servers):
    _, servers = two_servers
    headers = auth()
    run = str(uuid.uuid4())
    start = threading.Barrier(THREADS)

    def creator(n: int) -> httpx.Response:
        with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as client:
            start.wait()
            return client.post(labels_url(run), json={"output_resource_name": "once"})

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(creator, range(THREADS)))
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: 1, 409: THREADS - 1}, statuses
    (winner,) = [response.json()["id"] for response in responses if response.status_code == 201]
    assert {response.json()["existing_id"] for response in responses if response.status_code == 409} == {winner}
    listed = httpx.get(f"{servers[1]}/v1/run/{run}/gold-labels", headers=headers).json()
    assert [label["id"] for label in listed] == [winner]


def test_a_follower_sees_every_committed_event_exactly_once_in_order(two_servers):
    """Writers on two processes append while a follower tails the feed; it must miss nothing."""
    url, servers = two_servers
    account = new_account()
    writer_headers = auth(account)
    follower_headers = auth(account, scope="audit:read")
    run = str(uuid.uuid4())
    acknowledged: list[str] = []
    done = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=servers[n % 2], headers=writer_headers, timeout=60) as client:
            label = client.post(labels_url(run), json={"output_resource_name": f"w{n}"})
            assert label.status_code == 201
            acknowledged.append(label.headers["x-request-id"])
            for i in range(PUTS_PER_THREAD):
                response = client.put(label_url(run, label.json()["id"]), json={"text_value": str(i)})
                assert response.status_code == 200
                acknowledged.append(response.headers["x-request-id"])

    seen: list[dict] = []

    expected = THREADS * (PUTS_PER_THREAD + 1)

    def follower() -> None:
        give_up = time.monotonic() + 90
        cursor = None
        with httpx.Client(base_url=servers[1], headers=follower_headers, timeout=60) as client:
            while True:
                finished = done.is_set()  # read before the page, so the last page is read after all writes
                params = {"limit": 50} if cursor is None else {"limit": 50, "after": cursor}
                page = client.get("/v1/events", params=params).json()
                seen.extend(page["events"])
                cursor = page["next"]
                # An empty page only says nothing is final yet: the feed waits for every transaction in the
                # database cluster that began before an event (another database's autovacuum, say).
                if finished and not page["events"] and (len(seen) >= expected or time.monotonic() > give_up):
                    return
                if finished and not page["events"]:
                    time.sleep(0.05)

    tail = threading.Thread(target=follower)
    tail.start()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(writer, range(THREADS)))
    done.set()
    tail.join(timeout=120)
    assert not tail.is_alive()

    indexes = [event["log_index"] for event in seen]
    assert indexes == list(range(len(seen))), "the log skipped, repeated or reordered an entry"
    assert sorted(event["request_id"] for event in seen) == sorted(acknowledged), "an event was skipped"
    assert [event["cursor"] for event in seen] == [str(index + 1) for index in indexes]
    by_label: dict[str, list[int]] = {}
    for event in seen:
        by_label.setdefault(event["label_id"], []).append(event["version"])
    assert all(versions == list(range(1, len(versions) + 1)) for versions in by_label.values())
    assert stored_events(url, account) == len(seen) == expected


def test_a_label_that_lost_a_race_is_locked_first_for_a_while_then_raced_again():
    """Many writers on one label would make most optimistic writes lose; such a label is locked first,
    but only lately contended ones, and the memory stays bounded."""
    contention = writes.Contention(seconds=0.2, size=3)
    key = ("acme", str(uuid.uuid4()))
    assert not contention.lately(key)
    contention.note(key)
    assert contention.lately(key)
    assert not contention.lately(("acme", str(uuid.uuid4())))
    time.sleep(0.25)
    assert not contention.lately(key)
    others = [("acme", str(uuid.uuid4())) for _ in range(4)]
    for other in others:
        contention.note(other)
    assert contention.lately(others[-1]) and not contention.lately(others[0])  # cleared when full


HOT_LABELS = 3
MIXED_WRITERS = 24
OPS_PER_WRITER = 40


def _feed(base: str, headers: dict[str, str], expected: int) -> list[dict]:
    """The caller's account's feed, page by page, until `expected` events came (or a minute passed: an empty
    page only says that nothing more is final yet, see the follower above)."""
    seen, cursor = [], None
    give_up = time.monotonic() + 60
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while len(seen) < expected and time.monotonic() < give_up:
            page = client.get("/v1/events", params={"limit": 1000, **({"after": cursor} if cursor else {})}).json()
            seen.extend(page["events"])
            cursor = page["next"]
            if not page["events"]:
                time.sleep(0.05)
    return seen


def _recorded(event: dict, account: str) -> RecordedEvent:
    return RecordedEvent(
        position=event["log_index"],
        account_id=account,
        stream_id=event["label_id"],
        version=event["version"],
        run_id=event["run_id"],
        data=decode_data(msgspec.json.encode(event["data"])),
        actor=event["actor"],
        recorded_at=parse_time(event["recorded_at"]),
        request_id=event["request_id"],
        reason=event["reason"],
        prev_hash=event["prev_hash"],
        hash=event["hash"],
    )


def test_a_follower_folding_the_feed_ends_with_the_read_model_whatever_path_wrote(two_servers):
    """Plain, If-Match, idempotent and delete writes race on a few hot labels through two processes. In
    feed order each label's versions must come 1, 2, 3…, so folding the feed gives exactly the read model."""
    url, servers = two_servers
    account = new_account()
    headers = auth(account)
    auditor = auth(account, scope="audit:read")
    run = str(uuid.uuid4())
    label_ids = labels_on(servers[0], headers, run, *(f"hot{n}" for n in range(HOT_LABELS)))

    def writer(n: int) -> Counter:
        statuses: Counter = Counter()
        etag = '"1"'
        with httpx.Client(base_url=servers[n % 2], headers=headers, timeout=60) as client:
            for i in range(OPS_PER_WRITER):
                path = label_url(run, label_ids[(n + i) % HOT_LABELS])
                extra = {}
                if i % 4 == 1:
                    extra["If-Match"] = etag  # often stale: a 412 is a fine answer
                elif i % 4 == 2:
                    extra["Idempotency-Key"] = f"w{n}-{i}-{uuid.uuid4().hex[:6]}"
                if n < HOT_LABELS and i == OPS_PER_WRITER - 1:
                    response = client.delete(path, headers={"Idempotency-Key": f"del-{n}"})
                else:
                    response = client.put(path, json={"text_value": f"w{n} op{i}"}, headers=extra)
                etag = response.headers.get("etag", etag)
                statuses[response.status_code] += 1
        return statuses

    with ThreadPoolExecutor(MIXED_WRITERS) as pool:
        statuses = sum(pool.map(writer, range(MIXED_WRITERS)), Counter())
    assert set(statuses) <= {200, 204, 404, 412}, statuses
    assert statuses[200] > MIXED_WRITERS * OPS_PER_WRITER // 2, statuses

    events = stored_events(url, account)
    stored = stored_labels(url, account)
    feed = _feed(servers[1], auditor, events)
    assert len(feed) == events
    states: dict[str, LabelState] = {}
    for event in feed:
        recorded = _recorded(event, account)
        states[recorded.stream_id] = apply(states.get(recorded.stream_id), recorded)  # FoldError if out of order
    assert states == stored
    assert sum(state.version for state in states.values()) == len(feed)
