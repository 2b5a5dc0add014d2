"""The auditor console in a real browser (headless Chromium driven by Playwright) against the real `goldtrail
serve`, on SQLite and PostgreSQL: an auditor signs in, walks every page, reads the run as of a time, compares two
times, reads a diff, filters the activity, downloads both exports and a proof bundle and checks them, and signs
out. Every request the pages make goes to goldtrail, every control is reached with the keyboard, and each page
is kept as a screenshot."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from events import note
from events.offline import verify_bundle, verify_log
from tests.browser import CHROMIUM, require_browser, screenshot_dir
from tests.helpers import ALL_SCOPES, SECRET, token
from tests.servers import Served, clean_environment, serving

pytestmark = pytest.mark.e2e

ACCOUNT, OTHER = "console-acme", "console-globex"
BIG = "123456789012345678901234567890123456789"
# Every focusable control, in the order Tab visits them (nothing here sets a positive tabindex).
FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea"


class Story:
    """What the test wrote through the API before the auditor looks: one run, its labels, and two moments."""

    def __init__(self, base: str) -> None:
        writer = {"Authorization": f"Bearer {token(ACCOUNT, 'alice', scope=ALL_SCOPES)}"}
        reviewer = {"Authorization": f"Bearer {token(ACCOUNT, 'bob', scope=ALL_SCOPES)}"}
        self.run = str(uuid.uuid4())
        with httpx.Client(base_url=base, timeout=30) as api:
            labels = f"/v1/run/{self.run}/gold-labels"

            def create(body: dict) -> dict:
                response = api.post(labels, json=body, headers=writer)
                assert response.status_code == 201, response.text
                return response.json()

            self.summary = create({"output_resource_name": "summary", "text_value": "The cat sat\non the mat.\n"})
            self.scores = create(
                {"output_resource_name": "scores", "object_value": {"model": "m1", "score": 0.5, "big": int(BIG)}}
            )
            self.dropped = create({"output_resource_name": "dropped", "text_value": "to be deleted"})
            self.before = self.dropped["created_at"]  # every label created, none changed yet
            time.sleep(0.05)
            one = f"/v1/run/{self.run}/gold-label/"
            changes = [
                ("put", self.summary["id"], {"text_value": "The cat sat\non a mat.\n"}, "typo in the reference"),
                (
                    "put",
                    self.scores["id"],
                    {"object_value": json.loads(f'{{"model":"m1","score":0.75,"big":{BIG}1}}')},
                    None,
                ),
                ("delete", self.dropped["id"], None, "duplicate output"),
            ]
            for method, label_id, body, reason in changes:
                headers = {**reviewer, **({"X-Change-Reason": reason} if reason else {})}
                response = api.request(method.upper(), one + label_id, json=body, headers=headers)
                assert response.status_code in (200, 204), response.text
            self.added = create({"output_resource_name": "added later", "text_value": "new"})
            self.after = self.added["created_at"]
            # Another account's run: for this auditor it must not exist.
            other = {"Authorization": f"Bearer {token(OTHER, 'mallory', scope=ALL_SCOPES)}"}
            self.other_run = str(uuid.uuid4())
            response = api.post(
                f"/v1/run/{self.other_run}/gold-labels", json={"output_resource_name": "x"}, headers=other
            )
            assert response.status_code == 201, response.text
            # Wait for the integrator and the checkpoint (within about a second of the writes).
            auditor = {"Authorization": f"Bearer {token(ACCOUNT, 'auditor', scope='audit:read')}"}
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                checkpoint = api.get("/v1/audit/checkpoint", headers=auditor)
                if checkpoint.status_code == 200 and "\n7\n" in checkpoint.text:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"no checkpoint of the 7 events: {checkpoint.status_code} {checkpoint.text}")
            self.vkey = api.get("/v1/audit/key", headers=auditor).text.strip()  # the account log's verifier key


@pytest.fixture
def served(backend, fresh_database, tmp_path) -> Iterator[Served]:
    require_browser()
    url = fresh_database(backend)
    key = tmp_path / "checkpoint-key"
    key.write_text(note.generate_key("goldtrail.test/labels")[0] + "\n")
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=url,
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_DATA_DIR=str(tmp_path),
        GOLDTRAIL_CHECKPOINT_KEY=str(key),
    )
    with serving(tmp_path, env) as server:
        yield server


@pytest.fixture
def browser_page(served, tmp_path):
    """A fresh browser context on the server, recording every request its pages make."""
    from playwright.sync_api import sync_playwright

    server = served
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(
            base_url=server.base_url, accept_downloads=True, viewport={"width": 1280, "height": 900}
        )
        requested: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page, requested
        finally:
            context.close()
            browser.close()


def shot(page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def keyboard_reaches_every_control(page) -> None:
    """Tab from the top of the page reaches every link, button and field, in order, and then leaves the page."""
    controls = page.locator(FOCUSABLE)
    count = controls.count()
    assert count > 0
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.locator("body").focus()
    reached = []
    for _ in range(count + 3):
        page.keyboard.press("Tab")
        marker = page.evaluate(
            "(() => { const e = document.activeElement; if (!e || e === document.body) return null;"
            " return e.outerHTML.slice(0, 200); })()"
        )
        if marker is None or (reached and marker == reached[0]):
            break
        reached.append(marker)
    expected = [html[:200] for html in controls.evaluate_all("elements => elements.map(e => e.outerHTML)")]
    assert reached == expected, (
        f"Tab reached {len(reached)} of {count} controls: missing {set(expected) - set(reached)}"
    )


def sign_in(page, jwt: str) -> None:
    page.goto("/console/")
    page.get_by_label("Access token").fill(jwt)
    page.get_by_role("button", name="Sign in").click()


def download(page, action) -> bytes:
    with page.expect_download() as info:
        action()
    return Path(info.value.path()).read_bytes()


def test_an_auditor_walks_the_console(served, browser_page, tmp_path, capsys):
    server = served
    page, requested = browser_page
    story = Story(server.base_url)
    folder = screenshot_dir(tmp_path)

    # Signing in: a page of the console sends a signed-out visitor to the sign-in form.
    page.goto("/console/runs")
    assert page.url.startswith(f"{server.base_url}/console/sign-in")
    keyboard_reaches_every_control(page)
    shot(page, folder, "sign-in")

    # A token without audit:read cannot sign in.
    sign_in(page, token(ACCOUNT, "alice", scope="gold_labels:read gold_labels:write"))
    assert "lacks the 'audit:read' scope" in page.get_by_role("alert").inner_text()
    assert page.context.cookies() == []

    sign_in(page, token(ACCOUNT, "auditor", scope="audit:read"))
    page.wait_for_url("**/console/runs")
    (cookie,) = page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]) == (
        True,
        "Strict",
        False,
        "/console",
    )

    # Runs: the account's run, its counts and its last change; another account's run is not listed.
    row = page.get_by_role("row").filter(has_text=story.run)
    assert row.get_by_role("cell").all_inner_texts()[1:] == ["3", "4", "7", story.after, "alice", "GoldLabelCreated"]
    assert story.other_run not in page.content()
    keyboard_reaches_every_control(page)
    shot(page, folder, "runs")
    page.get_by_label("Run id or output resource name starts with").fill("added la")
    page.get_by_role("button", name="Search").click()
    assert page.get_by_role("row").filter(has_text=story.run).count() == 1

    # Run: now, and as of a time before the changes.
    page.get_by_role("link", name=story.run).click()
    page.wait_for_url(f"**/console/run/{story.run}")
    assert page.get_by_role("heading", level=2).inner_text() == "3 live labels now"
    table = page.get_by_role("table").inner_text()
    assert "on a mat." in table and "dropped" not in table and "added later" in table
    keyboard_reaches_every_control(page)
    shot(page, folder, "run")
    page.get_by_label("Labels as they stood at").fill(story.before)
    page.get_by_role("button", name="Show", exact=True).click()
    assert page.get_by_role("heading", level=2).inner_text() == f"3 labels at {story.before}"
    table = page.get_by_role("table").inner_text()
    assert "on the mat." in table and "dropped" in table and "added later" not in table
    shot(page, folder, "run-as-of")

    # Compare: the as-of time with a second one.
    page.get_by_label("with").fill(story.after)
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/changes?**")
    changes = page.locator("ol.changes > li")
    kinds = {item.locator("h2 a").inner_text(): item.locator(".badge").inner_text() for item in changes.all()}
    assert kinds == {"summary": "changed", "scores": "changed", "dropped": "removed", "added later": "added"}
    scores = changes.filter(has_text="scores")
    assert f"{BIG}1" in scores.locator("ins").all_inner_texts()  # the big number, exactly as stored
    keyboard_reaches_every_control(page)
    shot(page, folder, "changes")

    # Label: its timeline, and the line diff of its text, word by word.
    changes.filter(has_text="summary").get_by_role("link", name="summary").click()
    page.wait_for_url(f"**/label/{story.summary['id']}")
    latest = page.locator("#v2")
    assert latest.locator("del").all_inner_texts() == ["the"] and latest.locator("ins").all_inner_texts() == ["a"]
    assert "typo in the reference" in latest.inner_text() and "bob" in latest.inner_text()
    page.get_by_role("spinbutton", name="Version").fill("1")
    page.get_by_role("button", name="Show", exact=True).click()
    assert "on the mat." in page.locator("#state").inner_text()
    keyboard_reaches_every_control(page)
    shot(page, folder, "label")

    # A deleted label keeps its whole timeline; its proof bundle verifies offline.
    page.goto(f"/console/run/{story.run}/label/{story.dropped['id']}")
    assert "duplicate output" in page.locator("#v2").inner_text()
    bundle = download(page, lambda: page.get_by_role("link", name="Proof bundle of version 2").click())
    assert verify_bundle(bundle, story.vkey).ok, verify_bundle(bundle, story.vkey).summary()

    # Activity: filtered by actor, with its chart; both exports hold exactly what the filter shows.
    page.get_by_role("link", name="Activity").click()
    assert page.locator("svg.chart rect").count() >= 1
    page.get_by_role("textbox", name="Actor").fill("bob")
    page.get_by_role("button", name="Filter").click()
    shown = page.locator("table tbody tr")
    assert shown.count() == 3 and set(shown.locator("td:nth-child(2)").all_inner_texts()) == {"bob"}
    keyboard_reaches_every_control(page)
    shot(page, folder, "activity")
    rows = list(
        csv.DictReader(
            io.StringIO(download(page, lambda: page.get_by_role("link", name="CSV").click()).decode("utf-8-sig"))
        )
    )
    assert [(row["actor"], row["type"], row["output_resource_name"]) for row in rows] == [
        ("bob", "GoldLabelUpdated", "summary"),
        ("bob", "GoldLabelUpdated", "scores"),
        ("bob", "GoldLabelDeleted", "dropped"),
    ]
    assert rows[0]["text_value"] == "The cat sat\non a mat.\n" and f"{BIG}1" in rows[1]["object_value"]
    lines = download(page, lambda: page.get_by_role("link", name="NDJSON").click()).decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["actor"], e["label_id"], e["version"]) for e in events] == [
        ("bob", story.summary["id"], 2),
        ("bob", story.scores["id"], 2),
        ("bob", story.dropped["id"], 2),
    ]
    assert f"{BIG}1" in events[1]["payload"]

    # Integrity: the checkpoint, a verification, and the whole log verified offline against what was shown.
    page.get_by_role("link", name="Integrity").click()
    assert "verifies under the log's key" in page.locator("dl.facts").inner_text()
    page.get_by_role("button", name="Verify the whole log against this checkpoint").click()
    assert page.get_by_role("status").inner_text().startswith("Verified: OK: 7 entries of 4 labels")
    keyboard_reaches_every_control(page)
    shot(page, folder, "integrity")
    whole_log = download(page, lambda: page.get_by_role("link", name="The whole log").click())
    checkpoint = download(page, lambda: page.get_by_role("link", name="The latest checkpoint").click())
    key = download(page, lambda: page.get_by_role("link", name="The log's key").click()).decode().strip()
    assert key == story.vkey
    report = verify_log(whole_log.splitlines(), checkpoint.decode(), key)
    assert report.ok and report.entries == 7, report.summary()

    # Another account's run answers exactly as a missing one.
    missing = str(uuid.uuid4())
    answers = []
    for run in (story.other_run, missing):
        response = page.goto(f"/console/run/{run}")
        answers.append((response.status, page.locator("main").inner_text().replace(run, "RUN")))
    assert answers[0] == answers[1] and answers[0][0] == 404

    # Signing out ends the session: the next page asks to sign in again.
    page.goto("/console/runs")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in")
    assert page.context.cookies() == []
    page.goto("/console/runs")
    assert "/console/sign-in" in page.url

    # No request left the host: every page, stylesheet and download came from goldtrail.
    assert requested and all(url.startswith(server.base_url + "/") for url in requested), [
        url for url in requested if not url.startswith(server.base_url + "/")
    ]
    with capsys.disabled():
        print(f"\nconsole screenshots: {folder}")
