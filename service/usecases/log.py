"""The verifiable log (DESIGN.md §3.1): each account's events as an append-only Merkle tree (RFC 9162) with
signed checkpoints, and the proofs an auditor checks offline.

Integration appends committed events, in feed order, to their accounts' logs: a dense index 0, 1, 2, ...
per account, the entry being the event's 32-byte chain hash. It runs in the background of every serving
process, one integrator at a time; each pass is one transaction, so an event is integrated exactly once
whatever crashes. Checkpoints are published when a tree grew, at most about once a second per account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

import msgspec

from events import merkle, note
from events.offline import ExportedEvent
from events.types import RecordedEvent, format_time, utc_now
from service.storage import tiles
from service.storage.database import Database
from service.storage.errors import DatabaseUnavailable
from service.storage.sql import Integration, Reads

logger = logging.getLogger("goldtrail.log")

BATCH = 2000  # events per integration transaction: short enough not to hold back the feed's horizon
IDLE_SECONDS = 0.2  # between passes while nothing is waiting
CHECKPOINT_EVERY = timedelta(seconds=1)  # at most this often per account


class LogSigner:
    """The deployment's checkpoint key: one key, named for the log, signs every account's checkpoints, each
    under its account's origin as key name (as C2SP recommends: the key name matches the origin)."""

    def __init__(self, private_key_text: str) -> None:
        self.key = note.parse_private_key(private_key_text)
        self.name = self.key.name

    def origin(self, account_id: str) -> str:
        """`<log name>/<account id>`, the account id percent-encoded so that any id makes one clean line."""
        return f"{self.name}/{quote(account_id, safe='')}"

    def vkey(self, account_id: str) -> str:
        """The verifier key of the account's log, in signed-note form."""
        return self.key.renamed(self.origin(account_id)).vkey

    def checkpoint(self, account_id: str, size: int, root: bytes) -> str:
        origin = self.origin(account_id)
        return note.sign_note(note.checkpoint_text(origin, size, root), self.key.renamed(origin))


class NotInLog(Exception):
    """What was asked for is not in the account's log (yet), or not at that tree size."""


class InclusionProof(msgspec.Struct, frozen=True):
    log_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: list[bytes]


class Cosignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A witness's cosignature (a C2SP tlog-cosignature line) of the checkpoint of `tree_size`."""

    tree_size: Annotated[int, msgspec.Meta(ge=1)]
    cosignature: str


class ConsistencyProof(msgspec.Struct, frozen=True):
    from_: int = msgspec.field(name="from")
    to: int = 0
    hashes: list[bytes] = []


# Integration ------------------------------------------------------------------------------------------


def _root(size: int, stored: dict[tiles.TileKey, bytes]) -> bytes:
    return merkle.root(size, lambda level, index: tiles.node_in(stored, level, index))


async def _append(tx: Integration, found: list) -> None:
    accounts = list(dict.fromkeys(account_id for _, account_id, _ in found))
    sizes = await tx.heads(accounts)
    leaves, changed_tiles, heads = [], [], []
    for account_id in accounts:
        mine = [(point, entry) for point, account, entry in found if account == account_id]
        size = sizes[account_id]
        edge = await tx.tiles(account_id, tiles.right_edge(size))
        new_size, changed = tiles.append(size, edge, [entry for _, entry in mine])
        leaves += [(account_id, size + n, point.position) for n, (point, _) in enumerate(mine)]
        changed_tiles += [(account_id, level, index, hashes) for (level, index), hashes in changed.items()]
        heads.append((account_id, new_size, _root(new_size, {**edge, **changed})))
    await tx.add_leaves(leaves)
    await tx.put_tiles(changed_tiles)
    await tx.put_heads(heads)


async def integrate(db: Database, signer: LogSigner | None, batch: int = BATCH) -> int:
    """One pass: append the next committed events to their logs, then publish the checkpoints that are due.
    Returns how many events were integrated (0 when another integrator had its turn)."""
    async with db.integrate() as tx:
        if not await tx.take_turn():
            return 0
        found = await tx.committed_after(await tx.progress(), batch)
        if found:
            await _append(tx, found)
            await tx.set_progress(found[-1][0])
        if signer is not None:
            now = utc_now()
            for account_id, size, root in await tx.unpublished(now - CHECKPOINT_EVERY, 1000):
                await tx.publish(account_id, size, root, signer.checkpoint(account_id, size, root), now)
        return len(found)


class Integrator:
    """The background task of a serving process that keeps integrating."""

    def __init__(self, db: Database, signer: LogSigner | None) -> None:
        self.db, self.signer = db, signer
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="goldtrail-integrator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                integrated = await integrate(self.db, self.signer)
            except DatabaseUnavailable as error:
                logger.warning("integration paused: the database is unavailable", extra={"detail": str(error)})
                integrated = 0
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("integration failed; retrying")
                integrated = 0
                await asyncio.sleep(1.0)
            if integrated < BATCH:
                await asyncio.sleep(IDLE_SECONDS)


def exported(event: RecordedEvent) -> ExportedEvent:
    """An event as the offline verifier reads it (events.offline)."""
    return ExportedEvent(
        log_index=event.log_index,
        label_id=event.stream_id,
        run_id=event.run_id,
        version=event.version,
        type=event.type,
        actor=event.actor,
        recorded_at=format_time(event.recorded_at),
        request_id=event.request_id,
        reason=event.reason,
        prev_hash=event.prev_hash,
        hash=event.hash,
        chain=event.chain,
        payload=event.payload,
    )


# Reading the log ------------------------------------------------------------------------------------


async def _nodes(reads: Reads, account_id: str, function, *args: int) -> merkle.Node:
    """A `node(level, index)` reader over just the tiles `function(*args, node)` needs, read at once."""
    wanted = merkle.nodes_needed(function, *args)
    stored = await reads.tiles(account_id, tiles.tiles_for(wanted))
    return lambda level, index: tiles.node_in(stored, level, index)


async def _size(reads: Reads, account_id: str) -> int:
    head = await reads.log_head(account_id)
    return 0 if head is None else head[0]


async def inclusion(db: Database, account_id: str, index: int, size: int) -> InclusionProof:
    async def prove(reads: Reads) -> InclusionProof:
        if not 0 <= index < size <= await _size(reads, account_id):
            raise NotInLog(f"no entry {index} in a tree of size {size} of this account's log")
        node = await _nodes(reads, account_id, merkle.inclusion_path, index, size)
        leaf = (await _nodes(reads, account_id, lambda i, n: n(0, i), index))(0, index)
        return InclusionProof(index, size, leaf, merkle.inclusion_path(index, size, node))

    return await db.run_read(prove)


async def consistency(db: Database, account_id: str, old_size: int, new_size: int) -> ConsistencyProof:
    async def prove(reads: Reads) -> ConsistencyProof:
        if not 0 < old_size <= new_size <= await _size(reads, account_id):
            raise NotInLog(f"no consistency proof from size {old_size} to {new_size} in this account's log")
        node = await _nodes(reads, account_id, merkle.consistency_path, old_size, new_size)
        return ConsistencyProof(old_size, new_size, merkle.consistency_path(old_size, new_size, node))

    return await db.run_read(prove)


async def checkpoint(db: Database, account_id: str, size: int | None = None) -> str:
    """The latest published checkpoint of the account's log (or the one of this size), with the cosignatures
    of witnesses appended: the exact signed note."""

    async def find(reads: Reads) -> str:
        found = await reads.checkpoint(account_id, size)
        if found is None:
            what = "no checkpoint has been published" if size is None else f"no checkpoint of size {size}"
            raise NotInLog(f"{what} for this account's log")
        return found[1] + "".join(await reads.cosignatures(account_id, found[0]))

    return await db.run_read(find)


class NoCheckpointKey(Exception):
    def __init__(self) -> None:
        super().__init__(
            "this goldtrail signs no checkpoints: its operator has set no checkpoint key (GOLDTRAIL_CHECKPOINT_KEY)"
        )


class CosignatureRefused(Exception):
    """A cosignature that no configured witness key made, or that does not verify."""


async def add_cosignature(
    db: Database, witness_keys: tuple[str, ...], account_id: str, size: int, signature_line: str
) -> None:
    """Keep a witness's cosignature of one of the account's published checkpoints, if it verifies with one of
    the configured witness keys; it is served with the checkpoint from then on."""
    found = await db.run_read(lambda reads: reads.checkpoint(account_id, size))
    if found is None:
        raise NotInLog(f"no checkpoint of size {size} for this account's log")
    body, _ = note.split_note(found[1])
    for key in witness_keys:
        verifier = note.parse_vkey(key)
        line = signature_line.rstrip("\n") + "\n"
        try:
            note.verify_cosignature(body, line, verifier)
        except note.NoteError:
            continue
        async with db.integrate() as tx:
            await tx.add_cosignature(account_id, size, f"{verifier.name}+{verifier.key_id.hex()}", line, utc_now())
        return
    raise CosignatureRefused("the cosignature is not from a configured witness key, or does not verify")


async def label_proof(
    db: Database, signer: LogSigner | None, account_id: str, run_id: str, label_id: str, version: int
) -> dict:
    """A self-contained proof bundle (events.offline) for one version of a label: its events 1..version, and
    the inclusion of that version's event in the latest signed checkpoint, which a third party verifies
    offline with the log's verifier key."""
    from service.usecases.labels import LabelNotFound

    if signer is None:
        raise NoCheckpointKey()

    async def bundle(reads: Reads) -> dict:
        stream = await reads.stream_with_index(account_id, label_id)
        if not stream or stream[0].run_id != run_id or version > len(stream):
            raise LabelNotFound(run_id, label_id)
        events = stream[:version]
        index = events[-1].log_index
        found = await reads.checkpoint(account_id)
        if index is None or found is None or found[0] <= index:
            raise NotInLog(f"version {version} is not in a signed checkpoint yet: ask again in a second")
        size, checkpoint_note = found
        checkpoint_note += "".join(await reads.cosignatures(account_id, size))
        node = await _nodes(reads, account_id, merkle.inclusion_path, index, size)
        proof = note.proof_text(index, merkle.inclusion_path(index, size, node), checkpoint_note)
        return {
            "format": "goldtrail-proof/v1",
            "account_id": account_id,
            "run_id": run_id,
            "label_id": label_id,
            "version": version,
            "events": [exported(event).to_json() for event in events],
            "proof": proof,
        }

    return await db.run_read(bundle)


# Checking the stored log against the events (goldtrail verify) -------------------------------------------


class LogProblem(msgspec.Struct, frozen=True):
    account_id: str
    problem: str
    log_index: int | None = None


def _check_account(
    account_id: str,
    entries: list[tuple[int, str | None, int | None, int | None]],
    head: tuple[int, bytes] | None,
    published: list[tuple[int, bytes, str]],
    stored_tiles: dict[tiles.TileKey, bytes],
    signer: LogSigner | None,
) -> list[LogProblem]:
    """One account's log: dense indexes, each entry an event in feed order, the tree rebuilt from the entries
    equal to the stored tiles and head, and every checkpoint signed over the root of its size."""
    problems: list[LogProblem] = []
    sizes = {size for size, _, _ in published}
    roots: dict[int, bytes] = {}
    built: dict[tiles.TileKey, bytes] = {}
    size, previous, broken = 0, None, False
    for index, digest, tx_id, position in entries:
        if index != size:
            problems.append(LogProblem(account_id, f"the log skips from entry {size - 1} to {index}", index))
            broken = True
            break
        if digest is None:
            problems.append(LogProblem(account_id, "the entry's event is gone from the events table", index))
            broken = True
            break
        if previous is not None and (tx_id, position) < previous:
            problems.append(LogProblem(account_id, "the entry comes before the one ahead of it in feed order", index))
        previous = (tx_id, position)
        edge = {key: built[key] for key in tiles.right_edge(size) if key in built}
        size, changed = tiles.append(size, edge, [bytes.fromhex(digest)])
        built.update(changed)
        if size in sizes:
            roots[size] = _root(size, built)
    if broken:  # the tree cannot be rebuilt past the break
        return problems
    current = _root(size, built) if size else merkle.EMPTY_ROOT
    if head is not None and head != (size, current):
        problems.append(LogProblem(account_id, f"the log's head says {head[0]} entries and a root they do not make"))
    for key, hashes in stored_tiles.items():
        if built.get(key) != hashes:
            problems.append(LogProblem(account_id, f"stored tile {key} differs from the one the entries make"))
            break
    for checkpoint_size, root, signed in published:
        if roots.get(checkpoint_size) != root:
            problems.append(
                LogProblem(account_id, f"the checkpoint of size {checkpoint_size} is not of this log's tree")
            )
        elif signer is not None:
            try:
                text = note.open_note(signed, signer.vkey(account_id))
            except note.NoteError as error:
                problems.append(LogProblem(account_id, f"the checkpoint of size {checkpoint_size}: {error}"))
                continue
            if note.parse_checkpoint(text).root != root:
                problems.append(LogProblem(account_id, f"the checkpoint of size {checkpoint_size} signs another root"))
    return problems


async def check_log(reads: Reads, signer: LogSigner | None, batch_size: int = 5000) -> tuple[int, list[LogProblem]]:
    """Every account's verifiable log against the events it was built from; returns (entries, problems)."""
    heads, published = await reads.all_heads(), await reads.all_checkpoints()
    problems: list[LogProblem] = []
    by_account: dict[str, list[tuple[int, str | None, int | None, int | None]]] = {account: [] for account in heads}
    count = 0
    async for batch in reads.log_rows(batch_size):
        for account_id, index, digest, tx_id, position in batch:
            by_account.setdefault(account_id, []).append((index, digest, tx_id, position))
            count += 1
    for account_id, entries in by_account.items():
        stored = await reads.account_tiles(account_id)
        checkpoints = published.get(account_id, [])
        problems += _check_account(account_id, entries, heads.get(account_id), checkpoints, stored, signer)
    for account_id, position in await reads.never_integrated():
        problems.append(LogProblem(account_id, f"the event at position {position} was passed over by the integrator"))
    return count, problems
