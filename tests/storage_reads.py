"""Reading what a database holds, through goldtrail's own storage, from synchronous test code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from events.types import RecordedEvent
from projections.fold import LabelState
from service.settings import load_settings
from service.storage.database import Database
from service.storage.sql import Reads

T = TypeVar("T")


def read(url: str, work: Callable[[Reads], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database.connect(load_settings({"GOLDTRAIL_DATABASE_URL": url, "GOLDTRAIL_JWT_SECRET": "x" * 32}))
        try:
            async with db.read() as reads:
                return await work(reads)
        finally:
            await db.close()

    return asyncio.run(run())


def stored_stream(url: str, account: str | None, label_id: str) -> list[RecordedEvent]:
    return read(url, lambda reads: reads.stream(account, label_id))


def stored_label(url: str, account: str, label_id: str) -> LabelState | None:
    return read(url, lambda reads: reads.label(account, label_id))


def stored_labels(url: str, account: str) -> dict[str, LabelState]:
    """Every label of the account, deleted ones included, by id."""

    async def labels(reads: Reads) -> dict[str, LabelState]:
        return {
            state.id: state
            async for batch in reads.read_model(1000)
            for state in batch
            if state.account_id == account
        }

    return read(url, labels)
