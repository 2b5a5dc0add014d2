"""Bring a database's schema to the newest migration; safe when several instances start at once."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.storage import postgres
from service.storage.database import backend_of, sync_engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def migrate(database_url: str, timeout_seconds: float = 10.0) -> str:
    """Apply every pending migration and return the revision the database is now at."""
    config = _alembic_config()
    engine = sync_engine(database_url, timeout_seconds)
    try:
        with engine.connect() as conn:
            with (
                conn.execution_options(write=True).begin(),
                backend_of(database_url).migration_lock(conn, database_url),
            ):
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class SchemaOutOfDate(Exception):
    """The database is not at the newest migration; the operator should run `goldtrail migrate`."""


def require_current_schema(database_url: str, timeout_seconds: float = 10.0) -> None:
    engine = sync_engine(database_url, timeout_seconds)
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


def create_runtime_role(database_url: str, role: str, timeout_seconds: float = 10.0) -> None:
    if backend_of(database_url) is not postgres:
        raise ValueError("a runtime role only exists on PostgreSQL; SQLite has no roles")
    engine = sync_engine(database_url, timeout_seconds)
    try:
        with engine.begin() as conn:
            for statement in postgres.runtime_role_sql(role, engine.url.database):
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
