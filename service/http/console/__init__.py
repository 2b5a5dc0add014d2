"""The auditor console at /console/ (DESIGN.md §3.2): read-only pages rendered by goldtrail from the templates
and the stylesheet in this package, under a strict Content-Security-Policy. No script, no inline style, and
nothing from another host: it works on an air-gapped machine."""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Response, Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from service.http.console import present
from service.http.console.downloads import DOWNLOADS
from service.http.console.pages import PAGES
from service.http.console.session import PATH, CrossSiteRequest, SignInRefused, SignInRequired, safe_next
from service.http.request_log import request_id_of
from service.storage.errors import DatabaseUnavailable
from service.usecases.commands import InvalidInput
from service.usecases.labels import LabelNotFound, RunNotFound
from service.usecases.log import NoCheckpointKey, NotInLog
from service.usecases.timeline import VersionNotFound

HERE = Path(__file__).parent
STATIC = HERE / "static"
# Everything from this origin only; no script at all, no inline style, no plugin, no framing, forms only to here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# On every page, error pages too (an exception handler's answer does not get the router's response headers).
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # `no-referrer` would make browsers send `Origin: null` with the forms
    "X-Frame-Options": "DENY",
}
YEAR = 365 * 24 * 3600
logger = logging.getLogger("goldtrail.console")


@functools.cache
def assets_path() -> str:
    """The stylesheet's URL folder, named after its content: browsers may keep it a year, and an upgrade never
    shows an old copy."""
    sha = hashlib.sha256()
    for file in sorted(STATIC.iterdir()):
        sha.update(file.name.encode() + b"\0" + file.read_bytes())
    return f"{PATH}/static/{sha.hexdigest()[:16]}"


def templates() -> TemplateConfig:
    """The console's templates (Jinja, every value escaped; a missing name is an error, never blank)."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals.update(assets=assets_path(), console=PATH)
    environment.filters.update(when=present.when, short=present.short, pretty=present.pretty)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def _problem(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Template:
    return Template(
        template_name="problem.html",
        context={
            "principal": request.scope.get("user"),
            "here": request.url.path,
            "status": status,
            "message": message,
        },
        status_code=status,
        media_type="text/html",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store", **(headers or {})},
    )


def _sign_in_first(request: Request, error: SignInRequired) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"{PATH}/sign-in?next={quote(safe_next(target), safe='')}", status_code=303)


def _refused(request: Request, error: SignInRefused) -> Template:
    return Template(
        template_name="sign_in.html",
        context={"principal": None, "here": request.url.path, "next": f"{PATH}/runs", "problem": str(error)},
        status_code=error.status,
        media_type="text/html",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


def _status(status: int):
    def handle(request: Request, error: Exception) -> Template:
        field = getattr(error, "field", None)
        message = str(error) if not field or field in str(error) else f"{field}: {error}"
        return _problem(request, status, message)

    return handle


def _unavailable(request: Request, error: DatabaseUnavailable) -> Template:
    retry = str(request.app.state.settings.retry_after_seconds)
    return _problem(request, 503, "the database is unavailable; try again in a moment", {"Retry-After": retry})


def _http(request: Request, error: HTTPException) -> Template:
    message = error.detail if error.status_code < 500 else "internal error"
    return _problem(request, error.status_code, message, headers=error.headers)


def _internal(request: Request, error: Exception) -> Template:
    request_id = request_id_of(request.scope)
    logger.error("unhandled exception", exc_info=error, extra={"request_id": request_id})
    return _problem(request, 500, f"internal error (request id {request_id}, for the operator's log)")


EXCEPTION_HANDLERS = {
    SignInRequired: _sign_in_first,
    SignInRefused: _refused,
    CrossSiteRequest: _status(403),
    InvalidInput: _status(400),
    LabelNotFound: _status(404),
    RunNotFound: _status(404),
    VersionNotFound: _status(404),
    NotInLog: _status(404),
    NoCheckpointKey: _status(404),
    DatabaseUnavailable: _unavailable,
    HTTPException: _http,
    Exception: _internal,
}


def console_router() -> Router:
    """/console/: the pages and downloads (never cached: they show audit data), and the stylesheet (cached)."""
    static = create_static_files_router(
        path=assets_path().removeprefix(PATH),
        directories=[STATIC],
        name="console-assets",
        cache_control=CacheControlHeader(public=True, max_age=YEAR, immutable=True),
        include_in_schema=False,
    )
    return Router(
        PATH,
        route_handlers=[*PAGES, *DOWNLOADS, static],
        include_in_schema=False,
        exception_handlers=EXCEPTION_HANDLERS,
        cache_control=CacheControlHeader(no_store=True),
        response_headers=[ResponseHeader(name=name, value=value) for name, value in SECURITY_HEADERS.items()],
    )
