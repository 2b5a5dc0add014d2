"""The API docs page at /schema: Swagger UI, its files served from this package (no request leaves the
host), under a strict Content-Security-Policy; every other path under /schema is a JSON 404."""

from __future__ import annotations

import functools
import hashlib
import html
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router

SWAGGER_UI_VERSION = "5.35.0"  # npm swagger-ui-dist, vendored in static/docs (see VENDORED.md there)
ASSETS = Path(__file__).with_name("static") / "docs"
# Swagger UI's stylesheet draws its icons as data: images; everything else comes from this origin only.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'"
YEAR = 365 * 24 * 3600

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/goldtrail-docs.js"></script>
</body>
</html>
"""


@functools.cache
def _digest(folder: Path) -> str:
    """Names the assets' URL folder after their content, so browsers may keep them a year and still never
    run an old copy after an upgrade."""
    sha = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        sha.update(file.name.encode() + b"\0" + file.read_bytes())
    return sha.hexdigest()[:16]


def docs_router(path: str = "/schema") -> Router:
    """The router litestar fills with the docs page and the OpenAPI document, both sent with the CSP."""
    return Router(
        path,
        route_handlers=[],
        include_in_schema=False,
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
        ],
    )


class SwaggerUIPage(OpenAPIRenderPlugin):
    """Swagger UI at the root of the docs router, with its assets beside it."""

    def __init__(self) -> None:
        super().__init__(path="/")
        self.assets_path = f"/assets/{_digest(ASSETS)}"
        self.assets_url = ""  # known once the router is

    def receive_router(self, router: Router) -> None:
        # litestar answers every unknown path under the docs router with an HTML 404 page of its own: drop
        # that route, so those paths reach the app's JSON 404 like any other.
        catch_all = f"{router.path.rstrip('/')}/{{path:str}}"
        router.routes[:] = [route for route in router.routes if route.path != catch_all]
        router.register(
            create_static_files_router(
                path=self.assets_path,
                directories=[ASSETS],
                name="goldtrail-docs-assets",
                cache_control=CacheControlHeader(public=True, max_age=YEAR, immutable=True),
            )
        )
        self.assets_url = f"{router.path.rstrip('/')}{self.assets_path}"

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return PAGE.format(
            title=html.escape(openapi_schema.get("info", {}).get("title", "API")),
            assets=html.escape(self.assets_url),
            openapi_url=html.escape(self.get_openapi_json_route(request)),
        ).encode()
