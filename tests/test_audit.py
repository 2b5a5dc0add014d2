"""The auditor features, black-box over HTTP on SQLite and PostgreSQL: label history, as-of reads of a
label (by time or version) and of a run, the event feed (paged JSON and streamed JSON Lines) and digests.

The database is shared by the whole session, so every test works in an account of its own: its feed
and digests then hold that test's events only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    ALL_SCOPES,
    AUDIT,
    READ,
    WRITE,
    assert_error,
    auth,
    create_label,
    delete_label,
    history_url,
    label_history,
    label_url,
    labels_url,
    new_account,
    update_label,
)

NDJSON = "application/x-ndjson"
GENESIS_HASH = "0" * 64
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
HISTORY_FIELDS = {
    "version",
    "type",
    "actor",
    "recorded_at",
    "request_id",
    "reason",
    "changes",
    "state",
    "log_index",
    "hash",
}
FEED_FIELDS = {
    "cursor",
    "log_index",
    "chain",
    "payload",
    "label_id",
    "run_id",
    "version",
    "type",
    "actor",
    "recorded_at",
    "request_id",
    "reason",
    "data",
    "prev_hash",
    "hash",
}
FAR_FUTURE = "9000-01-01T00:00:00Z"
LONG_AGO = "2000-01-01T00:00:00Z"
# The feed shows an account's log: events appear once integrated (within about a second of commit; on
# PostgreSQL after every transaction begun before theirs has ended); reads that must see everything wait
# this long at most.
FEED_PATIENCE_SECONDS = 10.0


# --- helpers ------------------------------------------------------------------------------------


def who(account: str, user: str = "alice", scope: str = ALL_SCOPES, **headers: str) -> dict[str, str]:
    return {**auth(account, user, scope=scope), **headers}


def two_versions(client, account: str, run_id: str) -> tuple[dict, dict]:
    """A label created with text "a", then changed to "b": its two states."""
    first = create_label(client, run_id, who(account), text_value="a")
    return first, update_label(client, run_id, first["id"], who(account), text_value="b")


def label_then(client, headers: dict, run_id: str, label_id: str, **params):
    return client.get(label_url(run_id, label_id), params=params, headers=headers)


def run_then(client, headers: dict, run_id: str, as_of: str):
    return client.get(labels_url(run_id), params={"as_of": as_of}, headers=headers)


def feed_page(client, headers: dict, **params) -> dict:
    response = client.get("/v1/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"events", "next"} and isinstance(body["next"], str)
    return body


def wait_for_feed(client, headers: dict, count: int) -> list[dict]:
    """The account's whole feed once it holds `count` events (see FEED_PATIENCE_SECONDS)."""
    deadline = time.monotonic() + FEED_PATIENCE_SECONDS
    while True:
        events = feed_page(client, headers, limit="1000")["events"]
        if len(events) >= count or time.monotonic() > deadline:
            assert len(events) == count, [(e["log_index"], e["type"]) for e in events]
            return events
        time.sleep(0.05)


def digest(client, headers: dict, **params) -> dict:
    response = client.get("/v1/audit/digest", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def digest_of(events: list[dict]) -> str:
    """SHA-256 over "log_index:hash" lines of the events, in log order: what an auditor can recompute."""
    running = hashlib.sha256()
    for event in events:
        running.update(f"{event['log_index']}:{event['hash']}\n".encode())
    return running.hexdigest()


def positions(engine, events: list[dict]) -> list[int]:
    """The global positions of these events (the feed shows none: they would tell of other accounts)."""
    with engine.connect() as conn:
        by_hash = dict(conn.execute(sa.text("SELECT hash, position FROM events")).all())
    return [by_hash[event["hash"]] for event in events]


def legacy_digest_of(events: list[dict], at: list[int]) -> str:
    """The older digest form: SHA-256 over "position:hash" lines, for digests kept before the log."""
    running = hashlib.sha256()
    for event, position in zip(events, at, strict=True):
        running.update(f"{position}:{event['hash']}\n".encode())
    return running.hexdigest()


def integrated_history(client, run_id: str, label_id: str, headers: dict) -> list[dict]:
    """The label's history once every event has its log index (see FEED_PATIENCE_SECONDS)."""
    deadline = time.monotonic() + FEED_PATIENCE_SECONDS
    while True:
        entries = label_history(client, run_id, label_id, headers)
        if all(entry["log_index"] is not None for entry in entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.05)


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def stamp_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def just_before(stamp: str) -> str:
    return stamp_of(moment(stamp) - timedelta(microseconds=1))


def lifecycle(client, account: str, run_id: str) -> tuple[str, list[dict]]:
    """A label created by alice, changed twice by bob, deleted by carol; its id and the states written."""
    label = create_label(client, run_id, who(account), output_resource_name="answer", text_value="a")
    second = update_label(client, run_id, label["id"], who(account, "bob"), text_value="b")
    third = update_label(client, run_id, label["id"], who(account, "bob"), object_value={"k": [1, 2]})
    delete_label(client, run_id, label["id"], who(account, "carol"))
    return label["id"], [label, second, third]


# --- history ------------------------------------------------------------------------------------


def test_history_lists_every_event_in_version_order_with_its_metadata(client, run_id):
    account = new_account()
    headers = who(account, "carol", **{"X-Request-ID": "req-create", "X-Change-Reason": "first pass"})
    label = create_label(client, run_id, headers, text_value="a")
    update_label(client, run_id, label["id"], who(account, "bob", **{"X-Request-ID": "req-update"}), text_value="b")
    entries = integrated_history(client, run_id, label["id"], who(account))
    assert [set(entry) for entry in entries] == [HISTORY_FIELDS, HISTORY_FIELDS]
    assert [entry["version"] for entry in entries] == [1, 2]
    assert [entry["type"] for entry in entries] == ["GoldLabelCreated", "GoldLabelUpdated"]
    assert [entry["actor"] for entry in entries] == ["carol", "bob"]
    assert [entry["request_id"] for entry in entries] == ["req-create", "req-update"]
    assert [entry["reason"] for entry in entries] == ["first pass", None]
    assert entries[0]["recorded_at"] == label["created_at"]
    assert entries[0]["recorded_at"] <= entries[1]["recorded_at"]
    assert [entry["log_index"] for entry in entries] == [0, 1]  # the account's own log, from its first entry
    assert all(len(entry["hash"]) == 64 for entry in entries) and entries[0]["hash"] != entries[1]["hash"]


def test_history_state_is_the_label_right_after_each_event(client, run_id):
    account = new_account()
    label_id, states = lifecycle(client, account, run_id)
    entries = label_history(client, run_id, label_id, who(account))
    assert [entry["type"] for entry in entries] == [
        "GoldLabelCreated",
        "GoldLabelUpdated",
        "GoldLabelUpdated",
        "GoldLabelDeleted",
    ]
    assert [entry["state"] for entry in entries] == [*states, None]


def test_history_of_a_deleted_label_is_still_readable(client, run_id):
    account = new_account()
    label_id, _ = lifecycle(client, account, run_id)
    assert_error(client.get(label_url(run_id, label_id), headers=who(account)), 404)
    last = label_history(client, run_id, label_id, who(account))[-1]
    assert last["type"] == "GoldLabelDeleted" and last["actor"] == "carol"
    assert last["state"] is None and last["changes"] == {}


def test_history_of_an_object_label_create_lists_its_non_null_fields_from_null(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), object_value={"b": 1, "a": 2})
    (entry,) = label_history(client, run_id, label["id"], who(account))
    expected = {field: {"from": None, "to": value} for field, value in label.items() if value is not None}
    assert "text_value" not in expected
    assert entry["changes"] == expected


@pytest.mark.parametrize("body", [{"text_value": "t"}, {}], ids=["text-label", "label-without-value"])
def test_history_of_a_create_lists_only_non_null_fields(client, run_id, body):
    account = new_account()
    label = create_label(client, run_id, who(account), **body)
    (entry,) = label_history(client, run_id, label["id"], who(account))
    expected = {field: {"from": None, "to": value} for field, value in label.items() if value is not None}
    assert entry["changes"] == expected


def test_history_update_lists_only_the_fields_that_changed(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    body = {"object_value": {"x": 1}, "object_value_is_partial": True}
    changed = update_label(client, run_id, label["id"], who(account, "bob"), **body)
    entry = label_history(client, run_id, label["id"], who(account))[1]
    expected = {
        "text_value": {"from": "a", "to": None},
        "object_value": {"from": None, "to": {"x": 1}},
        "object_value_is_partial": {"from": None, "to": True},
        "updated_by": {"from": "alice", "to": "bob"},
    }
    if changed["updated_at"] != label["updated_at"]:
        expected["updated_at"] = {"from": label["updated_at"], "to": changed["updated_at"]}
    assert entry["changes"] == expected


def test_history_of_an_update_that_changes_no_value_lists_no_value_change(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), object_value={"k": "v"})
    update_label(client, run_id, label["id"], who(account), object_value={"k": "v"})
    entry = label_history(client, run_id, label["id"], who(account))[1]
    assert entry["type"] == "GoldLabelUpdated" and entry["version"] == 2
    assert set(entry["changes"]) <= {"updated_at"}


def test_history_changes_replayed_from_the_create_give_each_state(client, run_id):
    account = new_account()
    label_id, _ = lifecycle(client, account, run_id)
    replay: dict = {}
    for entry in label_history(client, run_id, label_id, who(account)):
        for field, change in entry["changes"].items():
            assert replay.get(field) == change["from"], (entry["version"], field)
            replay[field] = change["to"]
        if entry["state"] is not None:
            assert {**dict.fromkeys(entry["state"]), **replay} == entry["state"]


def test_history_positions_and_hashes_match_the_feed(client, run_id):
    account = new_account()
    label_id, _ = lifecycle(client, account, run_id)
    events = wait_for_feed(client, who(account), 4)
    entries = integrated_history(client, run_id, label_id, who(account))
    assert [(e["version"], e["log_index"], e["hash"], e["recorded_at"]) for e in events] == [
        (e["version"], e["log_index"], e["hash"], e["recorded_at"]) for e in entries
    ]


def test_history_accepts_any_spelling_of_the_uuids(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="t")
    spelled = label_history(client, run_id.upper(), label["id"].replace("-", ""), who(account))
    assert [entry["state"] for entry in spelled] == [label]


def test_history_of_an_unknown_label_is_404(client, run_id):
    account = new_account()
    create_label(client, run_id, who(account))
    assert_error(client.get(history_url(run_id, str(uuid.uuid4())), headers=who(account)), 404, "not found")


def test_history_through_another_run_is_404(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    assert_error(client.get(history_url(str(uuid.uuid4()), label["id"]), headers=who(account)), 404)


def test_another_accounts_history_is_404_like_a_missing_label(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    missing_id = str(uuid.uuid4())
    theirs = client.get(history_url(run_id, label["id"]), headers=who(new_account()))
    missing = client.get(history_url(run_id, missing_id), headers=who(new_account()))
    assert_error(theirs, 404)
    assert_error(missing, 404)
    assert theirs.json()["error"].replace(label["id"], "ID") == missing.json()["error"].replace(missing_id, "ID")


@pytest.mark.parametrize(("run", "label", "field"), [("nope", None, "run_id"), (None, "42", "gold_label_id")])
def test_history_with_a_non_uuid_id_is_400_naming_it(client, run_id, run, label, field):
    url = history_url(run or run_id, label or str(uuid.uuid4()))
    assert assert_error(client.get(url, headers=who(new_account())), 400, field)["field"] == field


# --- scopes and tenancy of the audit routes -----------------------------------------------------


def audit_requests(run_id: str, label_id: str) -> list[tuple[str, dict]]:
    return [
        (history_url(run_id, label_id), {}),
        ("/v1/events", {}),
        ("/v1/events", {"Accept": NDJSON}),
        ("/v1/audit/digest", {}),
    ]


@pytest.mark.parametrize(
    "claims",
    [{}, {"scope": f"{READ} {WRITE}"}, {"scp": [READ, WRITE]}, {"scope": ""}, {"scope": "audit:reader AUDIT:READ"}],
    ids=["no-scope-claim", "read-write-string", "read-write-list", "empty-scope", "lookalikes"],
)
def test_audit_routes_are_403_without_the_audit_scope(client, run_id, claims):
    account = new_account()
    label = create_label(client, run_id, who(account))
    for url, extra in audit_requests(run_id, label["id"]):
        assert_error(client.get(url, headers={**auth(account, **claims), **extra}), 403, f"'{AUDIT}'")


@pytest.mark.parametrize("claims", [{"scope": AUDIT}, {"scp": [AUDIT]}], ids=["scope-string", "scp-list"])
def test_audit_scope_alone_opens_every_audit_route(client, run_id, claims):
    account = new_account()
    label = create_label(client, run_id, who(account))
    for url, extra in audit_requests(run_id, label["id"]):
        assert client.get(url, headers={**auth(account, **claims), **extra}).status_code == 200, url


def test_audit_routes_need_a_bearer_token(client, run_id):
    for url, extra in audit_requests(run_id, str(uuid.uuid4())):
        assert_error(client.get(url, headers=extra), 401, "bearer token")


def test_audit_scope_alone_cannot_read_a_label_as_of_a_version(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    assert_error(label_then(client, auth(account, scope=AUDIT), run_id, label["id"], version="1"), 403, f"'{READ}'")


# --- as-of reads of one label -------------------------------------------------------------------


def test_get_at_each_version_returns_the_label_then_with_that_etag(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    second = update_label(client, run_id, label["id"], who(account, "bob"), object_value={"z": [1]})
    for version, expected in ((1, label), (2, second)):
        response = label_then(client, who(account), run_id, label["id"], version=str(version))
        assert response.status_code == 200 and response.json() == expected
        assert response.headers["etag"] == f'"{version}"'


def test_get_as_of_each_event_time_returns_the_label_then(client, run_id):
    account = new_account()
    label_id, states = lifecycle(client, account, run_id)
    for version, expected in enumerate(states, start=1):
        response = label_then(client, who(account), run_id, label_id, as_of=expected["updated_at"])
        assert response.status_code == 200 and response.json() == expected, version
        assert response.headers["etag"] == f'"{version}"'


def test_get_as_of_just_before_a_change_returns_the_previous_state(client, run_id):
    account = new_account()
    label, second = two_versions(client, account, run_id)
    assert second["updated_at"] > label["updated_at"]
    response = label_then(client, who(account), run_id, label["id"], as_of=just_before(second["updated_at"]))
    assert response.status_code == 200 and response.json() == label and response.headers["etag"] == '"1"'


def test_get_as_of_a_deleted_label_before_its_deletion_still_answers(client, run_id):
    account = new_account()
    label_id, states = lifecycle(client, account, run_id)
    response = label_then(client, who(account), run_id, label_id, as_of=states[-1]["updated_at"])
    assert response.status_code == 200 and response.json() == states[-1]
    response = label_then(client, who(account), run_id, label_id, version="3")
    assert response.status_code == 200 and response.json() == states[-1]


def test_get_as_of_or_at_the_version_of_its_deletion_is_404(client, run_id):
    account = new_account()
    label_id, _ = lifecycle(client, account, run_id)
    deleted_at = label_history(client, run_id, label_id, who(account))[-1]["recorded_at"]
    for params in ({"as_of": deleted_at}, {"as_of": FAR_FUTURE}, {"version": "4"}):
        assert_error(label_then(client, who(account), run_id, label_id, **params), 404, "not found")


def test_get_as_of_before_the_label_existed_is_404(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    for as_of in (just_before(label["created_at"]), LONG_AGO):
        assert_error(label_then(client, who(account), run_id, label["id"], as_of=as_of), 404, "not found")


def test_get_at_a_version_beyond_the_current_one_is_404(client, run_id):
    account = new_account()
    label, _ = two_versions(client, account, run_id)
    assert label_then(client, who(account), run_id, label["id"], version="2").status_code == 200
    for version in ("3", "99999999999999999999"):
        assert_error(label_then(client, who(account), run_id, label["id"], version=version), 404, "not found")


def test_get_as_of_the_far_future_is_the_current_label(client, run_id):
    account = new_account()
    label, current = two_versions(client, account, run_id)
    response = label_then(client, who(account), run_id, label["id"], as_of=FAR_FUTURE)
    assert response.status_code == 200 and response.json() == current and response.headers["etag"] == '"2"'


def test_get_as_of_honours_the_offset_of_the_time(client, run_id):
    account = new_account()
    label, second = two_versions(client, account, run_id)
    india = timezone(timedelta(hours=5, minutes=30))
    at_first = moment(label["updated_at"]).astimezone(india).isoformat()
    before_second = (moment(second["updated_at"]) - timedelta(microseconds=1)).astimezone(india).isoformat()
    assert at_first.endswith("+05:30")
    for as_of in (at_first, before_second):
        assert label_then(client, who(account), run_id, label["id"], as_of=as_of).json() == label


def test_get_as_of_needs_only_the_read_scope(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    reader = auth(account, scope=READ)
    assert label_then(client, reader, run_id, label["id"], version="1").json() == label
    assert label_then(client, reader, run_id, label["id"], as_of=label["created_at"]).json() == label


def test_get_as_of_for_another_account_or_run_is_404(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    assert_error(label_then(client, who(new_account()), run_id, label["id"], version="1"), 404)
    assert_error(label_then(client, who(new_account()), run_id, label["id"], as_of=FAR_FUTURE), 404)
    assert_error(label_then(client, who(account), str(uuid.uuid4()), label["id"], version="1"), 404)
    assert_error(label_then(client, who(account), run_id, str(uuid.uuid4()), as_of=FAR_FUTURE), 404)


@pytest.mark.parametrize(
    "as_of",
    ["yesterday", "2026-01-01T00:00:00", "2026-01-01", "", "2026-13-01T00:00:00Z", "1767225600", "2026-01-01 noon Z"],
)
def test_get_as_of_an_unparseable_time_is_400_naming_as_of(client, run_id, as_of):
    account = new_account()
    label = create_label(client, run_id, who(account))
    body = assert_error(label_then(client, who(account), run_id, label["id"], as_of=as_of), 400, "as_of")
    assert body["field"] == "as_of"


@pytest.mark.parametrize("version", ["0", "-1", "x", "", "1.5", "+1", " 1", "0x1"])
def test_get_at_an_unparseable_version_is_400_naming_version(client, run_id, version):
    account = new_account()
    label = create_label(client, run_id, who(account))
    body = assert_error(label_then(client, who(account), run_id, label["id"], version=version), 400, "version")
    assert body["field"] == "version"


def test_get_with_both_as_of_and_version_is_400(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    response = label_then(client, who(account), run_id, label["id"], as_of=FAR_FUTURE, version="1")
    assert_error(response, 400, "as_of", "version")


@pytest.mark.parametrize("version", ["²", "9" * 5000], ids=["superscript-two", "5000-digits"])
def test_get_at_a_version_that_is_not_a_plain_number_is_400(client, run_id, version):
    account = new_account()
    label = create_label(client, run_id, who(account))
    assert_error(label_then(client, who(account), run_id, label["id"], version=version), 400, "version")


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_as_of_a_time_outside_the_representable_range_is_400(client, run_id, as_of):
    account = new_account()
    label = create_label(client, run_id, who(account))
    assert_error(label_then(client, who(account), run_id, label["id"], as_of=as_of), 400, "as_of")
    assert_error(run_then(client, who(account), run_id, as_of), 400, "as_of")


# --- as-of reads of a run -----------------------------------------------------------------------


def test_run_as_of_returns_every_label_as_it_stood_then_oldest_first(client, run_id):
    account = new_account()
    first = create_label(client, run_id, who(account), text_value="1")
    second = create_label(client, run_id, who(account), object_value={"n": 2})
    first_changed = update_label(client, run_id, first["id"], who(account, "bob"), text_value="1b")
    third = create_label(client, run_id, who(account))
    expectations = [
        (first["created_at"], [first]),
        (second["created_at"], [first, second]),
        (first_changed["updated_at"], [first_changed, second]),
        (third["created_at"], [first_changed, second, third]),
        (just_before(first_changed["updated_at"]), [first, second]),
    ]
    for as_of, expected in expectations:
        response = run_then(client, who(account), run_id, as_of)
        assert response.status_code == 200 and response.json() == expected, as_of


def test_run_as_of_leaves_out_labels_deleted_by_then(client, run_id):
    account = new_account()
    gone = create_label(client, run_id, who(account), text_value="gone")
    kept = create_label(client, run_id, who(account), text_value="kept")
    delete_label(client, run_id, gone["id"], who(account))
    deleted_at = label_history(client, run_id, gone["id"], who(account))[-1]["recorded_at"]
    assert run_then(client, who(account), run_id, just_before(deleted_at)).json() == [gone, kept]
    assert run_then(client, who(account), run_id, deleted_at).json() == [kept]


def test_run_as_of_after_every_label_was_deleted_is_an_empty_list(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    delete_label(client, run_id, label["id"], who(account))
    response = run_then(client, who(account), run_id, FAR_FUTURE)
    assert response.status_code == 200 and response.json() == []


def test_run_as_of_the_far_future_equals_the_current_list(client, run_id):
    account = new_account()
    labels = [create_label(client, run_id, who(account), text_value=str(n)) for n in range(3)]
    update_label(client, run_id, labels[1]["id"], who(account), object_value={"v": 1})
    delete_label(client, run_id, labels[2]["id"], who(account))
    current = client.get(labels_url(run_id), headers=who(account)).json()
    assert [label["id"] for label in current] == [labels[0]["id"], labels[1]["id"]]
    assert run_then(client, who(account), run_id, FAR_FUTURE).json() == current


def test_run_as_of_before_its_first_label_is_404(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    for as_of in (just_before(label["created_at"]), LONG_AGO):
        assert_error(run_then(client, who(account), run_id, as_of), 404, "run")


def test_run_as_of_for_an_unknown_run_or_another_account_is_404(client, run_id):
    account = new_account()
    create_label(client, run_id, who(account))
    assert_error(run_then(client, who(account), str(uuid.uuid4()), FAR_FUTURE), 404, "run")
    assert_error(run_then(client, who(new_account()), run_id, FAR_FUTURE), 404, "run")


def test_run_as_of_needs_only_the_read_scope(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account))
    assert run_then(client, auth(account, scope=READ), run_id, FAR_FUTURE).json() == [label]


@pytest.mark.parametrize("as_of", ["yesterday", "2026-01-01T00:00:00", ""])
def test_run_as_of_an_unparseable_time_is_400_naming_as_of(client, run_id, as_of):
    account = new_account()
    create_label(client, run_id, who(account))
    assert assert_error(run_then(client, who(account), run_id, as_of), 400, "as_of")["field"] == "as_of"


# --- the event feed -----------------------------------------------------------------------------


def test_feed_holds_the_callers_events_in_order_with_every_field(client, run_id):
    account = new_account()
    writer = who(account, "dora", **{"X-Request-ID": "req-feed", "X-Change-Reason": "why not"})
    label = create_label(client, run_id, writer, object_value={"b": 1, "a": [True, None]})
    update_label(client, run_id, label["id"], who(account, "bob"), text_value="t")
    delete_label(client, run_id, label["id"], who(account, "bob"))
    create_label(client, run_id, who(new_account()), text_value="someone else's")
    events = wait_for_feed(client, who(account), 3)
    assert all(set(event) == FEED_FIELDS for event in events)
    assert {event["label_id"] for event in events} == {label["id"]}
    assert {event["run_id"] for event in events} == {run_id}
    assert [event["version"] for event in events] == [1, 2, 3]
    assert [event["type"] for event in events] == ["GoldLabelCreated", "GoldLabelUpdated", "GoldLabelDeleted"]
    assert [event["data"]["type"] for event in events] == [event["type"] for event in events]
    assert [event["actor"] for event in events] == ["dora", "bob", "bob"]
    assert (events[0]["request_id"], events[0]["reason"], events[1]["reason"]) == ("req-feed", "why not", None)
    assert events[0]["recorded_at"] == label["created_at"]
    assert events[0]["data"]["output_resource_name"] == label["output_resource_name"]
    assert list(events[0]["data"]["object_value"]) == ["b", "a"]
    assert events[1]["data"]["text_value"] == "t"
    assert [event["log_index"] for event in events] == [0, 1, 2]
    assert [event["cursor"] for event in events] == ["1", "2", "3"]
    assert [event["chain"] for event in events] == [2, 2, 2]
    assert [json.loads(event["payload"]) for event in events] == [event["data"] for event in events]


def test_feed_events_chain_each_hash_to_the_previous_event_of_the_label(client, run_id):
    account = new_account()
    one = create_label(client, run_id, who(account), text_value="a")
    two = create_label(client, run_id, who(account), text_value="b")
    update_label(client, run_id, one["id"], who(account), text_value="c")
    update_label(client, run_id, two["id"], who(account), text_value="d")
    delete_label(client, run_id, one["id"], who(account))
    events = wait_for_feed(client, who(account), 5)
    last_hash: dict[str, str] = {}
    for event in events:
        assert event["prev_hash"] == last_hash.get(event["label_id"], GENESIS_HASH)
        last_hash[event["label_id"]] = event["hash"]
    assert len({event["hash"] for event in events}) == 5


def test_feed_of_an_account_without_events_is_empty_and_its_next_reads_nothing(client):
    headers = who(new_account())
    body = feed_page(client, headers)
    assert body["events"] == []
    assert feed_page(client, headers, after=body["next"])["events"] == []


def test_feed_next_is_the_last_cursor_and_stays_put_when_nothing_is_new(client, run_id):
    account = new_account()
    label, _ = two_versions(client, account, run_id)
    events = wait_for_feed(client, who(account), 2)
    body = feed_page(client, who(account))
    assert body["next"] == events[-1]["cursor"]
    again = feed_page(client, who(account), after=body["next"])
    assert again == {"events": [], "next": body["next"]}
    update_label(client, run_id, label["id"], who(account), text_value="c")
    wait_for_feed(client, who(account), 3)
    newer = feed_page(client, who(account), after=body["next"])
    assert [event["version"] for event in newer["events"]] == [3]
    assert newer["next"] == newer["events"][0]["cursor"] != body["next"]


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_paging_with_next_sees_every_event_exactly_once(client, run_id, limit):
    account = new_account()
    labels = [create_label(client, run_id, who(account), text_value=str(n))["id"] for n in range(3)]
    for label_id in labels:
        update_label(client, run_id, label_id, who(account), text_value="changed")
    delete_label(client, run_id, labels[0], who(account))
    everything = wait_for_feed(client, who(account), 7)
    seen, cursor, pages = [], "", 0
    while True:
        body = feed_page(client, who(account), after=cursor, limit=str(limit))
        assert len(body["events"]) <= limit
        if not body["events"]:
            assert body["next"] == cursor
            break
        assert body["next"] == body["events"][-1]["cursor"]
        seen.extend(body["events"])
        cursor, pages = body["next"], pages + 1
    assert seen == everything
    assert len({(event["label_id"], event["version"]) for event in seen}) == 7
    assert pages == -(-7 // limit)


def test_feed_limit_defaults_to_100(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="0")
    for n in range(1, 101):
        update_label(client, run_id, label["id"], who(account), text_value=str(n))
    wait_for_feed(client, who(account), 101)
    first = feed_page(client, who(account))
    assert [event["version"] for event in first["events"]] == list(range(1, 101))
    rest = feed_page(client, who(account), after=first["next"])
    assert [event["version"] for event in rest["events"]] == [101]
    assert len(feed_page(client, who(account), limit="1000")["events"]) == 101


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1", "", "2.5"])
def test_feed_limit_out_of_range_is_400_naming_limit(client, limit):
    response = client.get("/v1/events", params={"limit": limit}, headers=who(new_account()))
    assert assert_error(response, 400, "limit")["field"] == "limit"


@pytest.mark.parametrize("after", ["abc", "1-x", "x-1", "-", "1-2-3", "1-", "-1", " 1-1", "1" * 61])
def test_feed_bad_cursor_is_400_naming_after(client, after):
    for extra in ({}, {"Accept": NDJSON}):
        response = client.get("/v1/events", params={"after": after}, headers=who(new_account(), **extra))
        assert assert_error(response, 400, "cursor")["field"] == "after"


@pytest.mark.parametrize(
    "params",
    [{"after": "²-1"}, {"after": "0-99999999999999999999999"}, {"limit": "²"}],
    ids=["unicode-digit-cursor", "cursor-beyond-64-bits", "unicode-digit-limit"],
)
def test_feed_cursor_or_limit_that_is_not_a_plain_number_is_400(client, params):
    response = client.get("/v1/events", params=params, headers=who(new_account()))
    assert_error(response, 400, *params)


# Both parts of a cursor are signed 64-bit integers in the database (SQLite INTEGER, PostgreSQL bigint;
# xid8 values never come near 2**63), so a part beyond 2**63-1 was never made by the feed.
MAX_PART = 2**63 - 1
OUT_OF_RANGE_PARTS = [str(MAX_PART + 1), str(2**64), "9" * 19, "1" + "0" * 19, "9" * 20]


@pytest.mark.parametrize("part", OUT_OF_RANGE_PARTS)
@pytest.mark.parametrize("where", ["tx", "position"])
def test_feed_cursor_part_beyond_64_signed_bits_is_400_naming_after(client, part, where):
    after = f"{part}-1" if where == "tx" else f"1-{part}"
    for extra in ({}, {"Accept": NDJSON}):
        response = client.get("/v1/events", params={"after": after}, headers=who(new_account(), **extra))
        assert assert_error(response, 400, "cursor")["field"] == "after"


def test_feed_cursor_at_the_largest_64_bit_value_is_an_empty_page(client, run_id):
    account = new_account()
    create_label(client, run_id, who(account), text_value="a")
    wait_for_feed(client, who(account), 1)
    for after, following in ((str(MAX_PART), str(MAX_PART)), (f"{MAX_PART}-{MAX_PART}", "1"), (f"{MAX_PART}-0", "1")):
        body = feed_page(client, who(account), after=after)
        assert body["events"] == [] and body["next"] == following
        response = client.get("/v1/events", params={"after": after}, headers=who(account, Accept=NDJSON))
        assert response.status_code == 200 and response.text == "", response.text
    # An older cursor at the largest position is read too (on PostgreSQL, later transactions still follow it).
    feed_page(client, who(account), after=f"0-{MAX_PART}")


def test_an_older_feed_cursor_resumes_at_the_first_event_after_it(client, engine, run_id):
    """Cursors from before the log were "<transaction>-<position>"; they keep working: the page starts with
    the account's first event after that place in the old feed order."""
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    update_label(client, run_id, label["id"], who(account), text_value="b")
    update_label(client, run_id, label["id"], who(account), text_value="c")
    events = wait_for_feed(client, who(account), 3)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT tx_id, position, hash FROM events WHERE account_id = :a"), {"a": account})
        old_cursor = {digest: f"{tx_id}-{position}" for tx_id, position, digest in rows}
    body = feed_page(client, who(account), after=old_cursor[events[0]["hash"]])
    assert body["events"] == events[1:] and body["next"] == "3"
    assert feed_page(client, who(account), after=old_cursor[events[-1]["hash"]]) == {"events": [], "next": "3"}


def test_feed_ndjson_streams_the_same_events_as_json_lines(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), object_value={"q": "x\ny"})
    update_label(client, run_id, label["id"], who(account), text_value="line\nbreak")
    create_label(client, run_id, who(account))
    events = wait_for_feed(client, who(account), 3)
    response = client.get("/v1/events", headers=who(account, Accept=NDJSON))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(NDJSON)
    assert response.text.endswith("\n")
    lines = response.text.splitlines()
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == events


def test_feed_ndjson_starts_after_the_cursor_and_is_empty_at_the_end(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    for text in ("b", "c"):
        update_label(client, run_id, label["id"], who(account), text_value=text)
    events = wait_for_feed(client, who(account), 3)
    after_first = client.get("/v1/events", params={"after": events[0]["cursor"]}, headers=who(account, Accept=NDJSON))
    assert [json.loads(line) for line in after_first.text.splitlines()] == events[1:]
    at_end = client.get("/v1/events", params={"after": events[-1]["cursor"]}, headers=who(account, Accept=NDJSON))
    assert at_end.status_code == 200 and at_end.content == b""


def test_feed_of_one_account_never_shows_another_accounts_events(client, run_id):
    mine, theirs = new_account(), new_account()
    label = create_label(client, run_id, who(mine), text_value="mine")
    create_label(client, run_id, who(theirs), text_value="theirs")
    create_label(client, str(uuid.uuid4()), who(theirs), text_value="theirs too")
    events = wait_for_feed(client, who(mine), 1)
    assert [event["label_id"] for event in events] == [label["id"]]
    streamed = client.get("/v1/events", headers=who(mine, Accept=NDJSON)).text.splitlines()
    assert [json.loads(line)["label_id"] for line in streamed] == [label["id"]]
    assert all(event["label_id"] != label["id"] for event in wait_for_feed(client, who(theirs), 2))


# --- digests ------------------------------------------------------------------------------------


def test_digest_of_an_account_without_events_is_the_empty_log_digest(client):
    assert digest(client, who(new_account())) == {"tree_size": 0, "digest": EMPTY_DIGEST}


def test_digest_at_position_zero_is_the_empty_log_digest_even_after_events(client, run_id):
    account = new_account()
    create_label(client, run_id, who(account))
    assert digest(client, who(account), position="0") == {"position": 0, "digest": EMPTY_DIGEST}


def test_digest_without_parameters_covers_the_whole_log(client, run_id):
    account = new_account()
    two_versions(client, account, run_id)
    events = wait_for_feed(client, who(account), 2)
    latest = digest(client, who(account))
    assert set(latest) == {"tree_size", "digest"} and latest["tree_size"] == 2
    assert len(latest["digest"]) == 64 and re.fullmatch("[0-9a-f]{64}", latest["digest"])
    assert latest["digest"] == digest_of(events)
    assert latest["digest"] != EMPTY_DIGEST
    assert digest(client, who(account), tree_size="2") == latest


def test_digest_covers_the_log_index_and_hash_of_every_entry_up_to_its_size(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    create_label(client, run_id, who(account), text_value="b")
    delete_label(client, run_id, label["id"], who(account))
    events = wait_for_feed(client, who(account), 3)
    for size in range(4):
        expected = {"tree_size": size, "digest": digest_of(events[:size])}
        assert digest(client, who(account), tree_size=str(size)) == expected


def test_digest_at_a_tree_size_stays_the_same_after_more_events(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    wait_for_feed(client, who(account), 1)
    before = digest(client, who(account))
    for text in ("b", "c"):
        update_label(client, run_id, label["id"], who(account), text_value=text)
    create_label(client, run_id, who(account))
    wait_for_feed(client, who(account), 4)
    assert digest(client, who(account), tree_size=str(before["tree_size"])) == before
    latest = digest(client, who(account))
    assert latest["tree_size"] == 4 and latest["digest"] != before["digest"]


def test_an_older_digest_at_a_position_is_still_answered_for_the_events_up_to_it(client, engine, run_id):
    """Digests kept before the log had indexes name a global position; asked again, they give the same."""
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="a")
    create_label(client, run_id, who(account), text_value="b")
    delete_label(client, run_id, label["id"], who(account))
    events = wait_for_feed(client, who(account), 3)
    at = positions(engine, events)
    for upto in range(1, 4):
        expected = {"position": at[upto - 1], "digest": legacy_digest_of(events[:upto], at[:upto])}
        assert digest(client, who(account), position=str(at[upto - 1])) == expected


def test_accounts_have_independent_digests(client, run_id):
    one, two = new_account(), new_account()
    create_label(client, run_id, who(one), text_value="same")
    wait_for_feed(client, who(one), 1)
    first_of_one = digest(client, who(one))
    label = create_label(client, run_id, who(two), text_value="same")
    update_label(client, run_id, label["id"], who(two), text_value="other")
    events_of_two = wait_for_feed(client, who(two), 2)
    assert digest(client, who(one)) == first_of_one
    assert digest(client, who(two)) == {"tree_size": 2, "digest": digest_of(events_of_two)}
    assert digest(client, who(two))["digest"] != first_of_one["digest"]


def test_digest_at_another_accounts_position_or_beyond_the_log_is_404(client, engine, run_id):
    mine, theirs = new_account(), new_account()
    create_label(client, run_id, who(mine))
    create_label(client, run_id, who(theirs))
    (their_position,) = positions(engine, wait_for_feed(client, who(theirs), 1))
    (my_position,) = positions(engine, wait_for_feed(client, who(mine), 1))
    for position in (their_position, max(my_position, their_position) + 1_000_000):
        assert_error(client.get("/v1/audit/digest", params={"position": str(position)}, headers=who(mine)), 404)
    assert_error(client.get("/v1/audit/digest", params={"tree_size": "2"}, headers=who(mine)), 404, "holds 1")
    response = client.get("/v1/audit/digest", params={"tree_size": "1", "position": "1"}, headers=who(mine))
    assert_error(response, 400, "not both")


@pytest.mark.parametrize("position", ["x", "-1", "1.5", "", " 1", "²"])
def test_digest_at_an_unparseable_position_is_400_naming_position(client, position):
    response = client.get("/v1/audit/digest", params={"position": position}, headers=who(new_account()))
    assert assert_error(response, 400, "position")["field"] == "position"


def test_digest_at_a_position_that_is_not_a_plain_number_is_400_naming_position(client):
    response = client.get("/v1/audit/digest", params={"position": "²"}, headers=who(new_account()))
    assert assert_error(response, 400, "position")["field"] == "position"


def test_digest_at_a_position_beyond_64_bits_is_404_like_any_position_without_an_event(client):
    """A plain whole number is a position: beyond the largest one a database can hold, no event is there."""
    response = client.get("/v1/audit/digest", params={"position": "9" * 23}, headers=who(new_account()))
    assert_error(response, 404, "no event at position")


# --- property: history, as-of by version and time, and run as-of agree with a replay ------------

values = st.one_of(
    st.fixed_dictionaries({"text_value": st.text(max_size=8).filter(lambda s: "\x00" not in s)}),
    st.fixed_dictionaries(
        {"object_value": st.dictionaries(st.sampled_from("abc"), st.integers(-3, 3), max_size=2)},
        optional={"object_value_is_partial": st.booleans()},
    ),
)
operations = st.lists(
    st.tuples(st.sampled_from(["change", "change", "delete"]), st.integers(0, 2), values, st.sampled_from("ab")),
    min_size=1,
    max_size=10,
)


def state_at(timeline: list[tuple[str, dict | None]], at: str) -> tuple[bool, dict | None]:
    """Whether the label existed in the log by `at`, and its state after the last event at or before `at`."""
    states = [state for recorded_at, state in timeline if recorded_at <= at]
    return bool(states), (states[-1] if states else None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_history_and_as_of_reads_agree_with_a_replay_of_the_writes(client, ops):
    account, run_id = new_account(), str(uuid.uuid4())
    reader = who(account)
    live: dict[int, str] = {}
    # label id -> [(recorded_at, state after the event)], from the write responses alone (None after a delete)
    timelines: dict[str, list[tuple[str | None, dict | None]]] = {}
    for kind, slot, body, user in ops:
        # Every operation writes one event: an empty slot gets a new label, a live one is changed or deleted.
        writer = who(account, user)
        label_id = live.get(slot)
        if label_id is None:
            label = create_label(client, run_id, writer, output_resource_name=f"out-{slot}", **body)
            live[slot] = label["id"]
            timelines[label["id"]] = [(label["updated_at"], label)]
        elif kind == "change":
            label = update_label(client, run_id, label_id, writer, **body)
            timelines[label_id].append((label["updated_at"], label))
        else:
            delete_label(client, run_id, label_id, writer)
            timelines[label_id].append((None, None))
            del live[slot]

    for label_id, timeline in timelines.items():
        entries = label_history(client, run_id, label_id, reader)
        assert [entry["version"] for entry in entries] == list(range(1, len(timeline) + 1))
        assert [entry["state"] for entry in entries] == [state for _, state in timeline]
        for entry, (recorded_at, _) in zip(entries, timeline, strict=True):
            assert recorded_at in (None, entry["recorded_at"])
        timeline[:] = [(entry["recorded_at"], entry["state"]) for entry in entries]
        stamps = [recorded_at for recorded_at, _ in timeline]
        assert stamps == sorted(stamps)

        # (c) the changes, replayed from nothing, rebuild every state
        replay: dict = {}
        for entry in entries:
            for field, change in entry["changes"].items():
                assert replay.get(field) == change["from"] != change["to"], (entry["version"], field)
                replay[field] = change["to"]
            if entry["state"] is None:
                assert entry["changes"] == {}
            else:
                assert set(replay) <= set(entry["state"])
                assert {**dict.fromkeys(entry["state"]), **replay} == entry["state"]

        for entry in entries:
            # (a) by version
            response = label_then(client, reader, run_id, label_id, version=str(entry["version"]))
            if entry["state"] is None:
                assert response.status_code == 404, response.text
            else:
                assert response.status_code == 200 and response.json() == entry["state"]
                assert response.headers["etag"] == f'"{entry["version"]}"'
            # (b) by time: at the event and just before it
            for at in (entry["recorded_at"], just_before(entry["recorded_at"])):
                _, expected = state_at(timeline, at)
                response = label_then(client, reader, run_id, label_id, as_of=at)
                if expected is None:
                    assert response.status_code == 404, (at, response.text)
                else:
                    assert response.status_code == 200 and response.json() == expected, at
        beyond = label_then(client, reader, run_id, label_id, version=str(len(entries) + 1))
        assert beyond.status_code == 404, beyond.text

    # (d) the run at each event's time (and before the first) is the replay of all its labels
    moments = sorted({at for timeline in timelines.values() for at, _ in timeline})
    for at in (just_before(moments[0]), *moments):
        known = [state_at(timeline, at) for timeline in timelines.values()]
        response = run_then(client, reader, run_id, at)
        if not any(existed for existed, _ in known):
            assert response.status_code == 404, (at, response.text)
            continue
        expected = sorted((state for _, state in known if state is not None), key=lambda s: (s["created_at"], s["id"]))
        assert response.status_code == 200 and response.json() == expected, at
