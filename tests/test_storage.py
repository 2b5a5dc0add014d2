"""The database itself guards the log: events cannot be updated, deleted or truncated, on both backends,
and the migrated schema is exactly the one the code declares."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from service.storage.database import Database
from service.storage.errors import LostRace
from service.storage.migrate import head_revision
from service.storage.schema import metadata
from tests.helpers import auth, count_events, create_label, engine_of, label_url, poison_projection


@pytest.fixture
def one_event(client, run_id) -> str:
    return create_label(client, run_id, auth(), output_resource_name="o")["id"]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET actor = 'mallory' WHERE stream_id = :id",
        "UPDATE events SET data = '{}' WHERE stream_id = :id",
        "DELETE FROM events WHERE stream_id = :id",
    ],
)
def test_database_refuses_to_rewrite_an_event(engine, one_event, statement):
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(statement), {"id": one_event})
    with engine.connect() as conn:
        actor = conn.execute(sa.text("SELECT actor FROM events WHERE stream_id = :id"), {"id": one_event}).scalar()
    assert actor == "alice" and count_events(engine, label_id=one_event) == 1


def test_database_refuses_to_empty_the_event_table(engine, one_event):
    # PostgreSQL's TRUNCATE skips row triggers, so it has its own; SQLite's equivalent is an unqualified
    # DELETE (its truncate optimisation is disabled by the delete trigger).
    statement = "TRUNCATE events" if engine.dialect.name == "postgresql" else "DELETE FROM events"
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(statement))
    assert count_events(engine, label_id=one_event) == 1


@pytest.mark.filterwarnings("ignore:Did not recognize type .xid8.")
def test_migrated_schema_matches_the_declared_tables(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head_revision()
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_concurrent_migrations_all_succeed_once(backend, fresh_database):
    url = fresh_database(backend, migrated=False)
    env = {**os.environ, "GOLDTRAIL_DATABASE_URL": url, "GOLDTRAIL_JWT_SECRET": "x" * 32}
    command = [sys.executable, "-m", "service.cli", "migrate"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    outcomes = [(run.wait(timeout=60), run.stdout.read().decode(), run.stderr.read().decode()) for run in runs]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    assert all(f"schema is at migration {head_revision()}" in out for _, out, _ in outcomes)
    with engine_of(url) as engine, engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar() == 0


def test_an_event_whose_projection_fails_is_rolled_back_with_it(client, engine, run_id):
    """The read-model write fails after the event was appended: neither survives, and the answer is a JSON 500."""
    poison_projection(engine)
    label = create_label(client, run_id, auth(), output_resource_name="o")
    response = client.put(
        label_url(run_id, label["id"]), json={"text_value": "poison"}, headers={**auth(), "X-Request-ID": "req-500"}
    )
    assert response.status_code == 500
    assert response.json() == {"error": "internal error", "request_id": "req-500"}
    assert "poisoned" not in response.text
    assert count_events(engine, label_id=label["id"]) == 1
    after = client.get(label_url(run_id, label["id"]), headers=auth())
    assert after.json() == label and after.headers["etag"] == '"1"'
    assert client.put(label_url(run_id, label["id"]), json={"text_value": "fine"}, headers=auth()).headers["etag"] == (
        '"2"'
    )
    assert str(uuid.UUID(label["id"])) == label["id"] and uuid.UUID(label["id"]).version == 4


def test_a_guarded_update_that_moves_no_row_commits_nothing_of_its_transaction(settings, engine):
    """The read model's move-on is guarded on both backends: if its row is not at the expected version,
    the event queued before it is not committed either (on PostgreSQL both travel with COMMIT)."""
    stream = str(uuid.uuid4())

    async def write(tx) -> None:
        await tx.execute(
            "INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at,"
            " request_id, prev_hash, hash) VALUES ('guard', :stream, 1, 'r', 'GoldLabelCreated', '{}', 'a',"
            " :at, 'q', '0', '1')",
            {"stream": stream, "at": datetime.now(UTC)},
        )
        await tx.execute_one("UPDATE gold_labels SET version = 2 WHERE id = :id", {"id": stream})

    async def attempt() -> None:
        db = Database.connect(settings)
        try:
            await db.run_write(write)
        finally:
            await db.close()

    with pytest.raises(LostRace):
        asyncio.run(attempt())
    assert count_events(engine, label_id=stream) == 0
