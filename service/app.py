"""The application factory: `create_app(settings)` wires routes, auth, errors and the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController

from service.api import LABEL_ROUTES, healthz, readyz
from service.audit_api import AUDIT_ROUTES
from service.auth import BearerAuthMiddleware, TokenVerifier
from service.database import Database
from service.errors import EXCEPTION_HANDLERS
from service.metrics import PROMETHEUS
from service.request_log import configure_logging, logged
from service.settings import Settings, load_settings


class GoldtrailApp(Litestar):
    """Litestar, with every HTTP exchange (unknown routes too) given a request id and an access-log line."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await logged(super().__call__, scope, receive, send)


def _provide_db(state: State) -> Database:
    return state.db


def _provide_settings(state: State) -> Settings:
    return state.settings


def _v1() -> Router:
    """Every /v1 route: bearer auth on all of them, the database and settings as dependencies."""
    return Router(
        path="/v1",
        route_handlers=[*LABEL_ROUTES, *AUDIT_ROUTES],
        middleware=[DefineMiddleware(BearerAuthMiddleware)],
        dependencies={
            "db": Provide(_provide_db, sync_to_thread=False),
            "settings": Provide(_provide_settings, sync_to_thread=False),
        },
    )


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        app.state.db = Database.connect(settings)
        try:
            yield
        finally:
            await app.state.db.close()

    app = GoldtrailApp(
        route_handlers=[_v1(), healthz, readyz, PrometheusController],
        middleware=[PROMETHEUS.middleware],
        lifespan=[database],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # logging is configured once, as JSON lines, by configure_logging
        openapi_config=OpenAPIConfig(
            title="goldtrail",
            version="0.1.0",
            description="Event-sourced audit trail for the gold labels of ML evaluation runs.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            components=Components(
                security_schemes={"BearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
            security=[{"BearerAuth": []}],
        ),
    )
    app.state.settings = settings
    app.state.token_verifier = TokenVerifier(settings)
    return app


def create_app_from_environment() -> Litestar:
    """The factory `goldtrail serve` gives the server: settings read once, from GOLDTRAIL_*."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return create_app(settings)
