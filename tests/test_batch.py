"""The batch import (DESIGN.md §4): up to 10,000 labels of a run upserted by output resource in one
transaction, on SQLite and PostgreSQL; a SIGKILL mid-batch, and a batch racing single PUTs."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import pytest

from events.types import RecordedEvent, decode_data, parse_time
from projections.fold import LabelState, apply
from tests.helpers import (
    SECRET,
    assert_error,
    auth,
    count_events,
    count_labels,
    create_label,
    delete_label,
    label_history,
    labels_url,
    new_account,
    stored_labels,
    token,
    writing_now,
)
from tests.servers import clean_environment, run_goldtrail, serving


def batch_url(run_id: str) -> str:
    return f"/v1/run/{run_id}/gold-labels/batch"


def who(account: str, **headers: str) -> dict[str, str]:
    return {**auth(account), **headers}


def imported(client, account: str, run_id: str, labels: list[dict], **headers: str) -> dict:
    response = client.post(batch_url(run_id), json={"labels": labels}, headers=who(account, **headers))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_batch_creates_updates_and_leaves_identical_labels_alone(client, engine, run_id):
    account = new_account()
    first = imported(
        client, account, run_id, [{"output_resource_name": f"o{n}", "text_value": f"v{n}"} for n in range(3)]
    )
    assert (first["created"], first["updated"], first["unchanged"]) == (3, 0, 0)
    assert [(item["output_resource_name"], item["version"], item["outcome"]) for item in first["labels"]] == [
        ("o0", 1, "created"),
        ("o1", 1, "created"),
        ("o2", 1, "created"),
    ]
    events_before = count_events(engine, account=account)
    second = imported(
        client,
        account,
        run_id,
        [
            {"output_resource_name": "o0", "text_value": "v0"},  # identical: nothing appended
            {"output_resource_name": "o1", "object_value": {"z": 1, "a": 2}, "object_value_is_partial": True},
            {"output_resource_name": "o2", "text_value": "v2"},
            {"output_resource_name": "o3", "text_value": "new"},
        ],
        **{"X-Change-Reason": "nightly import", "X-Request-ID": "batch-2"},
    )
    assert (second["created"], second["updated"], second["unchanged"]) == (1, 1, 2)
    assert [item["outcome"] for item in second["labels"]] == ["unchanged", "updated", "unchanged", "created"]
    assert [item["id"] for item in second["labels"][:3]] == [item["id"] for item in first["labels"]]
    assert count_events(engine, account=account) == events_before + 2
    listed = {
        label["output_resource_name"]: label for label in client.get(labels_url(run_id), headers=who(account)).json()
    }
    assert list(json.loads(json.dumps(listed["o1"]["object_value"]))) == ["z", "a"]  # key order as sent
    assert listed["o1"]["object_value_is_partial"] is True and listed["o1"]["text_value"] is None
    history = label_history(client, run_id, second["labels"][1]["id"], auth(account, scope="audit:read"))
    assert [(entry["version"], entry["type"]) for entry in history] == [
        (1, "GoldLabelCreated"),
        (2, "GoldLabelUpdated"),
    ]
    assert (history[1]["reason"], history[1]["request_id"], history[1]["actor"]) == (
        "nightly import",
        "batch-2",
        "alice",
    )


def test_a_deleted_labels_output_resource_gets_a_new_label_from_a_batch(client, run_id):
    account = new_account()
    old = create_label(client, run_id, who(account), output_resource_name="reused", text_value="a")
    delete_label(client, run_id, old["id"], who(account))
    outcome = imported(client, account, run_id, [{"output_resource_name": "reused", "text_value": "a"}])
    assert outcome["labels"][0]["outcome"] == "created" and outcome["labels"][0]["id"] != old["id"]


BAD_ITEMS = [
    ({"output_resource_name": "x", "text_value": "a", "object_value": {}}, "labels[1]", "not both"),
    ({"output_resource_name": "x", "object_value_is_partial": True}, "labels[1].object_value_is_partial", "only"),
    ({"output_resource_name": "x" * 501}, "labels[1].output_resource_name", "1 to 500"),
    ({"output_resource_name": ""}, "labels[1].output_resource_name", "1 to 500"),
    ({"output_resource_name": "x", "text_value": "a\u0000b"}, "labels[1].text_value", "U+0000"),
    ({"output_resource_name": "x", "text_value": 3}, "labels[1].text_value", "Expected `str"),
    ({"output_resource_name": "x", "object_value": [1]}, "labels[1].object_value", "object"),
    ({"text_value": "a"}, "labels[1].output_resource_name", "required"),
    ({"output_resource_name": "first"}, "labels[1].output_resource_name", "twice"),
    ("not an object", "labels[1]", "Expected `object`"),
]


@pytest.mark.parametrize(("item", "field", "says"), BAD_ITEMS, ids=[field + " " + says for _, field, says in BAD_ITEMS])
def test_a_bad_item_is_400_naming_it_and_nothing_of_the_batch_is_stored(client, engine, run_id, item, field, says):
    account = new_account()
    response = client.post(
        batch_url(run_id),
        json={"labels": [{"output_resource_name": "first", "text_value": "a"}, item]},
        headers=who(account),
    )
    assert assert_error(response, 400, says)["field"] == field
    assert count_events(engine, account=account) == 0 and count_labels(engine, account=account) == 0


@pytest.mark.parametrize(
    "body",
    [{"labels": []}, {"labels": "x"}, {}, {"labels": [{"output_resource_name": f"o{n}"} for n in range(10_001)]}],
)
def test_a_batch_that_is_not_1_to_10000_labels_is_400_naming_labels(client, engine, run_id, body):
    account = new_account()
    assert assert_error(client.post(batch_url(run_id), json=body, headers=who(account)), 400)["field"] == "labels"
    assert count_events(engine, account=account) == 0


def test_a_batch_needs_json_a_write_scope_and_a_body_within_its_limit(client, start_app, database_url, run_id):
    account = new_account()
    body = {"labels": [{"output_resource_name": "o", "text_value": "v"}]}
    response = client.post(
        batch_url(run_id), content=json.dumps(body), headers={**who(account), "Content-Type": "text/plain"}
    )
    assert_error(response, 415)
    assert_error(client.post(batch_url(run_id), json=body, headers=auth(account, scope="gold_labels:read")), 403)
    assert_error(client.post(batch_url(run_id), json=body), 401)
    small = start_app(database_url, GOLDTRAIL_MAX_BATCH_BYTES="2048")
    large = {"labels": [{"output_resource_name": f"o{n}", "text_value": "v" * 50} for n in range(40)]}
    assert_error(small.post(batch_url(run_id), json=large, headers=who(account)), 413, "2048 bytes")
    assert small.post(batch_url(run_id), json=body, headers=who(account)).status_code == 200


def test_an_idempotency_key_replays_a_batch_and_refuses_another_body_under_it(client, engine, run_id):
    account = new_account()
    body = [{"output_resource_name": f"o{n}", "text_value": "v"} for n in range(3)]
    first = client.post(batch_url(run_id), json={"labels": body}, headers=who(account, **{"Idempotency-Key": "b-1"}))
    again = client.post(batch_url(run_id), json={"labels": body}, headers=who(account, **{"Idempotency-Key": "b-1"}))
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert count_events(engine, account=account) == 3
    other = client.post(
        batch_url(run_id), json={"labels": body[:1]}, headers=who(account, **{"Idempotency-Key": "b-1"})
    )
    assert assert_error(other, 422)["field"] == "Idempotency-Key"


# A real server: a SIGKILL in the middle of a batch, and a batch racing single PUTs ------------------------


def test_a_sigkill_in_the_middle_of_a_batch_leaves_nothing_of_it(backend, fresh_database, tmp_path):
    """The server is killed while the batch's transaction holds uncommitted writes: nothing of it is stored.
    A kill can still land just after the COMMIT; then the whole batch is there (all or nothing either way) and
    the test tries again with another run, so that it checks at least one kill mid-transaction."""
    url = fresh_database(backend)
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(tmp_path))
    account = new_account()
    body = {"labels": [{"output_resource_name": f"o{n}", "text_value": f"value {n}"} for n in range(10_000)]}
    killed_mid_batch = 0
    for _attempt in range(4):
        run = str(uuid.uuid4())
        outcome: list[object] = []
        with serving(tmp_path, env) as served:

            def send(base: str = served.base_url, run: str = run, outcome: list = outcome) -> None:
                try:
                    outcome.append(httpx.post(base + batch_url(run), json=body, headers=who(account), timeout=60))
                except httpx.TransportError as error:
                    outcome.append(error)

            sender = threading.Thread(target=send)
            sender.start()
            deadline = time.monotonic() + 30
            while not writing_now(url) and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
            os.killpg(served.process.pid, signal.SIGKILL)
            sender.join(60)
        with serving(tmp_path, env) as served:
            listed = httpx.get(served.base_url + labels_url(run), headers=who(account))
        if listed.status_code == 200:  # the kill came after the COMMIT: all of it, never part
            assert len(listed.json()) == 10_000, f"part of the batch was stored: {len(listed.json())} labels"
            continue
        assert listed.status_code == 404 and outcome and isinstance(outcome[0], httpx.TransportError)
        killed_mid_batch += 1
        break
    assert killed_mid_batch, "every kill came after the batch's COMMIT"
    assert run_goldtrail(env, "verify", cwd=tmp_path).returncode == 0


def test_a_batch_racing_single_puts_loses_no_update_and_keeps_versions_contiguous(backend, fresh_database, tmp_path):
    url = fresh_database(backend)
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(tmp_path))
    run, account = str(uuid.uuid4()), new_account()
    names = [f"o{n}" for n in range(200)]
    with serving(tmp_path, env) as one, serving(tmp_path, env) as two:
        bases = [one.base_url, two.base_url]
        zeros = {"labels": [{"output_resource_name": n, "text_value": "0"} for n in names]}
        first = httpx.post(bases[0] + batch_url(run), json=zeros, headers=who(account), timeout=60).json()
        ids = [item["id"] for item in first["labels"]]
        stop, acknowledged = threading.Event(), []

        def putter(n: int) -> None:
            with httpx.Client(base_url=bases[n % 2], headers=who(account), timeout=60) as client:
                i = 0
                while not stop.is_set():
                    value = f"put {n}-{i}"
                    i += 1
                    response = client.put(f"/v1/run/{run}/gold-label/{ids[i % 10]}", json={"text_value": value})
                    assert response.status_code == 200, response.text
                    acknowledged.append((ids[i % 10], value))

        def batcher(n: int) -> list[dict]:
            answers = []
            with httpx.Client(base_url=bases[n % 2], headers=who(account), timeout=60) as client:
                for round_ in range(3):
                    labels = [{"output_resource_name": name, "text_value": f"batch {n}-{round_}"} for name in names]
                    response = client.post(batch_url(run), json={"labels": labels})
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
            return answers

        with ThreadPoolExecutor(6) as pool:
            puts = [pool.submit(putter, n) for n in range(4)]
            batches = [pool.submit(batcher, n) for n in range(2)]
            outcomes = [answer for future in batches for answer in future.result()]
            stop.set()
            for future in puts:
                future.result()
    assert all(outcome["updated"] == len(names) for outcome in outcomes)
    states = stored_labels(url, account)
    auditor = {"Authorization": f"Bearer {token(account, scope='audit:read')}"}
    with (
        serving(tmp_path, env) as served,
        httpx.Client(base_url=served.base_url, headers=auditor, timeout=60) as client,
    ):
        for label_id in ids[:10]:
            history = client.get(f"/v1/run/{run}/gold-label/{label_id}/history").json()
            assert [entry["version"] for entry in history] == list(range(1, len(history) + 1))
            assert history[-1]["version"] == states[label_id].version
            values = {entry["state"]["text_value"] for entry in history}
            lost = [value for label, value in acknowledged if label == label_id and value not in values]
            assert not lost, f"acknowledged PUTs lost under the batches: {lost[:5]}"
        # A follower folding the account's log ends with exactly the read model.
        deadline, folded = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            lines = client.get("/v1/events", headers={"Accept": "application/x-ndjson"}).text.splitlines()
            if len(lines) == sum(state.version for state in states.values()):
                break
            time.sleep(0.2)
        for line in lines:
            event = json.loads(line)
            recorded = RecordedEvent(
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
            folded[recorded.stream_id] = apply(folded.get(recorded.stream_id), recorded)
    assert folded == {label_id: state for label_id, state in states.items()}
    assert isinstance(next(iter(folded.values())), LabelState)

