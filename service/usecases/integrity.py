"""The state of an account's verifiable log for auditors: its latest signed checkpoint, checked against the
deployment's key, and a verification of the whole log against it, as `goldtrail verify-log` does offline
(events.offline, on the log as the feed exports it)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator

import msgspec

from events import note
from events.offline import Report, verify_log
from events.types import RecordedEvent
from service.storage.database import Database
from service.usecases import log
from service.usecases.log import LogSigner, NotInLog, exported

_BATCH = 2000


class LogState(msgspec.Struct, frozen=True):
    """The account's log now: how many entries it holds, and its latest checkpoint (if one was published),
    whose signature was checked against the deployment's key."""

    entries: int
    checkpoint: str | None
    tree_size: int | None = None
    root: str | None = None  # base64, as the checkpoint writes it
    origin: str | None = None
    signature_problem: str | None = None  # None: the signature verifies under the log's key
    vkey: str | None = None


async def log_state(db: Database, signer: LogSigner | None, account_id: str) -> LogState:
    head = await db.run_read(lambda reads: reads.log_head(account_id))
    entries = 0 if head is None else head[0]
    if signer is None:
        return LogState(entries, None)
    vkey = signer.vkey(account_id)
    try:
        signed = await log.checkpoint(db, account_id)
    except NotInLog:
        return LogState(entries, None, vkey=vkey)
    try:
        checkpoint = note.parse_checkpoint(note.open_note(signed, vkey))
    except note.NoteError as error:
        return LogState(entries, signed, signature_problem=str(error), vkey=vkey)
    root = base64.b64encode(checkpoint.root).decode()
    return LogState(entries, signed, checkpoint.size, root, checkpoint.origin, vkey=vkey)


async def _lines(events: AsyncIterator[RecordedEvent]) -> list[bytes]:
    """The next lines of the export (empty at its end)."""
    lines = []
    async for event in events:
        lines.append(msgspec.json.encode(exported(event).to_json()))
        if len(lines) == _BATCH:
            break
    return lines


async def verify_account_log(db: Database, signer: LogSigner, account_id: str) -> Report:
    """Check the account's whole log against its latest signed checkpoint, as an auditor would offline: every
    chain hash and link, the dense indexes, the signature and the Merkle root. Reads the log a batch at a time
    while the check runs in a worker thread; as long as the log is (no time limit)."""
    signed = await log.checkpoint(db, account_id)
    loop = asyncio.get_running_loop()
    async with db.read() as reads:
        events = reads.log_events(account_id, 0)

        def lines() -> Iterator[bytes]:
            while batch := asyncio.run_coroutine_threadsafe(_lines(events), loop).result():
                yield from batch

        return await asyncio.to_thread(verify_log, lines(), signed, signer.vkey(account_id), account_id, workers=1)
