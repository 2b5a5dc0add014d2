"""Throwaway PostgreSQL clusters for tests: each owned by the `postgres` OS user, in a folder of its own
under /tmp, listening on a free loopback port with trust auth; and a streaming hot standby of one
(`pg_basebackup -R`). Used by the outage tests and the standby tests."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

import psycopg

from tests.servers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def cluster_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run a throwaway PostgreSQL cluster as the postgres user"
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN}"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user"
    return None


class Cluster:
    """A PostgreSQL cluster in its own folder, listening on 127.0.0.1:port only, trust auth."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._frozen: list[int] = []

    def _as_postgres(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )

    def init(self) -> None:
        self.sockets.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        done = self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=on"
        done = self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start"
        )
        assert done.returncode == 0, done.stdout + done.stderr + self.log.read_text(errors="replace")[-2000:]

    def stop(self, mode: str = "fast") -> None:
        done = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        assert done.returncode == 0, done.stdout + done.stderr

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self, *, postmaster_only: bool = False) -> None:
        """SIGSTOP: the database host stops answering but its sockets stay open (a hung server)."""
        pids = self.processes()[:1] if postmaster_only else self.processes()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self._frozen.append(pid)

    def thaw(self) -> None:
        for pid in self._frozen:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen.clear()

    def destroy(self) -> None:
        self.thaw()
        if self.postmaster_pid() is not None:
            done = self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            pid = self.postmaster_pid()
            if done.returncode != 0 and pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def new_cluster_folder() -> Path:
    # Not under pytest's tmp_path: that folder is root's, mode 0700, and the postgres user cannot enter it.
    return Path(tempfile.mkdtemp(prefix="goldtrail-pg-", dir="/tmp"))


class Standby(Cluster):
    """A hot standby of `primary`, streaming from it: `pg_basebackup -R` of the running primary, started with
    the given server settings (e.g. max_standby_streaming_delay, hot_standby_feedback)."""

    def __init__(self, root: Path, primary: Cluster, **settings: str) -> None:
        super().__init__(root)
        self.primary = primary
        self.settings = {"hot_standby": "on", **settings}

    def init(self) -> None:
        self.sockets.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        done = self._as_postgres(
            str(PG_BIN / "pg_basebackup"),
            *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres"),
            *("-D", str(self.data), "-R", "-X", "stream", "--no-sync", "-c", "fast"),
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in self.settings.items())

    def replayed(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute("SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint").fetchone()[0]

    def wait_for_primary(self, timeout: float = 30) -> None:
        """Until this standby has replayed everything the primary has flushed now."""
        with psycopg.connect(self.primary.url, autocommit=True) as conn:
            flushed = conn.execute("SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint").fetchone()[0]
        deadline = time.monotonic() + timeout
        while self.replayed() < flushed:
            assert time.monotonic() < deadline, f"the standby did not catch up within {timeout}s"
            time.sleep(0.02)

    def pause_replay(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
