"""The references the write path is measured against, served like goldtrail (uvicorn, N workers):

- `bare`: a Litestar PUT that verifies the HS256 bearer token with PyJWT, decodes the body with msgspec
  and encodes an answer, touching no database: the framework's ceiling on this machine;
- `prototype`: the same plus the whole write as ONE autocommit SQL statement on goldtrail's own schema
  (same tables, indexes and triggers), one round trip: it locks the label's row, appends the event
  (version + 1, the previous hash from the row, the chain hash computed in SQL) and moves the read-model
  row on, answering the label as goldtrail does. No validation beyond the JSON, no idempotency, no
  request ids, logs or metrics: the ceiling for a write per request.

Run as `python -m tests.bench.reference_apps bare|prototype PORT WORKERS` with GOLDTRAIL_DATABASE_URL
and GOLDTRAIL_JWT_SECRET set; the benchmark starts and stops them.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime

import jwt
import msgspec
import uvicorn
from litestar import Litestar, Request, Response, put
from litestar.exceptions import NotAuthorizedException, NotFoundException

SECRET = os.environ.get("GOLDTRAIL_JWT_SECRET", "")
POOL_SIZE = 10  # goldtrail's default pool per worker
_decoder = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()

# The chain hash in SQL: a format-2-like array of the event's fields, the payload by its SHA-256.
WRITE = """
WITH current AS (
  SELECT account_id, id, run_id, version, hash FROM gold_labels
  WHERE account_id = %(account)s AND id = %(id)s AND run_id = %(run)s AND deleted_at IS NULL
  FOR UPDATE
), appended AS (
  INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id,
                      reason, prev_hash, hash, chain)
  SELECT account_id, id, version + 1, run_id, 'GoldLabelUpdated', %(data)s::text, %(actor)s::text,
         %(now)s::timestamptz, %(request)s::text, NULL, hash,
         encode(sha256(convert_to(json_build_array('goldtrail-event/2', account_id, id, version + 1, run_id,
           'GoldLabelUpdated', encode(sha256(convert_to(%(data)s::text, 'UTF8')), 'hex'), %(actor)s::text,
           %(now)s::timestamptz, %(request)s::text, NULL, hash)::text, 'UTF8')), 'hex'),
         2
  FROM current
  RETURNING stream_id, version, hash, recorded_at
)
UPDATE gold_labels g SET text_value = %(text)s::text, object_value = NULL, object_value_is_partial = NULL,
       version = a.version, hash = a.hash, updated_at = a.recorded_at, updated_by = %(actor)s::text
FROM appended a WHERE g.account_id = %(account)s AND g.id = a.stream_id
RETURNING g.id, g.run_id, g.output_resource_name, g.text_value, g.object_value, g.object_value_is_partial,
          g.created_by, g.created_at, g.updated_by, g.updated_at, g.version
"""
ANSWER = ("id", "run_id", "output_resource_name", "text_value", "object_value", "object_value_is_partial",
          "created_by", "created_at", "updated_by", "updated_at")  # fmt: skip


def _claims(request: Request) -> dict:
    _, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        return jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise NotAuthorizedException() from None


@put("/v1/run/{run_id:str}/gold-label/{label_id:str}")
async def bare(request: Request, run_id: str, label_id: str) -> Response:
    claims = _claims(request)
    body = _decoder.decode(await request.body())
    answer = {"id": label_id, "run_id": run_id, "account_id": claims["account_id"], **body}
    return Response(_encoder.encode(answer), media_type="application/json", headers={"ETag": '"1"'})


@put("/v1/run/{run_id:str}/gold-label/{label_id:str}")
async def prototype(request: Request, run_id: str, label_id: str) -> Response:
    claims = _claims(request)
    body = _decoder.decode(await request.body())
    data = _encoder.encode({"text_value": body.get("text_value")}).decode()
    async with request.app.state.pool.connection() as conn:
        cursor = await conn.execute(
            WRITE,
            {
                "account": claims["account_id"],
                "id": label_id,
                "run": run_id,
                "data": data,
                "actor": claims["sub"],
                "now": datetime.now(UTC),
                "request": str(uuid.uuid4()),
                "text": body.get("text_value"),
            },
        )
        row = await cursor.fetchone()
    if row is None:
        raise NotFoundException()
    *values, version = row
    answer = dict(zip(ANSWER, values, strict=True))
    return Response(_encoder.encode(answer), media_type="application/json", headers={"ETag": f'"{version}"'})


def create_bare() -> Litestar:
    return Litestar([bare], logging_config=None)


def create_prototype() -> Litestar:
    from psycopg_pool import AsyncConnectionPool

    url = os.environ["GOLDTRAIL_DATABASE_URL"]

    async def open_pool(app: Litestar) -> None:
        # autocommit: the statement is its own transaction, one round trip with no COMMIT after it
        app.state.pool = AsyncConnectionPool(
            url, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True}, open=False
        )
        await app.state.pool.open()

    async def close_pool(app: Litestar) -> None:
        await app.state.pool.close()

    return Litestar([prototype], on_startup=[open_pool], on_shutdown=[close_pool], logging_config=None)


if __name__ == "__main__":
    kind, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    factory = {"bare": "create_bare", "prototype": "create_prototype"}[kind]
    uvicorn.run(
        f"tests.bench.reference_apps:{factory}",
        factory=True,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
