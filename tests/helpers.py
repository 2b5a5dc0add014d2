"""What many test modules share that is not a fixture: tokens and settings, the API's URLs and the calls that
create, change and read labels over HTTP, databases made and dropped for a test, and reading what a database
holds (through goldtrail's own storage, or straight from the tables).

Fixtures live in conftest.py; real `goldtrail serve` processes and raw sockets in servers.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import psycopg
import sqlalchemy as sa
from psycopg import sql

from events.types import PendingEvent, RecordedEvent
from projections.fold import LabelState, apply
from service.settings import Settings, load_settings
from service.storage.database import Database, sync_url
from service.storage.migrate import migrate
from service.storage.sql import LabelWrites, Reads

T = TypeVar("T")

SECRET = "test-secret-" + secrets.token_hex(16)
READ, WRITE, AUDIT = "gold_labels:read", "gold_labels:write", "audit:read"
ALL_SCOPES = f"{READ} {WRITE} {AUDIT}"

# --- tokens and settings --------------------------------------------------------------------------


def token(account: str = "acme", user: str = "alice", *, secret: str = SECRET, ttl: int = 600, **claims: object) -> str:
    """An HS256 token signed with the tests' secret; a None claim is left out."""
    now = int(time.time())
    payload: dict[str, object] = {"sub": user, "account_id": account, "iat": now, "exp": now + ttl}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def bearer(jwt_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_token}"}


def auth(account: str = "acme", user: str = "alice", **claims: object) -> dict[str, str]:
    """The Authorization header of a fresh token (see `token`)."""
    return bearer(token(account, user, **claims))


def make_settings(database_url: str, data_dir: Path, **extra: str) -> Settings:
    env = {"GOLDTRAIL_DATABASE_URL": database_url, "GOLDTRAIL_DATA_DIR": str(data_dir), "GOLDTRAIL_JWT_SECRET": SECRET}
    env.update(extra)
    return load_settings(env)


def assert_error(response, status: int, *fragments: str) -> dict:
    """The response has this status and a JSON `{"error": ...}` body mentioning each fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


# --- the API over HTTP (a TestClient, or an httpx.Client with its own headers and base URL) ---------


def new_account(prefix: str = "acct") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def labels_url(run_id: str | None = None) -> str:
    """A run's labels (a new run when none is named)."""
    return f"/v1/run/{run_id or uuid.uuid4()}/gold-labels"


def label_url(run_id: str, label_id: str) -> str:
    return f"/v1/run/{run_id}/gold-label/{label_id}"


def history_url(run_id: str, label_id: str) -> str:
    return f"{label_url(run_id, label_id)}/history"


def post_label(client, run_id: str | None = None, headers: dict | None = None, **body) -> httpx.Response:
    """POST a label (a fresh output resource name unless one is given); the response, whatever it is."""
    body.setdefault("output_resource_name", f"output-{uuid.uuid4().hex[:8]}")
    return client.post(labels_url(run_id), json=body, headers=headers)


def create_label(client, run_id: str | None = None, headers: dict | None = None, **body) -> dict:
    """POST a label that must be created (201); the label."""
    response = post_label(client, run_id, headers, **body)
    assert response.status_code == 201, response.text
    return response.json()


def update_label(client, run_id: str, label_id: str, headers: dict | None = None, **body) -> dict:
    """PUT a change that must be accepted (200); the label after it."""
    response = client.put(label_url(run_id, label_id), json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def delete_label(client, run_id: str, label_id: str, headers: dict | None = None) -> None:
    response = client.delete(label_url(run_id, label_id), headers=headers)
    assert response.status_code == 204, response.text


def label_history(client, run_id: str, label_id: str, headers: dict | None = None) -> list[dict]:
    response = client.get(history_url(run_id, label_id), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# --- databases of a test's own ----------------------------------------------------------------------

POSTGRES_ADMIN_URL = os.environ.get("GOLDTRAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} ({str(error).strip().splitlines()[0]})"
    return None


def create_postgres_database() -> str:
    """A new, empty, uniquely named database; returns its URL."""
    name = f"goldtrail_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh_database_url(backend: str, tmp_dir: Path) -> str:
    """A new, empty database of this backend ("sqlite" or "postgres") with a random name."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / f'goldtrail-{uuid.uuid4().hex[:8]}.sqlite3'}"
    return create_postgres_database()


def drop_database(url: str) -> None:
    """Drop a database made by fresh_database_url (a SQLite file goes with its temporary folder)."""
    if sa.make_url(url).get_backend_name() == "postgresql":
        drop_postgres_database(url)


@contextmanager
def database_of_its_own(backend: str, tmp_dir: Path, *, migrated: bool = True) -> Iterator[str]:
    """A fresh database (migrated unless told otherwise) for the length of the block; dropped afterwards."""
    url = fresh_database_url(backend, tmp_dir)
    try:
        if migrated:
            migrate(url)
        yield url
    finally:
        drop_database(url)


# --- what a database holds ----------------------------------------------------------------------------


def writing_now(url: str) -> bool:
    """Whether a transaction holds uncommitted writes on this database right now (another connection's).

    PostgreSQL: a backend of the database with a transaction id (taken at its first write). SQLite: the
    write lock is held (BEGIN IMMEDIATE cannot start without waiting)."""
    if sa.make_url(url).get_backend_name() == "postgresql":
        with psycopg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(False)) as conn:
            return bool(
                conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
                ).fetchone()[0]
            )
    conn = sqlite3.connect(sa.make_url(url).database, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:  # "database is locked": a writer holds it
        return True
    finally:
        conn.close()


@contextmanager
def engine_of(url: str) -> Iterator[sa.Engine]:
    """A plain synchronous engine on the database, for looking at its tables directly."""
    engine = sa.create_engine(sync_url(url))
    try:
        yield engine
    finally:
        engine.dispose()


def scalar(engine: sa.Engine, statement: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(statement), params).scalar()


def count_events(engine: sa.Engine, *, label_id: str | None = None, account: str | None = None) -> int:
    """How many events the table holds, of one label or of one account."""
    where = " WHERE stream_id = :label_id" if label_id else " WHERE account_id = :account" if account else ""
    return scalar(engine, f"SELECT count(*) FROM events{where}", label_id=label_id, account=account)


def count_labels(engine: sa.Engine, *, run_id: str | None = None, account: str | None = None) -> int:
    """How many read-model rows (deleted labels included) the table holds, of one run or of one account."""
    where = " WHERE run_id = :run_id" if run_id else " WHERE account_id = :account" if account else ""
    return scalar(engine, f"SELECT count(*) FROM gold_labels{where}", run_id=run_id, account=account)


def on_database(url: str, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` on goldtrail's own Database for this URL, from synchronous test code."""

    async def run() -> T:
        db = Database.connect(load_settings({"GOLDTRAIL_DATABASE_URL": url, "GOLDTRAIL_JWT_SECRET": SECRET}))
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def read(url: str, work: Callable[[Reads], Awaitable[T]]) -> T:
    """Run `work` in one read transaction on the database."""

    async def in_transaction(db: Database) -> T:
        async with db.read() as reads:
            return await work(reads)

    return on_database(url, in_transaction)


def store_events(url: str, *events: PendingEvent) -> LabelState:
    """Write one label's events as given (times and ids included) the way the use cases write theirs: each
    appended and folded into the read model in one transaction. The label after the last one."""

    async def write(db: Database) -> LabelState:
        state = None
        for event in events:

            async def one(tx: LabelWrites, state=state, event=event) -> LabelState:
                new_state = apply(state, await tx.append(event))
                await tx.save_label(new_state)
                return new_state

            state = await db.run_write(one)
        return state

    return on_database(url, write)


def stored_stream(url: str, account: str | None, label_id: str) -> list[RecordedEvent]:
    return read(url, lambda reads: reads.stream(account, label_id))


def stored_label(url: str, account: str, label_id: str) -> LabelState | None:
    return read(url, lambda reads: reads.label(account, label_id))


def stored_labels(url: str, account: str) -> dict[str, LabelState]:
    """Every label of the account, deleted ones included, by id."""

    async def labels(reads: Reads) -> dict[str, LabelState]:
        return {
            state.id: state async for batch in reads.read_model(1000) for state in batch if state.account_id == account
        }

    return read(url, labels)


# A read-model write that fails after its event was appended (a projection bug, made to happen).
POISON_TRIGGERS = {
    "sqlite": [
        "CREATE TRIGGER IF NOT EXISTS test_poison BEFORE UPDATE ON gold_labels WHEN NEW.text_value = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'poisoned projection'); END"
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.text_value = 'poison' THEN RAISE EXCEPTION 'poisoned projection'; END IF; RETURN NEW; END $$",
        "DROP TRIGGER IF EXISTS test_poison ON gold_labels",
        "CREATE TRIGGER test_poison BEFORE UPDATE ON gold_labels FOR EACH ROW EXECUTE FUNCTION test_poison()",
    ],
}


def poison_projection(engine: sa.Engine) -> None:
    """From now on, moving a label's row to the text value 'poison' fails inside the database."""
    with engine.begin() as conn:
        for statement in POISON_TRIGGERS[engine.dialect.name]:
            conn.exec_driver_sql(statement)
