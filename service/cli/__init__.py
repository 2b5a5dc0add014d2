"""The `goldtrail` command line: serve, migrate, token, and the operator commands
verify, rebuild, history and export."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from service.settings import Settings, SettingsError, dev_checkpoint_key, load_settings

logger = logging.getLogger("goldtrail")


# Python serves a request on one core at a time, so one process per core, where the database takes writers
# side by side; at most 4, far below PostgreSQL's default max_connections (100) at 10 connections each. A
# database with one writer at a time (SQLite) gets one. README, Performance, has the measurements.
MAX_DEFAULT_WORKERS = 4


def default_workers(settings: Settings) -> int:
    from service.storage.database import backend_of

    if backend_of(settings.database_url).ONE_WRITER:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.workers is None:
        args.workers = default_workers(settings)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker keeps its metrics in files here, so /metrics adds up all workers, not the one asked;
        # the files are this run's alone and go when it ends.
        with tempfile.TemporaryDirectory(prefix="goldtrail-metrics-") as metrics_dir:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            try:
                return _serve(settings, args)
            finally:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    import uvicorn

    from service.http.auth import TokenVerifier
    from service.http.request_log import configure_logging
    from service.http.server import guarded_protocol
    from service.storage.migrate import migrate

    if settings.embedded:
        dev_checkpoint_key(settings.data_dir)  # once, here, before the workers read it
    TokenVerifier(settings)  # fail now, with a clear message, on an unusable key file
    configure_logging(settings.log_level, settings.log_format)
    revision = migrate(settings.database_url, settings.db_timeout_seconds)
    logger.info("schema is at migration %s", revision)
    if settings.embedded:
        logger.info(
            "embedded mode: data in %s; mint a token with: goldtrail token --user alice --account acme",
            settings.data_dir,
        )
    metrics_server = _serve_metrics(settings) if settings.metrics_port else None
    try:
        uvicorn.run(
            "service.http.app:create_app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            server_header=False,
            http=guarded_protocol(settings),
            ws="none",  # no WebSocket routes: an Upgrade request is served as plain HTTP
            timeout_keep_alive=settings.keep_alive_seconds,
        )
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    return 0


def _serve_metrics(settings: Settings):
    """Serve /metrics on the metrics port, from this process: the serving parent, which outlives its
    workers. With several workers it adds up the files they keep their metrics in."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY  # one worker runs in this process
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    try:
        server, _thread = start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
    except OSError as error:
        raise SettingsError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} "
            f"(GOLDTRAIL_METRICS_HOST, GOLDTRAIL_METRICS_PORT): {error.strerror or error}"
        ) from None
    logger.info("metrics at http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    return server


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from service.storage.migrate import create_runtime_role, migrate
    from service.storage.postgres import runtime_role_sql

    if args.print_runtime_role_sql:
        database = make_url(settings.database_url).database or "goldtrail"
        print(";\n".join(runtime_role_sql(args.print_runtime_role_sql, database)) + ";")
        return 0
    print(f"schema is at migration {migrate(settings.database_url, settings.db_timeout_seconds)}")
    if args.runtime_role:
        try:
            create_runtime_role(settings.database_url, args.runtime_role)
        except ValueError as error:
            print(f"goldtrail: {error}", file=sys.stderr)
            return 2
        print(f"role {args.runtime_role!r} may now append events but never update, delete or truncate them")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from service.http.auth import mint_token

    if settings.jwt_secret is None:
        print(
            "goldtrail: token signs with GOLDTRAIL_JWT_SECRET; this service is set up for public keys", file=sys.stderr
        )
        return 2
    print(
        mint_token(
            settings.jwt_secret,
            user=args.user,
            account=args.account,
            account_claim=settings.account_claim,
            scopes=args.scope,
            ttl_seconds=args.ttl,
            now=int(time.time()),
        )
    )
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from service.cli.operations import verify

    if (args.digest is None) != (args.position is None and args.tree_size is None) or (
        args.position is not None and args.tree_size is not None
    ):
        print("goldtrail: --digest goes with either --tree-size (or, for older digests, --position)", file=sys.stderr)
        return 2
    return asyncio.run(
        verify(settings, digest=args.digest, position=args.position, tree_size=args.tree_size, account=args.account)
    )


def _rebuild(settings: Settings, _args: argparse.Namespace) -> int:
    from service.cli.operations import rebuild_read_model

    return asyncio.run(rebuild_read_model(settings))


def _history(settings: Settings, args: argparse.Namespace) -> int:
    from service.cli.operations import print_history

    return asyncio.run(print_history(settings, args.run_id, args.label_id, args.account))


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from events.feed import BadCursor
    from service.cli.operations import export

    try:
        return asyncio.run(export(settings, args.account, args.after, args.output))
    except BadCursor as error:
        print(f"goldtrail: --after: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goldtrail", description="Event-sourced audit trail for the gold labels of ML evaluation runs."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, then serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        help=f"server processes (default: one per CPU core up to {MAX_DEFAULT_WORKERS} on PostgreSQL, one on SQLite)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema to the newest migration")
    migrate.add_argument(
        "--runtime-role", metavar="ROLE", help="also create (or re-grant) a least-privilege PostgreSQL role to serve as"
    )
    migrate.add_argument(
        "--print-runtime-role-sql", metavar="ROLE", help="print the SQL for that role instead of running anything"
    )
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a JWT signed with the configured secret, for local use")
    token.add_argument("--user", required=True, help="the sub claim: who acts")
    token.add_argument("--account", required=True, help="the account claim: whose labels")
    token.add_argument("--scope", default=None, help='space-separated scopes, e.g. "gold_labels:read audit:read"')
    token.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)")
    token.set_defaults(run=_token)

    verify = commands.add_parser(
        "verify", help="recompute every hash chain and compare the read model to a full replay"
    )
    verify.add_argument("--digest", help="a digest an auditor kept (GET /v1/audit/digest)")
    verify.add_argument("--tree-size", type=int, help="the tree size that digest was taken at")
    verify.add_argument("--position", type=int, help="the position an older digest was taken at")
    verify.add_argument("--account", help="the account the digest belongs to (default: the whole log)")
    verify.set_defaults(run=_verify)

    rebuild = commands.add_parser("rebuild", help="rebuild the read model by replaying every event")
    rebuild.set_defaults(run=_rebuild)

    history = commands.add_parser("history", help="a label's history as a table")
    history.add_argument("run_id")
    history.add_argument("label_id")
    history.add_argument("--account", help="only if the label belongs to this account")
    history.set_defaults(run=_history)

    export = commands.add_parser(
        "export", help="write an account's log as JSON Lines, in log order (what verify-log checks)"
    )
    export.add_argument("--account", help="this account's log (default: every account's events, in feed order)")
    export.add_argument("--after", help="a cursor: export only what came after it")
    export.add_argument("--output", type=Path, help="a file to write (default: standard output)")
    export.set_defaults(run=_export)
    keys = commands.add_parser("keys", help="generate a signing key for checkpoints (or, --witness, cosignatures)")
    keys.add_argument("action", choices=["generate"])
    keys.add_argument("--name", required=True, help="the key name: the log's name, e.g. goldtrail.example.com/labels")
    keys.add_argument("--output", type=Path, required=True, help="the private key file to write (mode 0600)")
    keys.add_argument("--witness", action="store_true", help="a witness's cosigning key")

    verify_log = commands.add_parser(
        "verify-log", help="check an exported account log against a signed checkpoint, offline"
    )
    verify_log.add_argument("export", type=Path, help="the output of `goldtrail export --account A` or the NDJSON feed")
    verify_log.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint (GET /v1/audit/checkpoint)")
    verify_log.add_argument("--key", required=True, help="the log's verifier key (GET /v1/audit/key), or its file")
    verify_log.add_argument("--account", help="the account the checkpoint must be of")

    verify_proof = commands.add_parser("verify-proof", help="check a label version's proof bundle, offline")
    verify_proof.add_argument("bundle", type=Path, help="GET /v1/run/{run}/gold-label/{id}/proof?version=V")
    verify_proof.add_argument("--key", required=True, help="the log's verifier key (GET /v1/audit/key), or its file")

    witness = commands.add_parser(
        "witness", help="check that an account's log only grew since the last checkpoint seen, and cosign it"
    )
    witness.add_argument("--url", required=True, help="the goldtrail service, e.g. https://goldtrail.example.com")
    witness.add_argument("--token", help="a token of the account with audit:witness (or GOLDTRAIL_WITNESS_TOKEN)")
    witness.add_argument("--witness-key", type=Path, required=True, help="this witness's private key file")
    witness.add_argument("--log-key", required=True, help="the log's verifier key, or its file")
    witness.add_argument("--state", type=Path, required=True, help="where the last cosigned checkpoint is kept")
    return parser


# Commands that read or rewrite an existing log: they never migrate it behind the operator's back.
_NEEDS_CURRENT_SCHEMA = {"verify", "rebuild", "history", "export"}
# Commands that never verify or sign a token, so they run without a token key (a migration job or an
# operator's shell need not hold the signing secret). Any other command, serve and token included,
# refuses to start without one outside the embedded default.
_NO_TOKEN_KEY = {"migrate", *_NEEDS_CURRENT_SCHEMA}


# The verifiable log's commands that need no database and no settings (service.cli.transparency).
_OFFLINE = {"keys", "verify-log", "verify-proof", "witness"}


def _offline(args: argparse.Namespace) -> int:
    from events.note import NoteError
    from service.cli import transparency

    try:
        if args.command == "keys":
            return transparency.generate(args.name, args.output, args.witness)
        if args.command == "verify-log":
            return transparency.check_log(args.export, args.checkpoint, _key(args.key), args.account)
        if args.command == "verify-proof":
            return transparency.check_bundle(args.bundle, _key(args.key))
        token = args.token or os.environ.get("GOLDTRAIL_WITNESS_TOKEN", "")
        return transparency.witness(args.url, token, args.witness_key, _key(args.log_key), args.state)
    except (OSError, NoteError) as error:
        print(f"goldtrail: {error}", file=sys.stderr)
        return 2


def _key(given: str) -> str:
    """A verifier key given as its text, or as a file holding it."""
    path = Path(given)
    return path.read_text().strip() if "+" not in given and path.is_file() else given


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import InterfaceError, OperationalError

    from service.storage.database import DatabaseUnavailable
    from service.storage.migrate import SchemaOutOfDate, require_current_schema

    args = _parser().parse_args(argv)
    if args.command in _OFFLINE:
        return _offline(args)
    try:
        settings = load_settings(require_token_key=args.command not in _NO_TOKEN_KEY)
        if args.command in _NEEDS_CURRENT_SCHEMA:
            require_current_schema(settings.database_url, settings.db_timeout_seconds)
        return args.run(settings, args)
    except (SettingsError, SchemaOutOfDate) as error:
        print(f"goldtrail: {error}", file=sys.stderr)
        return 2
    except (OperationalError, InterfaceError, DatabaseUnavailable) as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()
        print(f"goldtrail: cannot reach the database: {detail[0] if detail else error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
