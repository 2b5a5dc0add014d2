"""What the operator commands do: verify, rebuild, history and export. Each prints a summary and
returns the process exit code; long scans show progress on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

import msgspec

from events.feed import FeedPoint, parse_cursor
from events.types import format_time
from projections.history import history
from projections.replay import BATCH_SIZE, Problem, compare_read_model, replay
from service.http.views import encode, feed_event
from service.settings import Settings
from service.storage.database import Database
from service.storage.replicas import Replicas, recovery_conflict
from service.usecases.audit import StreamCutShort, digest_at, feed_stream, whole_feed
from service.usecases.log import LogSigner, check_log


class ProgressBar:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label, self.total, self.stream = label, max(total, 1), stream
        self.started = time.perf_counter()
        self.enabled = stream.isatty()

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 30)
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.stream.write(f"\r{self.label} [{bar:<30}] {done:,}/{self.total:,} events, {rate:,.0f}/s")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def _report(problems: list[Problem], out: TextIO) -> None:
    for p in problems:
        where = f"position {p.position}, " if p.position is not None else ""
        version = f", version {p.version}" if p.version is not None else ""
        print(f"BAD {where}account {p.account_id}, label {p.label_id}{version}: {p.problem}", file=out)


async def verify(
    settings: Settings,
    *,
    digest: str | None,
    position: int | None = None,
    tree_size: int | None = None,
    account: str | None,
    out: TextIO = sys.stdout,
) -> int:
    db = Database.connect(settings)
    try:
        # One snapshot for the replay and the read-model comparison: a write committed between the two
        # would otherwise show as a read-model row that differs from the replay.
        async with db.read(snapshot=True) as reads:
            bar = ProgressBar("verify", await reads.count_events())
            outcome = await replay(reads.event_rows(BATCH_SIZE), bar)
            bar.finish()
            problems = outcome.problems + await compare_read_model(reads.read_model(BATCH_SIZE), outcome.states)
            signer = (
                None if settings.checkpoint_key_file is None else LogSigner(settings.checkpoint_key_file.read_text())
            )
            entries, log_problems = await check_log(reads, signer)
            digest_problem = None
            where = f"position {position}" if position is not None else f"tree size {tree_size}"
            if digest is not None:
                kept = await digest_at(reads, account, tree_size=tree_size, position=position)
                if kept is None and position is not None:
                    digest_problem = f"the event at position {position} is gone: events were deleted"
                elif kept is None:
                    digest_problem = f"the log holds fewer than {tree_size} entries: entries were deleted"
                elif kept.digest != digest.lower():
                    digest_problem = f"the log up to {where} no longer matches the digest"
    finally:
        await db.close()
    _report(problems, out)
    for problem in log_problems:
        entry = f", log entry {problem.log_index}" if problem.log_index is not None else ""
        print(f"BAD log of account {problem.account_id}{entry}: {problem.problem}", file=out)
    if digest_problem:
        print(f"BAD digest: {digest_problem}", file=out)
    checked = (
        f"{outcome.events:,} events of {len(outcome.states):,} labels and {entries:,} log entries in {bar.seconds:.1f}s"
    )
    found = len(problems) + len(log_problems) + bool(digest_problem)
    if found:
        print(f"verify FAILED: {found} problem(s) in {checked}", file=out)
        return 1
    extra = f"; the log up to {where} matches the digest" if digest is not None else ""
    print(
        f"verify OK: {checked}; every hash chain holds, the read model equals a full replay, and every account's"
        f" log holds its events in feed order under its checkpoints{extra}",
        file=out,
    )
    return 0


async def rebuild_read_model(settings: Settings, out: TextIO = sys.stdout) -> int:
    db = Database.connect(settings)
    try:
        async with db.maintain() as maintenance:
            # Before the replay reads a single event: a write committed after that read would be missing
            # from the new read model. Writers wait for the whole rebuild; readers do not.
            await maintenance.lock_read_model()
            bar = ProgressBar("rebuild", await maintenance.count_events())
            outcome = await replay(maintenance.event_rows(BATCH_SIZE), bar)
            bar.finish()
            if outcome.problems:
                _report(outcome.problems, out)
                print("rebuild refused: the log fails verification (see above); nothing was changed", file=out)
                return 1
            rows = await maintenance.replace_read_model(outcome.states.values())
    finally:
        await db.close()
    rate = outcome.events / max(bar.seconds, 1e-9)
    done = f"{outcome.events:,} events replayed into {rows:,} labels in {bar.seconds:.1f}s ({rate:,.0f} events/s)"
    print(f"rebuild OK: {done}", file=out)
    return 0


def _short(value: object, width: int = 40) -> str:
    text = bytes(value).decode() if isinstance(value, msgspec.Raw) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


async def print_history(
    settings: Settings, run_id: str, label_id: str, account: str | None, out: TextIO = sys.stdout
) -> int:
    db = Database.connect(settings)
    try:
        async with db.read() as reads:
            stream = await reads.stream(account, label_id)
    finally:
        await db.close()
    if not stream or stream[0].run_id != run_id:
        print(f"goldtrail: gold label {label_id} not found in run {run_id}", file=sys.stderr)
        return 1
    rows = [("version", "type", "actor", "recorded at (UTC)", "reason", "changes")]
    for step in history(stream):
        event = step.event
        changes = "; ".join(
            f"{name}: {_short(before)} → {_short(after)}"
            for name, (before, after) in step.changes.items()
            if name not in ("updated_at", "updated_by", "created_at", "created_by", "id", "account_id", "run_id")
        )
        recorded_at = format_time(event.recorded_at)
        rows.append((str(event.version), event.type, event.actor, recorded_at, event.reason or "", changes or "—"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1], file=out)
        if n == 0:
            print("  ".join("-" * width for width in widths) + "  " + "-" * 7, file=out)
    label = stream[0]
    print(f"\n{len(stream)} event(s) of label {label_id} (account {label.account_id}, run {run_id})", file=out)
    return 0


async def _account_lines(db: Database, account: str, after: str | None) -> AsyncIterator[tuple[bytes, str]]:
    cursor = parse_cursor(after)
    async for event in feed_stream(db, account, cursor):
        line = feed_event(event)
        yield encode(line) + b"\n", line.cursor


async def _whole_log_lines(db: Database, after: str | None) -> AsyncIterator[tuple[bytes, str]]:
    async for point, event in whole_feed(db, FeedPoint.parse(after)):
        yield encode(feed_event(event, point.cursor)) + b"\n", point.cursor


async def export(settings: Settings, account: str | None, after: str | None, output: Path | None) -> int:
    """An account's log in log order (what `goldtrail verify-log` checks), or, for no account, every account's
    events in the global feed order. An account's log is read a page at a time, on a standby when
    GOLDTRAIL_READ_REPLICA_URLS names one that is up; a read a standby cancels is read again."""
    db = Database.connect(settings)
    replicas = Replicas.connect(settings, db)
    handle = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115 - closed below
    written, last = 0, after or ""
    try:
        if account is not None:
            if replicas is not None:
                await replicas.check()
            source = _account_lines(db if replicas is None else replicas.route(None), account, after)
        else:
            source = _whole_log_lines(db, after)
        async for line, cursor in source:
            handle.write(line)
            written, last = written + 1, cursor
    except Exception as error:
        if not isinstance(error, StreamCutShort) and not recovery_conflict(error):
            raise
        why = str(error) if isinstance(error, StreamCutShort) else "the standby cancelled the read (recovery conflict)"
        resume = f"resume with --after {last}" if last else "run it again"
        print(f"goldtrail: the export stopped after {written:,} event(s): {why}; {resume}", file=sys.stderr)
        return 2
    finally:
        if replicas is not None:
            await replicas.stop()
        await db.close()
        if output:
            handle.close()
        else:
            handle.flush()
    resume = f"; resume with --after {last}" if last else ""
    print(f"exported {written:,} event(s){resume}", file=sys.stderr)
    return 0
