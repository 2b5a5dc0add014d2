"""Signing in to the console: a bearer token with `audit:read`, checked by the API's own TokenVerifier, kept in
an HttpOnly, SameSite=Strict cookie (Secure over https) that every console request checks again.

The service keeps no sessions: the cookie holds the token itself, so signing out anywhere is clearing the
cookie, and the token's expiry ends the session. Sign-in and sign-out are POSTs that must come from the
console's own pages (Origin and Sec-Fetch-Site), and the cookie never rides on a request from another site.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar import Request
from litestar.datastructures import Cookie

from service.http.auth import AUDIT, AuthenticationFailed, Principal, TokenVerifier

COOKIE = "goldtrail_console"
PATH = "/console"
# Browsers keep cookies up to about 4 KB, name and attributes included.
MAX_TOKEN_BYTES = 3800


class SignInRequired(Exception):
    """The request carries no usable console cookie; the message says why, for the sign-in page."""


class SignInRefused(Exception):
    """A sign-in attempt that cannot succeed: an untrusted token (401) or one without audit:read (403)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CrossSiteRequest(Exception):
    """A sign-in or sign-out that did not come from the console's own pages."""


def principal_of(token: str, verifier: TokenVerifier) -> Principal:
    """Who a token signs in as; SignInRefused when it cannot be trusted or lacks audit:read."""
    if not token:
        raise SignInRefused("paste an access token to sign in", 401)
    if len(token.encode()) > MAX_TOKEN_BYTES:
        raise SignInRefused(f"this token is longer than the {MAX_TOKEN_BYTES} bytes a browser cookie can hold", 401)
    try:
        principal = verifier.verify(token)
    except AuthenticationFailed as error:
        raise SignInRefused(f"this token cannot be used: {error}", 401) from None
    if AUDIT not in principal.scopes:
        raise SignInRefused(f"this token lacks the {AUDIT!r} scope the console needs", 403)
    return principal


def signed_in(request: Request) -> Principal:
    """The auditor of a console request (also recorded for the access log); SignInRequired otherwise."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired("sign in to use the console")
    try:
        principal = principal_of(token, request.app.state.token_verifier)
    except SignInRefused as error:
        raise SignInRequired(f"{error}; sign in again") from None
    request.scope["user"] = principal
    return principal


def session_cookie(request: Request, token: str) -> Cookie:
    # No Max-Age: the cookie ends with the browser session, and every request checks the token's own expiry.
    return Cookie(
        key=COOKIE,
        value=token,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def cleared_cookie(request: Request) -> Cookie:
    return Cookie(
        key=COOKIE,
        value="",
        path=PATH,
        max_age=0,
        expires=0,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> None:
    """Refuse a POST that another site's page made: browsers send Origin and Sec-Fetch-Site with every form
    POST, and neither can be forged by a page. (SameSite=Strict already keeps the cookie off such requests;
    this also stops another site from signing a browser in under a token of its choosing.)"""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CrossSiteRequest(f"the request came from another site ({fetch_site})")
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            raise CrossSiteRequest(f"the request came from {origin[:100]}, not from {own}")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page of this site only (never another host)."""
    default = f"{PATH}/runs"
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PATH}/") or "\\" in target:
        return default
    return target
