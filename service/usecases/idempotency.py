"""Idempotent retries: a write sent with an `Idempotency-Key` is done once; a retry of the same
request with the same key gets the first answer back without appending anything.

The key is claimed in the write's own transaction, before anything else is written, and the answer
is stored in that same transaction: a concurrent duplicate waits on the key's row and then replays
the stored answer, and a write that fails leaves no claim behind (its retry is simply processed).
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import msgspec
import sqlalchemy as sa

from events.schema import UTCDateTime, metadata, stored_time
from events.types import utc_now
from service.http.bodies import InvalidInput
from service.storage.store import SqlTransaction

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("headers", sa.Text, nullable=True),
)

_VALID_KEY = re.compile(r"^[!-~]{1,255}$")


class Idempotency(msgspec.Struct, frozen=True):
    key: str
    fingerprint: str
    retention_seconds: int


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    headers: dict[str, str]


class IdempotentReplay(Exception):
    """This request was already done under its key: answer with what was answered then."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("replayed")
        self.response = response


class IdempotencyKeyReused(Exception):
    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used for a different request (method, path or body): use a new key"
        )


def idempotency_for(key: str, method: str, path: str, body: bytes, retention_seconds: int) -> Idempotency:
    if not _VALID_KEY.match(key):
        raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters", "Idempotency-Key")
    fingerprint = hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()
    return Idempotency(key=key, fingerprint=fingerprint, retention_seconds=retention_seconds)


_CLAIM = (
    "INSERT INTO idempotency_keys (account_id, key, fingerprint, created_at)"
    " VALUES (:account_id, :key, :fingerprint, :created_at) ON CONFLICT DO NOTHING RETURNING key"
)
_EARLIER = (
    "SELECT fingerprint, created_at, status, body, headers FROM idempotency_keys"
    " WHERE account_id = :account_id AND key = :key"
)
_RECLAIM = (
    "UPDATE idempotency_keys SET fingerprint = :fingerprint, created_at = :created_at, status = NULL, body = NULL,"
    " headers = NULL WHERE account_id = :account_id AND key = :key"
)
_REMEMBER = (
    "UPDATE idempotency_keys SET status = :status, body = :body, headers = :headers"
    " WHERE account_id = :account_id AND key = :key"
)


async def claim(tx: SqlTransaction, account_id: str, idempotency: Idempotency) -> None:
    """Take the key for this request, or raise to replay (same request) or refuse (another request).

    On PostgreSQL a concurrent claim of the same key waits here for the first one's transaction.
    """
    now = utc_now()
    key = {"account_id": account_id, "key": idempotency.key}
    if await tx.fetchone(_CLAIM, {**key, "fingerprint": idempotency.fingerprint, "created_at": now}):
        return
    fingerprint, created_at, status, body, headers = await tx.fetchone(tx.for_update(_EARLIER), key)
    if stored_time(created_at) < now - timedelta(seconds=idempotency.retention_seconds):
        # Past the retention window the key is free again.
        await tx.execute(_RECLAIM, {**key, "fingerprint": idempotency.fingerprint, "created_at": now})
        return
    if fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused()
    raise IdempotentReplay(StoredResponse(status=status, body=body.encode(), headers=msgspec.json.decode(headers)))


async def remember(tx: SqlTransaction, account_id: str, idempotency: Idempotency, response: StoredResponse) -> None:
    await tx.execute(
        _REMEMBER,
        {
            "account_id": account_id,
            "key": idempotency.key,
            "status": response.status,
            "body": response.body.decode(),
            "headers": msgspec.json.encode(response.headers).decode(),
        },
    )
