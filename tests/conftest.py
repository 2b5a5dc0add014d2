"""Fixtures, and the one way a test runs on both backends: it asks for `backend` (SQLite, then PostgreSQL),
directly or through a fixture that does.

- `database_url`, `settings`, `client`, `engine`: one shared database per backend for the whole run, and an
  in-process app on it. Tests on it work in random runs and accounts, so it never needs wiping.
- `fresh_database`: databases of a test's own (random name, migrated, dropped when the test ends), for
  tests that look at the whole log, tamper with it, or start real servers on it.
- `sqlite_client`, `start_app`: an app where the database plays no part (tokens, scopes, the docs page),
  once per run, and apps started with settings of a test's own.

PostgreSQL is found at GOLDTRAIL_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
Where it is unreachable its tests are skipped and say so, unless GOLDTRAIL_TEST_REQUIRE_POSTGRES=1,
which turns that into a failure (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from service.http.app import create_app
from service.settings import Settings
from service.storage.database import sync_url
from tests.browser import CHROMIUM, browser_problem
from tests.helpers import POSTGRES_ADMIN_URL, database_of_its_own, make_settings, postgres_problem

REQUIRE_POSTGRES = os.environ.get("GOLDTRAIL_TEST_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgres"]

_POSTGRES_PROBLEM = postgres_problem()


def pytest_report_header(config) -> list[str]:
    if _POSTGRES_PROBLEM:
        lines = [f"goldtrail: {_POSTGRES_PROBLEM}; PostgreSQL tests will be skipped (set GOLDTRAIL_TEST_POSTGRES_URL)"]
    else:
        lines = [f"goldtrail: PostgreSQL tests run against {POSTGRES_ADMIN_URL} (a fresh database per run)"]
    browser = browser_problem()
    lines.append(
        f"goldtrail: {browser}; browser tests will be skipped" if browser else f"goldtrail: Chromium {CHROMIUM}"
    )
    return lines


def require_postgres() -> None:
    """Skip the test when PostgreSQL is unreachable, or fail it under GOLDTRAIL_TEST_REQUIRE_POSTGRES=1."""
    if _POSTGRES_PROBLEM:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{_POSTGRES_PROBLEM} and GOLDTRAIL_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(f"{_POSTGRES_PROBLEM}: PostgreSQL tests skipped")


@pytest.fixture(scope="session", params=BACKENDS, ids=BACKENDS)
def backend(request) -> str:
    """The backend a test runs on: every test that asks for it runs once on each."""
    if request.param == "postgres":
        require_postgres()
    return request.param


@pytest.fixture
def fresh_database(tmp_path) -> Iterator[Callable[..., str]]:
    """`fresh_database(backend)` makes a database of this test's own (random name, migrated; empty with
    `migrated=False`) and returns its URL; every one made is dropped when the test ends."""
    with ExitStack() as stack:

        def make(backend: str, *, migrated: bool = True) -> str:
            if backend == "postgres":
                require_postgres()
            return stack.enter_context(database_of_its_own(backend, tmp_path, migrated=migrated))

        yield make


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory) -> Iterator[str]:
    """The database shared by the run's in-process tests on this backend."""
    with database_of_its_own(backend, tmp_path_factory.mktemp("db")) as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url, tmp_path_factory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def client(settings) -> Iterator[TestClient]:
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def engine(database_url) -> Iterator[sa.Engine]:
    """A plain synchronous engine for looking at the shared database's tables directly."""
    sync = sa.create_engine(sync_url(database_url))
    yield sync
    sync.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> Iterator[str]:
    """A migrated SQLite database for the tests whose outcome no database can change."""
    with database_of_its_own("sqlite", tmp_path_factory.mktemp("sqlite")) as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_client(sqlite_url, tmp_path_factory) -> Iterator[TestClient]:
    """The app on a throwaway SQLite database, once per run (not per backend): for tests of tokens, scopes
    and pages that the database plays no part in."""
    with TestClient(app=create_app(make_settings(sqlite_url, tmp_path_factory.mktemp("sqlite-data")))) as test_client:
        yield test_client


@pytest.fixture
def start_app(tmp_path) -> Iterator[Callable[..., TestClient]]:
    """`start_app(database_url, **GOLDTRAIL_settings)` starts an in-process app with settings of the test's
    own (its data folder is the test's tmp_path); every app started is closed when the test ends."""
    with ExitStack() as stack:

        def start(database_url: str, data_dir: Path | None = None, **env: str) -> TestClient:
            settings = make_settings(database_url, data_dir or tmp_path, **env)
            return stack.enter_context(TestClient(app=create_app(settings)))

        yield start


@pytest.fixture
def run_id() -> str:
    return str(uuid.uuid4())
