"""Read-your-writes over hot standbys: the `Goldtrail-Consistency` token every write answers (the primary's
flushed WAL position after its COMMIT, encrypted), and where a request's reads go.

A token is opaque: the position is sealed with ChaCha20-Poly1305 under a key every server of a deployment
derives alike, because a raw WAL position is a global counter whose gaps would show an account how much
every other account writes. A token that does not open (another deployment's, mangled) is no error: the
primary, which has every write, answers the read.
"""

from __future__ import annotations

import base64
import logging
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from litestar import Request

from service.settings import Settings
from service.storage.database import Database
from service.storage.replicas import ReadRoute, Replicas

HEADER = "Goldtrail-Consistency"
_HEADER_BYTES = HEADER.lower().encode()
_WRITES = frozenset({"POST", "PUT", "DELETE"})
_PREFIX = "1."
logger = logging.getLogger("goldtrail.consistency")


class Tokens:
    """Seals and opens consistency tokens."""

    def __init__(self, settings: Settings) -> None:
        secret = _deployment_secret(settings)
        if secret is None:
            # Tokens then open only in this process: reads elsewhere go to the primary (correct, but slower).
            logger.warning(
                "no GOLDTRAIL_JWT_SECRET or GOLDTRAIL_CHECKPOINT_KEY to derive consistency tokens from: each server "
                "process makes its own key, so a token sent to another process is read on the primary"
            )
            secret = os.urandom(32)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"goldtrail consistency token v1")
        self._aead = ChaCha20Poly1305(key.derive(secret))

    def seal(self, position: int) -> str:
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, struct.pack(">Q", position), None)
        return _PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, token: str | None) -> int | None:
        """The position a token names; None for no token or one that does not open here."""
        if not token or not token.startswith(_PREFIX) or len(token) > 100:
            return None
        text = token[len(_PREFIX) :].strip()
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return struct.unpack(">Q", self._aead.decrypt(sealed[:12], sealed[12:], None))[0]
        except (ValueError, InvalidTag, struct.error):
            return None


def _deployment_secret(settings: Settings) -> bytes | None:
    """Secret material every server of one deployment shares: its HMAC token secret, else its checkpoint key."""
    if settings.jwt_secret:
        return settings.jwt_secret.encode()
    if settings.checkpoint_key_file is not None:
        try:
            return settings.checkpoint_key_file.read_bytes()
        except OSError:
            return None
    return None


def reads_for(request: Request, *, any_database: bool = True) -> Database | ReadRoute:
    """Where this request reads. Auditors' reads (`any_database`) go to a standby that is up, or to the
    primary; the documented label reads stay on the primary unless the request sends a consistency token,
    which lets a standby that has replayed it answer. Without standbys: the primary, always."""
    state = request.app.state
    replicas: Replicas | None = state.replicas
    if replicas is None:
        return state.db
    position = state.tokens.open(request.headers.get(HEADER))
    if not any_database and position is None:
        return state.db
    return replicas.route(position)


def with_token(app, scope, send):
    """`send`, adding a consistency token to the answer of every write that succeeded (2xx)."""
    replicas: Replicas | None = app.state.replicas
    if replicas is None or scope.get("method") not in _WRITES or not scope.get("path", "").startswith("/v1/"):
        return send
    tokens: Tokens = app.state.tokens

    async def send_with_token(message) -> None:
        if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
            try:
                position = await replicas.flushed()
            except Exception:  # the write is committed: answer it, without a token
                logger.warning("no consistency token for a committed write: the primary did not answer", exc_info=True)
            else:
                message["headers"] = [*message.get("headers", ()), (_HEADER_BYTES, tokens.seal(position).encode())]
        await send(message)

    return send_with_token
