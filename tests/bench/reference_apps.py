"""The references the write path is measured against, served like goldtrail (uvicorn, N workers):

- `bare`: a Litestar PUT that verifies the HS256 bearer token with PyJWT, decodes the body with msgspec
  and encodes an answer, touching no database: the framework's ceiling on this machine;
- `prototype`: the same plus the whole write as ONE SQL statement on a psycopg pool (append the event
  and move the read-model row on, in a CTE), without hashing, validation or idempotency: the ceiling
  for a transaction per request.

Run as `python -m tests.bench.reference_apps bare|prototype PORT WORKERS` with GOLDTRAIL_DATABASE_URL
and GOLDTRAIL_JWT_SECRET set; the benchmark starts and stops them.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import jwt
import msgspec
import uvicorn
from litestar import Litestar, Request, Response, put
from litestar.exceptions import NotAuthorizedException

SECRET = os.environ.get("GOLDTRAIL_JWT_SECRET", "")
_decoder = msgspec.json.Decoder(dict)
_encoder = msgspec.json.Encoder()

WRITE = """
WITH appended AS (
  INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id,
                      prev_hash, hash)
  SELECT account_id, id, version + 1, run_id, 'GoldLabelUpdated', %(data)s, %(actor)s, %(now)s, 'bench',
         hash, md5(%(data)s)
  FROM gold_labels WHERE account_id = %(account)s AND id = %(id)s
  RETURNING stream_id, version
)
UPDATE gold_labels g SET text_value = %(text)s, version = a.version, updated_at = %(now)s, updated_by = %(actor)s
FROM appended a WHERE g.account_id = %(account)s AND g.id = a.stream_id
RETURNING g.version
"""


def _claims(request: Request) -> dict:
    _, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        return jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise NotAuthorizedException() from None


@put("/v1/run/{run_id:str}/gold-label/{label_id:str}", sync_to_thread=False)
async def bare(request: Request, run_id: str, label_id: str) -> Response:
    claims = _claims(request)
    body = _decoder.decode(await request.body())
    answer = {"id": label_id, "run_id": run_id, "account_id": claims["account_id"], **body}
    return Response(_encoder.encode(answer), media_type="application/json", headers={"ETag": '"1"'})


@put("/v1/run/{run_id:str}/gold-label/{label_id:str}", sync_to_thread=False)
async def prototype(request: Request, run_id: str, label_id: str) -> Response:
    claims = _claims(request)
    body = _decoder.decode(await request.body())
    pool = request.app.state.pool
    async with pool.connection() as conn:
        cursor = await conn.execute(
            WRITE,
            {
                "data": _encoder.encode({"type": "GoldLabelUpdated", **body}).decode(),
                "actor": claims["sub"],
                "now": datetime.now(UTC),
                "account": claims["account_id"],
                "id": label_id,
                "text": body.get("text_value"),
            },
        )
        (version,) = await cursor.fetchone()
    return Response(
        _encoder.encode({"id": label_id, **body}), media_type="application/json", headers={"ETag": f'"{version}"'}
    )


def create_bare() -> Litestar:
    return Litestar([bare], logging_config=None)


def create_prototype() -> Litestar:
    from psycopg_pool import AsyncConnectionPool

    url = os.environ["GOLDTRAIL_DATABASE_URL"]

    async def open_pool(app: Litestar) -> None:
        app.state.pool = AsyncConnectionPool(url, min_size=10, max_size=10, open=False)
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
