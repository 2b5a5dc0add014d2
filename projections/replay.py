"""Replaying the whole log with the projector's fold: to verify the hash chains and the read model,
and to rebuild the read model from scratch. The same `apply` as the inline projection, so they
cannot drift."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from events.chain import hash_fields
from events.schema import events
from events.store import COLUMNS
from events.types import GENESIS_HASH, RecordedEvent, decode_data, format_time
from projections import read_model
from projections.fold import FoldError, LabelState, apply

Progress = Callable[[int], None]
LabelKey = tuple[str, str]  # (account_id, label_id)


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with the log or the read model, located as precisely as possible."""

    account_id: str
    label_id: str
    problem: str
    position: int | None = None
    version: int | None = None


class Replay(msgspec.Struct):
    states: dict[LabelKey, LabelState]
    problems: list[Problem]
    events: int = 0


async def count_events(conn: AsyncConnection) -> int:
    return (await conn.execute(sa.select(sa.func.count()).select_from(events))).scalar_one()


_ALTERED = "content does not match its hash: the event was altered after it was written"
_UNLINKED = "prev_hash does not match the hash of the event before it in its stream"


async def replay(conn: AsyncConnection, progress: Progress | None = None, batch_size: int = 10_000) -> Replay:
    """Fold every event in position order, checking each one's hash and its link to its predecessor."""
    outcome = Replay(states={}, problems=[])
    states, problems = outcome.states, outcome.problems
    broken: set[LabelKey] = set()
    last_hash: dict[LabelKey, str] = {}
    result = await conn.stream(
        sa.select(*COLUMNS, events.c.type).order_by(events.c.position).execution_options(yield_per=batch_size)
    )
    # Whole batches at a time: one await per batch, and plain tuples rather than Row attribute lookups.
    async for batch in result.partitions(batch_size):
        for row in batch:
            (position, account_id, stream_id, version, run_id, data, actor, recorded_at, request_id, reason, prev,
             digest, event_type) = row  # fmt: skip
            key = (account_id, stream_id)
            recomputed = hash_fields(
                account_id=account_id,
                stream_id=stream_id,
                version=version,
                run_id=run_id,
                event_type=event_type,
                data=data.encode(),
                actor=actor,
                recorded_at=format_time(recorded_at),
                request_id=request_id,
                reason=reason,
                prev_hash=prev,
            )
            if recomputed != digest:
                problems.append(Problem(*key, _ALTERED, position=position, version=version))
            if prev != last_hash.get(key, GENESIS_HASH):
                problems.append(Problem(*key, _UNLINKED, position=position, version=version))
            last_hash[key] = digest
            if key in broken:
                continue
            try:
                event = RecordedEvent(
                    position=position,
                    account_id=account_id,
                    stream_id=stream_id,
                    version=version,
                    run_id=run_id,
                    data=decode_data(data),
                    actor=actor,
                    recorded_at=recorded_at,
                    request_id=request_id,
                    reason=reason,
                    prev_hash=prev,
                    hash=digest,
                )
                if event.type != event_type:
                    raise ValueError(f"type column says {event_type} but the payload is {event.type}")
                states[key] = apply(states.get(key), event)
            except (FoldError, msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
                problems.append(Problem(*key, f"cannot be folded: {error}", position=position, version=version))
                broken.add(key)
                states.pop(key, None)
        outcome.events += len(batch)
        if progress is not None:
            progress(outcome.events)
    return outcome


async def compare_read_model(conn: AsyncConnection, states: dict[LabelKey, LabelState]) -> list[Problem]:
    """Every read-model row that is missing, extra, or different from the replayed state."""
    problems = []
    seen: set[LabelKey] = set()
    async for row in await conn.stream(sa.select(read_model.gold_labels).execution_options(yield_per=10_000)):
        stored = read_model.from_row(row)
        key = (stored.account_id, stored.id)
        seen.add(key)
        expected = states.get(key)
        if expected is None:
            problems.append(Problem(*key, "read-model row has no events behind it"))
        elif stored != expected:
            fields = [name for name in LabelState.__struct_fields__ if getattr(stored, name) != getattr(expected, name)]
            problems.append(Problem(*key, f"read-model row differs from the replay in: {', '.join(fields)}"))
    for key in states.keys() - seen:
        problems.append(Problem(*key, "label is missing from the read model"))
    return problems


async def rebuild(conn: AsyncConnection, states: dict[LabelKey, LabelState], batch_size: int = 5_000) -> int:
    """Replace the read model with the replayed states; returns the number of rows written."""
    table = read_model.gold_labels
    if conn.dialect.name == "postgresql":
        # Writers lock rows of this table; make them wait until the new read model is committed.
        await conn.execute(sa.text("LOCK TABLE gold_labels IN EXCLUSIVE MODE"))
    await conn.execute(table.delete())
    rows = [read_model.to_row(state) for state in states.values()]
    for start in range(0, len(rows), batch_size):
        await conn.execute(table.insert(), rows[start : start + batch_size])
    return len(rows)
