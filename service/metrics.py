"""Prometheus metrics: requests by route and status with their latency, events appended by type, the
database pool (in use, waiting), failed database calls, the size of group-committed writes, and reads by
database with each standby's lag and skips. With several workers they add up across them (see `goldtrail serve
--workers`)."""

from __future__ import annotations

from litestar.plugins.prometheus import PrometheusController
from prometheus_client import Counter, Gauge, Histogram

_REQUEST_LABELS = ["method", "path", "status_code", "app_name"]
REQUESTS = Counter("goldtrail_requests_total", "Requests answered", _REQUEST_LABELS)
REQUEST_ERRORS = Counter("goldtrail_requests_error_total", "Requests answered with a server error", _REQUEST_LABELS)
REQUEST_DURATION = Histogram("goldtrail_request_duration_seconds", "Request duration, in seconds", _REQUEST_LABELS)
REQUESTS_IN_PROGRESS = Gauge("goldtrail_requests_in_progress", "Requests being answered", multiprocess_mode="livesum")
EVENTS_APPENDED = Counter("goldtrail_events_appended_total", "Events committed to the log", ["type"])
DB_FAILURES = Counter(
    "goldtrail_db_failures_total",
    "Database calls that failed",
    ["kind"],  # unavailable | error
)
DB_CONNECTIONS_IN_USE = Gauge(
    "goldtrail_db_connections_in_use", "Pool connections checked out", multiprocess_mode="livesum"
)
DB_CONNECTIONS_WAITING = Gauge(
    "goldtrail_db_connections_waiting", "Requests waiting for a pool connection", multiprocess_mode="livesum"
)
WRITE_GROUPS = Histogram(
    "goldtrail_write_group_size",
    "Updates committed together in one statement (group commit, PostgreSQL)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
WRITE_GROUPS_FAILED = Counter(
    "goldtrail_write_groups_failed_total",
    "Groups of updates that failed as a whole; their updates were written one by one instead",
    ["reason"],  # lost_race | stale_connection | unavailable | read_only | answer_lost | error
)
CONNECTIONS_REFUSED = Counter(
    "goldtrail_connections_refused_total",
    "Connections the HTTP server answered 431 or 408 and closed, or closed, for an oversized or slow request",
    ["reason"],  # head_too_large | head_timeout | body_timeout
)
# Hot standbys (storage.replicas): reads by the database that served them ("primary" or a standby's
# host:port/db), each standby's lag, and the reads that skipped a standby and why.
READS = Counter("goldtrail_db_reads_total", "Reads routed to a database", ["database"])
REPLICA_UP = Gauge(
    "goldtrail_replica_up",
    "1 while a standby serves reads, 0 while it is skipped",
    ["database"],
    multiprocess_mode="livemin",
)
REPLICA_LAG_SECONDS = Gauge(
    "goldtrail_replica_lag_seconds",
    "How long ago the primary had the WAL a standby has not replayed yet, at the last check",
    ["database"],
    multiprocess_mode="livemax",
)
REPLICA_LAG_BYTES = Gauge(
    "goldtrail_replica_lag_bytes",
    "WAL bytes flushed on the primary and not yet replayed by a standby, at the last check",
    ["database"],
    multiprocess_mode="livemax",
)
REPLICA_SKIPS = Counter(
    "goldtrail_replica_skips_total",
    "Reads that did not use a standby",
    ["database", "reason"],  # down | lagging | behind_token | conflict
)
# Requests that matched no route are counted under this path, so that scanners cannot add label values.
UNMATCHED = "(unmatched)"


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    """Count one answered request under its route template (never its ids) and status.

    Done once per request by the access log, which already has the status and the duration: Litestar's
    Prometheus middleware measured the same again and cost several percent of the CPU of a write."""
    if route == "/metrics":
        return
    labels = (method, route or UNMATCHED, str(status), "goldtrail")
    REQUESTS.labels(*labels).inc()
    REQUEST_DURATION.labels(*labels).observe(seconds)
    if status >= 500:
        REQUEST_ERRORS.labels(*labels).inc()


class MetricsController(PrometheusController):
    """`GET /metrics` in Prometheus' text format; left out of the OpenAPI schema, which describes JSON routes."""

    include_in_schema = False
