"""PostgreSQL plans that stay linear whatever the planner's statistics say.

Right after a big batch import the statistics still describe the tables as they were (empty, for a new
deployment) until autovacuum comes round, and goldtrail's runtime role may not ANALYZE tables it does not
own. The statements that look many labels up at once must then still probe an index once per label, never
compare every label asked for with every label of the run: with stale statistics a join did, and a batch of
10,000 labels took a minute, and PUT ran at 0.4x its rate after ANALYZE. These tests read the generic plans
(what a prepared statement runs after a few executions) on such statistics.
"""

from __future__ import annotations

import re
import uuid

import httpx
import psycopg
import pytest
from psycopg import sql

from service.storage import postgres
from service.storage.migrate import migrate
from tests.conftest import require_postgres
from tests.helpers import SECRET, auth, drop_database, fresh_database_url, new_account
from tests.servers import clean_environment, serving


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A database whose statistics were taken while it was empty, then a run of 10,000 labels imported."""
    require_postgres()
    workdir = tmp_path_factory.mktemp("plans")
    url = fresh_database_url("postgres", workdir)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("events", "gold_labels"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            conn.execute(f"ANALYZE {table}")
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_DATA_DIR=str(workdir))
    account, run = new_account(), str(uuid.uuid4())
    with serving(workdir, env) as served:
        for start in (0, 5_000):
            labels = [{"output_resource_name": f"o{n}", "text_value": "v"} for n in range(start, start + 5_000)]
            response = httpx.post(
                f"{served.base_url}/v1/run/{run}/gold-labels/batch", json={"labels": labels}, headers=auth(account)
            )
            assert response.status_code == 200, response.text
    yield url, account, run
    drop_database(url)


def generic_plan(url: str, statement: str, types: dict[str, str], values: dict[str, object]) -> str:
    """EXPLAIN of the statement's generic plan, its `:name` or `%(name)s` parameters bound as `types` says."""
    order = list(types)
    numbered = re.sub(r"%\((\w+)\)s|(?<!:):(\w+)", lambda found: f"${order.index(found[1] or found[2]) + 1}", statement)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE probed ({', '.join(types.values())}) AS {numbered}")
        arguments = sql.SQL(", ").join(sql.Literal(values[name]) for name in order)  # EXPLAIN takes no parameters
        return "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN EXECUTE probed({})").format(arguments)))


def test_the_batch_looks_its_names_up_one_index_probe_each(imported):
    url, account, run = imported
    plan = generic_plan(
        url,
        postgres._LIVE_LABELS_NAMED,
        {"names": "text[]", "account_id": "text", "run_id": "text"},
        {"names": [f"o{n}" for n in range(100)], "account_id": account, "run_id": run},
    )
    assert "Join Filter" not in plan and "Seq Scan on gold_labels" not in plan, plan
    nodes = [re.sub(r"\s+\(cost=.*", "", line).strip() for line in plan.splitlines()]
    assert nodes[:2] == ["Nested Loop", "->  Function Scan on unnest n"], plan  # the names outside
    assert re.search(r"Index Cond: \(.*\(output_resource_name = n\.name\)\)", plan), plan  # a probe for each


def test_a_group_of_updates_finds_each_label_by_its_primary_key(imported):
    url, _, _ = imported
    plan = generic_plan(
        url,
        postgres._UPDATE_LIVE_MANY,
        {"updates": "json", "deadline": "timestamptz"},
        {"updates": "[]", "deadline": None},
    )
    scans = re.findall(r"(Seq Scan|Bitmap Heap Scan|Index Scan using \w+|Tid Scan) on gold_labels", plan)
    assert scans and set(scans) == {"Index Scan using gold_labels_pkey"}, plan
    assert "Hash Join" not in plan, plan
