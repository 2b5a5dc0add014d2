"""Least privilege on PostgreSQL: the runtime role made by `goldtrail migrate --runtime-role` can
serve every route but cannot update, delete or truncate a single event, even with the triggers off."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from tests.helpers import ALL_SCOPES, POSTGRES_ADMIN_URL, SECRET, auth, create_label, label_url
from tests.servers import clean_environment, goldtrail_serve, run_goldtrail


@pytest.fixture
def runtime_role(fresh_database) -> Iterator[tuple[str, str, str]]:
    """(admin URL, runtime-role URL, role) for a fresh database migrated with a runtime role."""
    admin_url = fresh_database("postgres", migrated=False)
    role = f"goldtrail_rt_{uuid.uuid4().hex[:8]}"
    env = clean_environment(GOLDTRAIL_DATABASE_URL=admin_url, GOLDTRAIL_JWT_SECRET=SECRET)
    try:
        made = run_goldtrail(env, "migrate", "--runtime-role", role, timeout=60)
        assert made.returncode == 0, made.stderr
        assert "never update, delete or truncate" in made.stdout
        yield admin_url, sa.make_url(admin_url).set(username=role).render_as_string(hide_password=False), role
    finally:
        # The database itself is dropped after this fixture (fresh_database): first revoke what the role was
        # granted in it (and on it), or the role cannot be dropped.
        with psycopg.connect(admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_service_runs_as_the_runtime_role(runtime_role, tmp_path):
    _, role_url, _ = runtime_role
    env = clean_environment(GOLDTRAIL_DATABASE_URL=role_url, GOLDTRAIL_JWT_SECRET=SECRET)
    run = str(uuid.uuid4())
    with goldtrail_serve(tmp_path, env) as base, httpx.Client(base_url=base, headers=auth(scope=ALL_SCOPES)) as client:
        label = create_label(client, run, output_resource_name="o", text_value="a")
        url = label_url(run, label["id"])
        assert client.put(url, json={"text_value": "b"}, headers={"Idempotency-Key": "k1"}).status_code == 200
        assert client.delete(url).status_code == 204
        assert len(client.get(f"{url}/history").json()) == 3
        # The feed shows an event once no older transaction can still commit before it: poll briefly.
        deadline = time.monotonic() + 10
        while len(feed := client.get("/v1/events").json()["events"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [event["type"] for event in feed] == ["GoldLabelCreated", "GoldLabelUpdated", "GoldLabelDeleted"]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET actor = 'mallory'",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER USER",
        "DROP TABLE events",
        "DELETE FROM gold_labels",
    ],
)
def test_the_runtime_role_cannot_rewrite_history(runtime_role, statement):
    admin_url, role_url, _ = runtime_role
    with psycopg.connect(admin_url) as conn:
        conn.execute(
            "INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id,"
            " prev_hash, hash) VALUES ('a', 's', 1, 'r', 'GoldLabelCreated', '{}', 'alice', now(), 'q', '0', '1')"
        )
    with psycopg.connect(role_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)
    with psycopg.connect(admin_url) as conn:
        assert conn.execute("SELECT actor FROM events").fetchall() == [("alice",)]


def test_runtime_role_sql_can_be_printed_for_a_dba(tmp_path):
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/goldtrail", GOLDTRAIL_JWT_SECRET=SECRET
    )
    printed = run_goldtrail(env, "migrate", "--print-runtime-role-sql", "app", timeout=30)
    assert printed.returncode == 0
    assert 'GRANT SELECT, INSERT ON events, log_leaves, log_checkpoints, log_cosignatures TO "app";' in printed.stdout
    assert "UPDATE ON events" not in printed.stdout and "DELETE" not in printed.stdout
