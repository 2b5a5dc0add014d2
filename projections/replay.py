"""Replaying the whole log with the projector's fold: to verify the hash chains and the read model,
and to rebuild the read model from scratch. The same `apply` as the inline projection, so they
cannot drift. Storage hands over the rows; nothing here knows how they were read."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from datetime import datetime

import msgspec

from events.chain import chain_hash
from events.types import GENESIS_HASH, RecordedEvent, decode_data
from projections.fold import FoldError, LabelState, apply

Progress = Callable[[int], None]
LabelKey = tuple[str, str]  # (account_id, label_id)

EventRow = tuple[int, str, str, int, str, str, str, str, str, str, str | None, str, str, int, int]
"""An event as a replay checks it: (position, account_id, stream_id, version, run_id, type, data, actor,
recorded_at, request_id, reason, prev_hash, hash, tx_id, chain). `data` is the stored JSON text,
`recorded_at` the UTC text the hash covers (events.types.format_time), (tx_id, position) the event's place in
the feed, and `chain` how its hash covers the payload (events.chain)."""


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


_ALTERED = "content does not match its hash: the event was altered after it was written"
_UNLINKED = "prev_hash does not match the hash of the event before it in its stream"


def _ahead_of_its_predecessor(version: int, tx_id: int) -> str:
    return (
        f"comes before version {version - 1} of its label in the feed (transaction {tx_id}): "
        "a follower folding the feed would see the versions out of order"
    )


# Small batches: each is folded while its rows are still in the CPU's caches (less CPU per event than
# batches of thousands; see `python -m tests.bench --only rebuild`).
BATCH_SIZE = 300


async def replay(batches: AsyncIterable[list[EventRow]], progress: Progress | None = None) -> Replay:
    """Fold every event, given in position order, checking each one's hash, its link to its predecessor, and
    that the feed would deliver it after its predecessor."""
    outcome = Replay(states={}, problems=[])
    last: dict[LabelKey, tuple[str, tuple[int, int]]] = {}  # each stream's newest hash and feed point
    broken: set[LabelKey] = set()  # streams that could not be folded: their later events are only checked
    out_of_order: list[tuple[tuple[int, int], Problem]] = []
    async for batch in batches:
        _fold(batch, outcome, last, broken, out_of_order)
        outcome.events += len(batch)
        if progress is not None:
            progress(outcome.events)
    # In the order a follower of the feed meets them, so the first one named is the first that breaks it.
    outcome.problems.extend(problem for _, problem in sorted(out_of_order, key=lambda found: found[0]))
    return outcome


def _fold(
    batch: list[EventRow],
    outcome: Replay,
    last: dict[LabelKey, tuple[str, tuple[int, int]]],
    broken: set[LabelKey],
    out_of_order: list[tuple[tuple[int, int], Problem]],
) -> None:
    """Check and fold the next events, in position order."""
    states, problems = outcome.states, outcome.problems
    for (position, account_id, stream_id, version, run_id, event_type, data, actor, recorded_at, request_id, reason,
         prev, digest, tx_id, chain) in batch:  # fmt: skip
        key = (account_id, stream_id)
        recomputed = chain_hash(
            chain,
            account_id,
            stream_id,
            version,
            run_id,
            event_type,
            data,
            actor,
            recorded_at,
            request_id,
            reason,
            prev,
        )
        if recomputed != digest:
            problems.append(Problem(*key, _ALTERED, position=position, version=version))
        previous_hash, previous_point = last.get(key, (GENESIS_HASH, None))
        if prev != previous_hash:
            problems.append(Problem(*key, _UNLINKED, position=position, version=version))
        point = (tx_id, position)
        if previous_point is not None and point < previous_point:
            problem = Problem(*key, _ahead_of_its_predecessor(version, tx_id), position=position, version=version)
            out_of_order.append((point, problem))
        last[key] = (digest, point)
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
                # The hashed text parses back to the time exactly (microseconds, UTC).
                recorded_at=datetime.fromisoformat(recorded_at),
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


async def compare_read_model(
    stored: AsyncIterable[list[LabelState]], states: dict[LabelKey, LabelState]
) -> list[Problem]:
    """Every read-model row that is missing, extra, or different from the replayed state."""
    problems = []
    seen: set[LabelKey] = set()
    async for batch in stored:
        for row in batch:
            key = (row.account_id, row.id)
            seen.add(key)
            expected = states.get(key)
            if expected is None:
                problems.append(Problem(*key, "read-model row has no events behind it"))
            elif row != expected:
                fields = [n for n in LabelState.__struct_fields__ if getattr(row, n) != getattr(expected, n)]
                problems.append(Problem(*key, f"read-model row differs from the replay in: {', '.join(fields)}"))
    for key in states.keys() - seen:
        problems.append(Problem(*key, "label is missing from the read model"))
    return problems
