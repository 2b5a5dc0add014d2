"""Group commit on PostgreSQL (storage.group_commit): concurrent plain updates share one statement that seals
each event from its label's row in SQL. The hash it computes must be the one an auditor recomputes with the
standard library, for any value; an update the statement cannot take must be handed back having written
nothing, without waiting for another writer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from events import canonical
from events.types import GoldLabelUpdated, format_time, utc_now
from projections.fold import fold
from service.storage.database import Database
from service.storage.migrate import migrate
from service.usecases import labels
from service.usecases.commands import Actor, LabelPatch, NewLabel
from tests.conftest import require_postgres
from tests.helpers import SECRET, drop_database, fresh_database_url, new_account, on_database, stored_stream
from tests.servers import clean_environment, run_goldtrail


def _answer(_state):
    raise AssertionError("no Idempotency-Key here: nothing to remember")


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    require_postgres()
    url = fresh_database_url("postgres", tmp_path_factory.mktemp("group"))
    migrate(url)
    yield url
    drop_database(url)


def who(account: str, user: str = "alice", reason: str | None = None, request_id: str | None = None) -> Actor:
    return Actor(account, user, request_id or f"req-{uuid.uuid4().hex[:8]}", reason)


async def new_labels(db: Database, account: str, run: str, count: int) -> list[str]:
    created = []
    for n in range(count):
        state = await labels.create_label(db, who(account), run, NewLabel(f"o{n}", text_value="v1"), _answer)
        created.append(state.id)
    return created


def recomputed(event) -> str:
    """The chain hash of a stored event as an auditor computes it: standard library only (events.canonical)."""
    return canonical.hash_fields_v2(
        event.account_id,
        event.stream_id,
        event.version,
        event.run_id,
        event.type,
        canonical.payload_digest(event.payload),
        event.actor,
        format_time(event.recorded_at),
        event.request_id,
        event.reason,
        event.prev_hash,
    )


def groups_sent() -> float:
    return REGISTRY.get_sample_value("goldtrail_write_group_size_count") or 0.0


TRICKY = ["plain", 'quote " and \\ backslash', "tab\tnew\nline\x01\x1f", "ünïcødé 😀 \u2028\u2029 \x7f", "", "{}"]


def test_concurrent_plain_updates_share_statements_and_seal_what_an_auditor_recomputes(postgres_url, tmp_path):
    account, run = new_account(), str(uuid.uuid4())

    async def scenario(db: Database) -> list:
        assert db.group_commit is not None
        ids = await new_labels(db, account, run, 40)
        before = groups_sent()
        updates = [
            labels.update_label(
                db,
                who(account, "bob", reason=TRICKY[n % len(TRICKY)]),
                run,
                label_id,
                LabelPatch(text_value=TRICKY[n % len(TRICKY)] + str(n)),
                None,
                _answer,
            )
            for n, label_id in enumerate(ids)
        ]
        states = await asyncio.gather(*updates)
        return [ids, states, groups_sent() - before]

    ids, states, groups = on_database(postgres_url, scenario)
    assert [state.version for state in states] == [2] * 40
    assert [state.text_value for state in states] == [TRICKY[n % len(TRICKY)] + str(n) for n in range(40)]
    assert 1 <= groups < 40, f"{groups} groups for 40 concurrent updates: nothing was grouped"
    for label_id, state in zip(ids, states, strict=True):
        stream = stored_stream(postgres_url, account, label_id)
        assert [event.version for event in stream] == [1, 2]
        assert stream[1].prev_hash == stream[0].hash and stream[1].hash == state.hash
        assert all(recomputed(event) == event.hash for event in stream)
        assert fold(stream) == state  # the answer is the read model the events fold into
    env = clean_environment(GOLDTRAIL_DATABASE_URL=postgres_url, GOLDTRAIL_JWT_SECRET=SECRET)
    verified = run_goldtrail(env, "verify", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# Any text a client can send in JSON: no NUL (PostgreSQL text refuses it; the API answers 400) and no lone
# surrogate (not Unicode text; JSON decoding refuses it).
values = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=values, reason=st.none() | values, user=values.filter(bool), request_id=values.filter(bool))
def test_the_hash_sealed_in_sql_is_the_standard_librarys_for_any_value(postgres_url, text, reason, user, request_id):
    account, run = new_account(), str(uuid.uuid4())

    async def scenario(db: Database):
        (label_id,) = await new_labels(db, account, run, 1)
        actor = Actor(account, user, request_id, reason)
        return label_id, await labels.update_in_group(db, actor, run, label_id, GoldLabelUpdated(text_value=text))

    label_id, state = on_database(postgres_url, scenario)
    assert state is not None and state.text_value == text and state.version == 2
    _, event = stored_stream(postgres_url, account, label_id)
    assert (event.actor, event.request_id, event.reason, event.data.text_value) == (user, request_id, reason, text)
    assert recomputed(event) == event.hash == state.hash


def test_updates_the_group_cannot_take_are_handed_back_having_written_nothing(postgres_url):
    """Missing, another account's, deleted, in another run, its row locked by another transaction, its queue
    held by a locking writer, its last event later than this update's clock: each is handed back (None) at
    once, and the label's stream is as it was."""
    account, run = new_account(), str(uuid.uuid4())
    data = GoldLabelUpdated(text_value="new")

    async def scenario(db: Database) -> dict[str, object]:
        ids = await new_labels(db, account, run, 6)
        deleted, locked, queued, later, other_run, mine = ids
        await labels.delete_label(db, who(account), run, deleted, None, _answer)
        outcomes: dict[str, object] = {}
        outcomes["missing"] = await labels.update_in_group(db, who(account), run, str(uuid.uuid4()), data)
        outcomes["another account's"] = await labels.update_in_group(db, who("intruder"), run, mine, data)
        outcomes["deleted"] = await labels.update_in_group(db, who(account), run, deleted, data)
        outcomes["in another run"] = await labels.update_in_group(db, who(account), "other-run", other_run, data)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM gold_labels WHERE id = %s FOR UPDATE", (locked,))
            outcomes["row locked"] = await asyncio.wait_for(
                labels.update_in_group(db, who(account), run, locked, data), timeout=3
            )
        with psycopg.connect(postgres_url) as holder:
            holder.execute(  # what a locking writer holds while it writes (storage.postgres._LABEL_KEY)
                "SELECT pg_advisory_xact_lock(26484, hashtext(%s || '/' || (hashtext(%s) & 255)::text))",
                (account, queued),
            )
            outcomes["queue held"] = await asyncio.wait_for(
                labels.update_in_group(db, who(account), run, queued, data), timeout=3
            )
        with psycopg.connect(postgres_url) as admin:
            ahead = utc_now() + timedelta(hours=1)
            admin.execute("UPDATE gold_labels SET updated_at = %s WHERE id = %s", (ahead, later))
        outcomes["clock behind the label"] = await labels.update_in_group(db, who(account), run, later, data)
        outcomes["ids"] = ids
        return outcomes

    outcomes = on_database(postgres_url, scenario)
    ids = outcomes.pop("ids")
    assert outcomes == dict.fromkeys(outcomes, None)
    deleted = ids[0]
    versions = {label: [event.version for event in stored_stream(postgres_url, account, label)] for label in ids}
    assert versions == {label: [1, 2] if label == deleted else [1] for label in ids}


def test_a_handed_back_update_is_written_the_usual_way_with_its_answer(postgres_url):
    """Through the use case: a locked row makes the update wait its turn the usual way, not fail."""
    account, run = new_account(), str(uuid.uuid4())

    async def scenario(db: Database):
        (label_id,) = await new_labels(db, account, run, 1)
        with psycopg.connect(postgres_url) as holder:
            holder.execute("SELECT 1 FROM gold_labels WHERE id = %s FOR UPDATE", (label_id,))
            writing = asyncio.ensure_future(
                labels.update_label(db, who(account), run, label_id, LabelPatch(text_value="after"), None, _answer)
            )
            await asyncio.sleep(0.5)
            assert not writing.done(), "the update did not wait for the row"
        return label_id, await writing

    label_id, state = on_database(postgres_url, scenario)
    assert state.version == 2 and state.text_value == "after"
    assert [event.version for event in stored_stream(postgres_url, account, label_id)] == [1, 2]


def test_an_update_the_statement_refuses_fails_neither_its_group_nor_the_others(postgres_url):
    """A value the group statement cannot take (here a NUL, which PostgreSQL text refuses; the API refuses it
    before, so it is made here by hand) must not answer the other updates of its group with an error: the group
    is handed back, and each update goes the usual way."""
    account, run = new_account(), str(uuid.uuid4())

    async def scenario(db: Database):
        good, bad, first, second = await new_labels(db, account, run, 4)
        plain = await labels.update_in_group(db, who(account), run, good, GoldLabelUpdated(text_value="warm"))
        assert plain is not None and plain.version == 2  # a group of one, to warm the connections up
        with psycopg.connect(postgres_url) as holder:
            # Both groups in flight wait for this lock, so the next two updates wait for a group together.
            holder.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            waiting = [
                asyncio.ensure_future(
                    labels.update_in_group(db, who(account), run, label, GoldLabelUpdated(text_value="x"))
                )
                for label in (first, second)
            ]
            await asyncio.sleep(0.3)
            together = [
                asyncio.ensure_future(
                    labels.update_in_group(db, who(account), run, good, GoldLabelUpdated(text_value="ok"))
                ),
                asyncio.ensure_future(
                    labels.update_in_group(
                        db, who(account, reason="bad\x00"), run, bad, GoldLabelUpdated(text_value="x")
                    )
                ),
            ]
            await asyncio.sleep(0.3)
        in_flight = await asyncio.gather(*waiting)
        handed_back = await asyncio.gather(*together)
        return good, bad, in_flight, handed_back

    good, bad, in_flight, handed_back = on_database(postgres_url, scenario)
    assert [state.version for state in in_flight] == [2, 2]
    assert handed_back == [None, None]  # no exception for either: both go the usual way
    assert [event.version for event in stored_stream(postgres_url, account, good)] == [1, 2]
    assert [event.version for event in stored_stream(postgres_url, account, bad)] == [1]
