"""Bring a database's schema to the newest migration; safe when several instances start at once."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from service.storage.database import configure_sqlite, sqlite_path, sync_url

# Any fixed number: the advisory lock that serialises concurrent `migrate` runs on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x601D7A11


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _engine(database_url: str, timeout_seconds: float) -> sa.Engine:
    url = sync_url(database_url)
    # A database that accepts the connection but never answers must not hang start-up forever.
    connect_args = {"connect_timeout": max(1, round(timeout_seconds))} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def migrate(database_url: str, timeout_seconds: float = 10.0) -> str:
    """Apply every pending migration and return the revision the database is now at."""
    config = _alembic_config()
    engine = _engine(database_url, timeout_seconds)
    path = sqlite_path(database_url)
    lock = nullcontext()
    if engine.dialect.name == "sqlite":
        configure_sqlite(engine)
        if path is not None:
            # SQLite has no advisory locks; a lock file beside the database serialises this host's instances.
            lock = _file_lock(path.with_name(path.name + ".migrate-lock"))
    try:
        with lock, engine.connect() as conn:
            with conn.execution_options(write=True).begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class SchemaOutOfDate(Exception):
    """The database is not at the newest migration; the operator should run `goldtrail migrate`."""


def require_current_schema(database_url: str, timeout_seconds: float = 10.0) -> None:
    engine = _engine(database_url, timeout_seconds)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    if current != head_revision():
        raise SchemaOutOfDate(
            f"the database schema is at migration {current or 'none'}, this goldtrail needs {head_revision()}: "
            "run `goldtrail migrate` first"
        )


def runtime_role_sql(role: str, database: str) -> list[str]:
    """Grants for the role the service runs as: it may append events but never change or remove one,
    so even a compromised service cannot rewrite history (the triggers are the second line)."""
    name = '"' + role.replace('"', '""') + '"'
    db = '"' + database.replace('"', '""') + '"'
    return [
        f"DO $$ BEGIN CREATE ROLE {name} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"GRANT CONNECT ON DATABASE {db} TO {name}",
        f"GRANT USAGE ON SCHEMA public TO {name}",
        f"REVOKE ALL ON events, gold_labels, idempotency_keys, alembic_version FROM {name}",
        f"GRANT SELECT, INSERT ON events TO {name}",
        f"GRANT SELECT, INSERT, UPDATE ON gold_labels TO {name}",
        f"GRANT SELECT, INSERT, UPDATE ON idempotency_keys TO {name}",
        f"GRANT SELECT ON alembic_version TO {name}",
    ]


def create_runtime_role(database_url: str, role: str, timeout_seconds: float = 10.0) -> None:
    engine = _engine(database_url, timeout_seconds)
    if engine.dialect.name != "postgresql":
        raise ValueError("a runtime role only exists on PostgreSQL; SQLite has no roles")
    try:
        with engine.begin() as conn:
            for statement in runtime_role_sql(role, engine.url.database):
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
