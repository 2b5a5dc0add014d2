"""Prometheus metrics beyond Litestar's per-route request counters and latency histograms:
events appended by type, the database pool (in use, waiting), and failed database calls."""

from __future__ import annotations

from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import Counter, Gauge

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

PROMETHEUS = PrometheusConfig(
    app_name="goldtrail",
    prefix="goldtrail",
    group_path=True,  # label requests by route template, not by every label id
    exclude=["^/metrics"],
)


class MetricsController(PrometheusController):
    """`GET /metrics` in Prometheus' text format; left out of the OpenAPI schema, which describes JSON routes."""

    include_in_schema = False
