"""The operator commands against real databases: verify, rebuild, history and export, and verify
catching tampering done behind the triggers' back by a database superuser."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import aclosing

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient

from projections.replay import replay
from service.cli import operations
from service.storage.database import Database, sync_url
from service.storage.rows import LABEL_FIELDS as FIELDS
from tests.helpers import SECRET, auth, create_label, label_url, labels_url, make_settings, scalar, update_label
from tests.servers import clean_environment, run_goldtrail

ACCOUNT = "acme"


class Log:
    """A fresh database with a few labels written through the API, and the CLI pointed at it."""

    def __init__(self, url: str, client: TestClient, cwd) -> None:
        self.url, self.client, self.cwd = url, client, cwd
        self.engine = sa.create_engine(sync_url(url))
        self.env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET)
        self.run_id = str(uuid.uuid4())
        self.labels: list[str] = []

    def write(self, labels: int = 3, updates: int = 2) -> None:
        for n in range(labels):
            label = create_label(self.client, self.run_id, auth(ACCOUNT), text_value=f"v0 of {n}")
            self.labels.append(label["id"])
            for version in range(updates):
                reason = {**auth(ACCOUNT, "bob"), "X-Change-Reason": f"pass {version}"}
                update_label(self.client, self.run_id, label["id"], reason, object_value={"n": n, "v": version})

    def goldtrail(self, *args: str):
        return run_goldtrail(self.env, *args, cwd=self.cwd)

    def tamper(self, statement: str, table: str = "events", **params) -> None:
        """Run SQL with the append-only triggers of `table` switched off, as a superuser could."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
                conn.execute(sa.text(statement), params)
                conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            else:
                triggers = conn.execute(
                    sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                    {"t": table},
                ).all()
                for name, _ in triggers:
                    conn.execute(sa.text(f"DROP TRIGGER {name}"))
                conn.execute(sa.text(statement), params)
                for _, sql in triggers:
                    conn.execute(sa.text(sql))

    def digest_of_everything(self, **params: str) -> dict:
        """The digest once it covers every event written so far: events enter the account's log within about
        a second of commit (on PostgreSQL, once every transaction begun before theirs has ended)."""
        written = self.scalar("SELECT count(*) FROM events WHERE account_id = :a", a=ACCOUNT)
        deadline = time.monotonic() + 30
        while True:
            found = self.client.get("/v1/audit/digest", params=params, headers=auth(ACCOUNT, scope="audit:read"))
            digest = found.json()
            if digest.get("tree_size", written) == written or time.monotonic() > deadline:
                return digest
            time.sleep(0.05)

    def scalar(self, statement: str, **params):
        return scalar(self.engine, statement, **params)


@pytest.fixture
def log(backend, fresh_database, start_app, tmp_path) -> Iterator[Log]:
    url = fresh_database(backend)
    log = Log(url, start_app(url), tmp_path)
    yield log
    log.engine.dispose()


def test_verify_passes_on_an_untouched_log(log):
    log.write()
    result = log.goldtrail("verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify OK: 9 events of 3 labels" in result.stdout


def test_verify_checks_every_accounts_log_against_the_events(log):
    log.write()
    log.digest_of_everything()  # every event is in the account's log
    result = log.goldtrail("verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "9 events of 3 labels and 9 log entries" in result.stdout


def test_verify_names_a_log_entry_moved_out_of_feed_order(log):
    log.write()
    log.digest_of_everything()
    first = log.scalar("SELECT position FROM log_leaves WHERE account_id = :a AND log_index = 0", a=ACCOUNT)
    last = log.scalar("SELECT position FROM log_leaves WHERE account_id = :a AND log_index = 8", a=ACCOUNT)
    log.tamper("DELETE FROM log_leaves WHERE account_id = :a AND log_index IN (0, 8)", "log_leaves", a=ACCOUNT)
    log.tamper(
        "INSERT INTO log_leaves (account_id, log_index, position) VALUES (:a, 0, :last), (:a, 8, :first)",
        "log_leaves",
        a=ACCOUNT,
        first=first,
        last=last,
    )
    result = log.goldtrail("verify")
    assert result.returncode == 1, result.stdout
    assert f"BAD log of account {ACCOUNT}, log entry 1: the entry comes before the one ahead of it" in result.stdout
    assert "differs from the one the entries make" in result.stdout  # the stored tree is of the true order


def test_verify_names_a_rewritten_tile_and_an_entry_whose_event_is_gone(log):
    log.write()
    log.digest_of_everything()
    log.tamper(
        "UPDATE log_tiles SET hashes = :h WHERE account_id = :a AND level = 0", "log_tiles", h=b"\0" * 32 * 9, a=ACCOUNT
    )
    result = log.goldtrail("verify")
    assert result.returncode == 1 and "stored tile (0, 0) differs from the one the entries make" in result.stdout
    position = log.scalar("SELECT position FROM log_leaves WHERE account_id = :a AND log_index = 8", a=ACCOUNT)
    log.tamper("DELETE FROM events WHERE position = :p", p=position)
    result = log.goldtrail("verify")
    assert f"BAD log of account {ACCOUNT}, log entry 8: the entry's event is gone" in result.stdout


def test_verify_names_an_event_rewritten_behind_the_triggers(log):
    log.write()
    victim = log.labels[1]
    position = log.scalar("SELECT position FROM events WHERE stream_id = :id AND version = 2", id=victim)
    log.tamper(
        "UPDATE events SET data = replace(data, :old, :new) WHERE stream_id = :id AND version = 2",
        old='"v":0',
        new='"v":7',
        id=victim,
    )
    result = log.goldtrail("verify")
    assert result.returncode == 1
    assert f"BAD position {position}, account {ACCOUNT}, label {victim}, version 2: content does not match" in (
        result.stdout
    )
    assert "verify FAILED" in result.stdout


def test_verify_names_a_rewritten_actor_even_when_the_hash_was_recomputed_badly(log):
    log.write(labels=1, updates=1)
    label = log.labels[0]
    log.tamper("UPDATE events SET actor = 'mallory' WHERE stream_id = :id AND version = 1", id=label)
    result = log.goldtrail("verify")
    assert result.returncode == 1 and f"label {label}, version 1: content does not match its hash" in result.stdout


def test_verify_catches_a_deleted_middle_event_and_a_read_model_edit(log):
    log.write()
    first, second = log.labels[0], log.labels[2]
    log.tamper("DELETE FROM events WHERE stream_id = :id AND version = 2", id=first)
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE gold_labels SET text_value = 'forged' WHERE id = :id"), {"id": second})
    result = log.goldtrail("verify")
    assert result.returncode == 1
    assert f"label {first}, version 3: prev_hash does not match" in result.stdout
    assert f"label {second}: read-model row differs from the replay in: text_value" in result.stdout


def test_verify_names_the_first_event_that_comes_before_its_predecessor_in_the_feed(log):
    """The feed is ordered by (transaction id, position): a label's version that a follower would meet before
    the version it follows breaks the feed, even when every hash chain holds."""
    log.write()
    early, later = log.labels[0], log.labels[1]
    xid = "CAST(:tx AS xid8)" if log.engine.dialect.name == "postgresql" else ":tx"
    moved = {}
    for label, version in ((later, 3), (early, 2)):
        predecessor_tx = int(
            log.scalar(f"SELECT tx_id FROM events WHERE stream_id = :id AND version = {version - 1}", id=label)
        )
        log.tamper(
            f"UPDATE events SET tx_id = {xid} WHERE stream_id = :id AND version = :v",
            tx=str(predecessor_tx - 1) if log.engine.dialect.name == "postgresql" else predecessor_tx - 1,
            id=label,
            v=version,
        )
        moved[label] = log.scalar(
            "SELECT position FROM events WHERE stream_id = :id AND version = :v", id=label, v=version
        )
    result = log.goldtrail("verify")
    assert result.returncode == 1, result.stdout
    bad = [line for line in result.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 2, result.stdout
    assert bad[0].startswith(
        f"BAD position {moved[early]}, account {ACCOUNT}, label {early}, version 2: comes before version 1"
    )
    assert bad[1].startswith(
        f"BAD position {moved[later]}, account {ACCOUNT}, label {later}, version 3: comes before version 2"
    )
    assert "content does not match" not in result.stdout and "prev_hash" not in result.stdout


def test_verify_with_an_earlier_digest_catches_deletion_of_the_newest_events(log):
    log.write()
    digest = log.digest_of_everything()
    log.write(labels=1, updates=0)
    size = str(digest["tree_size"])
    kept = log.goldtrail("verify", "--digest", digest["digest"], "--tree-size", size, "--account", ACCOUNT)
    assert kept.returncode == 0 and "matches the digest" in kept.stdout, kept.stdout + kept.stderr

    last_covered = log.scalar(
        "SELECT position FROM log_leaves WHERE account_id = :a AND log_index = :i", a=ACCOUNT, i=digest["tree_size"] - 1
    )
    log.tamper("DELETE FROM events WHERE position >= :p", p=last_covered)
    # The read model is rebuilt so that only the digest can tell: the chains that remain are intact.
    log.tamper("DELETE FROM gold_labels")
    assert log.goldtrail("rebuild").returncode == 0
    plain = log.goldtrail("verify")
    # The chains alone cannot see a clean cut at the end; the account's log can: its entries point to events
    # that are gone.
    assert plain.returncode == 1 and "the entry's event is gone" in plain.stdout, plain.stdout
    assert "content does not match" not in plain.stdout and "prev_hash" not in plain.stdout
    caught = log.goldtrail("verify", "--digest", digest["digest"], "--tree-size", size, "--account", ACCOUNT)
    assert caught.returncode == 1 and "BAD digest" in caught.stdout, caught.stdout


def test_verify_with_an_older_digest_at_a_position_catches_deletion_of_the_newest_events(log):
    """Digests kept before the log had indexes name a global position: they are still checked."""
    log.write()
    log.digest_of_everything()
    newest = log.scalar("SELECT max(position) FROM events")
    digest = log.digest_of_everything(position=str(newest))
    assert digest["position"] == newest
    log.write(labels=1, updates=0)
    kept = log.goldtrail(
        "verify", "--digest", digest["digest"], "--position", str(digest["position"]), "--account", ACCOUNT
    )
    assert kept.returncode == 0 and "matches the digest" in kept.stdout, kept.stdout + kept.stderr

    newest = log.scalar("SELECT max(position) FROM events")
    log.tamper("DELETE FROM events WHERE position >= :p", p=digest["position"])
    # The read model is rebuilt so that only the digest can tell: the chains that remain are intact.
    log.tamper("DELETE FROM gold_labels")
    assert log.goldtrail("rebuild").returncode == 0
    plain = log.goldtrail("verify")
    assert plain.returncode == 1 and "the entry's event is gone" in plain.stdout, plain.stdout
    caught = log.goldtrail(
        "verify", "--digest", digest["digest"], "--position", str(digest["position"]), "--account", ACCOUNT
    )
    assert caught.returncode == 1
    assert f"the event at position {digest['position']} is gone" in caught.stdout
    assert newest > digest["position"]


def test_verify_with_a_digest_catches_a_rewrite_before_its_tree_size(log):
    log.write()
    digest = log.digest_of_everything()
    log.tamper("UPDATE events SET hash = :h WHERE position = 1", h="f" * 64)
    result = log.goldtrail(
        "verify", "--digest", digest["digest"], "--tree-size", str(digest["tree_size"]), "--account", ACCOUNT
    )
    assert result.returncode == 1 and "no longer matches the digest" in result.stdout


def test_rebuild_restores_a_damaged_read_model_exactly(log):
    log.write()
    log.client.delete(label_url(log.run_id, log.labels[0]), headers=auth(ACCOUNT))
    before = log.client.get(labels_url(log.run_id), headers=auth(ACCOUNT)).json()
    with log.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM gold_labels WHERE id = :id"), {"id": log.labels[1]})
        conn.execute(sa.text("UPDATE gold_labels SET version = 99 WHERE id = :id"), {"id": log.labels[2]})
    assert log.goldtrail("verify").returncode == 1
    result = log.goldtrail("rebuild")
    assert result.returncode == 0 and "10 events replayed into 3 labels" in result.stdout
    assert log.goldtrail("verify").returncode == 0
    assert log.client.get(labels_url(log.run_id), headers=auth(ACCOUNT)).json() == before


def test_rebuild_refuses_a_log_that_fails_verification(log):
    log.write(labels=1)
    log.tamper("UPDATE events SET actor = 'mallory' WHERE version = 1")
    result = log.goldtrail("rebuild")
    assert result.returncode == 1 and "rebuild refused" in result.stdout
    assert log.scalar("SELECT count(*) FROM gold_labels") == 1


def test_history_prints_a_table_of_every_version(log):
    log.write(labels=1, updates=2)
    label = log.labels[0]
    log.client.delete(label_url(log.run_id, label), headers=auth(ACCOUNT, "carol"))
    result = log.goldtrail("history", log.run_id, label)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["version", "type", "actor"]
    assert [line.split()[1] for line in lines[2:6]] == [
        "GoldLabelCreated",
        "GoldLabelUpdated",
        "GoldLabelUpdated",
        "GoldLabelDeleted",
    ]
    assert "pass 1" in lines[4] and "carol" in lines[5]
    assert "4 event(s)" in result.stdout


def test_history_of_an_unknown_label_fails_clearly(log):
    result = log.goldtrail("history", log.run_id, str(uuid.uuid4()))
    assert result.returncode == 1 and "not found" in result.stderr


def test_export_writes_an_accounts_log_as_json_lines_and_resumes_after_a_cursor(log):
    log.write()
    log.digest_of_everything()  # every event is in the account's log
    out = log.cwd / "events.jsonl"
    first = log.goldtrail("export", "--account", ACCOUNT, "--output", str(out))
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["log_index"] for e in lines] == list(range(9)) and [e["cursor"] for e in lines][-1] == "9"
    assert lines[0]["type"] == "GoldLabelCreated" and lines[0]["data"]["text_value"] == "v0 of 0"
    assert json.loads(lines[0]["payload"]) == lines[0]["data"] and lines[0]["chain"] == 2
    log.write(labels=1, updates=0)
    log.digest_of_everything()
    more = log.goldtrail("export", "--account", ACCOUNT, "--after", lines[-1]["cursor"])
    assert [json.loads(line)["label_id"] for line in more.stdout.splitlines()] == [log.labels[-1]]
    assert "resume with --after 10" in more.stderr


def test_export_of_the_whole_log_is_every_account_in_feed_order(log):
    log.write()
    log.client.post(f"/v1/run/{log.run_id}/gold-labels", json={"output_resource_name": "x"}, headers=auth("other"))
    first = log.goldtrail("export")
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert len(lines) == 10
    cursors = [tuple(map(int, e["cursor"].split("-"))) for e in lines]
    assert cursors == sorted(cursors)
    more = log.goldtrail("export", "--after", lines[-2]["cursor"])
    assert [json.loads(line)["cursor"] for line in more.stdout.splitlines()] == [lines[-1]["cursor"]]


def test_export_of_another_account_is_empty(log):
    log.write(labels=1, updates=0)
    result = log.goldtrail("export", "--account", "nobody")
    assert result.returncode == 0 and result.stdout == "" and "exported 0 event(s)" in result.stderr


def test_export_with_a_bad_cursor_fails_clearly(log):
    result = log.goldtrail("export", "--after", "nonsense")
    assert result.returncode == 2 and "not a cursor" in result.stderr


@pytest.mark.parametrize("after", [f"{2**63}-1", f"1-{2**64}"])
def test_export_after_a_cursor_beyond_64_signed_bits_fails_clearly(log, after):
    log.write(labels=1, updates=0)
    result = log.goldtrail("export", "--after", after)
    assert result.returncode == 2 and "not a cursor" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_operator_commands_refuse_an_unmigrated_database(tmp_path):
    env = clean_environment(
        GOLDTRAIL_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}", GOLDTRAIL_JWT_SECRET=SECRET
    )
    result = run_goldtrail(env, "verify", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "run `goldtrail migrate` first" in result.stderr


def _read_model_rows(log: Log) -> list[str]:
    """Every read-model row exactly as stored: PostgreSQL's text of the row, SQLite's literal of each value."""
    with log.engine.connect() as conn:
        if log.engine.dialect.name == "postgresql":
            query = "SELECT gold_labels::text FROM gold_labels ORDER BY account_id, id"
        else:
            values = " || ',' || ".join(f"quote({name})" for name in FIELDS)
            query = f"SELECT {values} FROM gold_labels ORDER BY account_id, id"
        return list(conn.execute(sa.text(query)).scalars())


def test_rebuild_writes_every_row_byte_for_byte_as_the_writes_did(log):
    log.write(labels=2, updates=1)
    path = labels_url(log.run_id)
    partial = log.client.post(
        path,
        json={"output_resource_name": "partial", "object_value": {"z": 1, "a": 0.1000, "n": 10**30, "s": "é\n"}},
        headers=auth(ACCOUNT),
    ).json()
    log.client.put(
        label_url(log.run_id, partial["id"]),
        json={"object_value_is_partial": True},
        headers=auth(ACCOUNT),
    )
    log.client.delete(label_url(log.run_id, log.labels[0]), headers=auth(ACCOUNT, "carol"))
    written = _read_model_rows(log)
    assert len(written) == 3

    log.tamper("DELETE FROM gold_labels")
    result = log.goldtrail("rebuild")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _read_model_rows(log) == written


def test_a_write_arriving_during_a_rebuild_waits_for_it_and_is_kept(log, monkeypatch):
    log.write(labels=2, updates=0)
    label = log.labels[0]
    answers, writers = [], []
    real_replay = operations.replay

    async def replay_then_write(conn, progress=None):
        outcome = await real_replay(conn, progress)
        # The events are read: a write now must wait for the new read model, not commit before it.
        put = label_url(log.run_id, label)
        writer = threading.Thread(
            target=lambda: answers.append(log.client.put(put, json={"text_value": "late"}, headers=auth(ACCOUNT)))
        )
        writer.start()
        writers.append(writer)
        await asyncio.to_thread(writer.join, 1)
        assert not answers, "a write went through in the middle of the rebuild"
        return outcome

    monkeypatch.setattr(operations, "replay", replay_then_write)
    out = io.StringIO()
    assert asyncio.run(operations.rebuild_read_model(make_settings(log.url, log.cwd), out=out)) == 0, out.getvalue()
    writers[0].join(30)
    assert answers[0].status_code == 200, answers[0].text
    now = log.client.get(label_url(log.run_id, label), headers=auth(ACCOUNT))
    assert now.json()["text_value"] == "late" and now.headers["etag"] == '"2"'
    result = log.goldtrail("verify")
    assert result.returncode == 0, result.stdout


def test_replay_checks_every_event_whatever_the_batch_size(log):
    log.write()
    victim = log.labels[1]
    position = log.scalar("SELECT position FROM events WHERE stream_id = :id AND version = 2", id=victim)
    log.tamper("UPDATE events SET reason = 'forged' WHERE position = :p", p=position)

    async def replays():
        db = Database.connect(make_settings(log.url, log.cwd))
        try:
            async with db.read() as reads:
                outcomes = [await replay(reads.event_rows(size)) for size in (1, 4, 10_000)]
                # Left after one batch, the read must still free the connection for the next statement.
                async with aclosing(reads.event_rows(2)) as batches:
                    assert len(await anext(batches)) == 2
                assert await reads.count_events() == 9
                return outcomes
        finally:
            await db.close()

    outcomes = asyncio.run(replays())
    for outcome in outcomes:
        assert outcome.events == 9
        [problem] = outcome.problems
        assert (problem.label_id, problem.position, problem.version) == (victim, position, 2)
        assert problem.problem.startswith("content does not match its hash")
        assert outcome.states == outcomes[0].states and len(outcome.states) == 3
