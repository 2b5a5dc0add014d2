"""Listing a run's labels at scale (DESIGN.md §4): pages of `limit` with an RFC 8288 Link to the next, JSON Lines
with `Accept: application/x-ndjson`, and the documented unpaged array streamed in flat memory."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.bench.generate import insert_events, label_events
from tests.helpers import SECRET, assert_error, auth, create_label, delete_label, labels_url, new_account, token
from tests.servers import clean_environment, run_goldtrail, serving

NDJSON = "application/x-ndjson"
NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


def who(account: str, **headers: str) -> dict[str, str]:
    return {**auth(account), **headers}


def pages(client, account: str, run_id: str, limit: int, **headers: str) -> list[list[dict]]:
    """Every page of the run's list, following each Link: rel="next" to the end."""
    found, url = [], f"{labels_url(run_id)}?limit={limit}"
    while url:
        response = client.get(url, headers=who(account, **headers))
        assert response.status_code == 200, response.text
        body = (
            [json.loads(line) for line in response.text.splitlines()]
            if headers.get("Accept") == NDJSON
            else response.json()
        )
        found.append(body)
        link = response.headers.get("link")
        url = None if link is None else NEXT.fullmatch(link).group(1)
    return found


@pytest.fixture
def five(client, run_id) -> tuple[str, list[dict]]:
    account = new_account()
    labels = [create_label(client, run_id, who(account), text_value=f"v{n}") for n in range(5)]
    return account, labels


def test_pages_follow_the_link_header_to_exactly_the_whole_list(client, run_id, five):
    account, labels = five
    whole = client.get(labels_url(run_id), headers=who(account)).json()
    assert whole == labels  # the documented form: the whole run, oldest first
    found = pages(client, account, run_id, 2)
    assert [len(page) for page in found] == [2, 2, 1]
    assert [label for page in found for label in page] == whole
    assert pages(client, account, run_id, 5) == [whole]  # exactly one page: no Link after it
    assert pages(client, account, run_id, 1000) == [whole]


def test_json_lines_give_the_same_labels_paged_and_whole(client, run_id, five):
    account, labels = five
    streamed = client.get(labels_url(run_id), headers=who(account, Accept=NDJSON))
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(NDJSON)
    assert [json.loads(line) for line in streamed.text.splitlines()] == labels
    assert [label for page in pages(client, account, run_id, 2, Accept=NDJSON) for label in page] == labels


def test_a_page_after_a_deleted_label_still_continues_in_order(client, run_id, five):
    account, labels = five
    first = client.get(f"{labels_url(run_id)}?limit=2", headers=who(account))
    delete_label(client, run_id, labels[1]["id"], who(account))
    rest = client.get(NEXT.fullmatch(first.headers["link"]).group(1), headers=who(account)).json()
    assert [label["id"] for label in rest] == [label["id"] for label in labels[2:4]]


def test_a_run_whose_labels_are_all_deleted_is_an_empty_list_in_every_form(client, run_id):
    account = new_account()
    label = create_label(client, run_id, who(account), text_value="gone")
    delete_label(client, run_id, label["id"], who(account))
    assert client.get(labels_url(run_id), headers=who(account)).json() == []
    assert client.get(f"{labels_url(run_id)}?limit=10", headers=who(account)).json() == []
    lines = client.get(labels_url(run_id), headers=who(account, Accept=NDJSON))
    assert lines.status_code == 200 and lines.text == ""


@pytest.mark.parametrize("query", ["", "?limit=10", "?after=WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsImEiXQ"])
def test_an_unknown_or_another_accounts_run_is_404_in_every_form(client, run_id, five, query):
    account, _ = five
    for headers in (who(new_account()), who(new_account(), Accept=NDJSON)):
        assert_error(client.get(labels_url(run_id) + query, headers=headers), 404, "not found")
    assert_error(client.get(labels_url(str(uuid.uuid4())) + query, headers=who(account)), 404, "not found")


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "x", "1.5", ""])
def test_a_limit_outside_1_to_1000_is_400_naming_limit(client, run_id, five, limit):
    account, _ = five
    response = client.get(labels_url(run_id), params={"limit": limit}, headers=who(account))
    assert assert_error(response, 400, "limit")["field"] == "limit"


@pytest.mark.parametrize("after", ["x", "not-a-cursor!", "WyJ4Il0", "W10", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwiYSJd"])
def test_an_after_that_is_not_a_cursor_of_this_list_is_400_naming_after(client, run_id, five, after):
    account, _ = five
    response = client.get(labels_url(run_id), params={"limit": "2", "after": after}, headers=who(account))
    assert assert_error(response, 400, "after")["field"] == "after"


def test_as_of_reads_the_whole_run_and_refuses_a_page(client, run_id, five):
    account, _ = five
    response = client.get(
        labels_url(run_id), params={"as_of": "2099-01-01T00:00:00Z", "limit": "2"}, headers=who(account)
    )
    assert_error(response, 400, "as_of")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("shape", ["json", "ndjson"])
def test_streaming_a_200000_label_run_keeps_the_servers_memory_flat(backend, fresh_database, tmp_path, shape):
    """The documented unpaged list of a huge run is streamed a batch at a time: the server's resident memory
    grows by less than a few MB while it sends all of it."""
    url = fresh_database(backend)
    run, count, small = str(uuid.uuid4()), 200_000, str(uuid.uuid4())
    insert_events(url, label_events("bulk", run, count, 1))
    insert_events(url, label_events("bulk", small, 2_000, 1))
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_INTEGRATOR="off")
    assert run_goldtrail(env, "rebuild", cwd=tmp_path).returncode == 0
    headers = {"Authorization": f"Bearer {token('bulk')}", **({"Accept": NDJSON} if shape == "ndjson" else {})}
    with serving(tmp_path, env, "--workers", "1") as served, httpx.Client(base_url=served.base_url) as client:
        warm = client.get(f"/v1/run/{small}/gold-labels", headers=headers)  # every code path of a stream, once
        assert warm.status_code == 200 and len(warm.content) > 100_000
        before, peak, received = _rss_kib(served.process.pid), 0, 0
        with client.stream("GET", f"/v1/run/{run}/gold-labels", headers=headers, timeout=300) as response:
            assert response.status_code == 200
            last = time.monotonic()
            for chunk in response.iter_bytes():
                received += len(chunk)
                if time.monotonic() - last > 0.02:
                    peak, last = max(peak, _rss_kib(served.process.pid)), time.monotonic()
            peak = max(peak, _rss_kib(served.process.pid))
    body_mib = received / 2**20
    assert body_mib > 40, f"only {body_mib:.1f} MiB were sent"  # 200,000 labels really went through
    growth_mib = (peak - before) / 1024
    print(f"\n{shape}: {body_mib:.0f} MiB streamed; server RSS {before / 1024:.0f} MiB, peak +{growth_mib:.1f} MiB")
    assert growth_mib < 5, f"the server's memory grew by {growth_mib:.1f} MiB while streaming {body_mib:.0f} MiB"
