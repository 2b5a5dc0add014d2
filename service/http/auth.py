"""Bearer-token authentication (PyJWT) and scope guards: who the caller is and what they may do.

The user is the `sub` claim and the account the configured account claim; nothing in a request
body can set either. Keys are an HS256 secret, or PEM public keys / a JWKS file for RS256, ES256
and EdDSA, never both (so an HMAC token can never be checked against public key bytes).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from service.settings import Settings, SettingsError

READ = "gold_labels:read"
WRITE = "gold_labels:write"
AUDIT = "audit:read"
# A witness hands back its cosignatures of the account's checkpoints (and reads what audit:read reads of the log).
WITNESS = "audit:witness"
# A token that names no scopes at all may use the documented API, but never the audit routes.
DEFAULT_SCOPES = frozenset({READ, WRITE})
MAX_IDENTITY_LENGTH = 255
_VERIFIED_TOKENS = 10_000
_REVERIFY_SECONDS = 300.0


class Principal(msgspec.Struct, frozen=True):
    user: str
    account: str
    scopes: frozenset[str]


class AuthenticationFailed(Exception):
    """The token is missing or cannot be trusted; the message says why, without echoing the token."""


_PEM_BLOCK = re.compile(r"-----BEGIN (?:RSA )?PUBLIC KEY-----.+?-----END (?:RSA )?PUBLIC KEY-----", re.S)
# Which kind of key each algorithm family verifies with; a key of another kind is never tried.
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "HS": (str,),
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey),
}


def _pem_keys(path: Path) -> list:
    """Every public key in a PEM file (a file may hold several, e.g. during key rotation)."""
    blocks = _PEM_BLOCK.findall(path.read_text())
    if not blocks:
        raise SettingsError(f"{str(path)!r} holds no PEM public key ('-----BEGIN PUBLIC KEY-----')")
    try:
        return [load_pem_public_key(block.encode()) for block in blocks]
    except ValueError as error:
        raise SettingsError(f"{str(path)!r} holds a PEM block that is not a usable public key: {error}") from None


def _jwks_keys(path: Path) -> list[tuple[str | None, object]]:
    try:
        jwks = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
    except (ValueError, jwt.PyJWTError) as error:
        raise SettingsError(f"{str(path)!r} is not a usable JWKS file: {error}") from None
    return [(jwk.key_id, jwk.key) for jwk in jwks.keys]


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._account_claim = settings.account_claim
        # token -> (principal, time until which it needs no new check): a signature check costs more than
        # the rest of authentication, and clients reuse a few tokens
        self._verified: dict[str, tuple[Principal, float]] = {}
        # (kid or None, key) pairs; a token with a kid is checked against that key only.
        self._keys: list[tuple[str | None, object]] = []
        if settings.jwt_secret is not None:
            self._keys.append((None, settings.jwt_secret))
        for path in settings.jwt_public_key_files:
            self._keys.extend((None, key) for key in _pem_keys(path))
        if settings.jwt_jwks_file is not None:
            self._keys.extend(_jwks_keys(settings.jwt_jwks_file))

    def _candidates(self, header: dict, algorithm: str) -> list[object]:
        kid = header.get("kid")
        keys = self._keys
        if kid is not None and any(key_id is not None for key_id, _ in keys):
            keys = [(key_id, key) for key_id, key in keys if key_id == kid]
            if not keys:
                raise AuthenticationFailed("token is signed with an unknown key id (kid)")
        fitting = _KEY_TYPES.get(algorithm[:2], ())
        return [key for _, key in keys if isinstance(key, fitting)]

    def verify(self, token: str) -> Principal:
        """The token's principal; a token verified before is not verified again until it expires."""
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known[1]:
            return known[0]
        principal, expires = self._verify(token)
        if len(self._verified) >= _VERIFIED_TOKENS:
            self._verified.clear()  # a crude bound: clients reuse a few tokens, attackers' tokens never verify
        # Until the earlier of its expiry (as PyJWT would judge it) and a few minutes from now.
        self._verified[token] = (principal, min(expires + self._leeway, now + _REVERIFY_SECONDS))
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthenticationFailed(
                f"token algorithm {str(algorithm)[:20]!r} is not accepted; use {', '.join(self._algorithms)}"
            )
        claims = None
        for key in self._candidates(header, algorithm):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=self._algorithms,
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
                )
                break
            except (jwt.InvalidSignatureError, jwt.InvalidKeyError, jwt.InvalidAlgorithmError):
                continue
            except jwt.ExpiredSignatureError:
                raise AuthenticationFailed("token has expired; get a new one") from None
            except jwt.ImmatureSignatureError:
                raise AuthenticationFailed("token is not valid yet (nbf or iat is in the future)") from None
            except jwt.InvalidAudienceError:
                raise AuthenticationFailed("token audience (aud) is not this service") from None
            except jwt.InvalidIssuerError:
                raise AuthenticationFailed("token issuer (iss) is not trusted") from None
            except jwt.MissingRequiredClaimError as error:
                raise AuthenticationFailed(f"token has no {error.claim!r} claim") from None
            except jwt.PyJWTError:
                raise AuthenticationFailed("bearer token is not a well-formed JWT") from None
        if claims is None:
            raise AuthenticationFailed("token signature does not match any trusted key")
        principal = Principal(
            user=self._identity(claims, "sub"),
            account=self._identity(claims, self._account_claim),
            scopes=_scopes(claims),
        )
        return principal, float(claims["exp"])

    @staticmethod
    def _identity(claims: dict, name: str) -> str:
        value = claims.get(name)
        if not isinstance(value, str) or not value.strip():
            raise AuthenticationFailed(f"token has no {name!r} claim (a non-empty string)")
        if len(value) > MAX_IDENTITY_LENGTH:
            raise AuthenticationFailed(f"token claim {name!r} is longer than {MAX_IDENTITY_LENGTH} characters")
        if "\x00" in value:
            raise AuthenticationFailed(f"token claim {name!r} contains U+0000")
        return value


def _scopes(claims: dict) -> frozenset[str]:
    if "scope" not in claims and "scp" not in claims:
        return DEFAULT_SCOPES
    granted: set[str] = set()
    for claim in (claims.get("scope"), claims.get("scp")):
        if isinstance(claim, str):
            granted.update(claim.split())
        elif isinstance(claim, list):
            granted.update(item for item in claim if isinstance(item, str))
    return frozenset(granted)


def mint_token(
    secret: str, *, user: str, account: str, account_claim: str, scopes: str | None, ttl_seconds: int, now: int
) -> str:
    claims: dict[str, object] = {"sub": user, account_claim: account, "iat": now, "exp": now + ttl_seconds}
    if scopes is not None:
        claims["scope"] = scopes
    return jwt.encode(claims, secret, algorithm="HS256")


def challenge(message: str) -> NotAuthorizedException:
    return NotAuthorizedException(
        detail=message, headers={"WWW-Authenticate": 'Bearer realm="goldtrail", error="invalid_token"'}
    )


def _authorization(connection: ASGIConnection) -> str | None:
    """The request's one Authorization header. Two are ambiguous credentials (proxies and frameworks
    disagree on which one wins), so they are refused whatever they hold, even the same token twice.
    Read from the raw ASGI headers: the parsed headers would hand back only the first one."""
    found: bytes | None = None
    for name, value in connection.scope["headers"]:
        if name.lower() == b"authorization":
            if found is not None:
                raise challenge("the request has more than one Authorization header: send exactly one")
            found = value
    return None if found is None else found.decode("latin-1")


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        verifier: TokenVerifier = connection.app.state.token_verifier
        header = _authorization(connection)
        if not header:
            raise NotAuthorizedException(
                detail="missing bearer token: send 'Authorization: Bearer <JWT>'",
                headers={"WWW-Authenticate": 'Bearer realm="goldtrail"'},
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise challenge("the Authorization header must be 'Bearer <JWT>'")
        try:
            principal = verifier.verify(token.strip())
        except AuthenticationFailed as error:
            raise challenge(str(error)) from None
        return AuthenticationResult(user=principal, auth=None)


def requires(scope: str, *alternatives: str) -> Callable[[ASGIConnection, BaseRouteHandler], Awaitable[None]]:
    """A guard that lets a token through when it has `scope` (or one of the `alternatives`)."""
    accepted = frozenset((scope, *alternatives))
    wanted = " or ".join(repr(name) for name in (scope, *alternatives))

    # async, so Litestar calls it inline instead of handing it to a thread pool on every request
    async def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        if not accepted & connection.user.scopes:
            raise PermissionDeniedException(detail=f"this token lacks the {wanted} scope")

    guard.__name__ = f"requires_{scope.replace(':', '_')}"
    return guard
