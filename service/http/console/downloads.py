"""What the console hands over as files: the filtered activity as NDJSON (the feed's lines) or CSV, streamed in
flat memory whatever its size; the whole account log, its latest checkpoint and the log's key for `goldtrail
verify-log`; and a label version's proof bundle for `goldtrail verify-proof`."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromQuery
from litestar.response import Stream

from events.types import NULL, GoldLabelCreated, GoldLabelUpdated, RecordedEvent, format_time, utc_now
from service.http.audit import cut_short
from service.http.consistency import reads_for
from service.http.console import forms
from service.http.console.session import signed_in
from service.http.input import canonical_uuid, database
from service.http.views import encode, feed_event
from service.usecases import activity, audit, log
from service.usecases.commands import InvalidInput

NDJSON = "application/x-ndjson"
CSV = "text/csv; charset=utf-8; header=present"
CSV_COLUMNS = (
    "recorded_at",
    "actor",
    "type",
    "run_id",
    "label_id",
    "output_resource_name",
    "version",
    "reason",
    "request_id",
    "log_index",
    "text_value",
    "object_value",
    "object_value_is_partial",
    "hash",
    "prev_hash",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CWE-1236): such cells get a leading
# apostrophe, which spreadsheets show as text. The NDJSON export carries every value exactly.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# Excel reads a CSV as UTF-8 only when it starts with a byte order mark.
_BOM = "\ufeff"


def spreadsheet_safe(cell: str) -> str:
    """A CSV cell no spreadsheet runs as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def csv_row(event: RecordedEvent, name: str | None) -> list[str]:
    """An event as a row of CSV_COLUMNS: its value after the event (a create or update carries the whole
    value), every cell safe to open in a spreadsheet."""
    data = event.data
    text_value = object_value = partial = ""
    if isinstance(data, GoldLabelCreated | GoldLabelUpdated):
        text_value = "" if data.text_value is None else data.text_value
        object_value = "" if data.object_value == NULL else bytes(data.object_value).decode()
        partial = "" if data.object_value_is_partial is None else str(data.object_value_is_partial).lower()
    cells = [
        format_time(event.recorded_at),
        event.actor,
        event.type,
        event.run_id,
        event.stream_id,
        name or "",
        str(event.version),
        event.reason or "",
        event.request_id,
        "" if event.log_index is None else str(event.log_index),
        text_value,
        object_value,
        partial,
        event.hash,
        event.prev_hash,
    ]
    return [spreadsheet_safe(cell) for cell in cells]


def _csv_lines(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


def _filename(kind: str, account: str, extension: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", account)[:60]
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    return f"goldtrail-{kind}-{safe}-{stamp}.{extension}"


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


async def _first(request: Request, items: AsyncIterator[Any]) -> Any:
    """Reach the database before answering 200, so an outage is a 503 page and not a cut-off download."""
    return await database(request).within_time_limit(lambda _deadline: anext(items, None))


async def _batches(first: Any, rest: AsyncIterator[Any], size: int = 1000) -> AsyncIterator[list[Any]]:
    if first is None:
        return
    batch = [first]
    async for item in rest:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _export(request: Request, kind: str) -> Stream:
    """The events the activity filter keeps, oldest first: NDJSON (each line as the feed has it) or CSV."""
    principal = signed_in(request)
    chosen = forms.filter_of(request)
    # One read transaction over the whole filter: on the primary, where replay cannot cancel it halfway through a
    # 200 (a standby's reads are paged and resumable; this one is not yet).
    events = activity.export_events(database(request), principal.account, chosen)
    first = await _first(request, events)

    async def ndjson() -> AsyncIterator[bytes]:
        async for batch in _batches(first, events):
            yield b"".join(encode(feed_event(event)) + b"\n" for event, _ in batch)

    async def rows() -> AsyncIterator[bytes]:
        yield (_BOM + ",".join(CSV_COLUMNS) + "\r\n").encode()
        async for batch in _batches(first, events):
            yield _csv_lines([csv_row(event, name) for event, name in batch])

    filename = _filename("activity", principal.account, kind)
    body, media_type = (rows(), CSV) if kind == "csv" else (ndjson(), NDJSON)
    return Stream(body, media_type=media_type, headers=_attachment(filename))


@get("/export.csv")
async def export_csv(request: Request) -> Stream:
    return await _export(request, "csv")


@get("/export.ndjson")
async def export_ndjson(request: Request) -> Stream:
    return await _export(request, "ndjson")


@get("/log.ndjson")
async def whole_log(request: Request) -> Stream:
    """The account's whole log, in log order: what `goldtrail verify-log` checks against a checkpoint."""
    principal = signed_in(request)
    events = audit.feed_stream(reads_for(request), principal.account, 0)
    first = await _first(request, events)

    async def lines() -> AsyncIterator[bytes]:
        last = first
        try:
            async for batch in _batches(first, events):
                yield b"".join(encode(feed_event(event)) + b"\n" for event in batch)
                last = batch[-1]
        except audit.StreamCutShort as error:
            yield cut_short(error, last)

    return Stream(lines(), media_type=NDJSON, headers=_attachment(_filename("log", principal.account, "ndjson")))


@get("/checkpoint.txt")
async def checkpoint(request: Request) -> Response[bytes]:
    principal = signed_in(request)
    if request.app.state.log_signer is None:
        raise log.NoCheckpointKey()
    text = await log.checkpoint(reads_for(request), principal.account)
    headers = _attachment(_filename("checkpoint", principal.account, "txt"))
    return Response(content=text.encode(), media_type="text/plain; charset=utf-8", headers=headers)


@get("/log-key.txt")
async def log_key(request: Request) -> Response[bytes]:
    principal = signed_in(request)
    signer = request.app.state.log_signer
    if signer is None:
        raise log.NoCheckpointKey()
    headers = _attachment(_filename("log-key", principal.account, "txt"))
    return Response(content=(signer.vkey(principal.account) + "\n").encode(), media_type="text/plain", headers=headers)


@get("/proof")
async def proof(
    request: Request,
    run: FromQuery[str | None] = None,
    label: FromQuery[str | None] = None,
    version: FromQuery[str | None] = None,
) -> Response[bytes]:
    """A label version's proof bundle, as GET /v1/run/{run}/gold-label/{id}/proof?version=V gives it."""
    principal = signed_in(request)
    run_id = canonical_uuid(forms.text_field(run, "run") or "", "run")
    label_id = canonical_uuid(forms.text_field(label, "label") or "", "label")
    chosen = forms.version_field(version, "version")
    if chosen is None:
        raise InvalidInput("give the version to prove", "version")
    bundle = await log.label_proof(
        reads_for(request), request.app.state.log_signer, principal.account, run_id, label_id, chosen
    )
    headers = _attachment(f"goldtrail-proof-{label_id}-v{chosen}.json")
    return Response(content=encode(bundle), media_type="application/json", headers=headers)


DOWNLOADS = [export_csv, export_ndjson, whole_log, checkpoint, log_key, proof]
