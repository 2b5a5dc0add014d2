"""The docs page at /schema: Swagger UI served by goldtrail itself (pinned, nothing from another host, under a
Content-Security-Policy), the OpenAPI document beside it, and a JSON 404 for every other path under /schema."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient

from tests.helpers import assert_error
from tests.servers import clean_environment, goldtrail_serve

SWAGGER_UI_VERSION = "5.35.0"  # npm swagger-ui-dist, vendored in service/static/docs
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# What litestar's other render plugins and the old Scalar page answered at, and paths nobody serves.
NOT_PAGES = [
    "/schema/swagger",
    "/schema/redoc",
    "/schema/rapidoc",
    "/schema/elements",
    "/schema/stoplight",
    "/schema/scalar",
    "/schema/nope",
    "/schema/oauth2-redirect.html",
    "/schema/openapi.yml",
    "/schema/assets/swagger-ui-bundle.js",
    "/schema/swagger/index.html",
]


class _Page(HTMLParser):
    """The URLs a browser would load for the page, and the text of any inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.inline_styles = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs) -> None:
        attributes = dict(attrs)
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            if attributes.get(name):
                self.urls.append(attributes[name])
        self.inline_styles += tag == "style" or "style" in attributes
        self._in_script = tag == "script"

    def handle_endtag(self, tag) -> None:
        self._in_script = False

    def handle_data(self, data) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture
def docs(sqlite_client) -> TestClient:
    """An in-process app; the database plays no part in the docs."""
    return sqlite_client


def test_docs_page_is_html_under_a_same_origin_content_security_policy(docs):
    page = docs.get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "script-src" not in policy
    parsed = _parse(page.text)
    assert parsed.inline_scripts == [] and parsed.inline_styles == 0  # both would be refused by the policy


def test_docs_page_loads_nothing_from_another_host(docs):
    html = docs.get("/schema").text
    assert not re.search(r"https?:|//[a-z0-9]", html, re.I), html
    urls = _parse(html).urls
    assert any(url.endswith("/swagger-ui-bundle.js") for url in urls) and any(url.endswith(".css") for url in urls)
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url


def test_every_asset_of_the_docs_page_is_served_with_its_content_type_and_a_long_cache_life(docs):
    for url in _parse(docs.get("/schema").text).urls:
        asset = docs.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] in {CONTENT_TYPES[suffix], "application/javascript"}, url
        cache = asset.headers["cache-control"]
        assert "immutable" in cache and int(re.search(r"max-age=(\d+)", cache).group(1)) >= 365 * 24 * 3600, url


def test_docs_assets_are_the_pinned_swagger_ui(docs):
    urls = _parse(docs.get("/schema").text).urls
    bundle = docs.get(next(url for url in urls if url.endswith("/swagger-ui-bundle.js"))).text
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in bundle
    assert SWAGGER_UI_VERSION.startswith("5.")  # Swagger UI 5 reads OpenAPI 3.1, which the service publishes
    assert docs.get("/schema/openapi.json").json()["openapi"].startswith("3.1")


def test_docs_page_starts_swagger_ui_on_the_served_openapi_document_without_the_online_validator(docs):
    html = docs.get("/schema").text
    assert re.search(r'data-openapi-url="/schema/openapi\.json"', html)
    starter = docs.get(next(url for url in _parse(html).urls if url.endswith("/goldtrail-docs.js"))).text
    assert "SwaggerUIBundle(" in starter and "validatorUrl: null" in starter


def test_openapi_document_is_still_served_as_json(docs):
    response = docs.get("/schema/openapi.json")
    assert response.status_code == 200
    assert "json" in response.headers["content-type"]
    assert "/v1/run/{run_id}/gold-labels" in response.json()["paths"]


@pytest.mark.parametrize("path", NOT_PAGES)
def test_other_paths_under_schema_are_json_404s(docs, path):
    response = docs.get(path, follow_redirects=False)
    assert "text/html" not in response.headers.get("content-type", "")
    assert_error(response, 404, path)


def test_an_unknown_asset_and_a_wrong_method_under_schema_are_json(docs):
    bundle = next(url for url in _parse(docs.get("/schema").text).urls if url.endswith("/swagger-ui-bundle.js"))
    assert_error(docs.get(bundle.replace("swagger-ui-bundle.js", "nope.js")), 404)
    assert_error(docs.get(bundle.replace("swagger-ui-bundle.js", "..%2f..%2f..%2fapp.py")), 404)
    assert_error(docs.post("/schema"), 405)
    assert_error(docs.delete("/schema/openapi.json"), 405)


def test_real_server_serves_the_docs_page_from_itself_and_json_404s(tmp_path):
    with goldtrail_serve(tmp_path, clean_environment()) as base, httpx.Client(base_url=base) as http:
        page = http.get("/schema")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        urls = _parse(page.text).urls
        assert urls
        for url in urls:
            assert not urlsplit(url).netloc, url
            asset = http.get(url)
            assert asset.status_code == 200, url
            if url.endswith("/swagger-ui-bundle.js"):
                assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in asset.text
        assert http.get("/schema/openapi.json").json()["openapi"].startswith("3.1")
        for path in NOT_PAGES:
            assert_error(http.get(path), 404, path)
