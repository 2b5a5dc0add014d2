"""What operators see: one structured log line per request (never a token, secret or label value),
tracebacks for the unexpected, and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import socket
import uuid

import httpx
import pytest

from service.http.request_log import JsonFormatter
from tests.helpers import SECRET, assert_error, auth, create_label, label_url, labels_url, poison_projection, token
from tests.servers import clean_environment, free_port, goldtrail_serve, run_goldtrail


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition, 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def logs(caplog) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="goldtrail")
    return caplog


def test_every_request_leaves_one_structured_line(client, run_id, logs):
    headers = {**auth("acme", "alice"), "X-Request-ID": "trace-77"}
    client.post(labels_url(run_id), json={"output_resource_name": "o"}, headers=headers)
    client.get("/no/such/route", headers={"X-Request-ID": "trace-78"})
    lines = [r for r in logs.records if r.name == "goldtrail.access"]
    created = next(r for r in lines if r.request_id == "trace-77")
    assert (created.method, created.path, created.status) == ("POST", labels_url(run_id), 201)
    assert (created.account, created.user) == ("acme", "alice") and created.duration_ms > 0
    missing = next(r for r in lines if r.request_id == "trace-78")
    assert missing.status == 404 and missing.account is None
    parsed = json.loads(JsonFormatter().format(created))
    assert parsed["message"] == "request" and parsed["status"] == 201 and parsed["request_id"] == "trace-77"


def test_logs_never_hold_tokens_secrets_or_label_values(client, run_id, logs):
    bearer = token("acme", "alice")
    secret_value = f"confidential-{uuid.uuid4().hex}"
    headers = {"Authorization": f"Bearer {bearer}"}
    label = client.post(
        labels_url(run_id),
        json={"output_resource_name": "o", "text_value": secret_value, "object_value": None},
        headers=headers,
    ).json()
    client.put(label_url(run_id, label["id"]), json={"object_value": {"k": secret_value}}, headers=headers)
    client.get(labels_url(run_id), headers={"Authorization": f"Bearer {bearer}x"})  # a 401
    client.post(labels_url(run_id), json={"output_resource_name": secret_value + "\u0000"}, headers=headers)
    formatter = JsonFormatter()
    text = "\n".join(formatter.format(record) for record in logs.records)
    assert "request" in text
    for forbidden in (bearer, bearer.split(".")[2], SECRET, secret_value):
        assert forbidden not in text


def test_an_unexpected_error_is_logged_with_its_traceback_and_answered_500(client, engine, run_id, logs):
    poison_projection(engine)
    label = create_label(client, run_id, auth(), output_resource_name="o")
    response = client.put(
        label_url(run_id, label["id"]),
        json={"text_value": "poison"},
        headers={**auth(), "X-Request-ID": "boom-1"},
    )
    assert_error(response, 500, "internal error")
    assert response.json()["request_id"] == "boom-1"
    failure = next(r for r in logs.records if r.name == "goldtrail.errors")
    assert failure.exc_info is not None and failure.request_id == "boom-1"
    assert "Traceback" in json.loads(JsonFormatter().format(failure))["traceback"]


def test_metrics_count_requests_by_route_and_status_and_events_by_type(client, run_id):
    before = client.get("/metrics").text
    label = create_label(client, run_id, auth(), output_resource_name="o")
    client.put(label_url(run_id, label["id"]), json={"text_value": "x"}, headers=auth())
    client.get(label_url(run_id, uuid.uuid4()), headers=auth())
    client.get(f"/scanner-probe-{run_id}")
    after = client.get("/metrics").text
    route = "/v1/run/{run_id}/gold-label/{gold_label_id}"

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("goldtrail_requests_total", method="PUT", path=route, status_code="200") == 1
    assert grew("goldtrail_requests_total", method="GET", path=route, status_code="404") == 1
    assert grew("goldtrail_request_duration_seconds_count", method="POST", status_code="201") == 1
    assert grew("goldtrail_events_appended_total", type="GoldLabelCreated") == 1
    assert grew("goldtrail_events_appended_total", type="GoldLabelUpdated") == 1
    assert re.search(r"^goldtrail_db_connections_in_use \d", after, re.M)
    assert re.search(r"^goldtrail_db_connections_waiting \d", after, re.M)
    assert grew("goldtrail_requests_total", method="GET", path="(unmatched)", status_code="404") == 1
    assert grew("goldtrail_request_duration_seconds_count", method="GET", path="/metrics") == 0
    assert label["id"] not in after and run_id not in after  # routes are labelled by template, not by id


def test_an_unreachable_database_is_a_fast_503_and_counted(start_app):
    client = start_app(
        "postgresql://nobody@127.0.0.1:9/none", GOLDTRAIL_DB_TIMEOUT_SECONDS="1", GOLDTRAIL_RETRY_AFTER_SECONDS="3"
    )
    before = metric(client.get("/metrics").text, "goldtrail_db_failures_total", kind="unavailable")
    response = client.get(labels_url(uuid.uuid4()), headers=auth())
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "3"
    ready = client.get("/readyz")
    assert_error(ready, 503, "not ready")
    after = metric(client.get("/metrics").text, "goldtrail_db_failures_total", kind="unavailable")
    assert after - before >= 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_metrics_port_serves_the_metrics_of_every_worker_and_the_api_port_does_not(tmp_path, workers):
    metrics_port = free_port()
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'metrics.sqlite3'}",
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_DATA_DIR=str(tmp_path),
        GOLDTRAIL_METRICS_PORT=str(metrics_port),
    )
    with goldtrail_serve(tmp_path, env, "--workers", str(workers)) as base:
        scrape = f"http://127.0.0.1:{metrics_port}/metrics"
        before = httpx.get(scrape, timeout=10)
        assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
        run = str(uuid.uuid4())
        for i in range(12):  # a new connection each, so that both workers take some
            with httpx.Client(base_url=base, timeout=10) as client:
                assert client.get("/healthz").status_code == 200
                created = client.post(labels_url(run), json={"output_resource_name": f"o{i}"}, headers=auth())
                assert created.status_code == 201
        after = httpx.get(scrape, timeout=10).text

        def grew(name: str, **labels: str) -> float:
            return metric(after, name, **labels) - metric(before.text, name, **labels)

        assert grew("goldtrail_requests_total", method="GET", path="/healthz", status_code="200") == 12
        assert grew("goldtrail_requests_total", method="POST", status_code="201") == 12
        assert grew("goldtrail_events_appended_total", type="GoldLabelCreated") == 12
        on_the_api_port = httpx.get(f"{base}/metrics", timeout=10)
        assert on_the_api_port.status_code == 404
        assert on_the_api_port.headers["content-type"].startswith("application/json")
        assert "goldtrail_requests_total" not in on_the_api_port.text


def test_with_a_metrics_port_the_app_answers_metrics_404_like_an_unknown_route(start_app, sqlite_url):
    client = start_app(sqlite_url, GOLDTRAIL_METRICS_PORT="9464")
    metrics, unknown = client.get("/metrics"), client.get("/no-such-route")
    assert_error(metrics, 404)
    assert_error(unknown, 404)
    assert metrics.json()["error"] == unknown.json()["error"].replace("/no-such-route", "/metrics")


def test_serve_refuses_a_metrics_port_it_cannot_bind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = clean_environment(
            GOLDTRAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'taken.sqlite3'}",
            GOLDTRAIL_JWT_SECRET=SECRET,
            GOLDTRAIL_METRICS_PORT=str(taken.getsockname()[1]),
        )
        result = run_goldtrail(env, "serve", "--port", str(free_port()), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "cannot serve metrics" in result.stderr and "Traceback" not in result.stderr
