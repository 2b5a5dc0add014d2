"""The OpenAPI document a real `goldtrail serve` serves is good enough for a generated client: openapi-python-client
builds a package from /schema/openapi.json without a warning, and that package, used as its users would use it,
drives every label route against the same server and gets typed answers back, errors included."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.helpers import ALL_SCOPES, READ, SECRET, WRITE, database_of_its_own, new_account, token
from tests.servers import clean_environment, serving

pytest.importorskip("openapi_python_client", reason="openapi-python-client is not installed (pip install -e '.[test]')")

PACKAGE = "goldtrail_client"  # a name of its own: a top-level `client` module would be too easy to collide with
NEXT = re.compile(r'^<([^>]+)>; rel="next"$')
# Events reach the feed once integrated, about a second after commit (see tests/test_audit.py).
FEED_PATIENCE_SECONDS = 10.0
TYPES = ["GoldLabelCreated", "GoldLabelUpdated", "GoldLabelDeleted"]


@dataclass(frozen=True)
class Generated:
    """The generated package's modules, and a way to make clients of the running server."""

    base_url: str
    generator_output: str
    client: ModuleType
    models: ModuleType
    api: dict[str, ModuleType]

    def authenticated(self, account: str, scope: str = ALL_SCOPES):
        # Undocumented statuses raise instead of parsing to None, so every status the server answers here
        # must be one the document names.
        return self.client.AuthenticatedClient(
            base_url=self.base_url, token=token(account, scope=scope), raise_on_unexpected_status=True
        )


OPERATIONS = (
    "create_run_gold_label",
    "import_run_gold_labels",
    "list_run_gold_labels",
    "get_run_gold_label",
    "update_run_gold_label",
    "delete_run_gold_label",
    "get_run_gold_label_history",
    "list_events",
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Iterator[Generated]:
    tmp = tmp_path_factory.mktemp("generated-client")
    with database_of_its_own("sqlite", tmp) as url:
        env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(tmp))
        with serving(tmp, env) as served:
            document = httpx.get(f"{served.base_url}/schema/openapi.json", timeout=10)
            assert document.status_code == 200, document.text
            (tmp / "openapi.json").write_bytes(document.content)
            # The generator formats its output with ruff, which it finds on PATH: the venv's own.
            bin_dir = Path(sys.executable).parent
            generation = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "openapi_python_client",
                    "generate",
                    "--path",
                    "openapi.json",
                    "--meta",
                    "none",
                    "--output-path",
                    str(tmp / PACKAGE),
                    "--fail-on-warning",
                ],
                cwd=tmp,
                env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
                capture_output=True,
                text=True,
                timeout=120,
            )
            output = generation.stdout + generation.stderr
            assert generation.returncode == 0, output
            sys.path.insert(0, str(tmp))
            try:
                yield Generated(
                    base_url=served.base_url,
                    generator_output=output,
                    client=importlib.import_module(PACKAGE),
                    models=importlib.import_module(f"{PACKAGE}.models"),
                    api={name: importlib.import_module(f"{PACKAGE}.api.default.{name}") for name in OPERATIONS},
                )
            finally:
                sys.path.remove(str(tmp))
                for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
                    del sys.modules[name]


def expect(response, status: int, model):
    """The parsed answer of a `*_detailed` call, which must have this status and parse to this model."""
    assert response.status_code == HTTPStatus(status), response.content
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)
    return response.parsed


def expect_error(generated: Generated, response, status: int):
    """The answer is this error status, parsed to the generated Error model with a sentence in it."""
    error = expect(response, status, generated.models.Error)
    assert isinstance(error.error, str) and error.error.strip()
    return error


def test_the_served_document_generates_a_client_without_warnings(generated):
    assert "Warning" not in generated.generator_output, generated.generator_output
    update = inspect.signature(generated.api["update_run_gold_label"].sync_detailed).parameters
    for header in ("if_match", "idempotency_key", "x_change_reason", "x_request_id"):
        assert header in update, f"the generated PUT takes no {header} parameter"
    assert "after" in inspect.signature(generated.api["list_run_gold_labels"].sync_detailed).parameters


def test_a_label_is_created_read_updated_under_if_match_deleted_and_its_history_told(generated):
    api, models = generated.api, generated.models
    account, run = new_account("gen"), uuid.uuid4()
    client = generated.authenticated(account)
    resource = f"output-{uuid.uuid4().hex[:8]}"
    key, request_id = f"key-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex[:12]}"

    def create(idempotency_key: str):
        return api["create_run_gold_label"].sync_detailed(
            run,
            client=client,
            body=models.NewLabel(output_resource_name=resource, text_value="cat"),
            idempotency_key=idempotency_key,
            x_change_reason="first look",
            x_request_id=request_id,
        )

    created_response = create(key)
    created = expect(created_response, 201, models.RunGoldLabel)
    assert created_response.headers["etag"] == '"1"'
    assert created_response.headers["x-request-id"] == request_id
    assert isinstance(created.id, uuid.UUID)
    assert (created.run_id, created.account_id, created.output_resource_name) == (run, account, resource)
    assert (created.text_value, created.object_value, created.object_value_is_partial) == ("cat", None, None)
    assert created.created_by == created.updated_by == "alice"
    assert created.created_at == created.updated_at

    replay = expect(create(key), 201, models.RunGoldLabel)
    assert replay.to_dict() == created.to_dict()
    duplicate = expect_error(generated, create(f"key-{uuid.uuid4().hex}"), 409)
    assert duplicate.existing_id == created.id

    fetched_response = api["get_run_gold_label"].sync_detailed(run, created.id, client=client)
    assert expect(fetched_response, 200, models.RunGoldLabel).to_dict() == created.to_dict()
    assert fetched_response.headers["etag"] == '"1"'

    def update(if_match: str, text: str):
        return api["update_run_gold_label"].sync_detailed(
            run,
            created.id,
            client=client,
            body=models.LabelPatch(text_value=text),
            if_match=if_match,
            x_change_reason="second look",
        )

    updated_response = update('"1"', "dog")
    updated = expect(updated_response, 200, models.RunGoldLabel)
    assert updated_response.headers["etag"] == '"2"'
    assert (updated.id, updated.text_value, updated.created_at) == (created.id, "dog", created.created_at)
    assert updated.updated_at > created.updated_at

    stale = expect_error(generated, update('"1"', "bird"), 412)
    assert "version" in stale.error or "If-Match" in stale.error, stale.error
    after_stale = api["get_run_gold_label"].sync_detailed(run, created.id, client=client)
    assert expect(after_stale, 200, models.RunGoldLabel).text_value == "dog"
    assert after_stale.headers["etag"] == '"2"'
    first_version = api["get_run_gold_label"].sync_detailed(run, created.id, client=client, version=1)
    assert expect(first_version, 200, models.RunGoldLabel).text_value == "cat"

    delete = api["delete_run_gold_label"].sync_detailed
    expect_error(generated, delete(run, created.id, client=client, if_match='"1"'), 412)
    deleted = delete(run, created.id, client=client, if_match='"2"', x_change_reason="wrong output")
    assert deleted.status_code == HTTPStatus.NO_CONTENT and deleted.content == b""
    gone = expect_error(generated, api["get_run_gold_label"].sync_detailed(run, created.id, client=client), 404)
    assert gone.error

    history = expect(api["get_run_gold_label_history"].sync_detailed(run, created.id, client=client), 200, list)
    assert all(isinstance(entry, models.HistoryEntry) for entry in history)
    assert [entry.version for entry in history] == [1, 2, 3]
    assert [entry.reason for entry in history] == ["first look", "second look", "wrong output"]
    assert [entry.type_ for entry in history] == TYPES
    assert [entry.actor for entry in history] == ["alice"] * 3
    assert history[0].request_id == request_id
    assert history[0].state.to_dict() == created.to_dict()
    assert history[1].state.to_dict() == updated.to_dict()
    assert history[2].state is None
    text_change = history[1].changes["text_value"]
    assert isinstance(text_change, models.Change)
    assert (text_change.from_, text_change.to) == ("cat", "dog")
    assert len({entry.hash_ for entry in history}) == 3


def test_a_batch_import_is_listed_page_by_page_following_the_link_cursor(generated):
    api, models = generated.api, generated.models
    account, run = new_account("gen"), uuid.uuid4()
    client = generated.authenticated(account)
    items = [models.NewLabel(output_resource_name=f"o{n}", text_value=f"value {n}") for n in range(8)]
    shape = models.NewLabelObjectValueType0.from_dict({"box": [1, 2, 3, 4], "class": "cat"})
    items.append(models.NewLabel(output_resource_name="o-object", object_value=shape, object_value_is_partial=True))

    def batch(labels, key: str):
        return api["import_run_gold_labels"].sync_detailed(
            run, client=client, body=models.LabelBatch(labels=labels), idempotency_key=key, x_change_reason="import"
        )

    first = expect(batch(items, f"key-{uuid.uuid4().hex}"), 200, models.BatchOutcome)
    assert (first.created, first.updated, first.unchanged) == (9, 0, 0)
    assert all(isinstance(item, models.BatchItem) for item in first.labels)
    assert [(item.output_resource_name, item.version, item.outcome) for item in first.labels] == [
        (label.output_resource_name, 1, "created") for label in items
    ]
    ids = {item.output_resource_name: item.id for item in first.labels}
    assert all(isinstance(label_id, uuid.UUID) for label_id in ids.values())  # typed as the UUIDs they are

    again = [
        models.NewLabel(output_resource_name="o0", text_value="value 0"),
        models.NewLabel(output_resource_name="o1", text_value="changed"),
        models.NewLabel(output_resource_name="o-new", text_value="new"),
    ]
    second = expect(batch(again, f"key-{uuid.uuid4().hex}"), 200, models.BatchOutcome)
    assert (second.created, second.updated, second.unchanged) == (1, 1, 1)
    assert [(item.id, item.version, item.outcome) for item in second.labels[:2]] == [
        (ids["o0"], 1, "unchanged"),
        (ids["o1"], 2, "updated"),
    ]
    ids["o-new"] = second.labels[2].id

    listed = api["list_run_gold_labels"].sync_detailed
    pages, after = [], None
    while True:
        response = listed(run, client=client, limit=4, **({} if after is None else {"after": after}))
        pages.append(expect(response, 200, list))
        link = response.headers.get("link")
        if link is None:
            break
        after = parse_qs(urlsplit(NEXT.fullmatch(link).group(1)).query)["after"][0]
    assert [len(page) for page in pages] == [4, 4, 2]
    seen = [label for page in pages for label in page]
    assert all(isinstance(label, models.RunGoldLabel) for label in seen)
    assert sorted(label.id for label in seen) == sorted(ids.values())  # every label, each exactly once
    by_resource = {label.output_resource_name: label for label in seen}
    assert {name: label.id for name, label in by_resource.items()} == ids
    assert by_resource["o1"].text_value == "changed" and by_resource["o7"].text_value == "value 7"
    assert by_resource["o-object"].text_value is None
    assert by_resource["o-object"].object_value.to_dict() == {"box": [1, 2, 3, 4], "class": "cat"}
    assert by_resource["o-object"].object_value_is_partial is True

    whole = expect(listed(run, client=client), 200, list)
    assert [label.to_dict() for label in whole] == [label.to_dict() for label in seen]


def test_the_feed_pages_through_an_accounts_events_by_its_next_cursor(generated):
    api, models = generated.api, generated.models
    account, run = new_account("gen"), uuid.uuid4()
    client = generated.authenticated(account)
    label = expect(
        api["create_run_gold_label"].sync_detailed(
            run, client=client, body=models.NewLabel(output_resource_name="fed", text_value="one")
        ),
        201,
        models.RunGoldLabel,
    )
    api["update_run_gold_label"].sync_detailed(
        run, label.id, client=client, body=models.LabelPatch(text_value="two"), if_match='"1"'
    )
    api["delete_run_gold_label"].sync_detailed(run, label.id, client=client, if_match='"2"', x_change_reason="done")

    feed = api["list_events"].sync_detailed
    deadline = time.monotonic() + FEED_PATIENCE_SECONDS
    while len(expect(feed(client=client, limit=1000), 200, models.FeedPage).events) < 3:
        assert time.monotonic() < deadline, "the feed did not show the label's three events"
        time.sleep(0.05)

    events, after = [], None
    while True:
        page = expect(feed(client=client, limit=2, **({} if after is None else {"after": after})), 200, models.FeedPage)
        if not page.events:
            break
        assert len(page.events) <= 2 and page.next_ != after
        events.extend(page.events)
        after = page.next_
    assert all(isinstance(event, models.FeedEvent) for event in events)
    assert [(event.label_id, event.run_id, event.version) for event in events] == [
        (label.id, run, version) for version in (1, 2, 3)
    ]
    assert [event.log_index for event in events] == [0, 1, 2]
    assert events[2].reason == "done"
    assert events[1].prev_hash == events[0].hash_ and events[2].prev_hash == events[1].hash_
    assert [event.type_ for event in events] == TYPES


def test_errors_come_back_as_the_typed_error_model(generated):
    api, models = generated.api, generated.models
    account, run = new_account("gen"), uuid.uuid4()
    client = generated.authenticated(account)

    missing = api["get_run_gold_label"].sync_detailed(run, uuid.uuid4(), client=client)
    expect_error(generated, missing, 404)

    bad_limit = expect_error(generated, api["list_run_gold_labels"].sync_detailed(run, client=client, limit=0), 400)
    assert bad_limit.field == "limit"
    empty_name = api["create_run_gold_label"].sync_detailed(
        run, client=client, body=models.NewLabel(output_resource_name="", text_value="x")
    )
    assert expect_error(generated, empty_name, 400).field == "output_resource_name"

    anonymous = generated.client.Client(base_url=generated.base_url, raise_on_unexpected_status=True)
    expect_error(generated, api["list_events"].sync_detailed(client=anonymous), 401)
    no_audit = generated.authenticated(account, scope=f"{READ} {WRITE}")
    expect_error(generated, api["list_events"].sync_detailed(client=no_audit), 403)
