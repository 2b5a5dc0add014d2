"""The real `goldtrail serve`, started as a user would: with no settings at all, it keeps its data
in a local folder, makes a development secret, and answers the README's curl session verbatim."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from pathlib import Path

import httpx
import sqlalchemy as sa

from tests.helpers import bearer, create_label, engine_of, labels_url
from tests.servers import GOLDTRAIL, clean_environment, goldtrail_serve, run_goldtrail

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_block(name: str) -> str:
    text = README.read_text()
    block = re.search(rf"<!-- {name} -->\s*```sh\n(.*?)```\s*<!-- /{name} -->", text, re.S)
    assert block, f"README.md lost its marked {name}"
    return block.group(1)


def run_readme_block(name: str, base: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run a README shell block as a user would, in the folder the service was started from."""
    if not (cwd / ".venv").exists():
        (cwd / ".venv").symlink_to(Path(GOLDTRAIL).parent.parent)
    script = readme_block(name).replace("http://127.0.0.1:8000", base)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_readme_curl_session_works_against_the_embedded_default(tmp_path):
    env = clean_environment()
    with goldtrail_serve(tmp_path, env) as base:
        session = run_readme_block("curl-session", base, tmp_path, env)
    assert session.returncode == 0, session.stdout + session.stderr
    out = session.stdout
    assert '"text_value":"The cat sat on the mat."' in session.stderr  # the create, shown through tee
    assert '"score":0.98765432109876543210' in out  # the decimal kept every digit
    assert "deleted: 204" in out
    assert out.rstrip().endswith("[]")


def test_readme_auditor_session_works_and_verifies_clean(tmp_path):
    env = clean_environment()
    with goldtrail_serve(tmp_path, env) as base:
        assert run_readme_block("curl-session", base, tmp_path, env).returncode == 0
        session = run_readme_block("audit-session", base, tmp_path, env)
    assert session.returncode == 0, session.stdout + session.stderr
    out = session.stdout
    history = json.loads(out.splitlines()[0])
    assert [entry["type"] for entry in history] == ["GoldLabelCreated", "GoldLabelUpdated"]
    assert history[1]["changes"]["text_value"] == {"from": "41", "to": "42"}
    assert history[1]["reason"] == "off by one"
    as_of_time, as_of_version = json.loads(out.splitlines()[1]), json.loads(out.splitlines()[2])
    assert as_of_time["text_value"] == as_of_version["text_value"] == "41"
    assert json.loads(out.splitlines()[3])[0]["text_value"] == "41"
    assert len(json.loads(out.splitlines()[4])["events"]) == 2
    ndjson = [json.loads(line) for line in out.splitlines() if line.startswith('{"cursor"')]
    assert [event["log_index"] for event in ndjson] == [0, 1, 2, 3, 4]  # both sessions' events
    assert [event["version"] for event in ndjson if event["label_id"] == history[0]["state"]["id"]] == [1, 2]
    digests = [json.loads(line) for line in out.splitlines() if line.startswith('{"digest"')]
    assert len(digests) == 2 and digests[0] == digests[1] and digests[0]["tree_size"] == 5
    assert "OK: 5 entries of 2 labels" in out  # verify-log, against the signed checkpoint
    assert "version 2 of run" in out and "is entry 4" in out  # verify-proof
    assert "verify OK" in out and "matches the digest" in out and "rebuild OK" in out
    assert (tmp_path / "events.jsonl").read_text().count("\n") == 5


def test_embedded_default_keeps_data_and_a_private_secret_in_the_local_folder(tmp_path):
    env = clean_environment()
    with goldtrail_serve(tmp_path, env) as base:
        token = run_goldtrail(env, "token", "--user", "u", "--account", "a", cwd=tmp_path).stdout.strip()
        run = "0b5c9b5e-1c56-4a53-9a3b-6e7d2f9c8a10"
        with httpx.Client(base_url=base, headers=bearer(token)) as client:
            create_label(client, run, output_resource_name="o", text_value="kept")
    secret = tmp_path / ".goldtrail" / "dev-jwt-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (tmp_path / ".goldtrail" / "goldtrail.sqlite3").is_file()
    # A restart finds the same data and accepts the same token (the secret persisted).
    with goldtrail_serve(tmp_path, env) as base:
        listed = httpx.get(f"{base}{labels_url(run)}", headers=bearer(token))
    assert listed.status_code == 200 and listed.json()[0]["text_value"] == "kept"


def test_serve_refuses_to_start_on_postgres_without_a_key(tmp_path):
    env = clean_environment(GOLDTRAIL_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    result = run_goldtrail(env, "serve", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "GOLDTRAIL_JWT_SECRET" in result.stderr


def test_serve_refuses_to_start_with_an_unusable_key_file(tmp_path):
    jwks = tmp_path / "keys.json"
    jwks.write_text("{not json")
    env = clean_environment(GOLDTRAIL_JWT_JWKS=str(jwks))
    result = run_goldtrail(env, "serve", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "not a usable JWKS file" in result.stderr and "Traceback" not in result.stderr


def test_migrate_and_the_operator_commands_need_no_token_key_but_serve_and_token_refuse(
    tmp_path, backend, fresh_database
):
    url = fresh_database(backend, migrated=False)
    env = clean_environment(GOLDTRAIL_DATABASE_URL=url)

    def goldtrail(*args: str) -> subprocess.CompletedProcess:
        return run_goldtrail(env, *args, cwd=tmp_path, timeout=60)

    migrated = goldtrail("migrate")
    assert migrated.returncode == 0, migrated.stderr
    with engine_of(url) as engine:
        assert {"events", "gold_labels", "alembic_version"} <= set(sa.inspect(engine).get_table_names())
    verified = goldtrail("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    exported = goldtrail("export")
    assert exported.returncode == 0 and exported.stdout == "", exported.stderr

    for refused in (goldtrail("serve", "--port", "1"), goldtrail("token", "--user", "u", "--account", "a")):
        assert refused.returncode == 2
        assert "no token key configured" in refused.stderr and "GOLDTRAIL_JWT_SECRET" in refused.stderr
    assert not (tmp_path / ".goldtrail").exists()  # no development secret was made outside the embedded default
