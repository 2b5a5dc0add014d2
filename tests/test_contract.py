"""The documented API, black-box over HTTP, on SQLite and PostgreSQL: every route, every status."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta

import pytest

from events.types import GENESIS_HASH, GoldLabelCreated, PendingEvent, format_time, utc_now
from tests.helpers import (
    ALL_SCOPES,
    assert_error,
    auth,
    create_label,
    delete_label,
    label_history,
    label_url,
    labels_url,
    post_label,
    store_events,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
FIELDS = {
    "id",
    "account_id",
    "run_id",
    "output_resource_name",
    "text_value",
    "object_value",
    "object_value_is_partial",
    "created_by",
    "created_at",
    "updated_by",
    "updated_at",
}


# --- create -------------------------------------------------------------------------------------


def test_create_returns_201_with_the_label_location_and_etag(client, run_id):
    response = post_label(client, run_id, auth(), output_resource_name="answer", text_value="42")
    assert response.status_code == 201
    label = response.json()
    assert set(label) == FIELDS
    assert response.headers["location"] == f"/v1/run/{run_id}/gold-label/{label['id']}"
    assert response.headers["etag"] == '"1"'
    assert str(uuid.UUID(label["id"])) == label["id"] and uuid.UUID(label["id"]).version == 4
    assert label["account_id"] == "acme" and label["run_id"] == run_id
    assert label["output_resource_name"] == "answer" and label["text_value"] == "42"
    assert label["object_value"] is None and label["object_value_is_partial"] is None
    assert label["created_by"] == label["updated_by"] == "alice"
    assert TIMESTAMP.match(label["created_at"]) and label["updated_at"] == label["created_at"]


def test_create_object_label_defaults_partial_to_false(client, run_id):
    label = create_label(client, run_id, auth(), object_value={"b": 1, "a": [True, None]})
    assert label["object_value"] == {"b": 1, "a": [True, None]}
    assert label["object_value_is_partial"] is False and label["text_value"] is None


def test_create_keeps_the_partial_flag_sent_with_an_object(client, run_id):
    assert (
        create_label(client, run_id, auth(), object_value={}, object_value_is_partial=True)["object_value_is_partial"]
        is True
    )


def test_create_without_a_value_is_allowed(client, run_id):
    label = create_label(client, run_id, auth())
    assert label["text_value"] is None and label["object_value"] is None


def test_create_ignores_identity_fields_in_the_body(client, run_id):
    label = create_label(
        client, run_id, auth(), account_id="evil", created_by="mallory", id=str(uuid.uuid4()), text_value="x"
    )
    assert label["account_id"] == "acme" and label["created_by"] == "alice"


def test_create_with_text_and_object_is_400(client, run_id):
    assert_error(post_label(client, run_id, auth(), text_value="x", object_value={"a": 1}), 400, "not both")


@pytest.mark.parametrize(
    "body", [{"object_value_is_partial": True}, {"text_value": "x", "object_value_is_partial": False}]
)
def test_create_with_partial_flag_but_no_object_is_400(client, run_id, body):
    assert assert_error(post_label(client, run_id, auth(), **body), 400, "object_value_is_partial")["field"] == (
        "object_value_is_partial"
    )


def test_second_create_for_the_same_output_resource_is_409_naming_the_label(client, run_id):
    first = create_label(client, run_id, auth(), output_resource_name="dup", text_value="a")
    body = assert_error(
        post_label(client, run_id, auth(), output_resource_name="dup", text_value="b"), 409, first["id"]
    )
    assert body["existing_id"] == first["id"]


def test_same_output_resource_in_another_run_or_account_is_fine(client, run_id):
    create_label(client, run_id, auth(), output_resource_name="shared")
    create_label(client, str(uuid.uuid4()), auth(), output_resource_name="shared")
    assert post_label(client, run_id, auth("other"), output_resource_name="shared").status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text_value": "x"}, "output_resource_name"),
        ({"output_resource_name": 5}, "output_resource_name"),
        ({"output_resource_name": ""}, "output_resource_name"),
        ({"output_resource_name": "x" * 501}, "output_resource_name"),
        ({"output_resource_name": "a", "text_value": 3}, "text_value"),
        ({"output_resource_name": "a", "object_value": [1, 2]}, "object_value"),
        ({"output_resource_name": "a", "object_value": "text"}, "object_value"),
        (
            {"output_resource_name": "a", "object_value": {}, "object_value_is_partial": "yes"},
            "object_value_is_partial",
        ),
    ],
)
def test_create_with_a_wrong_field_is_400_naming_it(client, run_id, body, field):
    response = client.post(labels_url(run_id), json=body, headers=auth())
    assert field in assert_error(response, 400)["error"]
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'"text"', "JSON object"),
        (b'{"output_resource_name": "\xff"}', "UTF-8"),
        (b'{"output_resource_name": "a",}', "not valid JSON"),
    ],
)
def test_malformed_body_is_400(client, run_id, raw, fragment):
    response = client.post(labels_url(run_id), content=raw, headers={**auth(), "Content-Type": "application/json"})
    assert_error(response, 400, fragment)


def test_wrong_content_type_is_415(client, run_id):
    response = client.post(
        labels_url(run_id),
        content=b"output_resource_name=x",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 415, "application/json")


def test_body_over_the_limit_is_413_and_stores_nothing(client, run_id, settings):
    big = {"output_resource_name": "big", "text_value": "x" * settings.max_body_bytes}
    assert_error(client.post(labels_url(run_id), json=big, headers=auth()), 413, "larger than")
    assert_error(client.get(labels_url(run_id), headers=auth()), 404)


def test_nesting_over_the_depth_limit_is_400(client, run_id, settings):
    value: dict = {}
    for _ in range(settings.max_object_depth):
        value = {"a": value}
    assert_error(post_label(client, run_id, auth(), object_value=value), 400, "nested deeper")
    assert post_label(client, run_id, auth(), object_value=value["a"]).status_code == 201


def test_absurd_nesting_is_400_not_500(client, run_id):
    raw = b'{"output_resource_name": "x", "object_value": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    response = client.post(labels_url(run_id), content=raw, headers={**auth(), "Content-Type": "application/json"})
    assert_error(response, 400, "nested")


@pytest.mark.parametrize(
    "body",
    [
        {"output_resource_name": "a\u0000b"},
        {"output_resource_name": "a", "text_value": "x\u0000"},
        {"output_resource_name": "a", "object_value": {"k": "v\u0000"}},
        {"output_resource_name": "a", "object_value": {"k\u0000": 1}},
        {"output_resource_name": "a", "object_value": {"k": [{"deep": ["\u0000"]}]}},
    ],
)
def test_nul_character_is_400_on_every_backend(client, run_id, body):
    assert_error(client.post(labels_url(run_id), json=body, headers=auth()), 400, "U+0000")
    assert_error(client.get(labels_url(run_id), headers=auth()), 404)


def test_non_uuid_run_id_is_400_naming_it(client):
    assert (
        assert_error(
            client.post(labels_url("not-a-uuid"), json={"output_resource_name": "a"}, headers=auth()), 400, "run_id"
        )["field"]
        == "run_id"
    )


# --- get and list -------------------------------------------------------------------------------


def test_get_returns_the_label_with_its_etag(client, run_id):
    label = create_label(client, run_id, auth(), text_value="t")
    response = client.get(label_url(run_id, label["id"]), headers=auth())
    assert response.status_code == 200 and response.json() == label
    assert response.headers["etag"] == '"1"'


def test_get_accepts_any_spelling_of_the_uuids(client, run_id):
    label = create_label(client, run_id, auth())
    response = client.get(label_url(run_id.upper(), label["id"].replace("-", "")), headers=auth())
    assert response.status_code == 200 and response.json()["id"] == label["id"]


def test_get_unknown_label_is_404(client, run_id):
    create_label(client, run_id, auth())
    assert_error(client.get(label_url(run_id, str(uuid.uuid4())), headers=auth()), 404, "not found")


def test_get_label_through_another_run_is_404(client, run_id):
    label = create_label(client, run_id, auth())
    assert_error(client.get(label_url(str(uuid.uuid4()), label["id"]), headers=auth()), 404)


def test_get_with_non_uuid_label_id_is_400(client, run_id):
    assert assert_error(client.get(label_url(run_id, "42"), headers=auth()), 400)["field"] == "gold_label_id"


def test_list_is_oldest_first_and_stable(client, run_id):
    ids = [create_label(client, run_id, auth(), text_value=str(n))["id"] for n in range(5)]
    first = client.get(labels_url(run_id), headers=auth())
    assert first.status_code == 200
    assert [label["id"] for label in first.json()] == ids
    assert client.get(labels_url(run_id), headers=auth()).json() == first.json()


def test_list_unknown_run_is_404(client):
    assert_error(client.get(labels_url(str(uuid.uuid4())), headers=auth()), 404, "run")


def test_list_of_a_run_whose_labels_were_all_deleted_is_empty(client, run_id):
    label = create_label(client, run_id, auth())
    assert client.delete(label_url(run_id, label["id"]), headers=auth()).status_code == 204
    response = client.get(labels_url(run_id), headers=auth())
    assert response.status_code == 200 and response.json() == []


# --- tenancy and scopes -------------------------------------------------------------------------


def test_another_accounts_label_is_indistinguishable_from_a_missing_one(client, run_id):
    label = create_label(client, run_id, auth())
    missing_id = str(uuid.uuid4())
    theirs = client.get(label_url(run_id, label["id"]), headers=auth("intruder"))
    missing = client.get(label_url(run_id, missing_id), headers=auth("intruder"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["error"].replace(label["id"], "ID") == missing.json()["error"].replace(missing_id, "ID")
    assert_error(client.get(labels_url(run_id), headers=auth("intruder")), 404)
    assert_error(client.put(label_url(run_id, label["id"]), json={"text_value": "x"}, headers=auth("intruder")), 404)
    assert_error(client.delete(label_url(run_id, label["id"]), headers=auth("intruder")), 404)
    assert client.get(label_url(run_id, label["id"]), headers=auth()).json() == label


def test_read_scope_cannot_write(client, run_id):
    label = create_label(client, run_id, auth())
    reader = auth(scope="gold_labels:read")
    assert client.get(label_url(run_id, label["id"]), headers=reader).status_code == 200
    assert_error(client.post(labels_url(run_id), json={"output_resource_name": "n"}, headers=reader), 403, "write")
    assert_error(client.put(label_url(run_id, label["id"]), json={"text_value": "x"}, headers=reader), 403)
    assert_error(client.delete(label_url(run_id, label["id"]), headers=reader), 403)


def test_write_scope_alone_cannot_read(client, run_id):
    label = create_label(client, run_id, auth(scope="gold_labels:write"))
    assert_error(client.get(label_url(run_id, label["id"]), headers=auth(scp=["gold_labels:write"])), 403, "read")


def test_token_without_scopes_may_read_and_write(client, run_id):
    label = create_label(client, run_id, auth())
    assert client.get(labels_url(run_id), headers=auth()).json()[0]["id"] == label["id"]


# --- update -------------------------------------------------------------------------------------


def put(client, run_id, label_id, body, **headers):
    return client.put(
        label_url(run_id, label_id), json=body, headers={**auth(user=headers.pop("user", "bob")), **headers}
    )


def test_put_text_makes_a_text_label(client, run_id):
    label = create_label(client, run_id, auth(), object_value={"a": 1}, object_value_is_partial=True)
    response = put(client, run_id, label["id"], {"text_value": "now text"})
    assert response.status_code == 200 and response.headers["etag"] == '"2"'
    updated = response.json()
    assert updated["text_value"] == "now text"
    assert updated["object_value"] is None and updated["object_value_is_partial"] is None
    assert updated["updated_by"] == "bob" and updated["created_by"] == "alice"
    assert updated["created_at"] == label["created_at"] and updated["updated_at"] >= label["updated_at"]
    assert client.get(label_url(run_id, label["id"]), headers=auth()).json() == updated


def test_put_object_makes_an_object_label_with_partial_false_by_default(client, run_id):
    label = create_label(client, run_id, auth(), text_value="t")
    updated = put(client, run_id, label["id"], {"object_value": {"z": 1}}).json()
    assert updated["text_value"] is None and updated["object_value"] == {"z": 1}
    assert updated["object_value_is_partial"] is False
    again = put(client, run_id, label["id"], {"object_value": {"z": 2}, "object_value_is_partial": True}).json()
    assert again["object_value_is_partial"] is True


def test_put_partial_flag_alone_changes_only_the_flag(client, run_id):
    label = create_label(client, run_id, auth(), object_value={"k": "v"})
    updated = put(client, run_id, label["id"], {"object_value_is_partial": True}).json()
    assert updated["object_value"] == {"k": "v"} and updated["object_value_is_partial"] is True


def test_put_partial_flag_on_a_text_label_is_400(client, run_id):
    label = create_label(client, run_id, auth(), text_value="t")
    assert_error(put(client, run_id, label["id"], {"object_value_is_partial": True}), 400, "object_value_is_partial")


def test_put_nulls_are_left_as_they_are(client, run_id):
    label = create_label(client, run_id, auth(), text_value="keep")
    body = {"text_value": None, "object_value": None, "object_value_is_partial": None}
    assert_error(put(client, run_id, label["id"], body), 400, "nothing to update")


@pytest.mark.parametrize("body", [{}, {"unknown": 1}, {"output_resource_name": "same"}])
def test_put_without_any_value_field_is_400(client, run_id, body):
    label = create_label(client, run_id, auth(), output_resource_name="same", text_value="t")
    assert_error(put(client, run_id, label["id"], body), 400, "nothing to update")


def test_put_back_what_get_returned_is_accepted(client, run_id):
    label = create_label(client, run_id, auth(), object_value={"x": [1, 2]}, object_value_is_partial=True)
    response = put(client, run_id, label["id"], label)
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if not k.startswith("updated")} == {
        k: v for k, v in label.items() if not k.startswith("updated")
    }


def test_put_changing_output_resource_name_is_400(client, run_id):
    label = create_label(client, run_id, auth(), output_resource_name="fixed", text_value="t")
    body = assert_error(
        put(client, run_id, label["id"], {"output_resource_name": "moved", "text_value": "u"}), 400, "cannot be changed"
    )
    assert body["field"] == "output_resource_name"
    assert client.get(label_url(run_id, label["id"]), headers=auth()).json() == label


def test_put_with_text_and_object_is_400_and_changes_nothing(client, run_id):
    label = create_label(client, run_id, auth(), text_value="t")
    assert_error(put(client, run_id, label["id"], {"text_value": "a", "object_value": {}}), 400, "not both")
    assert client.get(label_url(run_id, label["id"]), headers=auth()).headers["etag"] == '"1"'


def test_put_text_with_partial_flag_is_400(client, run_id):
    label = create_label(client, run_id, auth(), object_value={})
    assert_error(put(client, run_id, label["id"], {"text_value": "a", "object_value_is_partial": True}), 400)


def test_every_accepted_put_is_a_new_version_even_when_nothing_changed(client, run_id):
    label = create_label(client, run_id, auth(), text_value="same")
    for version in (2, 3, 4):
        response = put(client, run_id, label["id"], {"text_value": "same"})
        assert response.headers["etag"] == f'"{version}"'


def test_put_unknown_label_is_404(client, run_id):
    create_label(client, run_id, auth())
    assert_error(put(client, run_id, str(uuid.uuid4()), {"text_value": "x"}), 404)


def test_put_with_matching_if_match_succeeds_and_stale_is_412(client, run_id):
    label = create_label(client, run_id, auth(), text_value="v1")
    assert put(client, run_id, label["id"], {"text_value": "v2"}, **{"If-Match": '"1"'}).status_code == 200
    stale = put(client, run_id, label["id"], {"text_value": "v3"}, **{"If-Match": '"1"'})
    assert_error(stale, 412, "version 2")
    assert stale.headers["etag"] == '"2"'
    assert client.get(label_url(run_id, label["id"]), headers=auth()).json()["text_value"] == "v2"


@pytest.mark.parametrize("if_match", ['"2"', "garbage", 'W/"1"', '""'])
def test_put_with_any_other_if_match_is_412(client, run_id, if_match):
    label = create_label(client, run_id, auth(), text_value="v1")
    assert_error(put(client, run_id, label["id"], {"text_value": "v2"}, **{"If-Match": if_match}), 412)


@pytest.mark.parametrize("if_match", ["*", '"7", "1"'])
def test_put_with_star_or_a_list_containing_the_version_succeeds(client, run_id, if_match):
    label = create_label(client, run_id, auth(), text_value="v1")
    assert put(client, run_id, label["id"], {"text_value": "v2"}, **{"If-Match": if_match}).status_code == 200


# --- delete -------------------------------------------------------------------------------------


def test_delete_is_204_then_the_label_is_gone_everywhere(client, run_id):
    label = create_label(client, run_id, auth(), text_value="t")
    keep = create_label(client, run_id, auth(), text_value="other")
    response = client.delete(label_url(run_id, label["id"]), headers=auth())
    assert response.status_code == 204 and response.content == b""
    assert_error(client.get(label_url(run_id, label["id"]), headers=auth()), 404)
    assert_error(put(client, run_id, label["id"], {"text_value": "x"}), 404)
    assert_error(client.delete(label_url(run_id, label["id"]), headers=auth()), 404)
    assert [row["id"] for row in client.get(labels_url(run_id), headers=auth()).json()] == [keep["id"]]


def test_delete_frees_the_output_resource_for_a_new_label_with_a_new_id(client, run_id):
    label = create_label(client, run_id, auth(), output_resource_name="reused")
    client.delete(label_url(run_id, label["id"]), headers=auth())
    again = create_label(client, run_id, auth(), output_resource_name="reused")
    assert again["id"] != label["id"]


def test_delete_with_stale_if_match_is_412_and_keeps_the_label(client, run_id):
    label = create_label(client, run_id, auth())
    put(client, run_id, label["id"], {"text_value": "v2"})
    assert_error(client.delete(label_url(run_id, label["id"]), headers={**auth(), "If-Match": '"1"'}), 412)
    assert client.get(label_url(run_id, label["id"]), headers=auth()).status_code == 200
    assert client.delete(label_url(run_id, label["id"]), headers={**auth(), "If-Match": '"2"'}).status_code == 204


# --- framework edges ----------------------------------------------------------------------------


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/v2/nothing"), 404, "no route")


def test_wrong_method_is_json_405(client, run_id):
    assert_error(client.patch(labels_url(run_id), headers=auth()), 405, "PATCH")


def test_request_id_is_echoed_or_generated(client, run_id):
    sent = client.get(labels_url(run_id), headers={**auth(), "X-Request-ID": "trace-123"})
    assert sent.headers["x-request-id"] == "trace-123"
    generated = client.get("/v2/nothing")
    assert str(uuid.UUID(generated.headers["x-request-id"])) == generated.headers["x-request-id"]


def test_health_and_readiness_need_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_openapi_schema_lists_the_documented_operations(client):
    schema = client.get("/schema/openapi.json").json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values() if "operationId" in op}
    assert {
        "createRunGoldLabel",
        "listRunGoldLabels",
        "getRunGoldLabel",
        "updateRunGoldLabel",
        "deleteRunGoldLabel",
    } <= operations


def test_timestamps_are_utc_microseconds_and_never_go_backwards(client, run_id):
    label = create_label(client, run_id, auth(), text_value="0")
    stamps = [label["updated_at"]]
    for n in range(5):
        stamps.append(put(client, run_id, label["id"], {"text_value": str(n)}).json()["updated_at"])
    assert all(TIMESTAMP.match(stamp) for stamp in stamps)
    assert stamps == sorted(stamps)
    assert all(datetime.fromisoformat(stamp).utcoffset().total_seconds() == 0 for stamp in stamps)


def test_time_never_goes_backwards_within_a_label_even_when_this_hosts_clock_is_behind(client, database_url, run_id):
    """A label last written by a host whose clock ran an hour ahead: this host's changes to it are recorded no
    earlier than that, so the label's history stays in time order (and as-of reads stay meaningful)."""
    ahead = utc_now() + timedelta(hours=1)
    label_id = str(uuid.uuid4())
    created = GoldLabelCreated(run_id=run_id, output_resource_name="skewed", text_value="from a fast clock")
    store_events(
        database_url,
        PendingEvent(
            account_id="acme",
            stream_id=label_id,
            version=1,
            run_id=run_id,
            data=created,
            actor="alice",
            recorded_at=ahead,
            request_id="req-fast-clock",
            reason=None,
            prev_hash=GENESIS_HASH,
        ),
    )
    assert client.get(label_url(run_id, label_id), headers=auth()).json()["updated_at"] == format_time(ahead)
    updated = put(client, run_id, label_id, {"text_value": "from a slow clock"})
    assert updated.status_code == 200, updated.text
    assert updated.json()["updated_at"] >= format_time(ahead)
    delete_label(client, run_id, label_id, auth())
    stamps = [entry["recorded_at"] for entry in label_history(client, run_id, label_id, auth(scope=ALL_SCOPES))]
    assert len(stamps) == 3 and stamps[0] == format_time(ahead)
    assert stamps == sorted(stamps), stamps
