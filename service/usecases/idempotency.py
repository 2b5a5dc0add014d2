"""Idempotent retries: a write sent with an `Idempotency-Key` is done once; a retry of the same request
with the same key gets the first answer back without appending anything.

The key is claimed in the write's own transaction, before the write's events, and the answer is stored in
that same transaction: a concurrent duplicate waits on the key and then replays the stored answer, and a
write that fails leaves no claim behind (its retry is simply processed).
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from events.types import utc_now
from service.storage.sql import LabelWrites


class Idempotency(msgspec.Struct, frozen=True):
    """A request's key and a fingerprint of the request itself (what a retry must repeat exactly)."""

    key: str
    fingerprint: str
    retention_seconds: int


class StoredResponse(msgspec.Struct, frozen=True):
    """The answer a write gave, as its retry gets it back."""

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


async def claim(tx: LabelWrites, account_id: str, idempotency: Idempotency) -> None:
    """Take the key for this request, or raise to replay (same request) or refuse (another request)."""
    now = utc_now()
    earlier = await tx.claim_key(account_id, idempotency.key, idempotency.fingerprint, now)
    if earlier is None:
        return
    if earlier.claimed_at < now - timedelta(seconds=idempotency.retention_seconds):
        # Past the retention window the key is free again.
        await tx.reclaim_key(account_id, idempotency.key, idempotency.fingerprint, now)
        return
    if earlier.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused()
    answer = StoredResponse(earlier.status, (earlier.body or "").encode(), msgspec.json.decode(earlier.headers or "{}"))
    raise IdempotentReplay(answer)


async def remember(tx: LabelWrites, account_id: str, idempotency: Idempotency, answer: StoredResponse) -> None:
    headers = msgspec.json.encode(answer.headers).decode()
    await tx.remember_answer(account_id, idempotency.key, answer.status, answer.body.decode(), headers)
