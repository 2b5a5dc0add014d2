"""Group commit: the plain updates that arrive while earlier ones are on their way to PostgreSQL are written
together, in one autocommit statement, when those come back.

Each update becomes one event of its label, sealed by the database from the label's row (version + 1, the
row's hash as prev_hash, the chain hash in SQL) in the statement that moves the row on: one round trip for
a whole group instead of two per update, and one commit. An update the statement cannot take as it is (its
label is missing, deleted, in another run, locked by a writer, being written by a queued writer, or its
clock reading is older than the label's last event) is handed back, and its caller writes it the usual way
(storage.writes), which answers what that case deserves.

Feed order (DESIGN.md §2) holds as for every write: the statement only moves on a row whose version is the
one its own snapshot saw, so the writer it follows committed before it took a transaction id; it locks
nothing it would wait for (SKIP LOCKED), so groups never deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from projections.fold import LabelState
from service.metrics import EVENTS_APPENDED, WRITE_GROUPS, WRITE_GROUPS_FAILED
from service.storage.errors import (
    CommitOutcomeUnknown,
    DatabaseReadOnly,
    DatabaseUnavailable,
    LostRace,
    StaleConnection,
)

log = logging.getLogger(__name__)

# Groups on their way at once per process: while they travel the next updates gather. Two keep the database
# busy without holding many connections; more only make the groups smaller.
IN_FLIGHT = 2
# The most updates in one statement: enough for every connection of a busy server, small enough that one
# slow group does not hold many requests.
GROUP_SIZE = 64


class LiveUpdate(msgspec.Struct, frozen=True):
    """An update of a live label, with everything of its event but what the label's row decides (version and
    prev_hash): the hashed input around them (events.canonical.canonical_parts_v2). A group travels to the
    database as one JSON array of these (msgspec encodes it faster than the driver would dump columns)."""

    account_id: str
    label_id: str
    run_id: str
    data: str  # the event's payload, as stored
    text_value: str | None
    object_value: str | None  # JSON text, as the read model stores it
    object_value_is_partial: bool | None
    actor: str
    recorded_at: datetime
    request_id: str
    reason: str | None
    head: str
    middle: str

    @property
    def key(self) -> tuple[str, str]:
        return self.account_id, self.label_id


class AnswerLost(Exception):
    """The connection was lost while the group's statement was on its way: the update may have been
    committed. The caller looks for its event before writing it again."""


class _Waiting:
    __slots__ = ("deadline", "future", "update")

    def __init__(self, update: LiveUpdate, future: asyncio.Future, deadline: Any) -> None:
        self.update, self.future, self.deadline = update, future, deadline


# What runs one group: the updates, and the monotonic moment by which the statement must be refused.
SendGroup = Callable[[list[LiveUpdate], float], Awaitable[dict[tuple[str, str], LabelState]]]
# A request's time limit around waiting for its group (storage.database.Database.within_time_limit).
WithinTimeLimit = Callable[[Callable[[Any], Awaitable[LabelState | None]]], Awaitable[LabelState | None]]


class GroupCommit:
    """The updates of one process waiting for their group, and the groups on their way."""

    def __init__(self, send: SendGroup, within_time_limit: WithinTimeLimit) -> None:
        self._send = send
        self._within_time_limit = within_time_limit
        self._waiting: deque[_Waiting] = deque()
        self._sending = 0
        # Labels in a group on its way: a second update of one waits for the next group, as it would have to
        # wait for the row anyway (and a group must not hold one label twice).
        self._on_their_way: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Future] = set()

    async def update(self, update: LiveUpdate) -> LabelState | None:
        """The label after this update once committed, or None when the group could not take it and nothing
        of it was written. Raises DatabaseUnavailable at the request's time limit (an update still waiting is
        then never sent, and a group on its way is refused by the database past its first deadline) or when
        the database could not take the group, and AnswerLost when the outcome is unknown."""

        async def wait_for_group(deadline: Any) -> LabelState | None:
            waiting = _Waiting(update, asyncio.get_running_loop().create_future(), deadline)
            self._waiting.append(waiting)
            self._start_groups()
            return await waiting.future

        return await self._within_time_limit(wait_for_group)

    def _start_groups(self) -> None:
        while self._sending < IN_FLIGHT:
            group = self._next_group()
            if not group:
                return
            self._sending += 1
            task = asyncio.ensure_future(self._commit(group))
            self._tasks.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _next_group(self) -> list[_Waiting]:
        group: list[_Waiting] = []
        taken: set[tuple[str, str]] = set()
        held: list[_Waiting] = []
        while self._waiting and len(group) < GROUP_SIZE:
            waiting = self._waiting.popleft()
            if waiting.deadline.abandoned:
                waiting.future.cancel()  # already answered 503: never sent
                continue
            key = waiting.update.key
            if key in taken or key in self._on_their_way:
                held.append(waiting)
            else:
                taken.add(key)
                group.append(waiting)
        self._waiting.extendleft(reversed(held))
        self._on_their_way |= taken
        return group

    async def _commit(self, group: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        earliest = min(waiting.deadline.at for waiting in group)
        freed = False

        def free_the_slot() -> None:
            # At the group's first deadline the database refuses it anyway: a statement that hangs must not
            # keep the next groups from going out (on other connections).
            nonlocal freed
            if not freed:
                freed = True
                self._sending -= 1
                self._start_groups()

        timer = loop.call_at(earliest, free_the_slot)  # the loop's clock is time.monotonic()
        try:
            done = await self._send([waiting.update for waiting in group], earliest)
        except CommitOutcomeUnknown:
            WRITE_GROUPS_FAILED.labels("answer_lost").inc()
            self._settle(group, error=AnswerLost())
        except (LostRace, StaleConnection) as error:
            # Nothing of the group was written, and running it again is safe: each update goes the usual way.
            WRITE_GROUPS_FAILED.labels(_reason(error)).inc()
            log.debug("group of %d updates not written (%s): writing them one by one", len(group), error)
            self._settle(group, done={})
        except DatabaseUnavailable as error:
            # Nothing was written and the database cannot take writes now (down, read-only, or past the group's
            # deadline): each request answers 503 at once, as the usual way would, instead of trying again
            # under a time limit of its own that would start over.
            WRITE_GROUPS_FAILED.labels(_reason(error)).inc()
            self._settle(group, error=error)
        except Exception:
            # Not a database outage: a value or a defect the group statement did not expect. One update must not
            # fail the others: each goes the usual way, where only the one at fault meets the error again.
            WRITE_GROUPS_FAILED.labels("error").inc()
            log.exception("group of %d updates failed: writing them one by one", len(group))
            self._settle(group, done={})
        else:
            WRITE_GROUPS.observe(len(group))
            if done:
                EVENTS_APPENDED.labels("GoldLabelUpdated").inc(len(done))
            self._settle(group, done=done)
        finally:
            self._on_their_way -= {waiting.update.key for waiting in group}
            timer.cancel()
            free_the_slot()

    @staticmethod
    def _settle(
        group: list[_Waiting], done: dict[tuple[str, str], LabelState] | None = None, error: BaseException | None = None
    ) -> None:
        for waiting in group:
            if waiting.future.done():
                continue
            if error is not None:
                waiting.future.set_exception(error)
            else:
                waiting.future.set_result(done.get(waiting.update.key))


def _reason(error: Exception) -> str:
    if isinstance(error, LostRace):
        return "lost_race"
    if isinstance(error, StaleConnection):
        return "stale_connection"
    if isinstance(error, DatabaseReadOnly):
        return "read_only"
    return "unavailable"
