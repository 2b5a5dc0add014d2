"""The auditor console's routes in-process, on SQLite and PostgreSQL: signing in and out (the cookie's flags,
refusals, cross-site requests), the security headers of every response, each page's content and paging, the
errors each page answers, and the downloads. The browser walk is tests/test_console_browser.py."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from events import note
from service.http.console import CONTENT_SECURITY_POLICY
from service.http.console.session import COOKIE
from tests.helpers import (
    ALL_SCOPES,
    assert_error,
    auth,
    create_label,
    delete_label,
    label_url,
    new_account,
    token,
    update_label,
)

AUDITOR = "audit:read"
PAGES = ("/console/runs", "/console/activity", "/console/integrity")
REASON = "typo <script>alert(1)</script>"


@pytest.fixture
def console(client) -> Iterator[TestClient]:
    """The shared app, with no cookie kept from one test to the next."""
    client.cookies.clear()
    yield client
    client.cookies.clear()


def signed(account: str, user: str = "auditor", **claims) -> dict[str, str]:
    """The console cookie of a signed-in auditor (what a browser sends back after signing in)."""
    return {"Cookie": f"{COOKIE}={token(account, user, scope=claims.pop('scope', AUDITOR), **claims)}"}


def problem(response) -> str:
    """The sentence an error page shows."""
    found = re.search(r'<p class="problem" role="alert"[^>]*>(.*?)</p>', response.text, re.S)
    assert found, response.text[:500]
    return found.group(1).replace("&#39;", "'").replace("&quot;", '"').replace("&amp;", "&")


def assert_page(response, status: int = 200) -> str:
    assert response.status_code == status, response.text[:1000]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


@pytest.fixture
def story(client) -> dict:
    """An account with a run whose labels were created, changed and deleted, by two people."""
    account = new_account("console")
    run = str(uuid.uuid4())
    writer = auth(account, "alice", scope=ALL_SCOPES)
    text = create_label(client, run, writer, output_resource_name="summary", text_value="The cat sat\non the mat.")
    scores = create_label(client, run, writer, output_resource_name="scores", object_value={"score": 0.5, "n": 10**30})
    gone = create_label(client, run, writer, output_resource_name="=HYPERLINK(1)", text_value="-1+2")
    start = gone["created_at"]
    time.sleep(0.002)
    # A reason with markup: every page shows it as text (the pages are checked for any <script).
    reviewer = {**auth(account, "bob", scope=ALL_SCOPES), "X-Change-Reason": REASON}
    update_label(client, run, text["id"], reviewer, text_value="The cat sat\non a mat.")
    update_label(client, run, scores["id"], reviewer, object_value={"score": 0.75, "n": 10**30 + 1})
    delete_label(client, run, gone["id"], reviewer)
    return {"account": account, "run": run, "text": text, "scores": scores, "gone": gone, "start": start}


# Signing in and out ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [*PAGES, "/console/run/{run}", "/console/run/{run}/label/{label}", "/console/export.csv", "/console/log.ndjson"],
)
def test_a_signed_out_visitor_is_sent_to_sign_in_and_back(console, path):
    run, label = uuid.uuid4(), uuid.uuid4()
    response = console.get(path.format(run=run, label=label) + "?x=1", follow_redirects=False)
    assert response.status_code == 303
    assert (
        response.headers["location"]
        == "/console/sign-in?next=" + re.sub("/", "%2F", path.format(run=run, label=label)) + "%3Fx%3D1"
    )
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_signing_in_keeps_the_token_in_an_http_only_strict_cookie_of_the_console(console, story):
    jwt = token(story["account"], "auditor", scope=AUDITOR)
    response = console.post(
        "/console/sign-in", data={"token": jwt, "next": "/console/activity"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/console/activity"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={jwt};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/console", "samesite=strict"} <= attributes
    assert "secure" not in attributes and not any(a.startswith(("max-age", "expires", "domain")) for a in attributes)
    assert story["run"] in assert_page(console.get("/console/runs"))  # the cookie is all it takes


def test_over_https_the_cookie_is_secure(console, story):
    jwt = token(story["account"], "auditor", scope=AUDITOR)
    response = console.post("https://testserver.local/console/sign-in", data={"token": jwt}, follow_redirects=False)
    assert response.status_code == 303
    assert "secure" in {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


@pytest.mark.parametrize(
    ("jwt", "status", "says"),
    [
        ("", 401, "paste an access token"),
        ("not-a-jwt", 401, "not a well-formed JWT"),
        (token(scope=AUDITOR, ttl=-60), 401, "expired"),
        (token(scope=AUDITOR, secret="another-secret-of-at-least-32-bytes!"), 401, "signature"),
        (token(scope="gold_labels:read gold_labels:write"), 403, "lacks the 'audit:read' scope"),
        (token(), 403, "lacks the 'audit:read' scope"),  # no scope claim: labels only, never the audit routes
        (token(scope=AUDITOR, padding="x" * 4000), 401, "longer than"),
    ],
)
def test_a_token_that_cannot_audit_cannot_sign_in(console, jwt, status, says):
    response = console.post("/console/sign-in", data={"token": jwt}, follow_redirects=False)
    assert says in problem(response) and response.status_code == status
    assert "set-cookie" not in response.headers
    assert 'name="token"' in assert_page(response, status)  # the form again, to try another token


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}],
)
@pytest.mark.parametrize("path", ["/console/sign-in", "/console/sign-out"])
def test_signing_in_or_out_from_another_site_is_refused(console, headers, path):
    response = console.post(path, data={"token": token(scope=AUDITOR)}, headers=headers, follow_redirects=False)
    assert "another site" in problem(response) or "came from" in problem(response)
    assert_page(response, 403)
    assert "set-cookie" not in response.headers


def test_signing_in_from_the_consoles_own_page_is_accepted(console):
    headers = {"Origin": "http://testserver.local", "Sec-Fetch-Site": "same-origin"}
    response = console.post(
        "/console/sign-in", data={"token": token(scope=AUDITOR)}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303


@pytest.mark.parametrize(
    ("target", "lands"),
    [
        ("/console/run/x?as_of=2026-01-01", "/console/run/x?as_of=2026-01-01"),
        ("https://evil.example/console/runs", "/console/runs"),
        ("//evil.example/console/runs", "/console/runs"),
        ("/v1/runs", "/console/runs"),
        ("/console\\@evil.example", "/console/runs"),
    ],
)
def test_signing_in_goes_back_only_to_a_console_page(console, target, lands):
    response = console.post(
        "/console/sign-in", data={"token": token(scope=AUDITOR), "next": target}, follow_redirects=False
    )
    assert response.headers["location"] == lands


def test_signing_out_clears_the_cookie(console, story):
    response = console.post("/console/sign-out", headers=signed(story["account"]), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/console/sign-in"
    cookie = response.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=;") or cookie.startswith(f'{COOKIE}="";')
    assert "max-age=0" in cookie and "path=/console" in cookie and "httponly" in cookie
    # Never by a link another page could make: like any route's wrong method, a JSON 405.
    assert_error(console.get("/console/sign-out"), 405, "method GET is not allowed")


def test_a_cookie_whose_token_expired_asks_to_sign_in_again(console, story):
    response = console.get("/console/runs", headers=signed(story["account"], ttl=-5), follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/console/sign-in?next=")


def test_a_cookie_of_a_token_without_audit_read_is_not_enough(console, story):
    response = console.get(
        "/console/runs", headers=signed(story["account"], scope="gold_labels:read"), follow_redirects=False
    )
    assert response.status_code == 303


# What every response carries ------------------------------------------------------------------------------


def test_every_console_page_is_strict_self_contained_and_never_cached(console, story):
    me = signed(story["account"])
    run, label = story["run"], story["text"]["id"]
    paths = [
        "/console/sign-in",
        *PAGES,
        f"/console/run/{run}",
        f"/console/run/{run}?as_of={story['start']}",
        f"/console/run/{run}/changes?from={story['start']}&to=2100-01-01",
        f"/console/run/{run}/label/{label}?version=1",
        f"/console/run/{uuid.uuid4()}",  # an error page too
        "/console/activity?since=never",
    ]
    for path in paths:
        response = console.get(path, headers=me)
        html = response.text
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY and "script-src 'none'" in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["referrer-policy"] == "same-origin"
        assert "<script" not in html and " style=" not in html and "<style" not in html, path
        assert not re.search(r'(src|href|action)="(https?:)?//', html), path  # nothing from another host


def test_the_stylesheet_is_served_from_the_package_and_kept_by_browsers(console):
    html = console.get("/console/sign-in").text
    (href,) = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert href.startswith("/console/static/") and href.endswith("/console.css")
    response = console.get(href)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/css")
    assert "immutable" in response.headers["cache-control"] and ".series-0" in response.text


# Pages --------------------------------------------------------------------------------------------------


def test_the_runs_page_lists_the_accounts_runs_and_searches_them(console, story):
    me = signed(story["account"])
    html = assert_page(console.get("/console/runs", headers=me))
    row = re.search(rf"<tr>\s*<td><a class=\"id\" href=\"/console/run/{story['run']}\">.*?</tr>", html, re.S).group(0)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[1:4] == ["2", "3", "6"] and cells[5:] == ["bob", "GoldLabelDeleted"]
    assert story["run"] in assert_page(console.get("/console/runs", params={"q": "summ"}, headers=me))
    assert story["run"] not in assert_page(console.get("/console/runs", params={"q": "nothing"}, headers=me))
    assert story["run"] not in assert_page(console.get("/console/runs", headers=signed(new_account())))


def test_the_runs_page_is_paged(console):
    account = new_account()
    runs = [str(uuid.uuid4()) for _ in range(51)]
    for run in runs:
        create_label(console, run, auth(account))
    me = signed(account)
    first = assert_page(console.get("/console/runs", headers=me))
    (following,) = re.findall(r'<a href="([^"]+)" rel="next">Next page</a>', first)
    second = assert_page(console.get(following.replace("&amp;", "&"), headers=me))
    assert runs[0] in second and runs[0] not in first and runs[-1] in first
    assert "Next page" not in second and "First page" in second


def test_the_run_page_shows_the_labels_now_and_as_of_a_time(console, story):
    me = signed(story["account"])
    now = assert_page(console.get(f"/console/run/{story['run']}", headers=me))
    assert "2 live labels now" in now and "on a mat." in now and "HYPERLINK" not in now
    then = assert_page(console.get(f"/console/run/{story['run']}", params={"as_of": story["start"]}, headers=me))
    assert f"3 labels at {story['start']}" in then and "on the mat." in then and "=HYPERLINK(1)" in then
    before_anything = console.get(f"/console/run/{story['run']}", params={"as_of": "2000-01-01"}, headers=me)
    assert "0 labels at 2000-01-01T00:00:00.000000Z" in assert_page(before_anything)


def test_the_run_page_pages_a_big_run(console):
    account, run = new_account(), str(uuid.uuid4())
    body = {"labels": [{"output_resource_name": f"o{n:03d}", "text_value": str(n)} for n in range(105)]}
    assert console.post(f"/v1/run/{run}/gold-labels/batch", json=body, headers=auth(account)).status_code == 200
    listed = [
        label["output_resource_name"]
        for label in console.get(f"/v1/run/{run}/gold-labels", headers=auth(account)).json()
    ]
    me = signed(account)

    def names(html: str) -> list[str]:
        return re.findall(r'/label/[0-9a-f-]+">(o\d{3})</a>', html)

    first = assert_page(console.get(f"/console/run/{run}", headers=me))
    assert names(first) == listed[:100]  # the list's order, a page of 100
    (following,) = re.findall(r'<a href="([^"]+)" rel="next">Next page</a>', first)
    second = assert_page(console.get(following.replace("&amp;", "&"), headers=me))
    assert names(second) == listed[100:] and "Next page" not in second


def test_the_changes_page_shows_what_was_added_changed_and_removed(console, story):
    me = signed(story["account"])
    html = assert_page(
        console.get(
            f"/console/run/{story['run']}/changes", params={"from": "2100-01-01", "to": story["start"]}, headers=me
        )
    )  # either order: the earlier time is "from"
    assert re.findall(r'<span class="badge (\w+)">', html) == ["changed", "changed", "removed"]
    assert "<del>the</del>" in html and "<ins>a</ins>" in html
    assert f"<ins><code>{10**30 + 1}</code></ins>" in html and f"<del><code>{10**30}</code></del>" in html


def test_the_label_page_shows_the_timeline_with_a_diff_per_event_and_any_version(console, story):
    me = signed(story["account"])
    path = f"/console/run/{story['run']}/label/{story['text']['id']}"
    html = assert_page(console.get(path, headers=me))
    assert html.index('id="v2"') < html.index('id="v1"')  # newest first
    assert "typo" in html and "bob" in html and "<del>the</del>" in html
    at_one = assert_page(console.get(path, params={"version": "1"}, headers=me))
    state = at_one[at_one.index('id="state"') :]
    assert "on the mat." in state[: state.index("</div>")]
    deleted = assert_page(console.get(f"/console/run/{story['run']}/label/{story['gone']['id']}", headers=me))
    assert "Deleted; its last value was" in deleted and "-1+2" in deleted


def test_the_label_page_pages_a_long_timeline(console):
    account, run = new_account(), str(uuid.uuid4())
    label = create_label(console, run, auth(account), text_value="0")
    for n in range(1, 105):
        update_label(console, run, label["id"], auth(account), text_value=str(n))
    me = signed(account)
    path = f"/console/run/{run}/label/{label['id']}"
    newest = assert_page(console.get(path, headers=me))
    assert 'id="v105"' in newest and 'id="v6"' in newest and 'id="v5"' not in newest
    (older,) = re.findall(r'<a href="([^"]+)">Older versions</a>', newest)
    oldest = assert_page(console.get(older.replace("&amp;", "&"), headers=me))
    assert 'id="v5"' in oldest and 'id="v1"' in oldest and 'id="v6"' not in oldest
    assert "Newer versions" in oldest and "Older versions" not in oldest


def test_the_activity_page_filters_and_charts_the_changes(console, story):
    me = signed(story["account"])
    html = assert_page(console.get("/console/activity", params={"actor": "bob"}, headers=me))
    assert re.findall(r'<td><span class="type (\w+)">', html) == [
        "GoldLabelDeleted",
        "GoldLabelUpdated",
        "GoldLabelUpdated",
    ]
    assert '<svg class="chart"' in html and "bob, 3 changes" in html
    only = assert_page(
        console.get("/console/activity", params={"type": "GoldLabelCreated", "run": story["run"].upper()}, headers=me)
    )
    assert len(re.findall(r'<td><span class="type GoldLabelCreated">', only)) == 3
    later = assert_page(console.get("/console/activity", params={"since": "2100-01-01"}, headers=me))
    assert "No event matches this filter." in later


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/console/activity", {"since": "last week"}, "since must be a UTC time"),
        ("/console/activity", {"since": "2026-02-01", "until": "2026-01-01"}, "since must be earlier than until"),
        ("/console/activity", {"type": "GoldLabelRenamed"}, "type must be one of"),
        ("/console/activity", {"run": "run-1"}, "run must be a run id"),
        ("/console/activity", {"after": "zzz"}, "after"),
        ("/console/runs", {"after": "zzz"}, "after"),
        ("/console/runs", {"q": "x" * 201}, "at most 200 characters"),
        ("/console/run/{run}", {"as_of": "noon"}, "as_of must be a UTC time"),
        ("/console/run/{run}", {"after": "zzz"}, "after"),
        ("/console/run/{run}/changes", {"to": "2026-01-01"}, "give the time to compare from"),
        ("/console/run/{run}/changes", {"from": "2026-01-01"}, "give the time to compare with"),
        ("/console/run/{run}/label/{label}", {"version": "0"}, "version must be a version number"),
        ("/console/run/not-a-run", {}, "run_id must be a UUID"),
        ("/console/export.csv", {"until": "tomorrow"}, "until must be a UTC time"),
        ("/console/proof", {"run": "x", "label": "y", "version": "1"}, "run must be a UUID"),
    ],
)
def test_a_bad_request_is_a_400_page_saying_what_to_fix(console, story, path, params, says):
    me = signed(story["account"])
    response = console.get(path.format(run=story["run"], label=story["text"]["id"]), params=params, headers=me)
    assert says in problem(response)
    assert_page(response, 400)


def test_another_accounts_run_and_label_are_not_found_exactly_like_missing_ones(console, story):
    intruder = signed(new_account("intruder"))
    missing_run, missing_label = str(uuid.uuid4()), str(uuid.uuid4())
    pairs = [
        (f"/console/run/{story['run']}", f"/console/run/{missing_run}"),
        (
            f"/console/run/{story['run']}/changes?from=2000-01-01&to=2100-01-01",
            f"/console/run/{missing_run}/changes?from=2000-01-01&to=2100-01-01",
        ),
        (
            f"/console/run/{story['run']}/label/{story['text']['id']}",
            f"/console/run/{story['run']}/label/{missing_label}",
        ),
    ]
    known = (story["run"], story["text"]["id"], missing_run, missing_label)
    for theirs, missing in pairs:
        answers = []
        for path in (theirs, missing):
            text = assert_page(console.get(path, headers=intruder), 404)
            for value in known:
                text = text.replace(value, "ID")
            answers.append(text)
        assert answers[0] == answers[1]


def test_a_version_the_label_never_had_is_not_found(console, story):
    path = f"/console/run/{story['run']}/label/{story['text']['id']}"
    response = console.get(path, params={"version": "3"}, headers=signed(story["account"]))
    assert "the label has no version 3: its versions are 1 to 2" in problem(response)
    assert_page(response, 404)


# Downloads ------------------------------------------------------------------------------------------------


def test_the_csv_export_holds_what_the_filter_shows_and_no_formula(console, story):
    response = console.get("/console/export.csv", params={"run": story["run"]}, headers=signed(story["account"]))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert re.fullmatch(
        r'attachment; filename="goldtrail-activity-[\w.-]+-\d{8}T\d{6}Z\.csv"', response.headers["content-disposition"]
    )
    assert response.content.startswith(b"\xef\xbb\xbf")  # so spreadsheets read it as UTF-8
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [(row["actor"], row["type"], row["version"]) for row in rows] == [
        ("alice", "GoldLabelCreated", "1"),
        ("alice", "GoldLabelCreated", "1"),
        ("alice", "GoldLabelCreated", "1"),
        ("bob", "GoldLabelUpdated", "2"),
        ("bob", "GoldLabelUpdated", "2"),
        ("bob", "GoldLabelDeleted", "2"),
    ]
    gone = rows[2]
    assert gone["output_resource_name"] == "'=HYPERLINK(1)" and gone["text_value"] == "'-1+2"
    assert rows[4]["object_value"] == f'{{"score":0.75,"n":{10**30 + 1}}}' and rows[3]["reason"] == REASON
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())


def test_the_ndjson_export_lines_are_the_feeds_lines(console, story):
    me = signed(story["account"])
    response = console.get("/console/export.ndjson", params={"actor": "bob"}, headers=me)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [(line["type"], line["version"]) for line in lines] == [
        ("GoldLabelUpdated", 2),
        ("GoldLabelUpdated", 2),
        ("GoldLabelDeleted", 2),
    ]
    feed = console.get(
        "/v1/events", headers={**auth(story["account"], scope=AUDITOR), "Accept": "application/x-ndjson"}
    ).text.splitlines()
    by_hash = {json.loads(line)["hash"]: json.loads(line) for line in feed}
    assert all(by_hash.get(line["hash"], line) == line for line in lines)  # integrated ones: the feed's very lines
    assert console.get("/console/export.ndjson", params={"actor": "nobody"}, headers=me).text == ""


def test_integrity_without_a_checkpoint_key_says_so_and_gives_the_digest(console, story):
    me = signed(story["account"])
    assert "signs no checkpoints" in assert_page(console.get("/console/integrity", headers=me))
    digest = console.get("/console/integrity", params={"verify": "log"}, headers=me).text
    expected = console.get("/v1/audit/digest", headers=auth(story["account"], scope=AUDITOR)).json()["digest"]
    assert expected in digest
    for path in ("/console/checkpoint.txt", "/console/log-key.txt"):
        assert "GOLDTRAIL_CHECKPOINT_KEY" in problem(console.get(path, headers=me))
    proof = console.get(
        "/console/proof", params={"run": story["run"], "label": story["text"]["id"], "version": "1"}, headers=me
    )
    assert "GOLDTRAIL_CHECKPOINT_KEY" in problem(proof) and proof.status_code == 404


def test_integrity_with_a_key_verifies_the_log_and_hands_over_what_checks_it(
    backend, fresh_database, start_app, tmp_path
):
    key = tmp_path / "key"
    key.write_text(note.generate_key("goldtrail.test/labels")[0] + "\n")
    app = start_app(fresh_database(backend), GOLDTRAIL_CHECKPOINT_KEY=str(key))
    account, run = new_account(), str(uuid.uuid4())
    label = create_label(app, run, auth(account), text_value="v1")
    update_label(app, run, label["id"], auth(account), text_value="v2")
    me = signed(account)
    deadline = time.monotonic() + 15
    while "<dt>Tree size</dt><dd>2 entries" not in (page := app.get("/console/integrity", headers=me).text) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert "verifies under the log's key" in page
    verified = app.get("/console/integrity", params={"verify": "log"}, headers=me).text
    assert "Verified</strong>: OK: 2 entries of 1 labels" in verified
    api = auth(account, scope=AUDITOR)
    assert app.get("/console/checkpoint.txt", headers=me).text == app.get("/v1/audit/checkpoint", headers=api).text
    assert app.get("/console/log-key.txt", headers=me).text == app.get("/v1/audit/key", headers=api).text
    bundle = app.get("/console/proof", params={"run": run, "label": label["id"], "version": "2"}, headers=me)
    assert bundle.headers["content-disposition"] == f'attachment; filename="goldtrail-proof-{label["id"]}-v2.json"'
    assert bundle.json() == app.get(label_url(run, label["id"]) + "/proof", params={"version": 2}, headers=api).json()
    whole = app.get("/console/log.ndjson", headers=me).text.splitlines()
    assert [json.loads(line)["log_index"] for line in whole] == [0, 1]
    missing = app.get("/console/proof", params={"run": run, "label": str(uuid.uuid4()), "version": "1"}, headers=me)
    assert_page(missing, 404)


def test_an_unreachable_database_is_a_503_page_and_a_503_json_answer(start_app, tmp_path):
    """Nothing listens on port 1: every read fails at once. Pages and downloads answer 503 with Retry-After (a
    download before it starts, never a cut-off file); the API's routes answer their JSON error."""
    app = start_app("postgresql://postgres@127.0.0.1:1/goldtrail", GOLDTRAIL_DB_TIMEOUT_SECONDS="2")
    me = signed("acme")
    for path in ("/console/runs", f"/console/run/{uuid.uuid4()}", "/console/activity", "/console/export.csv"):
        response = app.get(path, headers=me)
        assert "the database is unavailable" in problem(response)
        assert_page(response, 503)
        assert response.headers["retry-after"] == "2" and response.headers["content-security-policy"]
    assert_error(app.get("/v1/runs", headers=auth(scope=AUDITOR)), 503, "database is unavailable")
    changes = app.get(f"/v1/run/{uuid.uuid4()}/gold-labels/changes?from=2026-01-01T00:00:00Z", headers=auth())
    assert_error(changes, 503, "database is unavailable")
    assert changes.headers["retry-after"] == "2"
