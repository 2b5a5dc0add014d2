"""The application factory: `create_app(settings)` wires routes, auth, errors and the database."""

from __future__ import annotations

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import SecurityScheme
from litestar.routes import HTTPRoute

from service.http import openapi
from service.http.audit import AUDIT_ROUTES
from service.http.auth import BearerAuthMiddleware, TokenVerifier
from service.http.consistency import Tokens, with_token
from service.http.console import console_router, templates
from service.http.docs_page import SwaggerUIPage, docs_router
from service.http.errors import EXCEPTION_HANDLERS
from service.http.health import healthz, readyz
from service.http.labels import LABEL_ROUTES
from service.http.log import LOG_ROUTES
from service.http.request_log import configure_logging, logged
from service.http.runs import RUN_ROUTES
from service.http.server import head_bytes, refuse_oversized_head
from service.metrics import MetricsController
from service.settings import Settings, dev_checkpoint_key, load_settings
from service.storage.database import Database
from service.storage.replicas import Replicas
from service.usecases.log import Integrator, LogSigner


class GoldtrailApp(Litestar):
    """Litestar, with every HTTP exchange (unknown routes too) given a request id and an access-log line."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if head_bytes(scope) > self.state.settings.max_head_bytes:
            # `goldtrail serve` refuses such heads before reading them whole; this holds under any ASGI server.
            await logged(refuse_oversized_head, scope, receive, send)
            return
        if scope.get("method") == "OPTIONS":
            send = self._with_every_allowed_method(scope, send)
        send = with_token(self, scope, send)
        await logged(super().__call__, scope, receive, send)

    @functools.cached_property
    def _methods_by_path(self) -> dict[str, str]:
        by_path: dict[str, set[str]] = {}
        for route in self.routes:
            if isinstance(route, HTTPRoute):
                for path in (route.path, route.path_format):
                    by_path.setdefault(path, set()).update(route.methods)
        return {path: ", ".join(sorted(methods)) for path, methods in by_path.items()}

    def _with_every_allowed_method(self, scope, send):
        """Litestar 2's automatic OPTIONS answer lists only the first handler's methods of a path."""

        async def send_full_allow(message) -> None:
            allowed = self._methods_by_path.get(scope.get("path_template", ""))
            if message["type"] == "http.response.start" and allowed:
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"allow"]
                message["headers"] = [*headers, (b"allow", allowed.encode())]
            await send(message)

        return send_full_allow


def _v1() -> Router:
    """Every /v1 route, with bearer auth on all of them."""
    return Router(
        path="/v1",
        route_handlers=[*LABEL_ROUTES, *AUDIT_ROUTES, *LOG_ROUTES, *RUN_ROUTES],
        middleware=[DefineMiddleware(BearerAuthMiddleware)],
    )


def _settle_garbage_collector() -> None:
    """Keep the objects made at start-up (routes, schemas, the SQL layer: over a hundred thousand) out of every
    later collection. Otherwise each full collection, rare but due sooner or later, walks them all and
    stalls every request in flight for as long as that walk takes."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings) -> Litestar:
    @asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        app.state.db = Database.connect(settings)
        app.state.replicas = Replicas.connect(settings, app.state.db)
        if app.state.replicas is not None:
            await app.state.replicas.start()
        integrator = Integrator(app.state.db, app.state.log_signer)
        if settings.integrator == "on":
            integrator.start()
        _settle_garbage_collector()
        try:
            yield
        finally:
            await integrator.stop()
            if app.state.replicas is not None:
                await app.state.replicas.stop()
            await app.state.db.close()

    app = GoldtrailApp(
        # With a metrics port of its own, /metrics is served there (see `goldtrail serve`), not on the API port.
        route_handlers=[
            _v1(),
            console_router(),
            healthz,
            readyz,
            *([] if settings.metrics_port else [MetricsController]),
        ],
        template_config=templates(),
        lifespan=[database],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # logging is configured once, as JSON lines or text, by configure_logging
        openapi_config=OpenAPIConfig(
            title="goldtrail",
            version="0.1.0",
            description="Event-sourced audit trail for the gold labels of ML evaluation runs.",
            openapi_router=docs_router("/schema"),
            render_plugins=[SwaggerUIPage()],
            components=openapi.Components(
                security_schemes={"BearerAuth": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
            security=[{"BearerAuth": []}],
        ),
    )
    app.state.settings = settings
    app.state.token_verifier = TokenVerifier(settings)
    app.state.replicas = None  # set in the lifespan when standbys are configured
    app.state.tokens = Tokens(settings) if settings.read_replica_urls else None
    key = settings.checkpoint_key_file
    if settings.embedded and key is not None:
        dev_checkpoint_key(settings.data_dir)
    app.state.log_signer = None if key is None else LogSigner(key.read_text())
    return app


def create_app_from_environment() -> Litestar:
    """The factory `goldtrail serve` gives the server: settings read once, from GOLDTRAIL_*."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
