"""The gold-label use cases: create, update, delete, get and list. They know nothing about HTTP.

Each write is one transaction: read the label, check the rules, append one event, fold it into the
read model, which only moves on from the version read. Either both are committed or neither is.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from events.types import (
    GENESIS_HASH,
    NULL,
    Event,
    GoldLabelCreated,
    GoldLabelDeleted,
    GoldLabelUpdated,
    PendingEvent,
    SealedEvent,
    utc_now,
)
from projections.fold import LabelState, apply
from service.http.bodies import InvalidInput, LabelPatch, NewLabel
from service.http.views import NO_CONTENT, label_answer
from service.metrics import EVENTS_APPENDED
from service.storage import read_model, store
from service.storage.database import CommitOutcomeUnknown, Database, RowMovedOn, StaleConnection, UniqueViolation
from service.storage.store import SqlTransaction
from service.usecases.idempotency import Idempotency, StoredResponse, claim, remember

# How often a write is retried after losing a race that the database detected for us.
_ATTEMPTS = 5


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, for which account, under which request id, and why."""

    account_id: str
    user_id: str
    request_id: str
    reason: str | None = None
    idempotency: Idempotency | None = None


class LabelNotFound(Exception):
    def __init__(self, run_id: str, label_id: str) -> None:
        super().__init__(f"gold label {label_id} not found in run {run_id}")


class RunNotFound(Exception):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} not found: no gold label was ever created on it")


class DuplicateLabel(Exception):
    def __init__(self, output_resource_name: str, existing_id: str) -> None:
        super().__init__(
            f"output resource {output_resource_name!r} already has gold label {existing_id}: update that one instead"
        )
        self.existing_id = existing_id


class VersionMismatch(Exception):
    def __init__(self, current_version: int) -> None:
        super().__init__(f"the label is at version {current_version}, not the one in If-Match: fetch it again")
        self.current_version = current_version


def label_location(state: LabelState) -> str:
    return f"/v1/run/{state.run_id}/gold-label/{state.id}"


async def _claim(tx: SqlTransaction, actor: Actor) -> None:
    """With an Idempotency-Key, claim it first in the write's transaction (a retry is replayed from here)."""
    if actor.idempotency is not None:
        await claim(tx, actor.account_id, actor.idempotency)


async def _remember(tx: SqlTransaction, actor: Actor, answer: StoredResponse) -> None:
    if actor.idempotency is not None:
        await remember(tx, actor.account_id, actor.idempotency, answer)


class _Contention:
    """Labels that lost a race between writers lately, in this process. Many writers on one label make
    most optimistic writes lose, and each loss costs two round trips, so such a label is locked first."""

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


_CONTENDED = _Contention()


class _Attempt:
    """What one try of a write put in its transaction, to find out afterwards whether it committed."""

    event: SealedEvent | None = None
    state: LabelState | None = None


async def _committed_after_all(db: Database, attempt: _Attempt) -> bool:
    """After a lost COMMIT answer: did this attempt's event make it into the log?"""
    if attempt.event is None:
        return False
    return await db.run_read(lambda conn: store.has_event(conn, attempt.event))


async def _record(
    tx: SqlTransaction,
    actor: Actor,
    state: LabelState | None,
    label_id: str,
    run_id: str,
    data: Event,
    attempt: _Attempt,
) -> LabelState:
    """Append one event after `state` and fold it into the read model, in the caller's transaction."""
    now = utc_now()
    pending = PendingEvent(
        account_id=actor.account_id,
        stream_id=label_id,
        version=1 if state is None else state.version + 1,
        run_id=run_id,
        data=data,
        actor=actor.user_id,
        # Within a label, time never goes backwards, whatever this host's clock says.
        recorded_at=now if state is None else max(now, state.last_recorded_at),
        request_id=actor.request_id,
        reason=actor.reason,
        prev_hash=GENESIS_HASH if state is None else state.hash,
    )
    attempt.event = await store.append(tx, pending)
    attempt.state = new_state = apply(state, attempt.event)
    await read_model.save(tx, new_state)
    return new_state


def _check_value(text_value: str | None, object_value: msgspec.Raw, partial: bool | None) -> None:
    if text_value is not None and object_value != NULL:
        raise InvalidInput("a gold label holds a text_value or an object_value, not both")
    if partial is not None and object_value == NULL:
        raise InvalidInput("object_value_is_partial only goes with an object_value", "object_value_is_partial")


def _updated(state: LabelState, patch: LabelPatch) -> GoldLabelUpdated:
    """The label's whole value after a partial update (DESIGN.md: PUT is a partial update of the value)."""
    if patch.output_resource_name is not None and patch.output_resource_name != state.output_resource_name:
        raise InvalidInput("output_resource_name cannot be changed", "output_resource_name")
    if patch.text_value is None and patch.object_value == NULL and patch.object_value_is_partial is None:
        raise InvalidInput("nothing to update: send text_value, object_value or object_value_is_partial")
    if patch.text_value is not None:
        _check_value(patch.text_value, patch.object_value, patch.object_value_is_partial)
        return GoldLabelUpdated(text_value=patch.text_value)
    if patch.object_value != NULL:
        return GoldLabelUpdated(
            object_value=patch.object_value, object_value_is_partial=bool(patch.object_value_is_partial)
        )
    if state.object_value == NULL:
        raise InvalidInput(
            "object_value_is_partial only goes with an object_value, and this label has none", "object_value_is_partial"
        )
    return GoldLabelUpdated(object_value=state.object_value, object_value_is_partial=patch.object_value_is_partial)


async def create_label(db: Database, actor: Actor, run_id: str, new: NewLabel) -> LabelState:
    _check_value(new.text_value, new.object_value, new.object_value_is_partial)
    data = GoldLabelCreated(
        run_id=run_id,
        output_resource_name=new.output_resource_name,
        text_value=new.text_value,
        object_value=new.object_value,
        object_value_is_partial=(new.object_value_is_partial or False) if new.object_value != NULL else None,
    )

    async def create(tx: SqlTransaction, attempt: _Attempt) -> LabelState:
        await _claim(tx, actor)
        state = await _record(tx, actor, None, str(uuid.uuid4()), run_id, data, attempt)
        await _remember(tx, actor, label_answer(state, 201, {"Location": label_location(state)}))
        return state

    for _ in range(_ATTEMPTS):
        try:
            state = await _try_write(db, create, optimistic=actor.idempotency is None)
        except UniqueViolation as error:
            # The unique index on live output resources decides: report the label that holds the name.
            if error.constraint != "uq_gold_labels_live_output":
                raise
            existing = await db.run_read(
                lambda conn: read_model.live_label_named(conn, actor.account_id, run_id, new.output_resource_name)
            )
            if existing is not None:
                raise DuplicateLabel(new.output_resource_name, existing) from None
            continue  # the label holding the name was deleted meanwhile
        if state is not None:
            return state
    raise RuntimeError("could not create the label: it kept clashing with concurrent creates and deletes")


async def _change(
    db: Database,
    actor: Actor,
    run_id: str,
    label_id: str,
    expected_versions: frozenset[int] | None,
    next_event: Callable[[LabelState], Event],
) -> LabelState:
    async def change(tx: SqlTransaction, attempt: _Attempt) -> LabelState:
        state = await read_model.current_for_write(tx, actor.account_id, label_id)
        # Claiming a key is the transaction's first write, so it comes after the read (see feed order in
        # service.storage.database.DriverTransaction), and before the rules, so that a retry is replayed as answered.
        await _claim(tx, actor)
        if state is None or state.deleted or state.run_id != run_id:
            raise LabelNotFound(run_id, label_id)
        if expected_versions is not None and state.version not in expected_versions:
            raise VersionMismatch(state.version)
        state = await _record(tx, actor, state, label_id, run_id, next_event(state), attempt)
        await _remember(tx, actor, NO_CONTENT if state.deleted else label_answer(state, 200))
        return state

    key = (actor.account_id, label_id)
    for attempt in range(_ATTEMPTS):
        # Optimistic first (no lock, half the CPU); after a lost race, and for a while on a label that
        # lost one lately, lock the row and queue behind the other writers instead of racing them.
        optimistic = attempt == 0 and actor.idempotency is None and not _CONTENDED.lately(key)
        try:
            state = await _try_write(db, change, optimistic=optimistic)
        except UniqueViolation as error:
            if error.constraint != "uq_events_stream_version":
                raise
            state = None
        except RowMovedOn:
            state = None
        if state is not None:
            return state
        _CONTENDED.note(key)
        # Lost a race with another writer, or a connection: with If-Match that is a 412 (it might be
        # the other writer's version now), otherwise try again.
        if expected_versions is not None:
            current = await db.run_read(lambda conn: read_model.load(conn, actor.account_id, label_id))
            if current is not None and current.version not in expected_versions:
                raise VersionMismatch(current.version)
    raise RuntimeError(f"could not change label {label_id}: it kept losing races with concurrent writers")


async def _try_write(
    db: Database, work: Callable[[SqlTransaction, _Attempt], Awaitable[LabelState]], *, optimistic: bool
) -> LabelState | None:
    """One try of a write: its new state, or None when it certainly did not commit and may be tried again.

    An idempotency key is claimed by a statement whose answer decides the rest, so such a write is never
    optimistic (see Database.run_write)."""
    attempt = _Attempt()
    try:
        state = await db.run_write(lambda tx: work(tx, attempt), optimistic=optimistic)
    except CommitOutcomeUnknown:
        if not await _committed_after_all(db, attempt):
            return None  # it did not commit, and the database answers again
        state = attempt.state
    except StaleConnection:
        return None  # nothing was committed; the pool has been renewed
    EVENTS_APPENDED.labels(attempt.event.type).inc()
    return state


async def update_label(
    db: Database, actor: Actor, run_id: str, label_id: str, patch: LabelPatch, expected_versions: frozenset[int] | None
) -> LabelState:
    return await _change(db, actor, run_id, label_id, expected_versions, lambda state: _updated(state, patch))


async def delete_label(
    db: Database, actor: Actor, run_id: str, label_id: str, expected_versions: frozenset[int] | None
) -> LabelState:
    return await _change(db, actor, run_id, label_id, expected_versions, lambda _state: GoldLabelDeleted())


async def get_label(db: Database, account_id: str, run_id: str, label_id: str) -> LabelState:
    state = await db.run_read(lambda conn: read_model.load(conn, account_id, label_id))
    if state is None or state.deleted or state.run_id != run_id:
        raise LabelNotFound(run_id, label_id)
    return state


async def list_labels(db: Database, account_id: str, run_id: str) -> list[LabelState]:
    async def live_labels(conn: AsyncConnection) -> list[LabelState]:
        labels = await read_model.live_labels_of_run(conn, account_id, run_id)
        if not labels and not await read_model.run_is_known(conn, account_id, run_id):
            raise RunNotFound(run_id)
        return labels

    return await db.run_read(live_labels)
