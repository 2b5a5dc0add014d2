"""Hot standbys (PostgreSQL streaming replicas) for auditors' reads: which standby is up and how far behind,
the commit positions (WAL LSNs) that give read-your-writes, and the fallback to the primary.

Each process checks its standbys in the background (one cheap query on each and one on the primary, every
GOLDTRAIL_REPLICA_CHECK_SECONDS), so choosing a standby for a request costs no query. A request that names a
position waits, on the standby's own connection and for a bounded time, until the standby has replayed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import psycopg
from sqlalchemy.engine import make_url

from service.metrics import READS, REPLICA_LAG_BYTES, REPLICA_LAG_SECONDS, REPLICA_SKIPS, REPLICA_UP
from service.settings import Settings
from service.storage.database import Database, Deadline
from service.storage.errors import DatabaseUnavailable
from service.storage.sql import Reads

logger = logging.getLogger("goldtrail.replicas")
T = TypeVar("T")

# WAL positions as plain integers (bytes since the start of WAL), so they compare and travel as numbers.
_FLUSHED = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint"
_STANDBY = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
_REPLAYED = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
# Long enough to judge the lag of a standby up to a minute (or max lag, if longer) behind.
_KEEP_SAMPLES_SECONDS = 60.0
PRIMARY = "primary"


class NotReplayedYet(Exception):
    """The standby had not replayed the position a read asked for within the wait."""


def recovery_conflict(error: BaseException | None) -> bool:
    """A standby cancelled a read (or closed its connection) because replaying the primary's WAL needed what
    the read held: SQLSTATE 40001 'conflict with recovery'. Worth retrying; not an outage."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, psycopg.Error) and (error.sqlstate == "40001" or "conflict with recovery" in str(error)):
            return True
        error = error.__cause__ or getattr(error, "orig", None) or error.__context__
    return False


def database_name(url: str) -> str:
    """How metrics and logs name a database: host:port/dbname, never its user or password."""
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


async def _scalar(reads: Reads, sql: str) -> Any:
    row = await reads._one(sql, {})  # the backend's one-row primitive, for these few statements
    return None if row is None else row[0] if len(row) == 1 else tuple(row)


class Standby:
    """One standby and what the last check found."""

    def __init__(self, url: str, db: Database) -> None:
        self.name = database_name(url)
        self.db = db
        self.up = False
        self.replayed = 0  # the WAL position it had replayed at the last check
        self.lag_seconds = math.inf
        self.problem = "not checked yet"

    def down(self, problem: str) -> None:
        if self.up:
            logger.warning("standby %s skipped: %s", self.name, problem)
        self.up, self.problem, self.lag_seconds = False, problem, math.inf
        REPLICA_UP.labels(self.name).set(0)


class Replicas:
    """The primary and its standbys; `route(position)` gives the reads of one request."""

    def __init__(self, primary: Database, standbys: list[Standby], settings: Settings) -> None:
        self.primary = primary
        self.standbys = standbys
        self.max_lag = settings.replica_max_lag_seconds
        self.wait_seconds = settings.replica_wait_seconds
        self.check_seconds = settings.replica_check_seconds
        # A check must not hang on a frozen standby: it gives up well within the interval.
        self.check_timeout = min(settings.db_timeout_seconds, max(0.5, settings.replica_check_seconds))
        self._samples: deque[tuple[float, int]] = deque()  # (monotonic time, the primary's flushed position)
        self._turn = itertools.count()
        self._task: asyncio.Task | None = None
        self._next: asyncio.Future | None = None  # the flushed-position query callers may still join
        self._in_flight: asyncio.Future | None = None  # the one already sent

    @classmethod
    def connect(cls, settings: Settings, primary: Database) -> Replicas | None:
        """The standbys of GOLDTRAIL_READ_REPLICA_URLS (None when there are none), each with its own pool."""
        if not settings.read_replica_urls:
            return None
        standbys = [
            Standby(url, Database.connect(msgspec.structs.replace(settings, database_url=url)))
            for url in settings.read_replica_urls
        ]
        return cls(primary, standbys, settings)

    # Checking the standbys ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check once (so the first requests already know), then keep checking in the background."""
        await self.check()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for standby in self.standbys:
            await standby.db.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:  # a check that fails must not end the checking; the next one may succeed
                logger.exception("checking the standbys failed")

    async def _bounded(self, work: Awaitable[T]) -> T:
        """`work` within the check's time limit; left behind (not cancelled: see Database.within_time_limit)
        when it hangs."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.check_timeout)
        if not done:
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            raise DatabaseUnavailable(f"no answer within {self.check_timeout:g}s")
        return task.result()

    async def check(self) -> None:
        """One round: the primary's flushed position, then each standby's replayed position and lag."""
        with contextlib.suppress(Exception):
            flushed = await self._bounded(self.primary.run_read(lambda reads: _scalar(reads, _FLUSHED)))
            now = time.monotonic()
            self._samples.append((now, flushed))
            keep = max(_KEEP_SAMPLES_SECONDS, 2 * self.max_lag)
            while len(self._samples) > 2 and self._samples[0][0] < now - keep:
                self._samples.popleft()
        await asyncio.gather(*(self._check(standby) for standby in self.standbys))

    async def _check(self, standby: Standby) -> None:
        try:
            recovering, replayed = await self._bounded(standby.db.run_read(lambda reads: _scalar(reads, _STANDBY)))
        except Exception as error:
            standby.down(f"unreachable ({str(error).strip().splitlines()[0] if str(error).strip() else error!r})")
            return
        if not recovering or replayed is None:
            standby.down("not a standby (not in recovery)")
            return
        standby.replayed = replayed
        standby.lag_seconds = self.lag(replayed)
        REPLICA_LAG_SECONDS.labels(standby.name).set(standby.lag_seconds)
        if self._samples:
            REPLICA_LAG_BYTES.labels(standby.name).set(max(0, self._samples[-1][1] - replayed))
        if standby.lag_seconds > self.max_lag:
            standby.down(f"{standby.lag_seconds:.1f}s behind the primary (GOLDTRAIL_REPLICA_MAX_LAG_SECONDS)")
            return
        if not standby.up:
            logger.info("standby %s serves reads", standby.name)
        standby.up, standby.problem = True, ""
        REPLICA_UP.labels(standby.name).set(1)

    def lag(self, replayed: int) -> float:
        """How long ago the primary first had WAL beyond `replayed` (0 when the standby has all the checks saw).
        Unlike now() - pg_last_xact_replay_timestamp(), this does not grow while the primary is idle."""
        now = time.monotonic()
        for moment, flushed in self._samples:
            if flushed > replayed:
                return now - moment
        return 0.0

    # Choosing where a request reads -------------------------------------------------------------------

    def route(self, position: int | None) -> ReadRoute:
        return ReadRoute(self, position)

    def candidates(self) -> list[Standby]:
        """The standbys that serve reads now, in turn (round robin), with the others counted as skipped."""
        up = []
        for standby in self.standbys:
            if standby.up:
                up.append(standby)
            else:
                REPLICA_SKIPS.labels(standby.name, "lagging" if "behind" in standby.problem else "down").inc()
        if len(up) > 1:
            turn = next(self._turn) % len(up)
            up = up[turn:] + up[:turn]
        return up

    async def flushed(self) -> int:
        """The primary's flushed WAL position, read after this call: after a COMMIT, at or past that commit.

        Concurrent callers share one query, as long as it is sent after each of them called: at most one
        query is in flight, and the callers that come meanwhile wait for the next one together (under load,
        one round trip answers many writes)."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._read_flushed(self._in_flight))
        return await asyncio.shield(self._next)

    async def _read_flushed(self, before: asyncio.Future | None) -> int:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        # Sent from here on: later callers wait for the next query.
        self._in_flight, self._next = self._next, None
        return await self.primary.run_read(lambda reads: _scalar(reads, _FLUSHED))


async def _wait_for(reads: Reads, position: int, seconds: float) -> None:
    """Return once the standby has replayed `position`; NotReplayedYet after `seconds`."""
    give_up = time.monotonic() + seconds
    pause = 0.001
    while (await _scalar(reads, _REPLAYED) or 0) < position:
        if time.monotonic() >= give_up:
            raise NotReplayedYet(f"the standby had not replayed position {position} within {seconds:g}s")
        await asyncio.sleep(min(pause, max(0.0, give_up - time.monotonic())))
        pause = min(pause * 2, 0.02)


class ReadRoute:
    """The reads of one request, with the read methods of storage.database.Database: on a standby that is up
    (and has replayed `position`, when given), else on the primary. A standby that fails is marked down and
    the read runs again elsewhere, so a standby going away costs no request an error."""

    def __init__(self, replicas: Replicas, position: int | None) -> None:
        self.replicas = replicas
        self.position = position
        self.primary = replicas.primary
        self.backend, self.dialect = self.primary.backend, self.primary.dialect

    async def within_time_limit(self, attempt: Callable[[Deadline], Awaitable[T]]) -> T:
        return await self.replicas.primary.within_time_limit(attempt)

    async def run_read(self, work: Callable[[Reads], Awaitable[T]]) -> T:
        position, wait = self.position, self.replicas.wait_seconds

        async def when_replayed(reads: Reads) -> T:
            await _wait_for(reads, position, wait)
            return await work(reads)

        for standby in self.replicas.candidates():
            needs_wait = position is not None and standby.replayed < position
            try:
                found = await standby.db.run_read(when_replayed if needs_wait else work)
            except NotReplayedYet:
                REPLICA_SKIPS.labels(standby.name, "behind_token").inc()
                break  # waiting on a second standby would double the wait: the primary has it all
            except DatabaseUnavailable as error:
                standby.down(f"a read failed ({error})")
                continue
            except Exception as error:
                if not recovery_conflict(error):
                    raise
                REPLICA_SKIPS.labels(standby.name, "conflict").inc()
                continue
            READS.labels(standby.name).inc()
            return found
        READS.labels(PRIMARY).inc()
        return await self.replicas.primary.run_read(work)

    @asynccontextmanager
    async def read(self, *, transaction: bool = True, snapshot: bool = False) -> AsyncIterator[Reads]:
        """One connection for a longer read, on a standby when one is up, else on the primary. Nothing here can
        move a read that is under way: long reads page with run_read instead (see usecases.audit)."""
        for standby in self.replicas.candidates():
            if self.position is not None and standby.replayed < self.position:
                REPLICA_SKIPS.labels(standby.name, "behind_token").inc()
                continue
            try:
                opened = standby.db.read(transaction=transaction, snapshot=snapshot)
                reads = await opened.__aenter__()
            except DatabaseUnavailable as error:
                standby.down(f"a read failed ({error})")
                continue
            READS.labels(standby.name).inc()
            try:
                yield reads
            except BaseException as error:
                if not await opened.__aexit__(type(error), error, error.__traceback__):
                    raise
            else:
                await opened.__aexit__(None, None, None)
            return
        READS.labels(PRIMARY).inc()
        async with self.replicas.primary.read(transaction=transaction, snapshot=snapshot) as reads:
            yield reads
