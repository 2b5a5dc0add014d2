"""The `goldtrail` command line: serve, migrate, token."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from service.settings import Settings, SettingsError, load_settings

logger = logging.getLogger("goldtrail")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from service.auth import TokenVerifier
    from service.migrate import migrate
    from service.request_log import configure_logging

    TokenVerifier(settings)  # fail now, with a clear message, on an unusable key file
    configure_logging(settings.log_level)
    revision = migrate(settings.database_url)
    logger.info("schema is at migration %s", revision)
    if settings.embedded:
        logger.info(
            "embedded mode: data in %s; mint a token with: goldtrail token --user alice --account acme",
            settings.data_dir,
        )
    uvicorn.run(
        "service.app:create_app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from service.migrate import migrate

    print(f"schema is at migration {migrate(settings.database_url)}")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from service.auth import mint_token

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goldtrail", description="Event-sourced audit trail for the gold labels of ML evaluation runs."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations, then serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema to the newest migration")
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a JWT signed with the configured secret, for local use")
    token.add_argument("--user", required=True, help="the sub claim: who acts")
    token.add_argument("--account", required=True, help="the account claim: whose labels")
    token.add_argument("--scope", default=None, help='space-separated scopes, e.g. "gold_labels:read audit:read"')
    token.add_argument("--ttl", type=int, default=3600, help="seconds until the token expires (default 3600)")
    token.set_defaults(run=_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(load_settings(), args)
    except SettingsError as error:
        print(f"goldtrail: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
