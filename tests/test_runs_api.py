"""The API the console reads, for any client: GET /v1/runs (the account's runs, most recently changed first,
searchable, paged) and GET /v1/run/{id}/gold-labels/changes?from=T1&to=T2 (labels added, changed and removed),
on SQLite and PostgreSQL; every error is a JSON {"error"} naming what to fix."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.helpers import (
    assert_error,
    auth,
    create_label,
    delete_label,
    label_url,
    new_account,
    update_label,
)

NEXT = re.compile(r'^<([^>]+)>; rel="next"$')
RUNS = "/v1/runs"


def changes_url(run_id: str) -> str:
    return f"/v1/run/{run_id}/gold-labels/changes"


def every_page(client, url: str, headers: dict, **params) -> list[list[dict]]:
    """Each page, following Link: rel="next" to the end."""
    found = []
    response = client.get(url, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        found.append(response.json())
        link = response.headers.get("link")
        if link is None:
            return found
        response = client.get(NEXT.fullmatch(link).group(1), headers=headers)


@pytest.fixture
def account() -> str:
    return new_account("runs")


def test_runs_come_most_recently_changed_first_with_their_counts(client, account):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    kept = create_label(client, first, auth(account), output_resource_name="a", text_value="1")
    gone = create_label(client, first, auth(account), output_resource_name="b")
    create_label(client, second, auth(account, "bob"), output_resource_name="c")
    delete_label(client, first, gone["id"], auth(account, "carol"))
    runs = client.get(RUNS, headers=auth(account)).json()
    assert [run["run_id"] for run in runs] == [first, second]
    assert runs[0] | {"last_changed_at": None} == {
        "run_id": first,
        "live_labels": 1,
        "labels": 2,
        "events": 3,
        "last_changed_at": None,
        "last_changed_by": "carol",
        "last_change": "GoldLabelDeleted",
    }
    assert runs[0]["last_changed_at"] > runs[1]["last_changed_at"]
    update_label(client, second, client.get(f"/v1/run/{second}/gold-labels", headers=auth(account)).json()[0]["id"],
                 auth(account), text_value="x")  # fmt: skip
    assert [run["run_id"] for run in client.get(RUNS, headers=auth(account)).json()] == [second, first]
    assert kept["id"]


def test_runs_are_paged_through_the_link_header_each_run_once(client, account):
    made = []
    for _ in range(5):
        made.append(str(uuid.uuid4()))
        create_label(client, made[-1], auth(account))
    pages = every_page(client, RUNS, auth(account), limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [run["run_id"] for page in pages for run in page] == made[::-1]
    assert every_page(client, RUNS, auth(account), limit=5) == [[run for page in pages for run in page]]


def test_an_account_sees_only_its_own_runs(client, account):
    create_label(client, str(uuid.uuid4()), auth(account))
    assert client.get(RUNS, headers=auth(new_account("empty"))).json() == []
    assert len(client.get(RUNS, headers=auth(account)).json()) == 1


def test_search_finds_runs_by_id_prefix_and_by_output_resource_name_prefix(client, account):
    named, other = str(uuid.uuid4()), str(uuid.uuid4())
    label = create_label(client, named, auth(account), output_resource_name="Question 42_%*?[x]")
    create_label(client, other, auth(account), output_resource_name="question 7")
    delete_label(client, named, label["id"], auth(account))  # a deleted label's name still finds its run

    def found(q: str) -> list[str]:
        return [run["run_id"] for run in client.get(RUNS, params={"q": q}, headers=auth(account)).json()]

    assert found("Question 42_%*?[x]") == found("Question") == [named]  # names match exactly, case and all
    assert found("question") == [other]
    assert found("Question 4_") == [] and found("Question 42_%*?[y") == []  # no wildcard is a wildcard
    assert found(named[:8].upper()) == [named]
    assert found(named) == [named]
    assert found("  ") == found("") == [named, other]  # an empty search is no search (named changed last)
    assert found("zzz") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "not-a-cursor"}, "after"),
        ({"after": "InNvbWV0aGluZyJ9"}, "after"),  # base64 of something that is not a run of this account
        ({"q": "x" * 201}, "q"),
    ],
)
def test_bad_runs_queries_are_400_naming_the_parameter(client, account, params, field):
    create_label(client, str(uuid.uuid4()), auth(account))
    assert assert_error(client.get(RUNS, params=params, headers=auth(account)), 400)["field"] == field


def test_runs_need_a_token_that_may_read(client):
    assert_error(client.get(RUNS), 401, "bearer token")
    assert_error(client.get(RUNS, headers=auth(scope="gold_labels:write")), 403, "gold_labels:read")
    assert client.get(RUNS, headers=auth(scope="audit:read")).status_code == 200
    assert client.get(RUNS, headers=auth(scope="gold_labels:read")).status_code == 200


@pytest.fixture
def story(client, account, run_id) -> dict:
    """A run changed between two moments: one label's text changed, one confirmed with the same value, one
    deleted, one added, and one created and deleted in between."""
    who = auth(account)
    changed = create_label(client, run_id, who, output_resource_name="changed", text_value="old")
    confirmed = create_label(client, run_id, who, output_resource_name="confirmed", object_value={"n": 1})
    removed = create_label(client, run_id, who, output_resource_name="removed", text_value="bye")
    start = removed["created_at"]
    time.sleep(0.002)
    update_label(client, run_id, changed["id"], who, text_value="new")
    update_label(client, run_id, confirmed["id"], who, object_value={"n": 1})
    delete_label(client, run_id, removed["id"], who)
    fleeting = create_label(client, run_id, who, output_resource_name="fleeting")
    delete_label(client, run_id, fleeting["id"], who)
    added = create_label(client, run_id, who, output_resource_name="added", text_value="hi")
    return {"start": start, "end": added["created_at"], "changed": changed, "removed": removed, "added": added}


def test_changes_between_two_times_are_added_changed_and_removed(client, account, run_id, story):
    response = client.get(
        changes_url(run_id), params={"from": story["start"], "to": story["end"]}, headers=auth(account)
    )
    assert response.status_code == 200 and "link" not in response.headers
    changes = {change["output_resource_name"]: change for change in response.json()}
    assert {name: change["change"] for name, change in changes.items()} == {
        "changed": "changed",
        "removed": "removed",
        "added": "added",
    }
    changed = changes["changed"]
    assert (changed["before"]["text_value"], changed["after"]["text_value"]) == ("old", "new")
    assert (changed["before_version"], changed["after_version"]) == (1, 2)
    assert changed["before"] == story["changed"] and changed["id"] == story["changed"]["id"]
    assert changes["removed"]["after"] is None and changes["removed"]["before"] == story["removed"]
    assert changes["added"]["before"] is None and changes["added"]["after"] == story["added"]
    # `to` defaults to now; the same time twice changes nothing.
    assert len(client.get(changes_url(run_id), params={"from": story["start"]}, headers=auth(account)).json()) == 3
    same = {"from": story["start"], "to": story["start"]}
    assert client.get(changes_url(run_id), params=same, headers=auth(account)).json() == []


def test_changes_are_paged_through_the_link_header(client, account, run_id, story):
    pages = every_page(
        client, changes_url(run_id), auth(account), limit=1, **{"from": story["start"], "to": story["end"]}
    )
    assert [len(page) for page in pages] == [1, 1, 1]
    assert [page[0]["output_resource_name"] for page in pages] == ["changed", "removed", "added"]  # list order


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({}, "from", "from is required"),
        ({"from": "yesterday"}, "from", "RFC 3339"),
        ({"from": "2026-01-01T00:00:00"}, "from", "offset"),
        ({"from": "2026-01-01T00:00:00Z", "to": "soon"}, "to", "RFC 3339"),
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from", "must not be later than to"),
        ({"from": "2026-01-01T00:00:00Z", "limit": "0"}, "limit", "limit"),
        ({"from": "2026-01-01T00:00:00Z", "after": "%%%"}, "after", "cursor"),
    ],
)
def test_bad_changes_queries_are_400_naming_the_parameter(client, account, run_id, story, params, field, says):
    body = assert_error(client.get(changes_url(run_id), params=params, headers=auth(account)), 400, says)
    assert body["field"] == field


def test_changes_of_an_unknown_or_another_accounts_run_are_404_alike(client, account, run_id, story):
    params = {"from": story["start"]}
    missing = str(uuid.uuid4())
    theirs = client.get(changes_url(run_id), params=params, headers=auth(new_account("intruder")))
    unknown = client.get(changes_url(missing), params=params, headers=auth(account))
    assert assert_error(theirs, 404)["error"].replace(run_id, "RUN") == assert_error(unknown, 404)["error"].replace(
        missing, "RUN"
    )
    assert (
        assert_error(client.get(changes_url("not-a-uuid"), params=params, headers=auth(account)), 400)["field"]
        == "run_id"
    )


def test_changes_need_a_token_that_may_read(client, account, run_id, story):
    params = {"from": story["start"]}
    assert_error(client.get(changes_url(run_id), params=params), 401)
    assert_error(client.get(changes_url(run_id), params=params, headers=auth(account, scope="gold_labels:write")), 403)
    assert client.get(label_url(run_id, story["changed"]["id"]), headers=auth(account)).status_code == 200
