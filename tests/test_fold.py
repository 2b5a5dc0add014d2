"""The projector is a pure fold: for any sequence of creates, updates and deletes made through the
API, folding each label's stored events gives exactly the read-model row the API serves from."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.chain import seal
from events.types import GENESIS_HASH, PendingEvent
from projections.fold import fold
from tests.helpers import auth, create_label, label_url, labels_url, new_account, stored_label, stored_stream

values = st.one_of(
    st.fixed_dictionaries({"text_value": st.text(max_size=20).filter(lambda s: "\x00" not in s)}),
    st.fixed_dictionaries(
        {"object_value": st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=3)},
        optional={"object_value_is_partial": st.booleans()},
    ),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3), values),
        st.tuples(st.just("update"), st.integers(0, 3), values),
        st.tuples(st.just("delete"), st.integers(0, 3), st.none()),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_fold_of_all_events_equals_the_read_model(client, database_url, ops):
    run_id, account = str(uuid.uuid4()), new_account()
    headers = auth(account)
    slots: dict[int, str] = {}
    made: list[str] = []
    for kind, slot, body in ops:
        label_id = slots.get(slot)
        if kind == "create":
            response = client.post(
                labels_url(run_id), json={"output_resource_name": f"out-{slot}", **body}, headers=headers
            )
            if label_id is None:
                assert response.status_code == 201, response.text
                slots[slot] = response.json()["id"]
                made.append(slots[slot])
            else:
                assert response.status_code == 409
        elif label_id is None:
            continue
        elif kind == "update":
            assert client.put(label_url(run_id, label_id), json=body, headers=headers).status_code == 200
        else:
            assert client.delete(label_url(run_id, label_id), headers=headers).status_code == 204
            del slots[slot]

    for label_id in made:
        history = stored_stream(database_url, account, label_id)
        assert [event.version for event in history] == list(range(1, len(history) + 1))
        folded = fold(history)
        assert folded == stored_label(database_url, account, label_id)
        response = client.get(label_url(run_id, label_id), headers=headers)
        assert response.status_code == (404 if folded.deleted else 200)
        if not folded.deleted:
            assert response.headers["etag"] == f'"{folded.version}"'


def test_each_event_hash_chains_to_the_previous_one(client, database_url, run_id):
    account = new_account()
    label = client.post(
        labels_url(run_id), json={"output_resource_name": "o", "text_value": "a"}, headers=auth(account)
    ).json()
    for text in ("b", "c"):
        client.put(label_url(run_id, label["id"]), json={"text_value": text}, headers=auth(account))
    client.delete(label_url(run_id, label["id"]), headers=auth(account))
    history = stored_stream(database_url, account, label["id"])
    assert [event.type for event in history] == [
        "GoldLabelCreated",
        "GoldLabelUpdated",
        "GoldLabelUpdated",
        "GoldLabelDeleted",
    ]
    previous = GENESIS_HASH
    for event in history:
        assert event.prev_hash == previous
        pending = PendingEvent(**{f: getattr(event, f) for f in PendingEvent.__struct_fields__})
        assert seal(pending)[1] == event.hash
        previous = event.hash
    assert len({event.hash for event in history}) == len(history)


def test_events_record_actor_request_id_and_reason(client, database_url, run_id):
    account = new_account()
    headers = {**auth(account, "carol"), "X-Request-ID": "req-42", "X-Change-Reason": "relabelled after review"}
    label = create_label(client, run_id, headers, output_resource_name="o")
    (event,) = stored_stream(database_url, account, label["id"])
    assert (event.actor, event.request_id, event.reason) == ("carol", "req-42", "relabelled after review")
    assert event.account_id == account and event.run_id == run_id


def test_change_reason_may_be_utf8(client, database_url, run_id):
    account = new_account()
    reason = "revu par l'équipe ✓"
    headers = {**auth(account), "X-Change-Reason": reason.encode()}
    label = create_label(client, run_id, headers, output_resource_name="o")
    assert stored_stream(database_url, account, label["id"])[0].reason == reason


def test_overlong_change_reason_is_400_and_stores_nothing(client, run_id):
    headers = {**auth(), "X-Change-Reason": "x" * 2001}
    response = client.post(labels_url(run_id), json={"output_resource_name": "o"}, headers=headers)
    assert response.status_code == 400 and "X-Change-Reason" in response.json()["error"]
    assert client.get(labels_url(run_id), headers=auth()).status_code == 404
