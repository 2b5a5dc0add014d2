"""Idempotent retries with `Idempotency-Key`: a retried write is answered from its first outcome and
appends nothing; a key reused for a different request is 422; keys belong to an account."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.helpers import assert_error, auth, count_events, count_labels, create_label, label_url, labels_url


def keyed(key: str, account: str = "acme", **extra: str) -> dict[str, str]:
    return {**auth(account), "Idempotency-Key": key, **extra}


def test_retried_create_returns_the_first_answer_and_creates_once(client, engine, run_id):
    key = str(uuid.uuid4())
    body = {"output_resource_name": "once", "text_value": "t"}
    first = client.post(labels_url(run_id), json=body, headers=keyed(key))
    again = client.post(labels_url(run_id), json=body, headers=keyed(key))
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"] and again.headers["etag"] == '"1"'
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert count_labels(engine, run_id=run_id) == 1


def test_retried_put_appends_nothing(client, engine, run_id):
    label = create_label(client, run_id, auth(), output_resource_name="o")
    url, key = label_url(run_id, label["id"]), str(uuid.uuid4())
    first = client.put(url, json={"text_value": "v2"}, headers=keyed(key))
    client.put(url, json={"text_value": "v3"}, headers=auth())
    again = client.put(url, json={"text_value": "v2"}, headers=keyed(key))
    assert again.status_code == 200 and again.content == first.content and again.headers["etag"] == '"2"'
    assert count_events(engine, label_id=label["id"]) == 3
    assert client.get(url, headers=auth()).json()["text_value"] == "v3"


def test_retried_delete_is_204_again_while_a_plain_retry_is_404(client, run_id):
    label = create_label(client, run_id, auth(), output_resource_name="o")
    url, key = label_url(run_id, label["id"]), str(uuid.uuid4())
    assert client.delete(url, headers=keyed(key)).status_code == 204
    again = client.delete(url, headers=keyed(key))
    assert again.status_code == 204 and again.content == b"" and again.headers["idempotent-replayed"] == "true"
    assert_error(client.delete(url, headers=auth()), 404)


@pytest.mark.parametrize("change", ["body", "path", "method"])
def test_same_key_for_a_different_request_is_422(client, run_id, change):
    label = create_label(client, run_id, auth(), output_resource_name="o")
    url, key = label_url(run_id, label["id"]), str(uuid.uuid4())
    assert client.put(url, json={"text_value": "a"}, headers=keyed(key)).status_code == 200
    if change == "body":
        response = client.put(url, json={"text_value": "b"}, headers=keyed(key))
    elif change == "path":
        other = client.post(labels_url(run_id), json={"output_resource_name": "p"}, headers=auth())
        response = client.put(label_url(run_id, other.json()["id"]), json={"text_value": "a"}, headers=keyed(key))
    else:
        response = client.delete(url, headers=keyed(key))
    assert assert_error(response, 422, "Idempotency-Key")["field"] == "Idempotency-Key"
    assert client.get(url, headers=auth()).headers["etag"] == '"2"'


def test_keys_belong_to_one_account(client, run_id):
    key = str(uuid.uuid4())
    body = {"output_resource_name": "o"}
    mine = client.post(labels_url(run_id), json=body, headers=keyed(key))
    theirs = client.post(labels_url(run_id), json=body, headers=keyed(key, account="other"))
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"] and "idempotent-replayed" not in theirs.headers


def test_a_failed_write_leaves_its_key_free(client, run_id):
    key = str(uuid.uuid4())
    bad = client.post(labels_url(run_id), json={"text_value": "no name"}, headers=keyed(key))
    assert_error(bad, 400)
    fixed = client.post(labels_url(run_id), json={"output_resource_name": "o"}, headers=keyed(key))
    assert fixed.status_code == 201 and "idempotent-replayed" not in fixed.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "spaces are not allowed", "naïve"])
def test_malformed_key_is_400(client, run_id, key):
    headers = {**auth(), "Idempotency-Key": key.encode()}
    response = client.post(labels_url(run_id), json={"output_resource_name": "o"}, headers=headers)
    assert assert_error(response, 400, "Idempotency-Key")["field"] == "Idempotency-Key"


def test_a_key_is_free_again_after_the_retention_window(database_url, start_app):
    client = start_app(database_url, GOLDTRAIL_IDEMPOTENCY_RETENTION_SECONDS="1")
    run_id, key = str(uuid.uuid4()), str(uuid.uuid4())
    first = client.post(labels_url(run_id), json={"output_resource_name": "a"}, headers=keyed(key))
    assert first.status_code == 201
    time.sleep(1.1)
    later = client.post(labels_url(run_id), json={"output_resource_name": "b"}, headers=keyed(key))
    assert later.status_code == 201 and later.json()["id"] != first.json()["id"]
