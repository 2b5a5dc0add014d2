"""The storage contract, exercised directly through `Database` on every backend (one suite, as the
`eventsourcing` library runs one suite against each of its recorders): writes through `LabelWrites` on the
locking and the optimistic path, reads through `Reads`, operator transactions through `Maintenance`, and
the one error vocabulary of storage.errors. Values, orders and error types are asserted; nothing is mocked.

Tests of one account's data work on the run's shared database in an account of their own; tests of the
whole log (counts, scans, the read model's replacement) get a database of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from events import feed
from events.chain import seal
from events.feed import START, FeedPoint
from events.types import (
    GENESIS_HASH,
    Event,
    GoldLabelCreated,
    GoldLabelDeleted,
    GoldLabelUpdated,
    PendingEvent,
    RecordedEvent,
    SealedEvent,
    format_time,
    utc_now,
)
from projections.fold import LabelState, apply, fold
from projections.replay import replay
from service.storage.database import Database
from service.storage.errors import LostRace, OutputResourceTaken
from service.storage.sql import EarlierClaim, LabelWrites, Reads
from tests.helpers import make_settings, new_account

pytestmark = pytest.mark.anyio

BEGINNING = FeedPoint.parse(START)
EMPTY_DIGEST = hashlib.sha256(b"").hexdigest()
# On PostgreSQL the feed shows a transaction once every transaction older than it has ended, anywhere in
# the cluster (see events.feed): reads that must see everything wait this long at most.
FEED_PATIENCE_SECONDS = 10.0
WRITE_PATHS = pytest.mark.parametrize("optimistic", [False, True], ids=["locking", "optimistic"])


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def db(database_url, tmp_path) -> AsyncIterator[Database]:
    """The store on the run's shared database of this backend."""
    store = Database.connect(make_settings(database_url, tmp_path))
    yield store
    await store.close()


@pytest.fixture
async def own_db(backend, fresh_database, tmp_path) -> AsyncIterator[Database]:
    """The store on a database of the test's own: the whole log is the test's."""
    store = Database.connect(make_settings(fresh_database(backend), tmp_path))
    yield store
    await store.close()


@pytest.fixture
def account() -> str:
    return new_account("store")


# --- writing events the way the use cases do: append, fold, save the row --------------------------------


def pending(
    state: LabelState | None,
    data: Event,
    *,
    account: str | None = None,
    label_id: str | None = None,
    run_id: str | None = None,
    at: datetime | None = None,
    actor: str = "alice",
    reason: str | None = None,
) -> PendingEvent:
    """The event that follows `state` (or creates a label, when there is none)."""
    return PendingEvent(
        account_id=state.account_id if state else account,
        stream_id=state.id if state else (label_id or str(uuid.uuid4())),
        version=state.version + 1 if state else 1,
        run_id=state.run_id if state else (data.run_id if isinstance(data, GoldLabelCreated) else run_id),
        data=data,
        actor=actor,
        recorded_at=at or utc_now(),
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        reason=reason,
        prev_hash=state.hash if state else GENESIS_HASH,
    )


def sealed(event: PendingEvent) -> SealedEvent:
    return SealedEvent(**msgspec.structs.asdict(event), hash=seal(event)[1])


async def record(db: Database, state: LabelState | None, event: PendingEvent, *, optimistic: bool = False):
    """Append one event and fold it into the read model, in one write; the label after it."""

    async def write(tx: LabelWrites) -> LabelState:
        new_state = apply(state, await tx.append(event))
        await tx.save_label(new_state)
        return new_state

    return await db.run_write(write, optimistic=optimistic)


async def create(
    db: Database, account: str, run_id: str, name: str | None = None, *, optimistic: bool = False, **fields
) -> LabelState:
    at = fields.pop("at", None)
    data = GoldLabelCreated(run_id=run_id, output_resource_name=name or f"out-{uuid.uuid4().hex[:6]}", **fields)
    return await record(db, None, pending(None, data, account=account, at=at), optimistic=optimistic)


async def change(db: Database, state: LabelState, data: Event, *, optimistic: bool = False, **kwargs) -> LabelState:
    return await record(db, state, pending(state, data, **kwargs), optimistic=optimistic)


async def read(db: Database, work):
    return await db.run_read(work)


async def all_of(batches: AsyncIterator[list]) -> list:
    return [item async for batch in batches for item in batch]


async def collected(items: AsyncIterator) -> list:
    return [item async for item in items]


async def final_feed(db: Database, account: str | None, count: int) -> list[tuple[FeedPoint, RecordedEvent]]:
    """The feed (of one account, or of all) once it holds `count` events (see FEED_PATIENCE_SECONDS)."""
    deadline = asyncio.get_running_loop().time() + FEED_PATIENCE_SECONDS
    while True:
        page = await read(db, lambda reads: reads.feed_page(account, BEGINNING, 1000))
        if len(page) >= count or asyncio.get_running_loop().time() > deadline:
            assert len(page) == count, [(point, event.stream_id, event.version) for point, event in page]
            return page
        await asyncio.sleep(0.05)


def run() -> str:
    return str(uuid.uuid4())


# --- labels -------------------------------------------------------------------------------------------


@WRITE_PATHS
async def test_a_written_label_and_its_event_read_back_exactly(db, account, optimistic):
    run_id = run()
    state = await create(db, account, run_id, "summary", text_value="The cat sat.", optimistic=optimistic)
    assert await read(db, lambda reads: reads.label(account, state.id)) == state
    (event,) = await read(db, lambda reads: reads.stream(account, state.id))
    assert isinstance(event, RecordedEvent) and event.position >= 1
    assert fold([event]) == state
    assert event.data == GoldLabelCreated(run_id=run_id, output_resource_name="summary", text_value="The cat sat.")
    assert (event.account_id, event.stream_id, event.version, event.run_id) == (account, state.id, 1, run_id)
    assert (event.actor, event.prev_hash, event.hash) == ("alice", GENESIS_HASH, state.hash)


async def test_times_round_trip_to_the_microsecond_in_utc(db, account):
    india = timezone(timedelta(hours=5, minutes=30))
    created_at = datetime(2031, 2, 3, 4, 5, 6, 789012, tzinfo=india)
    updated_at = datetime(2031, 2, 3, 4, 5, 6, 789013, tzinfo=india)
    deleted_at = datetime(2031, 2, 3, 23, 59, 59, 999999, tzinfo=UTC)
    first = await create(db, account, run(), at=created_at)
    second = await change(db, first, GoldLabelUpdated(text_value="t"), at=updated_at)
    await change(db, second, GoldLabelDeleted(), at=deleted_at)
    stored = await read(db, lambda reads: reads.label(account, first.id))
    events = await read(db, lambda reads: reads.stream(account, first.id))
    times = [stored.created_at, stored.updated_at, stored.deleted_at, *(event.recorded_at for event in events)]
    assert times == [created_at, updated_at, deleted_at, created_at, updated_at, deleted_at]
    assert all(moment.utcoffset() == timedelta(0) for moment in times)
    assert [moment.microsecond for moment in times] == [789012, 789013, 999999, 789012, 789013, 999999]
    assert format_time(stored.created_at) == "2031-02-02T22:35:06.789012Z"


async def test_object_values_are_stored_byte_for_byte(db, account):
    value = b'{"z":1,"a":0.10,"big":123456789012345678901234567890,"tiny":1E-400,"s":"\\u00e9\\n","k":[]}'
    state = await create(db, account, run(), object_value=msgspec.Raw(value), object_value_is_partial=True)
    stored = await read(db, lambda reads: reads.label(account, state.id))
    (event,) = await read(db, lambda reads: reads.stream(account, state.id))
    assert bytes(stored.object_value) == value and stored.object_value_is_partial is True
    assert bytes(event.data.object_value) == value
    changed = await change(db, stored, GoldLabelUpdated(object_value=msgspec.Raw(b'{"b":2, "a":1}')))
    assert bytes((await read(db, lambda reads: reads.label(account, state.id))).object_value) == b'{"b":2, "a":1}'
    assert changed.object_value_is_partial is None and changed.text_value is None


async def test_an_unknown_account_sees_nothing(db, account):
    run_id = run()
    state = await create(db, account, run_id, "named")
    await final_feed(db, account, 1)
    stranger = new_account("stranger")
    (event,) = await read(db, lambda reads: reads.stream(account, state.id))

    async def everything(reads: Reads) -> list:
        return [
            await reads.label(stranger, state.id),
            await reads.live_labels(stranger, run_id),
            await reads.run_is_known(stranger, run_id),
            await reads.live_label_named(stranger, run_id, "named"),
            await reads.stream(stranger, state.id),
            await collected(reads.run_events_until(stranger, run_id, datetime(9000, 1, 1, tzinfo=UTC))),
            await reads.feed_page(stranger, BEGINNING, 1000),
            await collected(reads.feed(stranger, BEGINNING)),
            await reads.newest_point(stranger),
            await reads.point_of(stranger, event.position),
            await collected(reads.feed_hashes(stranger, FeedPoint(2**62, 2**62))),
        ]

    assert await read(db, everything) == [None, [], False, None, [], [], [], [], None, None, []]

    async def in_a_write(tx: LabelWrites) -> LabelState | None:
        return await tx.current_label(stranger, state.id)

    assert await db.run_write(in_a_write) is None


async def test_live_labels_are_the_runs_oldest_first_without_deleted_ones(db, account):
    run_id, base = run(), datetime(2030, 6, 1, tzinfo=UTC)
    # Written in another order than their times; two share a time (then the id decides).
    late = await create(db, account, run_id, at=base + timedelta(seconds=3))
    early = await create(db, account, run_id, at=base + timedelta(seconds=1))
    tied = [await create(db, account, run_id, at=base + timedelta(seconds=2)) for _ in range(2)]
    gone = await create(db, account, run_id, at=base)
    await create(db, account, run(), at=base)  # another run
    await create(db, new_account(), run_id, at=base)  # another account
    await change(db, gone, GoldLabelDeleted())
    expected = [early, *sorted(tied, key=lambda state: state.id), late]
    assert await read(db, lambda reads: reads.live_labels(account, run_id)) == expected


async def test_a_run_is_known_once_a_label_was_created_on_it_even_after_every_label_is_deleted(db, account):
    run_id = run()
    assert await read(db, lambda reads: reads.run_is_known(account, run_id)) is False
    state = await create(db, account, run_id)
    assert await read(db, lambda reads: reads.run_is_known(account, run_id)) is True
    deleted = await change(db, state, GoldLabelDeleted(), actor="carol")
    assert await read(db, lambda reads: reads.run_is_known(account, run_id)) is True
    assert await read(db, lambda reads: reads.live_labels(account, run_id)) == []
    stored = await read(db, lambda reads: reads.label(account, state.id))
    assert stored == deleted and stored.deleted and stored.deleted_by == "carol"


async def test_live_label_named_finds_only_the_live_label_of_that_output_resource(db, account):
    run_id = run()
    first = await create(db, account, run_id, "answer")
    await create(db, account, run_id, "other")
    assert await read(db, lambda reads: reads.live_label_named(account, run_id, "answer")) == first.id
    assert await read(db, lambda reads: reads.live_label_named(account, run(), "answer")) is None
    await change(db, first, GoldLabelDeleted())
    assert await read(db, lambda reads: reads.live_label_named(account, run_id, "answer")) is None
    again = await create(db, account, run_id, "answer")
    assert await read(db, lambda reads: reads.live_label_named(account, run_id, "answer")) == again.id != first.id


# --- writes: the guards, on both write paths ------------------------------------------------------------


@WRITE_PATHS
async def test_a_row_moved_on_since_it_was_read_is_a_lost_race_and_nothing_of_the_write_is_kept(
    db, account, optimistic
):
    first = await create(db, account, run())
    second = await change(db, first, GoldLabelUpdated(text_value="second"))

    async def stale(tx: LabelWrites) -> None:
        # A valid next event, but the row is saved as if it were still at version 1.
        await tx.append(pending(second, GoldLabelUpdated(text_value="lost")))
        await tx.save_label(msgspec.structs.replace(first, version=2, text_value="lost"))

    with pytest.raises(LostRace):
        await db.run_write(stale, optimistic=optimistic)
    assert await read(db, lambda reads: reads.label(account, first.id)) == second
    assert [event.version for event in await read(db, lambda reads: reads.stream(account, first.id))] == [1, 2]


@WRITE_PATHS
async def test_a_version_taken_twice_is_a_lost_race_and_nothing_of_the_write_is_kept(db, account, optimistic):
    first = await create(db, account, run())
    second = await change(db, first, GoldLabelUpdated(text_value="won"))
    with pytest.raises(LostRace):
        await change(db, first, GoldLabelUpdated(text_value="lost"), optimistic=optimistic)
    assert await read(db, lambda reads: reads.label(account, first.id)) == second
    events = await read(db, lambda reads: reads.stream(account, first.id))
    assert [(event.version, event.hash) for event in events] == [(1, first.hash), (2, second.hash)]


@WRITE_PATHS
async def test_a_second_live_label_of_an_output_resource_is_refused_and_nothing_of_it_is_kept(db, account, optimistic):
    run_id = run()
    first = await create(db, account, run_id, "taken")
    label_id = str(uuid.uuid4())
    data = GoldLabelCreated(run_id=run_id, output_resource_name="taken")
    with pytest.raises(OutputResourceTaken):
        await record(db, None, pending(None, data, account=account, label_id=label_id), optimistic=optimistic)
    assert await read(db, lambda reads: reads.stream(account, label_id)) == []
    assert await read(db, lambda reads: reads.label(account, label_id)) is None
    # The name is taken only among the run's live labels of the account.
    await create(db, account, run(), "taken", optimistic=optimistic)
    await create(db, new_account(), run_id, "taken", optimistic=optimistic)
    await change(db, first, GoldLabelDeleted())
    again = await create(db, account, run_id, "taken", optimistic=optimistic)
    assert await read(db, lambda reads: reads.live_label_named(account, run_id, "taken")) == again.id


@WRITE_PATHS
async def test_a_write_that_fails_after_appending_commits_nothing(db, account, optimistic):
    first = await create(db, account, run())

    async def failing(tx: LabelWrites) -> None:
        state = apply(first, await tx.append(pending(first, GoldLabelUpdated(text_value="never"))))
        await tx.save_label(state)
        raise RuntimeError("the caller's own failure")

    with pytest.raises(RuntimeError, match="the caller's own failure"):
        await db.run_write(failing, optimistic=optimistic)
    assert await read(db, lambda reads: reads.label(account, first.id)) == first
    assert len(await read(db, lambda reads: reads.stream(account, first.id))) == 1


@WRITE_PATHS
async def test_a_write_reads_the_current_label_deleted_ones_included(db, account, optimistic):
    first = await create(db, account, run())
    deleted = await change(db, first, GoldLabelDeleted())

    async def look(tx: LabelWrites) -> list:
        return [await tx.current_label(account, first.id), await tx.current_label(account, str(uuid.uuid4()))]

    assert await db.run_write(look, optimistic=optimistic) == [deleted, None]


@WRITE_PATHS
async def test_has_events_knows_exactly_the_events_that_were_committed(db, account, optimistic):
    first = await create(db, account, run())
    update = pending(first, GoldLabelUpdated(text_value="kept"))

    async def write(tx: LabelWrites) -> list[SealedEvent]:
        await tx.save_label(apply(first, await tx.append(update)))
        return list(tx.appended)

    appended = await db.run_write(write, optimistic=optimistic)
    assert appended == [sealed(update)]
    never_written = sealed(pending(apply(first, appended[0]), GoldLabelDeleted()))
    forged = msgspec.structs.replace(appended[0], hash="f" * 64)
    assert await read(db, lambda reads: reads.has_events(appended)) is True
    assert await read(db, lambda reads: reads.has_events([*appended, never_written])) is False
    assert await read(db, lambda reads: reads.has_events([forged])) is False


# --- Idempotency-Key claims (always on the locking path: the claim decides the rest) -----------------------


async def test_a_key_is_claimed_once_then_holds_its_claim_and_answer_until_reclaimed(db, account):
    key = f"key-{uuid.uuid4().hex}"
    claimed_at = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)

    def claim(fingerprint: str, who: str = account):
        return db.run_write(lambda tx: tx.claim_key(who, key, fingerprint, utc_now()))

    assert await db.run_write(lambda tx: tx.claim_key(account, key, "fp-1", claimed_at)) is None
    assert await claim("fp-2") == EarlierClaim("fp-1", claimed_at, None, None, None)
    await db.run_write(lambda tx: tx.remember_answer(account, key, 201, '{"id": "x"}', '{"etag": "\\"1\\""}'))
    assert await claim("fp-2") == EarlierClaim("fp-1", claimed_at, 201, '{"id": "x"}', '{"etag": "\\"1\\""}')
    assert await claim("fp-1", new_account()) is None  # keys belong to an account

    reclaimed_at = claimed_at + timedelta(days=1, microseconds=1)
    await db.run_write(lambda tx: tx.reclaim_key(account, key, "fp-3", reclaimed_at))
    assert await claim("fp-4") == EarlierClaim("fp-3", reclaimed_at, None, None, None)


async def test_a_claim_whose_write_fails_leaves_the_key_free(db, account):
    key = f"key-{uuid.uuid4().hex}"

    async def claim_then_fail(tx: LabelWrites) -> None:
        assert await tx.claim_key(account, key, "fp-1", utc_now()) is None
        raise RuntimeError("refused after the claim")

    with pytest.raises(RuntimeError):
        await db.run_write(claim_then_fail)
    assert await db.run_write(lambda tx: tx.claim_key(account, key, "fp-2", utc_now())) is None


# --- events of a run, and the feed ------------------------------------------------------------------------


async def test_run_events_until_a_time_are_the_runs_events_at_or_before_it_in_position_order(db, account):
    run_id, base = run(), datetime(2029, 3, 4, 5, 6, 7, 1000, tzinfo=UTC)
    one = await create(db, account, run_id, at=base + timedelta(seconds=2))
    two = await create(db, account, run_id, at=base)  # an earlier time, a later position
    await change(db, one, GoldLabelUpdated(text_value="later"), at=base + timedelta(seconds=5))
    await create(db, account, run(), at=base)
    await create(db, new_account(), run_id, at=base)

    async def until(at: datetime) -> list[tuple[str, int]]:
        events = await read(db, lambda reads: collected(reads.run_events_until(account, run_id, at)))
        assert [event.position for event in events] == sorted(event.position for event in events)
        return [(event.stream_id, event.version) for event in events]

    assert await until(base - timedelta(microseconds=1)) == []
    assert await until(base) == [(two.id, 1)]
    assert await until(base + timedelta(seconds=2)) == [(one.id, 1), (two.id, 1)]
    assert await until(base + timedelta(seconds=5)) == [(one.id, 1), (two.id, 1), (one.id, 2)]


async def test_the_feed_pages_follow_cursors_in_order_and_agree_with_every_other_read_of_it(db, account):
    first = await create(db, account, run())
    second = await create(db, account, run())
    await change(db, first, GoldLabelUpdated(text_value="b"))
    await change(db, second, GoldLabelDeleted())
    await create(db, new_account(), run())  # another account's event, in between
    await create(db, account, run())
    everything = await final_feed(db, account, 5)
    points = [point for point, _ in everything]
    assert points == sorted(points) and len(set(points)) == 5
    assert [point.position for point, _ in everything] == [event.position for _, event in everything]
    assert all(FeedPoint.parse(point.cursor) == point for point in points)
    assert all(event.account_id == account for _, event in everything)
    assert [(event.stream_id, event.version) for _, event in everything][:4] == [
        (first.id, 1),
        (second.id, 1),
        (first.id, 2),
        (second.id, 2),
    ]

    pages, after = [], BEGINNING
    while page := await read(db, lambda reads, after=after: reads.feed_page(account, after, 2)):
        assert len(page) <= 2
        pages.append(page)
        after = page[-1][0]
    assert [item for page in pages for item in page] == everything and len(pages) == 3
    assert await read(db, lambda reads: reads.feed_page(account, points[1], 1000)) == everything[2:]
    assert await read(db, lambda reads: reads.feed_page(account, points[-1], 1000)) == []

    async def other_reads(reads: Reads) -> list:
        return [
            await collected(reads.feed(account, BEGINNING, batch_size=2)),
            await collected(reads.feed(account, points[2])),
            await reads.newest_point(account),
            [await reads.point_of(account, point.position) for point in points],
        ]

    streamed, rest, newest, each = await read(db, other_reads)
    assert streamed == everything and rest == everything[3:]
    assert newest == points[-1] and each == points


async def test_feed_hashes_and_their_digest_cover_the_events_up_to_a_point(db, account):
    first = await create(db, account, run())
    await change(db, first, GoldLabelUpdated(text_value="b"))
    await create(db, account, run())
    everything = await final_feed(db, account, 3)
    pairs = [(event.position, event.hash) for _, event in everything]
    for upto, (point, _) in enumerate(everything, start=1):
        hashes = await read(db, lambda reads, point=point: collected(reads.feed_hashes(account, point)))
        assert hashes == pairs[:upto]
        lines = "".join(f"{position}:{event_hash}\n" for position, event_hash in pairs[:upto])
        assert await read(db, lambda reads, point=point: feed.digest(reads.feed_hashes(account, point))) == (
            hashlib.sha256(lines.encode()).hexdigest()
        )
    assert await read(db, lambda reads: collected(reads.feed_hashes(account, BEGINNING))) == []


async def test_a_digest_changes_with_any_event_position_or_order_it_covers():
    async def of(pairs: Iterable[tuple[int, str]]) -> str:
        async def hashes() -> AsyncIterator[tuple[int, str]]:
            for pair in pairs:
                yield pair

        return await feed.digest(hashes())

    log = [(1, "a" * 64), (2, "b" * 64), (5, "c" * 64)]
    assert await of([]) == EMPTY_DIGEST
    assert await of(log) == hashlib.sha256(b"".join(f"{p}:{h}\n".encode() for p, h in log)).hexdigest()
    variants = [
        log[:2],
        [log[1], log[0], log[2]],
        [(1, "a" * 64), (3, "b" * 64), (5, "c" * 64)],
        [*log[:2], (5, "d" * 64)],
    ]
    digests = {await of(log), *[await of(variant) for variant in variants]}
    assert len(digests) == 1 + len(variants)


# --- the whole log, on a database of its own ---------------------------------------------------------------


async def test_whole_log_reads_see_every_account_in_position_order(own_db):
    one, two = new_account(), new_account()
    first = await create(own_db, one, run(), text_value="a")
    other = await create(own_db, two, run(), object_value=msgspec.Raw(b'{"k": 1}'))
    second = await change(own_db, first, GoldLabelUpdated(text_value="b"))
    deleted = await change(own_db, other, GoldLabelDeleted())
    everything = await final_feed(own_db, None, 4)
    assert [(event.stream_id, event.version) for _, event in everything] == [
        (first.id, 1),
        (other.id, 1),
        (first.id, 2),
        (other.id, 2),
    ]

    async def scans(reads: Reads) -> list:
        return [
            await reads.count_events(),
            await all_of(reads.event_rows(3)),
            await all_of(reads.read_model(1)),
            await collected(reads.feed(None, BEGINNING)),
            await reads.newest_point(None),
            await reads.stream(None, first.id),
        ]

    count, rows, model, streamed, newest, any_account = await read(own_db, scans)
    assert count == 4 and streamed == everything and newest == everything[-1][0]
    assert [row[0] for row in rows] == [event.position for _, event in everything]
    # A scan row spells the time as the hash has it, so a replay checks every event without a problem.
    assert [row[8] for row in rows] == [format_time(event.recorded_at) for _, event in everything]
    outcome = await replay(read_rows(rows))
    assert outcome.events == 4 and outcome.problems == []
    assert sorted(model, key=lambda state: state.id) == sorted([second, deleted], key=lambda state: state.id)
    assert any_account == [event for _, event in everything if event.stream_id == first.id]


async def read_rows(rows: list) -> AsyncIterator[list]:
    yield rows


async def test_maintenance_replaces_the_read_model_and_only_what_it_commits_counts(own_db):
    account = new_account()
    first = await create(own_db, account, run(), object_value=msgspec.Raw(b'{"z": 0.10, "a": 1}'))
    second = await change(own_db, await create(own_db, account, run()), GoldLabelDeleted())

    async def model() -> list[LabelState]:
        return sorted(await read(own_db, lambda reads: all_of(reads.read_model(10))), key=lambda state: state.id)

    before = await model()
    assert before == sorted([first, second], key=lambda state: state.id)

    rebuilt = msgspec.structs.replace(first, text_value=None, updated_by="rebuild")
    async with own_db.maintain() as maintenance:
        await maintenance.lock_read_model()
        assert await maintenance.count_events() == 3
        assert await maintenance.replace_read_model(iter([rebuilt])) == 1
    assert await model() == [rebuilt]
    assert bytes((await model())[0].object_value) == b'{"z": 0.10, "a": 1}'

    with pytest.raises(RuntimeError):
        async with own_db.maintain() as maintenance:
            await maintenance.lock_read_model()
            await maintenance.replace_read_model([])
            raise RuntimeError("the rebuild failed half-way")
    assert await model() == [rebuilt]

    async with own_db.maintain() as maintenance:
        await maintenance.lock_read_model()
        assert await maintenance.replace_read_model(state for state in before) == 2
    assert await model() == before


async def test_a_write_waits_while_maintenance_holds_the_read_model(own_db):
    account = new_account()
    first = await create(own_db, account, run())
    async with own_db.maintain() as maintenance:
        await maintenance.lock_read_model()
        writer = asyncio.ensure_future(change(own_db, first, GoldLabelUpdated(text_value="after the rebuild")))
        await asyncio.sleep(0.5)
        assert not writer.done(), "a write went through while the read model was being replaced"
        assert await maintenance.replace_read_model([first]) == 1
    updated = await asyncio.wait_for(writer, 10)
    assert updated.version == 2
    assert await read(own_db, lambda reads: reads.label(account, first.id)) == updated
