"""The gold-label use cases: create, update, delete, get and list. They know nothing about HTTP.

Each write is one transaction: read the label, check the rules, append one event, fold it into the read
model, which only moves on from the version read. Either both are committed or neither is. How a write
gets committed under concurrent writers and failing connections is storage's business (storage.writes).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

import msgspec

from events.chain import seal_around
from events.types import (
    GENESIS_HASH,
    NULL,
    Event,
    GoldLabelCreated,
    GoldLabelDeleted,
    GoldLabelUpdated,
    PendingEvent,
    utc_now,
)
from projections.fold import LabelState, apply, fold
from service.storage import writes
from service.storage.database import Database
from service.storage.errors import OutputResourceTaken
from service.storage.group_commit import AnswerLost, LiveUpdate
from service.storage.sql import LabelWrites
from service.usecases.commands import Actor, InvalidInput, LabelBatch, LabelPatch, NewLabel
from service.usecases.idempotency import StoredResponse, claim, remember

# How the caller answers a write: kept with an Idempotency-Key, so that a retry gets the same answer.
Answer = Callable[[LabelState], StoredResponse]


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


def live_in_run(state: LabelState | None, run_id: str, label_id: str) -> LabelState:
    """The label, if it exists, is not deleted and belongs to this run (another account's is never loaded)."""
    if state is None or state.deleted or state.run_id != run_id:
        raise LabelNotFound(run_id, label_id)
    return state


def _pending(actor: Actor, state: LabelState | None, label_id: str, run_id: str, data: Event) -> PendingEvent:
    """The next event of a label after `state` (None: its first)."""
    now = utc_now()
    return PendingEvent(
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


async def _record(
    tx: LabelWrites, actor: Actor, state: LabelState | None, label_id: str, run_id: str, data: Event
) -> LabelState:
    """Append one event after `state` and fold it into the read model, in the caller's transaction."""
    new_state = apply(state, await tx.append(_pending(actor, state, label_id, run_id, data)))
    await tx.save_label(new_state)
    return new_state


async def _answered(tx: LabelWrites, actor: Actor, state: LabelState, answer: Answer) -> LabelState:
    if actor.idempotency is not None:
        await remember(tx, actor.account_id, actor.idempotency, answer(state))
    return state


def _check_value(text_value: str | None, object_value: msgspec.Raw, partial: bool | None) -> None:
    if text_value is not None and object_value != NULL:
        raise InvalidInput("a gold label holds a text_value or an object_value, not both")
    if partial is not None and object_value == NULL:
        raise InvalidInput("object_value_is_partial only goes with an object_value", "object_value_is_partial")


def _new_value(patch: LabelPatch) -> GoldLabelUpdated | None:
    """The label's whole value after a patch that sends a value, whatever the label held; None when the patch
    only flips object_value_is_partial (then the value is the label's own)."""
    if patch.text_value is not None:
        _check_value(patch.text_value, patch.object_value, patch.object_value_is_partial)
        return GoldLabelUpdated(text_value=patch.text_value)
    if patch.object_value != NULL:
        return GoldLabelUpdated(
            object_value=patch.object_value, object_value_is_partial=bool(patch.object_value_is_partial)
        )
    return None


def _updated(state: LabelState, patch: LabelPatch) -> GoldLabelUpdated:
    """The label's whole value after a partial update (DESIGN.md: PUT is a partial update of the value)."""
    if patch.output_resource_name is not None and patch.output_resource_name != state.output_resource_name:
        raise InvalidInput("output_resource_name cannot be changed", "output_resource_name")
    if patch.text_value is None and patch.object_value == NULL and patch.object_value_is_partial is None:
        raise InvalidInput("nothing to update: send text_value, object_value or object_value_is_partial")
    new_value = _new_value(patch)
    if new_value is not None:
        return new_value
    if state.object_value == NULL:
        raise InvalidInput(
            "object_value_is_partial only goes with an object_value, and this label has none", "object_value_is_partial"
        )
    return GoldLabelUpdated(object_value=state.object_value, object_value_is_partial=patch.object_value_is_partial)


async def create_label(db: Database, actor: Actor, run_id: str, new: NewLabel, answer: Answer) -> LabelState:
    _check_value(new.text_value, new.object_value, new.object_value_is_partial)
    data = GoldLabelCreated(
        run_id=run_id,
        output_resource_name=new.output_resource_name,
        text_value=new.text_value,
        object_value=new.object_value,
        object_value_is_partial=(new.object_value_is_partial or False) if new.object_value != NULL else None,
    )

    async def create(tx: LabelWrites) -> LabelState:
        if actor.idempotency is not None:
            await claim(tx, actor.account_id, actor.idempotency)
        state = await _record(tx, actor, None, str(uuid.uuid4()), run_id, data)
        return await _answered(tx, actor, state, answer)

    for _ in range(writes.ATTEMPTS):
        try:
            # A write with a key is never optimistic: claiming the key decides the rest.
            return await writes.commit(db, create, optimistic=actor.idempotency is None)
        except OutputResourceTaken:
            # The unique index on live output resources decides: report the label that holds the name.
            existing = await db.run_read(
                lambda reads: reads.live_label_named(actor.account_id, run_id, new.output_resource_name)
            )
            if existing is not None:
                raise DuplicateLabel(new.output_resource_name, existing) from None
            # The label holding the name was deleted meanwhile: try again.
    raise writes.KeptLosing("could not create the label: it kept clashing with concurrent creates and deletes")


async def _change(
    db: Database,
    actor: Actor,
    run_id: str,
    label_id: str,
    expected_versions: frozenset[int] | None,
    next_event: Callable[[LabelState], Event],
    answer: Answer,
) -> LabelState:
    async def change(tx: LabelWrites) -> LabelState:
        found = await tx.current_label(actor.account_id, label_id)
        if actor.idempotency is not None:
            # After the read (a claim is the transaction's first write: see feed order in storage.sql), and
            # before the rules, so that a retry of an earlier success is replayed as answered then.
            await claim(tx, actor.account_id, actor.idempotency)
        state = live_in_run(found, run_id, label_id)
        if expected_versions is not None and state.version not in expected_versions:
            raise VersionMismatch(state.version)
        state = await _record(tx, actor, state, label_id, run_id, next_event(state))
        return await _answered(tx, actor, state, answer)

    async def still_matching() -> None:
        # Lost a race with another writer: with If-Match that is a 412 if the label moved past it.
        if expected_versions is not None:
            current = await db.run_read(lambda reads: reads.label(actor.account_id, label_id))
            if current is not None and current.version not in expected_versions:
                raise VersionMismatch(current.version)

    return await writes.commit(
        db,
        change,
        label=(actor.account_id, label_id),
        optimistic=actor.idempotency is None,
        after_lost_race=still_matching,
    )


async def update_label(
    db: Database,
    actor: Actor,
    run_id: str,
    label_id: str,
    patch: LabelPatch,
    expected_versions: frozenset[int] | None,
    answer: Answer,
) -> LabelState:
    plain = actor.idempotency is None and expected_versions is None and patch.output_resource_name is None
    if plain and db.group_commit is not None and not writes.CONTENDED.lately((actor.account_id, label_id)):
        try:
            new_value = _new_value(patch)
        except InvalidInput:
            new_value = None  # the usual way answers it, after the checks that come first (404, 412)
        if new_value is not None:
            state = await update_in_group(db, actor, run_id, label_id, new_value)
            if state is not None:
                return state
    return await _change(db, actor, run_id, label_id, expected_versions, lambda state: _updated(state, patch), answer)


async def update_in_group(
    db: Database, actor: Actor, run_id: str, label_id: str, data: GoldLabelUpdated
) -> LabelState | None:
    """A plain update that needs nothing of the label but its row: written with the other updates arriving
    meanwhile, in one statement (storage.group_commit). None when the group could not take it; it wrote
    nothing then, and the update goes the usual way, which also answers a missing label or a lost race."""
    recorded_at = utc_now()
    payload, head, middle = seal_around(
        actor.account_id, label_id, run_id, data, actor.user_id, recorded_at, actor.request_id, actor.reason
    )
    update = LiveUpdate(
        account_id=actor.account_id,
        label_id=label_id,
        run_id=run_id,
        data=payload.decode(),
        text_value=data.text_value,
        object_value=None if data.object_value == NULL else bytes(data.object_value).decode(),
        object_value_is_partial=data.object_value_is_partial,
        actor=actor.user_id,
        recorded_at=recorded_at,
        request_id=actor.request_id,
        reason=actor.reason,
        head=head,
        middle=middle,
    )
    try:
        state = await db.group_commit.update(update)
    except AnswerLost:
        return await _committed_anyway(db, update)
    if state is None:
        # Handed back: most often another writer had the row. The label's next writes queue at once.
        writes.CONTENDED.note(update.key)
    return state


async def _committed_anyway(db: Database, update: LiveUpdate) -> LabelState | None:
    """After a group's answer was lost: the label as of this update's event if it was committed, else None."""
    stream = await db.run_read(lambda reads: reads.stream(update.account_id, update.label_id))
    mine = (update.recorded_at, update.request_id, update.actor)
    for n, event in enumerate(stream):
        if (event.recorded_at, event.request_id, event.actor) == mine and isinstance(event.data, GoldLabelUpdated):
            return fold(stream[: n + 1])
    return None


async def delete_label(
    db: Database, actor: Actor, run_id: str, label_id: str, expected_versions: frozenset[int] | None, answer: Answer
) -> LabelState:
    return await _change(db, actor, run_id, label_id, expected_versions, lambda _state: GoldLabelDeleted(), answer)


async def get_label(db: Database, account_id: str, run_id: str, label_id: str) -> LabelState:
    return live_in_run(await db.run_read(lambda reads: reads.label(account_id, label_id)), run_id, label_id)


async def list_labels(db: Database, account_id: str, run_id: str) -> list[LabelState]:
    async def live_labels(reads) -> list[LabelState]:
        labels = await reads.live_labels(account_id, run_id)
        if not labels and not await reads.run_is_known(account_id, run_id):
            raise RunNotFound(run_id)
        return labels

    return await db.run_read(live_labels)


class LabelCursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a page of a run's labels ends: the last label's (created_at, id), in list order."""

    created_at: datetime
    id: str


async def list_labels_page(
    db: Database, account_id: str, run_id: str, after: LabelCursor | None, limit: int
) -> tuple[list[LabelState], LabelCursor | None]:
    """A page of the run's live labels, oldest first, and where the next page starts (None after the last)."""

    async def page(reads) -> tuple[list[LabelState], LabelCursor | None]:
        # One more than asked: whether another page follows, without a second query.
        labels = await reads.live_labels_page(
            account_id, run_id, None if after is None else (after.created_at, after.id), limit + 1
        )
        if not labels and not await reads.run_is_known(account_id, run_id):
            raise RunNotFound(run_id)
        more = len(labels) > limit
        labels = labels[:limit]
        return labels, LabelCursor(labels[-1].created_at, labels[-1].id) if more else None

    return await db.run_read(page)


async def stream_labels(
    db: Database, account_id: str, run_id: str, batch_size: int = 1000
) -> AsyncIterator[list[LabelState]]:
    """Every live label of the run, oldest first, in batches, on one read transaction (no time limit: a run
    is as long as it is). The first batch is empty only for a known run without live labels."""
    async with db.read() as reads:
        first = True
        async for batch in reads.live_labels_batches(account_id, run_id, batch_size):
            first = False
            yield batch
        if first:
            if not await reads.run_is_known(account_id, run_id):
                raise RunNotFound(run_id)
            yield []


class BatchItem(msgspec.Struct, frozen=True):
    """What a batch did to one label."""

    id: Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
    output_resource_name: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    outcome: Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["created", "updated", "unchanged"]})]


class BatchOutcome(msgspec.Struct, frozen=True):
    created: int
    updated: int
    unchanged: int
    labels: list[BatchItem]


def _same_value(state: LabelState, new: NewLabel) -> bool:
    wanted = GoldLabelCreated(
        run_id=state.run_id,
        output_resource_name=new.output_resource_name,
        text_value=new.text_value,
        object_value=new.object_value,
        object_value_is_partial=(new.object_value_is_partial or False) if new.object_value != NULL else None,
    )
    return (state.text_value, bytes(state.object_value), state.object_value_is_partial) == (
        wanted.text_value,
        bytes(wanted.object_value),
        wanted.object_value_is_partial,
    )


async def import_batch(
    db: Database, actor: Actor, run_id: str, batch: LabelBatch, answer: Callable[[BatchOutcome], StoredResponse]
) -> BatchOutcome:
    """Upsert the run's labels by output resource, in one transaction: a missing label is created, a live one
    whose value differs is updated, an identical one appends nothing. Every change is one event of its label,
    hash-chained as any other; nothing of the batch is stored unless all of it is."""
    for n, new in enumerate(batch.labels):
        try:
            _check_value(new.text_value, new.object_value, new.object_value_is_partial)
        except InvalidInput as error:
            field = f"labels[{n}]" + (f".{error.field}" if error.field else "")
            raise InvalidInput(f"{field}: {error}", field) from None
    names = [new.output_resource_name for new in batch.labels]

    async def upsert(tx: LabelWrites) -> BatchOutcome:
        # Read before writing anything (feed order, see storage.sql.LabelWrites): queue behind the labels'
        # other writers, then read them as they now stand; the guarded saves refuse if any moved on meanwhile.
        live = await tx.live_labels_named(actor.account_id, run_id, names)
        await tx.queue_many(actor.account_id, sorted(state.id for state in live.values()))
        live = await tx.live_labels_named(actor.account_id, run_id, names)
        if actor.idempotency is not None:
            await claim(tx, actor.account_id, actor.idempotency)
        # (label id, state before or None, event data, outcome) of each item, then one append and one save of all.
        planned: list[tuple[str, LabelState | None, Event | None, str]] = []
        for new in batch.labels:
            state = live.get(new.output_resource_name)
            if state is None:
                data: Event = GoldLabelCreated(
                    run_id=run_id,
                    output_resource_name=new.output_resource_name,
                    text_value=new.text_value,
                    object_value=new.object_value,
                    object_value_is_partial=(new.object_value_is_partial or False)
                    if new.object_value != NULL
                    else None,
                )
                planned.append((str(uuid.uuid4()), None, data, "created"))
            elif _same_value(state, new):
                planned.append((state.id, state, None, "unchanged"))
            else:
                if new.text_value is None and new.object_value == NULL:
                    data = GoldLabelUpdated()  # the label is made empty, as a create without a value would be
                else:
                    patch = LabelPatch(new.text_value, new.object_value, new.object_value_is_partial)
                    data = _updated(state, patch)
                planned.append((state.id, state, data, "updated"))
        changes = [(label_id, state, data) for label_id, state, data, _ in planned if data is not None]
        sealed = await tx.append_many(
            [_pending(actor, state, label_id, run_id, data) for label_id, state, data in changes]
        )
        after = {label_id: apply(state, event) for (label_id, state, _), event in zip(changes, sealed, strict=True)}
        await tx.save_labels(list(after.values()))
        items, counts = [], {"created": 0, "updated": 0, "unchanged": 0}
        for label_id, state, _, outcome in planned:
            state = after.get(label_id, state)
            counts[outcome] += 1
            items.append(BatchItem(state.id, state.output_resource_name, state.version, outcome))
        outcome = BatchOutcome(**counts, labels=items)
        if actor.idempotency is not None:
            await remember(tx, actor.account_id, actor.idempotency, answer(outcome))
        return outcome

    for _ in range(writes.ATTEMPTS):
        try:
            return await writes.commit(db, upsert, optimistic=False)
        except OutputResourceTaken:
            continue  # a concurrent create took a name first: read again, and update that label instead
    raise writes.KeptLosing("could not import the batch: concurrent creates kept taking its names first")
