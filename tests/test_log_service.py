"""The verifiable log as a service (DESIGN.md §3.1), against the real code on SQLite and PostgreSQL: events
written through the API are integrated once each, in feed order, into each account's RFC 9162 tree; the
signed checkpoints, the proofs and the label proof bundles verify with events.merkle, events.note and the
offline `goldtrail verify-log` / `verify-proof`; tampering behind the service's back is caught offline
against a checkpoint kept earlier; two `goldtrail serve` processes (one of them SIGKILLed mid-way) share the
integration without losing or repeating an entry; witnesses cosign a growing log and refuse a fork or a
shrunk log; settings refuse unusable keys; and nothing an account sees counts other accounts' activity.

Roots are recomputed here from RFC 9162 §2.1.1 (`rfc9162_root`), sharing no code with events.merkle.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from events import merkle, note
from events.offline import event_hash, parse_event, verify_bundle, verify_log
from service.http.app import create_app
from service.settings import SettingsError, load_settings
from service.storage.database import sync_url
from tests.helpers import (
    SECRET,
    assert_error,
    auth,
    create_label,
    database_of_its_own,
    delete_label,
    label_history,
    label_url,
    make_settings,
    new_account,
    token,
    update_label,
)
from tests.servers import clean_environment, run_goldtrail, serving

LOG_NAME = "goldtrail.test/labels"
AUDIT = "audit:read"
WITNESS_SCOPES = "audit:read audit:witness"
NDJSON = {"Accept": "application/x-ndjson"}
FEED_EVENT_FIELDS = {
    "cursor",
    "log_index",
    "label_id",
    "run_id",
    "version",
    "type",
    "actor",
    "recorded_at",
    "request_id",
    "reason",
    "data",
    "prev_hash",
    "hash",
    "chain",
    "payload",
}


# --- RFC 9162 from the RFC, and what a log holds ----------------------------------------------------------


def rfc9162_root(entries: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1, recursively, over the entries themselves (here: chain hashes)."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1 << ((len(entries) - 1).bit_length() - 1)  # the largest power of two smaller than n
    return hashlib.sha256(b"\x01" + rfc9162_root(entries[:k]) + rfc9162_root(entries[k:])).digest()


def rows(engine: sa.Engine, statement: str, **params) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(statement), params))


def feed_order(engine: sa.Engine, account: str) -> list[sa.Row]:
    """(position, hash, stream_id, version) of the account's events in feed order, straight from the events
    table: what the account's log must be."""
    return rows(
        engine,
        "SELECT position, hash, stream_id, version FROM events WHERE account_id = :a ORDER BY tx_id, position",
        a=account,
    )


def check_integrated(engine: sa.Engine, account: str) -> list[bytes]:
    """Every committed event of the account is in its log exactly once, in feed order, at indexes 0..n-1, and
    the stored head is the RFC 9162 root of their chain hashes. Returns the entries, in log order."""
    events = feed_order(engine, account)
    leaves = rows(
        engine, "SELECT log_index, position FROM log_leaves WHERE account_id = :a ORDER BY log_index", a=account
    )
    assert [index for index, _ in leaves] == list(range(len(leaves))), "the log's indexes skip or repeat"
    assert len({position for _, position in leaves}) == len(leaves), "an event is in the log twice"
    assert [position for _, position in leaves] == [event.position for event in events], (
        "the log is not every committed event in feed order"
    )
    entries = [bytes.fromhex(event.hash) for event in events]
    (head,) = rows(engine, "SELECT tree_size, root FROM log_heads WHERE account_id = :a", a=account)
    assert head.tree_size == len(entries)
    assert bytes(head.root) == rfc9162_root(entries)
    return entries


def checkpoint_of(signed_note: str) -> note.Checkpoint:
    """The checkpoint a signed note carries (its signatures not checked)."""
    return note.parse_checkpoint(note.split_note(signed_note)[0])


def auditor(account: str) -> dict[str, str]:
    return auth(account, "auditor", scope=AUDIT)


def wait_for_checkpoint(client, account: str, size: int, timeout: float = 30) -> str:
    """The account's latest signed checkpoint once it covers `size` entries (published within about a second
    of the commit of the last of them)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/v1/audit/checkpoint", headers=auditor(account))
        assert response.status_code in (200, 404), response.text
        if response.status_code == 200 and checkpoint_of(response.text).size >= size:
            return response.text
        assert time.monotonic() < deadline, f"no checkpoint of {size} entries within {timeout}s: {response.text}"
        time.sleep(0.05)


def ndjson_feed(client, account: str) -> list[dict]:
    response = client.get("/v1/events", headers={**auditor(account), **NDJSON})
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def write_key(folder: Path, name: str = LOG_NAME) -> Path:
    """A new checkpoint key file, as `goldtrail keys generate` writes one."""
    path = folder / f"checkpoint-key-{uuid.uuid4().hex[:6]}"
    path.write_text(note.generate_key(name)[0] + "\n")
    return path


def offline(*args: str, cwd: Path):
    """A `goldtrail` command that needs no settings (verify-log, verify-proof, keys, witness)."""
    return run_goldtrail(clean_environment(), *args, cwd=cwd)


def bad_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("BAD ")]


class SignedLog:
    """A database of the test's own, an in-process app on it that signs checkpoints, and the CLI on it."""

    def __init__(self, url: str, client: TestClient, folder: Path, key: Path) -> None:
        self.url, self.client, self.folder, self.key = url, client, folder, key
        self.engine = sa.create_engine(sync_url(url))
        self.env = clean_environment(GOLDTRAIL_DATABASE_URL=url)
        self.run_id = str(uuid.uuid4())

    def write(self, account: str, labels: int = 3, updates: int = 2) -> list[str]:
        """Create labels one after the other, each followed by its updates; their ids."""
        made = []
        for n in range(labels):
            label = create_label(self.client, self.run_id, auth(account), text_value=f"{n}.0")
            made.append(label["id"])
            for version in range(updates):
                headers = {**auth(account, "bob"), "X-Change-Reason": f"pass {version}"}
                update_label(self.client, self.run_id, label["id"], headers, object_value={"n": n, "v": version})
        return made

    def keep(self, account: str, size: int) -> tuple[Path, Path]:
        """What an auditor keeps where the operator cannot write: the checkpoint (once it covers `size`
        entries) and the log's verifier key, as files."""
        checkpoint = self.folder / f"checkpoint-{uuid.uuid4().hex[:8]}.txt"
        checkpoint.write_text(wait_for_checkpoint(self.client, account, size))
        vkey = self.folder / f"log-{uuid.uuid4().hex[:8]}.vkey"
        response = self.client.get("/v1/audit/key", headers=auditor(account))
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        vkey.write_text(response.text)
        return checkpoint, vkey

    def export(self, account: str) -> Path:
        """`goldtrail export --account` to a file."""
        path = self.folder / f"export-{uuid.uuid4().hex[:6]}.jsonl"
        result = run_goldtrail(self.env, "export", "--account", account, "--output", str(path), cwd=self.folder)
        assert result.returncode == 0, result.stderr
        return path

    def feed_export(self, account: str) -> Path:
        """The NDJSON feed, saved as an export file."""
        path = self.folder / f"feed-{uuid.uuid4().hex[:6]}.jsonl"
        response = self.client.get("/v1/events", headers={**auditor(account), **NDJSON})
        assert response.status_code == 200, response.text
        path.write_bytes(response.content)
        return path

    def verify_log(self, export: Path, checkpoint: Path, vkey: Path, *more: str):
        return offline(
            "verify-log", str(export), "--checkpoint", str(checkpoint), "--key", str(vkey), *more, cwd=self.folder
        )

    def position(self, label_id: str, version: int) -> int:
        return rows(
            self.engine, "SELECT position FROM events WHERE stream_id = :id AND version = :v", id=label_id, v=version
        )[0].position

    def tamper(self, *statements: str, tables: tuple[str, ...] = ("events",), **params) -> None:
        """Run SQL with the append-only triggers of these tables switched off, as a database superuser could."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                for table in tables:
                    conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                for statement in statements:
                    conn.execute(sa.text(statement), params)
                for table in tables:
                    conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            else:
                names = ", ".join(f"'{table}'" for table in tables)
                triggers = conn.execute(
                    sa.text(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ({names})")
                ).all()
                for name, _ in triggers:
                    conn.execute(sa.text(f"DROP TRIGGER {name}"))
                for statement in statements:
                    conn.execute(sa.text(statement), params)
                for _, sql in triggers:
                    conn.execute(sa.text(sql))


@pytest.fixture
def signed_log(backend, fresh_database, start_app, tmp_path) -> Iterator[SignedLog]:
    url = fresh_database(backend)
    key = write_key(tmp_path)
    log = SignedLog(url, start_app(url, GOLDTRAIL_CHECKPOINT_KEY=str(key)), tmp_path, key)
    yield log
    log.engine.dispose()


# --- 1. Integration ---------------------------------------------------------------------------------------


def test_every_committed_event_is_integrated_once_in_feed_order_under_a_signed_rfc9162_root(signed_log):
    log = signed_log
    acme, other, odd = new_account("acme"), new_account("other"), "team/α b+c"  # any id makes an origin
    run = log.run_id
    acme_labels = [create_label(log.client, run, auth(acme), text_value=str(n))["id"] for n in range(3)]
    other_label = create_label(log.client, run, auth(other), text_value="o")["id"]
    for round_ in range(2):
        for label_id in acme_labels:
            update_label(log.client, run, label_id, auth(acme), text_value=f"r{round_}")
        update_label(log.client, run, other_label, auth(other), object_value={"round": round_})
    delete_label(log.client, run, acme_labels[1], auth(acme))
    create_label(log.client, run, auth(odd), text_value="odd")
    sizes = {acme: 10, other: 3, odd: 1}

    roots = {}
    for account, size in sizes.items():
        signed = wait_for_checkpoint(log.client, account, size)
        entries = check_integrated(log.engine, account)
        assert len(entries) == size
        roots[account] = rfc9162_root(entries)

        # The feed and its NDJSON export are the log: indexes 0..n-1, the same entries, cursors of its own.
        feed = ndjson_feed(log.client, account)
        assert [event["log_index"] for event in feed] == list(range(size))
        assert [bytes.fromhex(event["hash"]) for event in feed] == entries
        assert [event["cursor"] for event in feed] == [str(n + 1) for n in range(size)]

        # The signed checkpoint verifies with the key the service publishes, and names the account's log.
        vkey = log.client.get("/v1/audit/key", headers=auditor(account)).text.strip()
        checkpoint = note.parse_checkpoint(note.open_note(signed, vkey))
        assert checkpoint.origin == f"{LOG_NAME}/{quote(account, safe='')}"
        assert note.parse_vkey(vkey).name == checkpoint.origin
        assert (checkpoint.size, checkpoint.root) == (size, roots[account])
        assert checkpoint.extensions == ()

        # Offline: the operator's export (with the CLI) and the feed both verify against it.
        checkpoint_file, vkey_file = log.keep(account, size)
        result = log.verify_log(log.export(account), checkpoint_file, vkey_file, "--account", account)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"OK: {size} entries" in result.stdout
        report = verify_log(log.feed_export(account).read_text().splitlines(), signed, vkey, account)
        assert report.ok and report.covered == size, report.summary()

    # Each account's log is a tree of its own: its own root, and a key that verifies no other account's log.
    assert len(set(roots.values())) == len(roots)
    acme_vkey = log.client.get("/v1/audit/key", headers=auditor(acme)).text.strip()
    other_checkpoint = log.client.get("/v1/audit/checkpoint", headers=auditor(other)).text
    with pytest.raises(note.NoteError, match="no signature of a known key"):
        note.open_note(other_checkpoint, acme_vkey)


def test_a_log_past_a_tile_boundary_proves_every_size_it_had(signed_log):
    """Tiles hold 256 hashes: a log of 300 entries spans a full tile, its parent and a partial one. Proofs at
    sizes on both sides of the boundary verify against the roots the log had at those sizes."""
    log = signed_log
    account = new_account()
    run = log.run_id
    for n in range(300):
        create_label(log.client, run, auth(account), output_resource_name=f"o{n}", text_value=str(n))
    signed = wait_for_checkpoint(log.client, account, 300)
    entries = check_integrated(log.engine, account)
    assert checkpoint_of(signed).root == rfc9162_root(entries)
    headers = auditor(account)
    for size in (1, 2, 255, 256, 257, 299, 300):
        root = rfc9162_root(entries[:size])
        for index in sorted({0, size // 2, size - 1, min(255, size - 1)}):
            proof = log.client.get(
                "/v1/audit/proof/inclusion", params={"log_index": index, "tree_size": size}, headers=headers
            )
            assert proof.status_code == 200, proof.text
            hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
            merkle.verify_inclusion(merkle.leaf_hash(entries[index]), index, size, hashes, root)
        for old in (1, 128, 255, 256, 257):
            if old <= size:
                proof = log.client.get("/v1/audit/proof/consistency", params={"from": old, "to": size}, headers=headers)
                assert proof.status_code == 200, proof.text
                hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
                merkle.verify_consistency(old, size, hashes, rfc9162_root(entries[:old]), root)


# --- 2. Two serving processes, one of them SIGKILLed -------------------------------------------------------


class Writers:
    """Threads that create and update labels of a few accounts through whichever servers are up, until told to
    stop; what each acknowledged."""

    def __init__(self, accounts: list[str], bases: list[str]) -> None:
        self.accounts = accounts
        self.bases = list(bases)
        self.down: set[str] = set()
        self.acknowledged: list[tuple[str, str, int]] = []  # (account, label id, version)
        self.unexpected: list[str] = []
        self.stop = threading.Event()

    def count(self) -> int:
        return len(self.acknowledged)

    def until(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count and time.monotonic() < deadline and not self.unexpected:
            time.sleep(0.02)
        assert not self.unexpected, self.unexpected
        assert self.count() >= count, f"only {self.count()} writes acknowledged"

    def writer(self, n: int) -> None:
        account = self.accounts[n % len(self.accounts)]
        headers = auth(account)
        run = str(uuid.uuid4())
        clients: dict[str, httpx.Client] = {}
        label_id, version, turn = None, 0, n
        try:
            while not self.stop.is_set():
                bases = [base for base in self.bases if base not in self.down]
                base = bases[turn % len(bases)]
                turn += 1
                client = clients.get(base) or clients.setdefault(
                    base, httpx.Client(base_url=base, headers=headers, timeout=30)
                )
                try:
                    if label_id is None or version >= 4:
                        body = {"output_resource_name": f"w{n}-{turn}", "text_value": "1"}
                        response = client.post(f"/v1/run/{run}/gold-labels", json=body)
                        expected = 201
                    else:
                        response = client.put(label_url(run, label_id), json={"text_value": str(version + 1)})
                        expected = 200
                except httpx.TransportError:
                    if base in self.down:
                        label_id = None  # whether it was applied is unknown: go on with a new label
                        continue
                    raise
                if response.status_code != expected:
                    self.unexpected.append(f"{response.status_code} {response.text}")
                    return
                label_id, version = response.json()["id"], int(response.headers["etag"].strip('"'))
                self.acknowledged.append((account, label_id, version))
        finally:
            for client in clients.values():
                client.close()


def checkpoint_env(url: str, key: Path, **more: str) -> dict[str, str]:
    return clean_environment(
        GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_CHECKPOINT_KEY=str(key), **more
    )


def caught_up(base: str, engine: sa.Engine, accounts: list[str]) -> dict[str, str]:
    """Each account's checkpoint once it covers every event the account has in the database."""
    found = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for account in accounts:
            (count,) = rows(engine, "SELECT count(*) FROM events WHERE account_id = :a", a=account)[0]
            found[account] = wait_for_checkpoint(client, account, count, timeout=60)
            assert checkpoint_of(found[account]).size == count
    return found


WRITER_THREADS = 8


@pytest.mark.e2e
def test_two_serving_processes_integrate_every_event_once_in_feed_order(backend, fresh_database, tmp_path):
    url = fresh_database(backend)
    key = write_key(tmp_path)
    env = checkpoint_env(url, key)
    accounts = [new_account("a"), new_account("b")]
    engine = sa.create_engine(sync_url(url))
    try:
        with serving(tmp_path, env) as first, serving(tmp_path, env) as second:
            writers = Writers(accounts, [first.base_url, second.base_url])
            with ThreadPoolExecutor(WRITER_THREADS) as pool:
                futures = [pool.submit(writers.writer, n) for n in range(WRITER_THREADS)]
                writers.until(240)
                writers.stop.set()
                for future in futures:
                    future.result(timeout=60)
            signed = caught_up(first.base_url, engine, accounts)
        for account in accounts:
            entries = check_integrated(engine, account)
            assert checkpoint_of(signed[account]).root == rfc9162_root(entries)
        stored = {tuple(row) for row in rows(engine, "SELECT account_id, stream_id, version FROM events")}
        assert set(writers.acknowledged) <= stored
    finally:
        engine.dispose()


@pytest.mark.e2e
def test_a_server_sigkilled_in_the_middle_of_writes_and_integration_loses_and_repeats_nothing(
    backend, fresh_database, tmp_path
):
    url = fresh_database(backend)
    key = write_key(tmp_path)
    env = checkpoint_env(url, key)
    accounts = [new_account("a"), new_account("b")]
    engine = sa.create_engine(sync_url(url))
    try:
        with serving(tmp_path, env) as doomed, serving(tmp_path, env) as survivor:
            writers = Writers(accounts, [doomed.base_url, survivor.base_url])
            with ThreadPoolExecutor(WRITER_THREADS) as pool:
                futures = [pool.submit(writers.writer, n) for n in range(WRITER_THREADS)]
                writers.until(150)
                with httpx.Client(base_url=survivor.base_url, timeout=30) as client:
                    before = {account: wait_for_checkpoint(client, account, 1) for account in accounts}
                writers.until(200)
                writers.down.add(doomed.base_url)
                os.killpg(doomed.process.pid, signal.SIGKILL)
                doomed.process.wait()
                writers.until(writers.count() + 100)
                with serving(tmp_path, env) as restarted:
                    writers.bases.append(restarted.base_url)
                    writers.until(writers.count() + 100)
                    writers.stop.set()
                    for future in futures:
                        future.result(timeout=60)
                    signed = caught_up(restarted.base_url, engine, accounts)

                    for account in accounts:
                        entries = check_integrated(engine, account)
                        latest = checkpoint_of(signed[account])
                        assert latest.root == rfc9162_root(entries)
                        # The log after the crash extends the one a checkpoint signed before it.
                        kept = checkpoint_of(before[account])
                        assert kept.root == rfc9162_root(entries[: kept.size])
                        with httpx.Client(base_url=restarted.base_url, headers=auditor(account)) as client:
                            proof = client.get(
                                "/v1/audit/proof/consistency", params={"from": kept.size, "to": latest.size}
                            )
                        assert proof.status_code == 200, proof.text
                        hashes = [base64.b64decode(h) for h in proof.json()["hashes"]]
                        merkle.verify_consistency(kept.size, latest.size, hashes, kept.root, latest.root)
        stored = {tuple(row) for row in rows(engine, "SELECT account_id, stream_id, version FROM events")}
        missing = set(writers.acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged writes lost"
        verified = run_goldtrail(clean_environment(GOLDTRAIL_DATABASE_URL=url), "verify", cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        for account in accounts:
            export = tmp_path / f"{account}.jsonl"
            exported = run_goldtrail(
                clean_environment(GOLDTRAIL_DATABASE_URL=url),
                "export",
                "--account",
                account,
                "--output",
                str(export),
                cwd=tmp_path,
            )
            assert exported.returncode == 0, exported.stderr
            for name, signed_note in (("before", before[account]), ("after", signed[account])):
                (tmp_path / f"{account}-{name}.txt").write_text(signed_note)
            vkey = tmp_path / f"{account}.vkey"
            vkey.write_text(note.parse_private_key(key.read_text()).renamed(f"{LOG_NAME}/{account}").vkey)
            for name in ("before", "after"):
                result = offline(
                    "verify-log",
                    str(export),
                    "--checkpoint",
                    str(tmp_path / f"{account}-{name}.txt"),
                    "--key",
                    str(vkey),
                    cwd=tmp_path,
                )
                assert result.returncode == 0, result.stdout + result.stderr
    finally:
        engine.dispose()


# --- 3. Proof routes, on a log of 13 entries --------------------------------------------------------------

INCLUSION = "/v1/audit/proof/inclusion"
CONSISTENCY = "/v1/audit/proof/consistency"
CHECKPOINT = "/v1/audit/checkpoint"
KEY = "/v1/audit/key"


class Thirteen:
    """One database per backend for this module's read-only tests: an app that signs checkpoints, an account
    `acme` whose log holds 13 entries (4 labels; the first has versions 1 to 4), another account `other` with 3,
    the entries from the events table in feed order, and the log's verifier key as a file."""

    def __init__(self, client: TestClient, url: str, folder: Path) -> None:
        self.client, self.url, self.folder = client, url, folder
        self.engine = sa.create_engine(sync_url(url))
        self.acme, self.other = new_account("acme"), new_account("other")
        self.run_id = str(uuid.uuid4())
        acme, other = auth(self.acme), auth(self.other)
        self.labels = [create_label(client, self.run_id, acme, text_value="1")["id"] for _ in range(4)]
        self.other_label = create_label(client, self.run_id, other, text_value="1")["id"]
        for version in (2, 3):
            for label_id in self.labels:
                update_label(client, self.run_id, label_id, acme, text_value=str(version))
            update_label(client, self.run_id, self.other_label, other, text_value=str(version))
        update_label(client, self.run_id, self.labels[0], acme, text_value="4")
        wait_for_checkpoint(client, self.acme, 13)
        wait_for_checkpoint(client, self.other, 3)
        self.entries = check_integrated(self.engine, self.acme)
        assert len(self.entries) == 13
        self.vkey_text = client.get(KEY, headers=auditor(self.acme)).text.strip()
        self.vkey = folder / "acme.vkey"
        self.vkey.write_text(self.vkey_text + "\n")

    def headers(self, who: str) -> dict[str, str]:
        if who == "no audit scope":
            return auth(self.acme, scope="gold_labels:read gold_labels:write")
        if who == "nobody":
            return auditor(new_account("nobody"))
        return auditor(self.acme if who == "acme" else self.other)


@pytest.fixture(scope="module")
def thirteen(backend, tmp_path_factory) -> Iterator[Thirteen]:
    folder = tmp_path_factory.mktemp("thirteen")
    key = write_key(folder)
    with (
        database_of_its_own(backend, folder) as url,
        TestClient(app=create_app(make_settings(url, folder, GOLDTRAIL_CHECKPOINT_KEY=str(key)))) as client,
    ):
        log = Thirteen(client, url, folder)
        yield log
        log.engine.dispose()


def decoded(hashes: list[str]) -> list[bytes]:
    return [base64.b64decode(h, validate=True) for h in hashes]


def test_every_inclusion_and_consistency_proof_of_a_small_log_verifies(thirteen):
    log, entries = thirteen, thirteen.entries
    headers = auditor(log.acme)
    for size in range(1, 14):
        root = rfc9162_root(entries[:size])
        for index in range(size):
            response = log.client.get(INCLUSION, params={"log_index": index, "tree_size": size}, headers=headers)
            assert response.status_code == 200, response.text
            proof = response.json()
            assert (proof["log_index"], proof["tree_size"]) == (index, size)
            leaf = merkle.leaf_hash(entries[index])
            assert base64.b64decode(proof["leaf_hash"]) == leaf
            merkle.verify_inclusion(leaf, index, size, decoded(proof["hashes"]), root)
        for old in range(1, size + 1):
            response = log.client.get(CONSISTENCY, params={"from": old, "to": size}, headers=headers)
            assert response.status_code == 200, response.text
            proof = response.json()
            assert (proof["from"], proof["to"]) == (old, size)
            merkle.verify_consistency(old, size, decoded(proof["hashes"]), rfc9162_root(entries[:old]), root)


def test_every_published_checkpoint_is_kept_and_signs_the_root_of_its_size(thirteen):
    log = thirteen
    published = {
        size for (size,) in rows(log.engine, "SELECT tree_size FROM log_checkpoints WHERE account_id = :a", a=log.acme)
    }
    assert 13 in published
    for size in range(0, 15):
        response = log.client.get(CHECKPOINT, params={"tree_size": size}, headers=auditor(log.acme))
        if size not in published:
            assert_error(response, 404, f"no checkpoint of size {size}")
            continue
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        checkpoint = note.parse_checkpoint(note.open_note(response.text, log.vkey_text))
        assert (checkpoint.size, checkpoint.root) == (size, rfc9162_root(log.entries[:size]))
    latest = log.client.get(CHECKPOINT, headers=auditor(log.acme))
    assert checkpoint_of(latest.text).size == 13


PROOF_ERRORS = [
    # (path, query, who asks, status, fragments of the error)
    (INCLUSION, {"tree_size": "13"}, "acme", 400, ("log_index is required",)),
    (INCLUSION, {"log_index": "0"}, "acme", 400, ("tree_size is required",)),
    (CONSISTENCY, {"to": "13"}, "acme", 400, ("from is required",)),
    (CONSISTENCY, {"from": "1"}, "acme", 400, ("to is required",)),
    (INCLUSION, {"log_index": "5", "tree_size": "5"}, "acme", 404, ("no entry 5 in a tree of size 5",)),
    (INCLUSION, {"log_index": "12", "tree_size": "3"}, "acme", 404, ("no entry 12",)),
    (INCLUSION, {"log_index": "0", "tree_size": "0"}, "acme", 404, ("no entry 0",)),
    (INCLUSION, {"log_index": "0", "tree_size": "14"}, "acme", 404, ("tree of size 14",)),
    (CONSISTENCY, {"from": "1", "to": "14"}, "acme", 404, ("to 14",)),
    (CONSISTENCY, {"from": "7", "to": "5"}, "acme", 400, ("from", "to")),
    (CONSISTENCY, {"from": "0", "to": "5"}, "acme", 400, ("from",)),
    (CONSISTENCY, {"from": "1", "to": "0"}, "acme", 400, ("to",)),
    (INCLUSION, {"log_index": "one", "tree_size": "5"}, "acme", 400, ("log_index", "'one'")),
    (INCLUSION, {"log_index": "-1", "tree_size": "5"}, "acme", 400, ("log_index",)),
    (INCLUSION, {"log_index": "0", "tree_size": "5.0"}, "acme", 400, ("tree_size",)),
    (INCLUSION, {"log_index": "0", "tree_size": str(2**63)}, "acme", 400, ("tree_size",)),
    (CONSISTENCY, {"from": "x", "to": "5"}, "acme", 400, ("from",)),
    (CONSISTENCY, {"from": "1", "to": "0x5"}, "acme", 400, ("to",)),
    (INCLUSION, {"log_index": "0", "tree_size": "13"}, "other", 404, ("tree of size 13",)),
    (INCLUSION, {"log_index": "2", "tree_size": "3"}, "nobody", 404, ()),
    (CONSISTENCY, {"from": "3", "to": "13"}, "other", 404, ("to 13",)),
    (CHECKPOINT, {"tree_size": "13"}, "other", 404, ("no checkpoint of size 13",)),
    (CHECKPOINT, {"tree_size": "1000"}, "acme", 404, ("no checkpoint of size 1000",)),
    (CHECKPOINT, {"tree_size": "ten"}, "acme", 400, ("tree_size",)),
    (CHECKPOINT, {}, "nobody", 404, ("no checkpoint has been published",)),
    (CHECKPOINT, {}, "no audit scope", 403, ("audit:read",)),
    (KEY, {}, "no audit scope", 403, ("audit:read",)),
    (INCLUSION, {"log_index": "0", "tree_size": "1"}, "no audit scope", 403, ("audit:read",)),
    (CONSISTENCY, {"from": "1", "to": "2"}, "no audit scope", 403, ("audit:read",)),
]


@pytest.mark.parametrize(("path", "query", "who", "status", "fragments"), PROOF_ERRORS)
def test_proof_and_checkpoint_routes_refuse_what_they_cannot_answer(thirteen, path, query, who, status, fragments):
    body = assert_error(thirteen.client.get(path, params=query, headers=thirteen.headers(who)), status, *fragments)
    if status == 400 and path != CHECKPOINT and fragments:
        assert body.get("field") == fragments[0].split()[0], body


# --- 7. A label version's proof bundle ---------------------------------------------------------------------


def proof_url(run_id: str, label_id: str) -> str:
    return f"{label_url(run_id, label_id)}/proof"


def test_a_label_versions_proof_bundle_verifies_offline(thirteen):
    log = thirteen
    label_id = log.labels[0]
    indexes = {}
    for version in range(1, 5):
        response = log.client.get(
            proof_url(log.run_id, label_id), params={"version": version}, headers=auditor(log.acme)
        )
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert [event["version"] for event in bundle["events"]] == list(range(1, version + 1))
        report = verify_bundle(response.content, log.vkey_text)
        assert report.ok, report.problem
        assert (report.label_id, report.version, report.tree_size) == (label_id, version, 13)
        indexes[version] = report.log_index
        assert log.entries[report.log_index] == bytes.fromhex(bundle["events"][-1]["hash"])
    assert indexes == {1: 0, 2: 4, 3: 8, 4: 12}
    path = log.folder / "bundle.json"
    path.write_bytes(
        log.client.get(proof_url(log.run_id, label_id), params={"version": 4}, headers=auditor(log.acme)).content
    )
    result = offline("verify-proof", str(path), "--key", str(log.vkey), cwd=log.folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK: label {label_id} version 4 of run {log.run_id}" in result.stdout and "is entry 12" in result.stdout
    wrong_key = log.folder / "other.vkey"
    wrong_key.write_text(log.client.get(KEY, headers=auditor(log.other)).text)
    refused = offline("verify-proof", str(path), "--key", str(wrong_key), cwd=log.folder)
    assert refused.returncode == 1 and "FAILED" in refused.stdout and "checkpoint refused" in refused.stdout


def test_the_proof_bundle_route_refuses_what_it_cannot_prove(thirteen):
    log = thirteen
    url = proof_url(log.run_id, log.labels[0])
    acme = auditor(log.acme)
    unknown = str(uuid.uuid4())
    missing = assert_error(log.client.get(proof_url(log.run_id, unknown), params={"version": 1}, headers=acme), 404)
    other = log.client.get(url, params={"version": 1}, headers=auditor(log.other))
    assert assert_error(other, 404) == {"error": missing["error"].replace(unknown, log.labels[0])}, (
        "another account's label must answer like a missing one"
    )
    assert_error(log.client.get(proof_url(str(uuid.uuid4()), log.labels[0]), params={"version": 1}, headers=acme), 404)
    assert_error(log.client.get(url, params={"version": 5}, headers=acme), 404)
    assert_error(log.client.get(url, headers=acme), 400, "version is required")
    assert_error(log.client.get(url, params={"version": 0}, headers=acme), 400, "version")
    assert_error(log.client.get(url, params={"version": "two"}, headers=acme), 400, "version")
    assert_error(log.client.get(url, params={"version": 1}, headers=log.headers("no audit scope")), 403, "audit:read")


def test_a_version_no_checkpoint_covers_yet_answers_404_asking_to_retry(thirteen):
    """A checkpoint was just published, so the next is about a second away: a version written now is first not
    in the log, then in the log but under no signed checkpoint; both answer 404 asking to retry. Should a loaded
    machine let the second pass too soon, it is tried again with a new label."""
    log = thirteen
    answers = []
    for _attempt in range(5):
        account = new_account("fresh")
        headers = auditor(account)
        label_id = create_label(log.client, log.run_id, auth(account), text_value="1")["id"]
        wait_for_checkpoint(log.client, account, 1)
        update_label(log.client, log.run_id, label_id, auth(account), text_value="2")
        url = proof_url(log.run_id, label_id)
        at_once = log.client.get(url, params={"version": 2}, headers=headers)
        deadline = time.monotonic() + 30
        while label_history(log.client, log.run_id, label_id, headers)[-1]["log_index"] is None:
            assert time.monotonic() < deadline, "version 2 was not integrated"
            time.sleep(0.02)
        integrated = log.client.get(url, params={"version": 2}, headers=headers)
        answers.append((at_once.status_code, integrated.status_code))
        wait_for_checkpoint(log.client, account, 2)
        later = log.client.get(url, params={"version": 2}, headers=headers)
        assert later.status_code == 200, later.text
        assert verify_bundle(later.content, log.client.get(KEY, headers=headers).text).ok
        for early in (at_once, integrated):
            if early.status_code != 200:
                assert_error(early, 404, "version 2 is not in a signed checkpoint yet", "ask again")
        if integrated.status_code == 404:
            break
    assert answers[-1] == (404, 404), f"a version no checkpoint covered was not answered 404: {answers}"


# --- 4. Tampering behind the service's back, caught offline -------------------------------------------------


def _rewrite_payload(log: SignedLog, account: str, labels: list[str]) -> str:
    log.tamper(
        "UPDATE events SET data = replace(data, :old, :new) WHERE stream_id = :id AND version = 2",
        old='"v":0',
        new='"v":7',
        id=labels[1],
    )
    return f"log index 4, label {labels[1]} version 2: its fields do not hash to its hash"


def _rewrite_actor(log: SignedLog, account: str, labels: list[str]) -> str:
    log.tamper("UPDATE events SET actor = 'mallory' WHERE stream_id = :id AND version = 1", id=labels[2])
    return f"log index 6, label {labels[2]} version 1: its fields do not hash to its hash"


def _rewrite_consistently(log: SignedLog, account: str, labels: list[str]) -> str:
    """A rewrite of a label's newest event with its chain hash recomputed: every chain holds, only the tree
    (and so the signed root) can tell; no single entry can be named."""
    line = next(e for e in ndjson_feed(log.client, account) if e["label_id"] == labels[2] and e["version"] == 3)
    forged = dataclasses.replace(parse_event(line), payload=line["payload"].replace('"v":1', '"v":9'))
    assert forged.payload != line["payload"]
    log.tamper(
        "UPDATE events SET data = :data, hash = :hash WHERE stream_id = :id AND version = 3",
        data=forged.payload,
        hash=event_hash(account, forged),
        id=labels[2],
    )
    return "the Merkle root of the first 9 entries is not the checkpoint's"


def _delete_event(log: SignedLog, account: str, labels: list[str]) -> str:
    log.tamper("DELETE FROM events WHERE stream_id = :id AND version = 2", id=labels[1])
    return f"log index 5, label {labels[1]} version 3: comes where log index 4 was expected: log index 4 is missing"


def _delete_event_and_close_the_gap(log: SignedLog, account: str, labels: list[str]) -> str:
    log.tamper(
        "DELETE FROM events WHERE stream_id = :id AND version = 2",
        "DELETE FROM log_leaves WHERE account_id = :a AND log_index = 4",
        "UPDATE log_leaves SET log_index = -log_index WHERE account_id = :a AND log_index > 4",
        "UPDATE log_leaves SET log_index = -log_index - 1 WHERE account_id = :a AND log_index < 0",
        tables=("events", "log_leaves"),
        id=labels[1],
        a=account,
    )
    return f"log index 4, label {labels[1]} version 3: version 3 follows version 1 of its label"


def _swap(log: SignedLog, account: str, first: int) -> None:
    """Swap the events of log indexes `first` and `first + 1`."""
    leaves = dict(rows(log.engine, "SELECT log_index, position FROM log_leaves WHERE account_id = :a", a=account))
    log.tamper(
        "UPDATE log_leaves SET position = -1 WHERE account_id = :a AND log_index = :i",
        "UPDATE log_leaves SET position = :p WHERE account_id = :a AND log_index = :j",
        "UPDATE log_leaves SET position = :q WHERE account_id = :a AND log_index = :i",
        tables=("log_leaves",),
        a=account,
        i=first,
        j=first + 1,
        p=leaves[first],
        q=leaves[first + 1],
    )


def _swap_a_labels_versions(log: SignedLog, account: str, labels: list[str]) -> str:
    _swap(log, account, 0)
    return f"log index 0, label {labels[0]} version 2: the label's first event is version 2, not 1"


def _swap_two_labels_entries(log: SignedLog, account: str, labels: list[str]) -> str:
    """Entries of two labels swapped: every chain holds, only the root can tell."""
    _swap(log, account, 2)
    return "the Merkle root of the first 9 entries is not the checkpoint's"


def _truncate_the_tail(log: SignedLog, account: str, labels: list[str]) -> str:
    """The newest two entries cut from every table of the log, its head and tiles made to match."""
    cut = [log.position(labels[2], 2), log.position(labels[2], 3)]
    root = rfc9162_root(check_integrated(log.engine, account)[:7])
    log.tamper(
        "DELETE FROM events WHERE position IN (:p, :q)",
        "DELETE FROM log_leaves WHERE account_id = :a AND log_index >= 7",
        "DELETE FROM log_checkpoints WHERE account_id = :a AND tree_size > 7",
        "UPDATE log_heads SET tree_size = 7, root = :root, checkpoint_size = 0 WHERE account_id = :a",
        "UPDATE log_tiles SET hashes = substr(hashes, 1, 224) WHERE account_id = :a AND level = 0",
        tables=("events", "log_leaves", "log_checkpoints"),
        p=cut[0],
        q=cut[1],
        a=account,
        root=root,
    )
    return "the export ends after 7 entries but the checkpoint covers 9: log index 7 onwards is missing"


TAMPERINGS = {
    "rewritten payload": _rewrite_payload,
    "rewritten actor": _rewrite_actor,
    "rewritten with its hash recomputed": _rewrite_consistently,
    "deleted event": _delete_event,
    "deleted event, indexes closed up": _delete_event_and_close_the_gap,
    "a label's versions swapped": _swap_a_labels_versions,
    "two labels' entries swapped": _swap_two_labels_entries,
    "tail truncated": _truncate_the_tail,
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_tampering_behind_the_service_is_caught_offline_against_an_earlier_checkpoint(signed_log, tampering):
    log = signed_log
    account = new_account()
    labels = log.write(account)  # 3 labels of 3 versions: log indexes 0-2, 3-5, 6-8
    checkpoint, vkey = log.keep(account, 9)
    assert checkpoint_of(checkpoint.read_text()).size == 9
    clean = verify_log(log.feed_export(account).read_text().splitlines(), checkpoint.read_text(), vkey.read_text())
    assert clean.ok, clean.summary()

    expected = TAMPERINGS[tampering](log, account, labels)

    for export in (log.export(account), log.feed_export(account)):
        result = log.verify_log(export, checkpoint, vkey)
        assert result.returncode == 1, result.stdout + result.stderr
        bad = bad_lines(result)
        assert bad and expected in bad[0], result.stdout
        assert "FAILED" in result.stdout.splitlines()[-1]


def test_a_proof_bundle_of_an_event_rewritten_afterwards_fails_offline(signed_log):
    log = signed_log
    account = new_account()
    labels = log.write(account)
    _, vkey = log.keep(account, 9)
    url = proof_url(log.run_id, labels[1])
    kept = log.folder / "kept.json"
    kept.write_bytes(log.client.get(url, params={"version": 3}, headers=auditor(account)).content)
    _rewrite_payload(log, account, labels)
    for version in (2, 3):
        later = log.folder / f"later-{version}.json"
        response = log.client.get(url, params={"version": version}, headers=auditor(account))
        assert response.status_code == 200, response.text
        later.write_bytes(response.content)
        result = offline("verify-proof", str(later), "--key", str(vkey), cwd=log.folder)
        assert result.returncode == 1, result.stdout
        assert "FAILED: version 2 (log index 4): its fields do not hash to its hash" in result.stdout
    still = offline("verify-proof", str(kept), "--key", str(vkey), cwd=log.folder)
    assert still.returncode == 0 and "is entry 5" in still.stdout, still.stdout  # a kept bundle stands alone


# --- 5. Signatures ---------------------------------------------------------------------------------------


def test_verify_log_refuses_a_checkpoint_it_cannot_trust(fresh_database, start_app, tmp_path):
    url = fresh_database("sqlite")
    key = write_key(tmp_path)
    log = SignedLog(url, start_app(url, GOLDTRAIL_CHECKPOINT_KEY=str(key)), tmp_path, key)
    account, other = new_account(), new_account("other")
    log.write(account, labels=2, updates=1)
    log.write(other, labels=1, updates=0)
    checkpoint, vkey = log.keep(account, 4)
    export = log.export(account)
    assert log.verify_log(export, checkpoint, vkey).returncode == 0

    signed = checkpoint.read_text()
    body, _ = note.split_note(signed)
    origin = checkpoint_of(signed).origin
    impostor = note.parse_private_key(note.generate_key(LOG_NAME)[0]).renamed(origin)
    log_key = note.parse_vkey(vkey.read_text())
    smaller_root = base64.b64encode(
        rfc9162_root([bytes.fromhex(json.loads(line)["hash"]) for line in export.read_text().splitlines()[:3]])
    ).decode()
    cases = {
        "signed by another key": (note.sign_note(body, impostor), vkey, "no signature of a known key"),
        "size changed": (signed.replace("\n4\n", "\n3\n", 1), vkey, "does not verify"),
        "root changed": (
            signed.replace(base64.b64encode(checkpoint_of(signed).root).decode(), smaller_root),
            vkey,
            "does not verify",
        ),
        "unknown key name": (signed, note.generate_key("elsewhere.test/labels")[1], "no signature of a known key"),
        "the log's key under another name": (
            signed,
            log_key.renamed(f"{LOG_NAME}/{other}").text(),
            "no signature of a known key",
        ),
    }
    for name, (text, key_given, message) in cases.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(text)
        key_path = tmp_path / f"{name}.vkey"
        key_path.write_text(key_given if isinstance(key_given, str) else key_given.read_text())
        result = log.verify_log(export, path, key_path)
        assert result.returncode == 1, (name, result.stdout)
        assert bad_lines(result) and bad_lines(result)[0].startswith("BAD checkpoint refused:"), (name, result.stdout)
        assert message in result.stdout, (name, result.stdout)
    other_checkpoint, other_vkey = log.keep(other, 1)
    wrong_account = log.verify_log(export, other_checkpoint, other_vkey, "--account", account)
    assert wrong_account.returncode == 1 and f"is the log of {other!r}, not {account!r}" in wrong_account.stdout


# --- 6. Witnesses ------------------------------------------------------------------------------------------

COSIGNATURES = "/v1/audit/checkpoint/cosignatures"


@pytest.mark.e2e
def test_witnesses_cosign_a_growing_log_and_refuse_a_fork_or_a_shrunk_log(backend, fresh_database, tmp_path):
    url = fresh_database(backend)
    witnesses = {}
    for name in ("one", "two"):
        made = offline(
            "keys",
            "generate",
            "--witness",
            "--name",
            f"witness.test/{name}",
            "--output",
            str(tmp_path / f"{name}.key"),
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        witnesses[name] = made.stdout.strip()
    key = write_key(tmp_path)
    env = checkpoint_env(url, key, GOLDTRAIL_WITNESS_KEYS=f"{witnesses['one']} {witnesses['two']}")
    account = new_account()
    run = str(uuid.uuid4())
    engine = sa.create_engine(sync_url(url))
    try:
        with serving(tmp_path, env) as served, httpx.Client(base_url=served.base_url, timeout=30) as client:
            label_id = create_label(client, run, auth(account), text_value="1")["id"]
            update_label(client, run, label_id, auth(account), text_value="2")
            update_label(client, run, label_id, auth(account), text_value="3")
            wait_for_checkpoint(client, account, 3)
            log_vkey = tmp_path / "log.vkey"
            log_vkey.write_text(client.get(KEY, headers=auditor(account)).text)
            origin = note.parse_vkey(log_vkey.read_text()).name

            def witness(name: str, state: Path, vkey: Path = log_vkey):
                return offline(
                    "witness", "--url", served.base_url, "--token", token(account, "witness", scope=WITNESS_SCOPES),
                    "--witness-key", str(tmp_path / f"{name}.key"), "--log-key", str(vkey), "--state", str(state),
                    cwd=tmp_path,
                )  # fmt: skip

            def served_cosignatures(size: int | None = None) -> dict[str, str]:
                """The witness lines the service serves with a checkpoint (the latest, or of this size), once
                its own signature was checked; by witness name."""
                params = {} if size is None else {"tree_size": size}
                signed = client.get(CHECKPOINT, params=params, headers=auditor(account)).text
                text = note.open_note(signed, log_vkey.read_text())
                lines = signed[len(text) + 1 :].splitlines(keepends=True)
                assert lines[0].startswith(f"— {origin} ")
                found = {line.split()[1]: line for line in lines[1:]}
                for name, line in found.items():
                    vkey = next(v for v in witnesses.values() if note.parse_vkey(v).name == name)
                    note.verify_cosignature(text, line, vkey)
                return found

            def proofs_asked() -> int:
                return served.log.read_text().count("/v1/audit/proof/consistency")

            # First round: nothing seen before, so nothing to prove; it cosigns the latest checkpoint.
            state = tmp_path / "one.state"
            first = witness("one", state)
            assert first.returncode == 0, first.stdout + first.stderr
            assert f"cosigned {origin} at tree size 3" in first.stdout
            assert note.parse_checkpoint(state.read_text()).size == 3
            assert set(served_cosignatures()) == {"witness.test/one"}
            assert proofs_asked() == 0

            # The log grows: the second round proves the new checkpoint consistent with the one it cosigned.
            for version in (4, 5, 6):
                update_label(client, run, label_id, auth(account), text_value=str(version))
            wait_for_checkpoint(client, account, 6)
            second = witness("one", state)
            assert second.returncode == 0, second.stdout + second.stderr
            assert f"cosigned {origin} at tree size 6" in second.stdout
            assert proofs_asked() == 1
            assert set(served_cosignatures()) == {"witness.test/one"}
            assert set(served_cosignatures(3)) == {"witness.test/one"}  # kept with the older checkpoint too
            signed = client.get(CHECKPOINT, headers=auditor(account)).text
            note.open_note(signed, [log_vkey.read_text().strip(), witnesses["one"]])  # both kinds of line verify

            # A fork: witness two last saw another tree of the same size, signed with the log's own key.
            signer = note.parse_private_key(key.read_text()).renamed(origin)
            latest = checkpoint_of(signed)
            stored_before = rows(engine, "SELECT count(*) FROM log_cosignatures")[0][0]
            forks = {
                "same size": (6, hashlib.sha256(b"another history").digest(), "the log forked"),
                "smaller size": (4, hashlib.sha256(b"another history").digest(), "REFUSED"),
                "shrunk": (9, latest.root, "the log shrank from 9 to 6 entries"),
            }
            for name, (size, root, message) in forks.items():
                fork = tmp_path / f"fork-{name}.state"
                fork.write_text(
                    note.open_note(note.sign_note(note.checkpoint_text(origin, size, root), signer), signer.vkey)
                )
                refused = witness("two", fork)
                assert refused.returncode == 1, (name, refused.stdout, refused.stderr)
                assert refused.stdout.startswith("REFUSED") and message in refused.stdout, (name, refused.stdout)
                assert fork.read_text() == note.checkpoint_text(origin, size, root)  # the state is kept as it was
            assert "witness.test/two" not in served_cosignatures()
            assert rows(engine, "SELECT count(*) FROM log_cosignatures")[0][0] == stored_before
            other_log = tmp_path / "other.vkey"
            other_log.write_text(note.generate_key(origin)[1])
            wrong_key = witness("two", tmp_path / "two.state", other_log)
            assert wrong_key.returncode == 1 and "REFUSED" in wrong_key.stdout
            assert not (tmp_path / "two.state").exists()

            # A fresh witness two, shown the same history, cosigns it: the refusals were about the forks.
            agreed = witness("two", tmp_path / "two.state")
            assert agreed.returncode == 0, agreed.stdout + agreed.stderr
            assert set(served_cosignatures()) == {"witness.test/one", "witness.test/two"}

            # What the cosignature route refuses.
            text = note.split_note(signed)[0]
            outsider = note.parse_private_key(note.generate_witness_key("witness.test/outsider")[0])
            one = note.parse_private_key((tmp_path / "one.key").read_text())
            witness_headers = auth(account, "witness", scope=WITNESS_SCOPES)

            def post(body, headers=witness_headers, **kwargs):
                return client.post(COSIGNATURES, json=body, headers=headers, **kwargs)

            now = int(time.time())
            assert_error(
                post({"tree_size": 6, "cosignature": note.cosign(text, outsider, now)}), 400, "configured witness key"
            )
            forged_text = note.checkpoint_text(origin, 6, hashlib.sha256(b"x").digest())
            assert_error(
                post({"tree_size": 6, "cosignature": note.cosign(forged_text, one, now)}), 400, "does not verify"
            )
            assert_error(
                post({"tree_size": 6, "cosignature": note.cosign(text, one, now)}, headers=auditor(account)),
                403,
                "audit:witness",
            )
            assert_error(
                post({"tree_size": 99, "cosignature": note.cosign(text, one, now)}), 404, "no checkpoint of size 99"
            )
            for malformed in (
                {"tree_size": 6},
                {"cosignature": "x"},
                {"tree_size": "6", "cosignature": "x"},
                {"tree_size": 0, "cosignature": "x"},
                [6],
                {"tree_size": 6, "cosignature": "x", "more": 1},
            ):
                assert_error(post(malformed), 400)
            not_json = client.post(
                COSIGNATURES, content=b"tree_size=6", headers={**witness_headers, "Content-Type": "application/json"}
            )
            assert_error(not_json, 400)
            assert rows(engine, "SELECT count(*) FROM log_cosignatures")[0][0] == stored_before + 1
    finally:
        engine.dispose()


# --- 8. Settings ---------------------------------------------------------------------------------------------


def _settings_env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "GOLDTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'settings.sqlite3'}",
        "GOLDTRAIL_JWT_SECRET": SECRET,
        **more,
    }


def test_an_unusable_checkpoint_key_is_a_settings_error_and_serve_exits_2_saying_so(tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_text("hello\n")
    public = tmp_path / "public"
    public.write_text(note.generate_key(LOG_NAME)[1] + "\n")
    witness = tmp_path / "witness"
    witness.write_text(note.generate_witness_key("witness.test/w")[0] + "\n")
    cases = {
        str(tmp_path / "missing"): "cannot read",
        str(garbage): "is not a key from `goldtrail keys generate`",
        str(public): "is not a key from `goldtrail keys generate`",
        str(witness): "witness",
    }
    for path, message in cases.items():
        env = _settings_env(tmp_path, GOLDTRAIL_CHECKPOINT_KEY=path)
        with pytest.raises(SettingsError) as refused:
            load_settings(env)
        assert "GOLDTRAIL_CHECKPOINT_KEY" in str(refused.value) and message in str(refused.value), str(refused.value)
        served = run_goldtrail(clean_environment(**env), "serve", "--port", "1", cwd=tmp_path, timeout=60)
        assert served.returncode == 2, served.stdout + served.stderr
        assert str(refused.value) in served.stderr and "Traceback" not in served.stderr
    assert load_settings(_settings_env(tmp_path, GOLDTRAIL_CHECKPOINT_KEY=str(write_key(tmp_path)))).checkpoint_key_file


def test_witness_keys_that_are_not_witness_verifier_keys_are_a_settings_error(tmp_path):
    witness_private, witness_vkey = note.generate_witness_key("witness.test/w")
    cases = {
        "garbage": "garbage",
        "three parts of garbage": "name+zzzz+AAAA",
        "a log's verifier key": note.generate_key(LOG_NAME)[1],
        "a good key and garbage": f"{witness_vkey} nonsense",
        "a witness's private key": witness_private,
    }
    for name, keys in cases.items():
        with pytest.raises(SettingsError, match="GOLDTRAIL_WITNESS_KEYS") as refused:
            load_settings(_settings_env(tmp_path, GOLDTRAIL_WITNESS_KEYS=keys))
        assert witness_private not in str(refused.value), "a private key must never be echoed"
        # PRIVATE+KEY+name+hash+key material: the material is base64, which may itself hold a "+".
        assert name != "a witness's private key" or witness_private.split("+", 4)[-1] not in str(refused.value)
    assert load_settings(_settings_env(tmp_path, GOLDTRAIL_WITNESS_KEYS=f" {witness_vkey} ")).witness_keys == (
        witness_vkey,
    )
    env = _settings_env(tmp_path, GOLDTRAIL_WITNESS_KEYS="garbage")
    served = run_goldtrail(clean_environment(**env), "serve", "--port", "1", cwd=tmp_path, timeout=60)
    assert served.returncode == 2 and "GOLDTRAIL_WITNESS_KEYS" in served.stderr and "Traceback" not in served.stderr


def test_without_a_checkpoint_key_no_checkpoint_is_published_but_proofs_still_work(backend, fresh_database, start_app):
    url = fresh_database(backend)
    client = start_app(url)  # not the embedded default, no GOLDTRAIL_CHECKPOINT_KEY
    account = new_account()
    run = str(uuid.uuid4())
    label_id = create_label(client, run, auth(account), text_value="1")["id"]
    for version in (2, 3):
        update_label(client, run, label_id, auth(account), text_value=str(version))
    create_label(client, run, auth(account), text_value="other")
    deadline = time.monotonic() + 30
    while [event["log_index"] for event in ndjson_feed(client, account)] != [0, 1, 2, 3]:
        assert time.monotonic() < deadline, "the log was not integrated"
        time.sleep(0.05)
    headers = auditor(account)
    for path, params in ((CHECKPOINT, {}), (CHECKPOINT, {"tree_size": 4}), (KEY, {})):
        assert_error(client.get(path, params=params, headers=headers), 404, "GOLDTRAIL_CHECKPOINT_KEY")
    assert_error(
        client.get(proof_url(run, label_id), params={"version": 1}, headers=headers), 404, "GOLDTRAIL_CHECKPOINT_KEY"
    )
    cosignature = {"tree_size": 4, "cosignature": "— w AAAA"}
    witness_headers = auth(account, scope=WITNESS_SCOPES)
    assert_error(client.post(COSIGNATURES, json=cosignature, headers=witness_headers), 404, "GOLDTRAIL_CHECKPOINT_KEY")

    with sa.create_engine(sync_url(url)).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM log_checkpoints")).scalar() == 0
    engine = sa.create_engine(sync_url(url))
    try:
        entries = check_integrated(engine, account)
    finally:
        engine.dispose()
    for size in range(1, 5):
        root = rfc9162_root(entries[:size])
        for index in range(size):
            proof = client.get(INCLUSION, params={"log_index": index, "tree_size": size}, headers=headers)
            assert proof.status_code == 200, proof.text
            merkle.verify_inclusion(
                merkle.leaf_hash(entries[index]), index, size, decoded(proof.json()["hashes"]), root
            )
        proof = client.get(CONSISTENCY, params={"from": 1, "to": size}, headers=headers)
        assert proof.status_code == 200, proof.text
        merkle.verify_consistency(1, size, decoded(proof.json()["hashes"]), rfc9162_root(entries[:1]), root)


# --- 9. Privacy ----------------------------------------------------------------------------------------------


def keys_in(value) -> set[str]:
    """Every key of every object in a JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(keys_in(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_in(item) for item in value))
    return set()


def test_nothing_an_account_sees_counts_other_accounts_activity(signed_log):
    log = signed_log
    accounts = [new_account("a"), new_account("b")]
    run = log.run_id
    labels = {account: [] for account in accounts}
    for n in range(3):  # interleaved: each account's global positions skip the other's
        for account in accounts:
            labels[account].append(create_label(log.client, run, auth(account), text_value=str(n))["id"])
    for account in accounts:
        for label_id in labels[account]:
            update_label(log.client, run, label_id, auth(account), text_value="again")
    size = 6
    for account in accounts:
        positions = [event.position for event in feed_order(log.engine, account)]
        assert positions != list(range(positions[0], positions[0] + size)), "the writes were not interleaved"
        signed = wait_for_checkpoint(log.client, account, size)
        headers = auditor(account)

        # The feed, a page at a time: indexes 0..n-1, cursors that count this account's entries only.
        seen, cursor, nexts = [], None, []
        while True:
            page = log.client.get(
                "/v1/events", params={"limit": 4, **({"after": cursor} if cursor else {})}, headers=headers
            ).json()
            assert set(page) == {"events", "next"}
            if not page["events"]:
                assert page["next"] == cursor
                break
            seen += page["events"]
            cursor = page["next"]
            nexts.append(cursor)
        assert nexts == ["4", "6"]
        assert [event["log_index"] for event in seen] == list(range(size))
        assert [event["cursor"] for event in seen] == [str(n + 1) for n in range(size)]
        assert all(set(event) == FEED_EVENT_FIELDS for event in seen), seen[0]
        assert ndjson_feed(log.client, account) == seen

        # History, digest, checkpoint and proof bundle: no position, transaction id or global count.
        history = label_history(log.client, run, labels[account][1], headers)
        assert [entry["log_index"] for entry in history] == [1, 4]
        digest = log.client.get("/v1/audit/digest", headers=headers).json()
        assert set(digest) == {"digest", "tree_size"} and digest["tree_size"] == size
        text = note.split_note(signed)[0]
        assert text == f"{LOG_NAME}/{account}\n{size}\n{base64.b64encode(checkpoint_of(signed).root).decode()}\n"
        bundle = log.client.get(proof_url(run, labels[account][1]), params={"version": 2}, headers=headers).json()
        assert note.parse_proof(bundle["proof"]).index == 4
        shown = keys_in(seen) | keys_in(history) | keys_in(digest) | keys_in(bundle)
        assert not {key for key in shown if "position" in key or "tx" in key}, shown
