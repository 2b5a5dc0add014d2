"""What every benchmark shares: fresh databases, real servers, timing, and the results table."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import sqlalchemy as sa

from service.storage.migrate import migrate
from tests.helpers import SECRET, drop_postgres_database, fresh_database_url
from tests.servers import GOLDTRAIL, clean_environment, goldtrail_serve


class Result(msgspec.Struct, frozen=True):
    benchmark: str
    backend: str
    metric: str
    value: float
    unit: str
    note: str = ""


class Bench:
    """One run of the suite: where scratch data goes, which backends, and the results so far."""

    def __init__(self, workdir: Path, backends: list[str], scale: float) -> None:
        self.workdir, self.backends, self.scale = workdir, backends, scale
        self.results: list[Result] = []

    def n(self, full: int) -> int:
        """A size scaled for a quick run (--scale 0.1) or the full one."""
        return max(1, int(full * self.scale))

    def record(self, *args, **kwargs) -> Result:
        result = Result(*args, **kwargs)
        self.results.append(result)
        print(
            f"  {result.benchmark} [{result.backend}] {result.metric}: {result.value:,.1f} {result.unit} {result.note}",
            flush=True,
        )
        return result

    @contextmanager
    def database(self, backend: str) -> Iterator[str]:
        url = fresh_database_url(backend, self.workdir)
        migrate(url)
        try:
            yield url
        finally:
            if backend == "postgres":
                drop_postgres_database(url)

    def sql(self, url: str, *statements: str) -> None:
        """Run statements on the database in autocommit (ANALYZE and ALTER TABLE … SET need no transaction)."""
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                for statement in statements:
                    connection.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def analyze(self, url: str) -> None:
        """Fresh planner statistics, as a deployment has once autovacuum came round."""
        self.sql(url, "ANALYZE")

    def environment(self, url: str, **extra: str) -> dict[str, str]:
        # No request log unless asked for (GOLDTRAIL_LOG_LEVEL=INFO): the PUT bench measures what it costs.
        defaults = {"GOLDTRAIL_DATABASE_URL": url, "GOLDTRAIL_JWT_SECRET": SECRET, "GOLDTRAIL_LOG_LEVEL": "WARNING"}
        return clean_environment(**{**defaults, **extra})

    @contextmanager
    def servers(self, url: str, count: int = 1, workers: int = 1, **extra: str) -> Iterator[list[str]]:
        env = self.environment(url, **extra)
        with _many(lambda: goldtrail_serve(self.workdir, env, "--workers", str(workers)), count) as bases:
            yield bases

    def goldtrail(self, url: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([GOLDTRAIL, *args], env=self.environment(url), capture_output=True, text=True, check=True)


@contextmanager
def _many(factory: Callable, count: int) -> Iterator[list]:
    if count == 0:
        yield []
        return
    with factory() as first, _many(factory, count - 1) as rest:
        yield [first, *rest]


def timed(action: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Median and best wall time in seconds over `repeat` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), min(times)


def machine() -> dict[str, str]:
    from importlib.metadata import version as package_version

    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "not found"

    return {
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "cores": str(os.cpu_count()),
        "python": sys.version.split()[0],
        **{name: package_version(name) for name in ("litestar", "sqlalchemy", "psycopg", "msgspec", "uvicorn")},
        "postgresql": version(["psql", "--version"]),
        "sqlite": __import__("sqlite3").sqlite_version,
        "wrk": version(["wrk", "--version"]),
        "goldtrail": GOLDTRAIL,
    }


def print_table(results: list[Result], about: dict[str, str], out=sys.stdout) -> None:
    print("\n" + "  ".join(f"{k}={v}" for k, v in about.items()), file=out)
    rows = [("benchmark", "backend", "metric", "value", "unit", "note")]
    rows += [(r.benchmark, r.backend, r.metric, f"{r.value:,.1f}", r.unit, r.note) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)), file=out)
        if n == 0:
            print("-|-".join("-" * width for width in widths), file=out)


def write_json(path: Path, results: list[Result], about: dict[str, str], settings: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": about, "settings": settings, "results": [msgspec.structs.asdict(r) for r in results]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
