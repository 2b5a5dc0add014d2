"""Shared fixtures: a fresh SQLite file and a fresh PostgreSQL database (random names) per test run,
an in-process app on each, and tokens.

PostgreSQL is found at GOLDTRAIL_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
Where it is unreachable its tests are skipped and say so, unless GOLDTRAIL_TEST_REQUIRE_POSTGRES=1,
which turns that into a failure (CI sets it).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import psycopg
import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from psycopg import sql

from service.http.app import create_app
from service.settings import Settings, load_settings
from service.storage.database import sync_url
from service.storage.migrate import migrate

POSTGRES_ADMIN_URL = os.environ.get("GOLDTRAIL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_POSTGRES = os.environ.get("GOLDTRAIL_TEST_REQUIRE_POSTGRES") == "1"
SECRET = "test-secret-" + secrets.token_hex(16)
BACKENDS = ["sqlite", "postgres"]


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL} ({str(error).strip().splitlines()[0]})"
    return None


_POSTGRES_PROBLEM = _postgres_problem()


def pytest_report_header(config) -> str:
    if _POSTGRES_PROBLEM:
        return f"goldtrail: {_POSTGRES_PROBLEM}; PostgreSQL tests will be skipped (set GOLDTRAIL_TEST_POSTGRES_URL)"
    return f"goldtrail: PostgreSQL tests run against {POSTGRES_ADMIN_URL} (a fresh database per run)"


def require_postgres() -> None:
    if _POSTGRES_PROBLEM:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{_POSTGRES_PROBLEM} and GOLDTRAIL_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(f"{_POSTGRES_PROBLEM}: PostgreSQL tests skipped")


def create_postgres_database() -> str:
    """A new, empty, uniquely named database; returns its URL."""
    require_postgres()
    name = f"goldtrail_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def fresh_database_url(backend: str, tmp_dir: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_dir / f'goldtrail-{uuid.uuid4().hex[:8]}.sqlite3'}"
    return create_postgres_database()


def make_settings(database_url: str, data_dir: Path, **extra: str) -> Settings:
    env = {"GOLDTRAIL_DATABASE_URL": database_url, "GOLDTRAIL_DATA_DIR": str(data_dir), "GOLDTRAIL_JWT_SECRET": SECRET}
    env.update(extra)
    return load_settings(env)


def token(account: str = "acme", user: str = "alice", *, secret: str = SECRET, ttl: int = 600, **claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"sub": user, "account_id": account, "iat": now, "exp": now + ttl}
    payload.update(claims)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


def assert_error(response, status: int, *fragments: str) -> dict:
    """The response has this status and a JSON `{"error": ...}` body mentioning each fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body
    return body


def auth(account: str = "acme", user: str = "alice", **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(account, user, **claims)}"}


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request, tmp_path_factory) -> Iterator[str]:
    url = fresh_database_url(request.param, tmp_path_factory.mktemp("db"))
    migrate(url)
    yield url
    if request.param == "postgres":
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def settings(database_url, tmp_path_factory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def client(settings) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def engine(database_url) -> Iterator[sa.Engine]:
    """A plain synchronous engine for looking at the tables directly."""
    sync = sa.create_engine(sync_url(database_url))
    yield sync
    sync.dispose()


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())
