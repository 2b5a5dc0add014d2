"""How a write gets committed when other writers race it and connections fail: the policy, apart from the
rules of any use case.

A write is optimistic first (no lock, one statement: half the CPU) unless it claims an Idempotency-Key
(whose claim decides the rest) or its label lost a race lately; after a lost race it runs again queued
behind the label's other writers. A write whose COMMIT answer was lost is looked up; one that met a stale
connection before committing runs again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.metrics import EVENTS_APPENDED
from service.storage.database import Database
from service.storage.errors import CommitOutcomeUnknown, LostRace, StaleConnection
from service.storage.sql import LabelWrites

T = TypeVar("T")

# How often a write is run again after losing a race or a connection before anything was committed.
ATTEMPTS = 5


class Contention:
    """Labels that lost a race between writers lately, in this process. Many writers on one label make most
    optimistic writes lose, and each loss costs two round trips, so such a label is queued for first."""

    def __init__(self, seconds: float = 1.0, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self._until: dict[tuple[str, str], float] = {}

    def lately(self, key: tuple[str, str]) -> bool:
        until = self._until.get(key)
        return until is not None and time.monotonic() < until

    def note(self, key: tuple[str, str]) -> None:
        if len(self._until) >= self.size:
            self._until.clear()  # a bound, not a cache: forgetting only costs one more lost race
        self._until[key] = time.monotonic() + self.seconds


CONTENDED = Contention()


class KeptLosing(Exception):
    """A write lost every attempt to concurrent writers or failing connections."""


async def commit(
    db: Database,
    work: Callable[[LabelWrites], Awaitable[T]],
    *,
    label: tuple[str, str] | None = None,
    optimistic: bool = True,
    after_lost_race: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run `work` in a write transaction until it commits, and return what it returned.

    `label` (account, label id) is the label the work changes, for the contention memory; `optimistic`
    allows the first attempt to be optimistic. After a lost race `after_lost_race` runs (it may raise, e.g.
    when If-Match can no longer hold) and the work runs again, queued.
    """
    for attempt in range(ATTEMPTS):
        first_try = optimistic and attempt == 0 and (label is None or not CONTENDED.lately(label))
        try:
            committed, result = await _once(db, work, optimistic=first_try)
        except LostRace:
            if label is not None:
                CONTENDED.note(label)
            if after_lost_race is not None:
                await after_lost_race()
            continue
        if committed:
            return result
    raise KeptLosing(f"the write lost {ATTEMPTS} times to concurrent writers or failing connections")


async def _once(db: Database, work: Callable[[LabelWrites], Awaitable[T]], *, optimistic: bool) -> tuple[bool, T]:
    """One try: (True, its result) once committed; (False, …) when it certainly did not commit and may run again."""
    tried: LabelWrites | None = None
    result = None

    async def attempt(tx: LabelWrites) -> T:
        nonlocal tried, result
        tried, result = tx, await work(tx)
        return result

    try:
        result = await db.run_write(attempt, optimistic=optimistic)
    except CommitOutcomeUnknown:
        appended = [] if tried is None else tried.appended
        if not appended or not await db.run_read(lambda reads: reads.has_events(appended)):
            return False, result  # it did not commit, and the database answers again
    except StaleConnection:
        return False, result  # nothing was committed; older pooled connections are being replaced
    for event in tried.appended:
        EVENTS_APPENDED.labels(event.type).inc()
    return True, result
