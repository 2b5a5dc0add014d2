"""Settings: one frozen object built once at start-up from GOLDTRAIL_* environment variables."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import msgspec

DEFAULT_DATA_DIR = ".goldtrail"
LOG_FORMATS = ("auto", "json", "text")
DEV_SECRET_FILE = "dev-jwt-secret"
DEV_CHECKPOINT_KEY_FILE = "checkpoint-key"
DEV_LOG_NAME = "goldtrail.localhost"


class SettingsError(Exception):
    """A setting is missing or malformed; the message says which and how to fix it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    data_dir: Path
    jwt_secret: str | None = None
    jwt_public_key_files: tuple[Path, ...] = ()
    jwt_jwks_file: Path | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = 0
    account_claim: str = "account_id"
    max_body_bytes: int = 1024 * 1024
    # The batch import takes up to 10,000 labels in one body.
    max_batch_bytes: int = 64 * 1024 * 1024
    max_object_depth: int = 64
    db_pool_size: int = 10
    db_timeout_seconds: float = 5.0
    retry_after_seconds: int = 2
    idempotency_retention_seconds: int = 24 * 3600
    log_level: str = "INFO"
    # json (what log shippers read), text (a line a person reads), or auto: text when stderr is a terminal.
    log_format: str = "auto"
    # The HTTP server's guard against hostile and slow clients (service/http/server.py).
    max_head_bytes: int = 64 * 1024
    head_timeout_seconds: float = 5.0
    body_timeout_seconds: float = 30.0
    keep_alive_seconds: float = 5.0
    # When set, /metrics is served on this port only (by the serving process), not on the API port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # The private key that signs every account's checkpoints (`goldtrail keys generate`); none: no checkpoints.
    checkpoint_key_file: Path | None = None
    # Verifier keys of the witnesses whose cosignatures the service keeps and serves with its checkpoints.
    witness_keys: tuple[str, ...] = ()
    # Whether this process integrates committed events into the verifiable log (one process at a time does;
    # "off" leaves it to the others, e.g. to dedicated integrator processes).
    integrator: str = "on"
    # Hot standbys (PostgreSQL streaming replicas) that serve auditors' reads (storage.replicas).
    read_replica_urls: tuple[str, ...] = ()
    # A standby further behind the primary than this is skipped (its reads go elsewhere).
    replica_max_lag_seconds: float = 5.0
    # How long a read that sends a consistency token waits for a standby to replay it before the primary
    # answers instead.
    replica_wait_seconds: float = 0.25
    # How often each process checks its standbys (one cheap query each, and one on the primary).
    replica_check_seconds: float = 1.0
    # True when no GOLDTRAIL_DATABASE_URL was given: the embedded SQLite default, with a dev secret.
    embedded: bool = False

    @property
    def uses_public_keys(self) -> bool:
        return bool(self.jwt_public_key_files or self.jwt_jwks_file)


# Each default is written once, on its Settings field; a variable that is unset or empty leaves it.
_DEFAULTS = {
    field.name: field.default for field in msgspec.structs.fields(Settings) if field.default is not msgspec.NODEFAULT
}


def _variable(field: str) -> str:
    return f"GOLDTRAIL_{field.upper()}"


def _text(env: Mapping[str, str], field: str) -> str | None:
    return env.get(_variable(field)) or _DEFAULTS[field]


def _int(env: Mapping[str, str], field: str, minimum: int = 0) -> int | None:
    name = _variable(field)
    raw = env.get(name)
    if raw is None or raw == "":
        return _DEFAULTS[field]
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], field: str) -> float:
    name = _variable(field)
    raw = env.get(name)
    if raw is None or raw == "":
        return _DEFAULTS[field]
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], field: str, choices: tuple[str, ...]) -> str:
    name = _variable(field)
    value = _text(env, field).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {env[name]!r}")
    return value


def _words(raw: str | None) -> tuple[str, ...]:
    return tuple(word for word in (raw or "").replace(",", " ").split() if word)


_ALGORITHMS = {
    name.lower(): name
    for name in (
        *("HS256", "HS384", "HS512", "RS256", "RS384", "RS512"),
        *("PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"),
    )
}


def _algorithms(raw: str | None) -> tuple[str, ...]:
    """The allow-list, spelled as PyJWT spells it; 'none' and unknown names are refused."""
    names = []
    for word in _words(raw):
        if word.lower() == "none":
            raise SettingsError("GOLDTRAIL_JWT_ALGORITHMS must not allow 'none'")
        if word.lower() not in _ALGORITHMS:
            raise SettingsError(
                f"GOLDTRAIL_JWT_ALGORITHMS: unknown algorithm {word!r}; use e.g. HS256, RS256, ES256, EdDSA"
            )
        names.append(_ALGORITHMS[word.lower()])
    return tuple(names)


def dev_secret(data_dir: Path) -> str:
    """The embedded default's signing secret: made once, kept in the data folder, readable by its owner only."""
    path = data_dir / DEV_SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip()


def dev_checkpoint_key(data_dir: Path) -> Path:
    """The embedded default's checkpoint key: made once, kept in the data folder, readable by its owner only."""
    from events.note import generate_key

    path = data_dir / DEV_CHECKPOINT_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_key(DEV_LOG_NAME)[0] + "\n")
    return path


def _checkpoint_key(env: Mapping[str, str], data_dir: Path, embedded: bool) -> Path | None:
    from events.note import ED25519, NoteError, parse_private_key

    raw = env.get("GOLDTRAIL_CHECKPOINT_KEY")
    if not raw:
        # Made when the service first starts (dev_checkpoint_key), not by commands that only read settings.
        return data_dir / DEV_CHECKPOINT_KEY_FILE if embedded else None
    path = Path(raw)
    try:
        key = parse_private_key(path.read_text())
    except OSError as error:
        raise SettingsError(f"GOLDTRAIL_CHECKPOINT_KEY: cannot read {raw!r} ({error.strerror})") from None
    except NoteError as error:
        raise SettingsError(
            f"GOLDTRAIL_CHECKPOINT_KEY: {raw!r} is not a key from `goldtrail keys generate`: {error}"
        ) from None
    if key.kind != ED25519:
        # A witness key cannot sign notes: every integration pass would fail on its first checkpoint.
        raise SettingsError(
            f"GOLDTRAIL_CHECKPOINT_KEY: {raw!r} is a witness's cosigning key; checkpoints are signed with a key "
            "from `goldtrail keys generate` without --witness"
        )
    return path


def _witness_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    from events.note import COSIGNATURE_V1, NoteError, parse_vkey

    keys = _words(env.get("GOLDTRAIL_WITNESS_KEYS"))
    for key in keys:
        if key.startswith("PRIVATE+"):  # never echoed: a secret has no place in an error message or a log
            raise SettingsError("GOLDTRAIL_WITNESS_KEYS holds a private key: give the witnesses' verifier keys")
        try:
            kind = parse_vkey(key).kind
        except NoteError as error:
            raise SettingsError(
                f"GOLDTRAIL_WITNESS_KEYS: {key[:80]!r} is not a witness verifier key: {error}"
            ) from None
        if kind != COSIGNATURE_V1:
            # A note-signing key makes no cosignatures: every one its witness sent would be refused.
            raise SettingsError(
                f"GOLDTRAIL_WITNESS_KEYS: {key[:80]!r} is not a witness verifier key "
                "(`goldtrail keys generate --witness` makes one)"
            )
    return keys


def _port(env: Mapping[str, str], field: str) -> int | None:
    port = _int(env, field, minimum=1)
    if port is not None and port > 65535:
        raise SettingsError(f"{_variable(field)} must be a TCP port (1 to 65535), got {port}")
    return port


def _replica_urls(env: Mapping[str, str], database_url: str) -> tuple[str, ...]:
    urls = _words(env.get("GOLDTRAIL_READ_REPLICA_URLS"))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    for url in (database_url, *urls) if urls else ():
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            backend = None
        if backend not in ("postgresql", "postgres"):
            raise SettingsError(
                "GOLDTRAIL_READ_REPLICA_URLS needs PostgreSQL: the primary (GOLDTRAIL_DATABASE_URL) and every "
                f"standby must be postgresql://USER@HOST:PORT/DB URLs, got {url.split('://')[0]!r}"
            )
    return urls


def load_settings(env: Mapping[str, str] | None = None, *, require_token_key: bool = True) -> Settings:
    """The settings from `env` (default: the process environment).

    `require_token_key=False` is for commands that never verify a token (migrate and the operator
    commands): outside the embedded default they run without GOLDTRAIL_JWT_SECRET or a public key."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("GOLDTRAIL_DATA_DIR") or DEFAULT_DATA_DIR).resolve()
    database_url = env.get("GOLDTRAIL_DATABASE_URL") or ""
    embedded = not database_url
    if embedded:
        database_url = f"sqlite:///{data_dir / 'goldtrail.sqlite3'}"

    public_keys = tuple(Path(p) for p in _words(env.get("GOLDTRAIL_JWT_PUBLIC_KEY")))
    jwks = Path(env["GOLDTRAIL_JWT_JWKS"]) if env.get("GOLDTRAIL_JWT_JWKS") else None
    secret = env.get("GOLDTRAIL_JWT_SECRET") or None
    uses_public_keys = bool(public_keys or jwks)
    if secret and uses_public_keys:
        raise SettingsError(
            "set either GOLDTRAIL_JWT_SECRET or GOLDTRAIL_JWT_PUBLIC_KEY/GOLDTRAIL_JWT_JWKS, not both: "
            "accepting HMAC tokens beside public keys invites key-confusion attacks"
        )
    for path in (*public_keys, *([jwks] if jwks else [])):
        if not path.is_file():
            raise SettingsError(f"JWT key file {str(path)!r} does not exist")
    if not secret and not uses_public_keys and (embedded or require_token_key):
        if not embedded:
            raise SettingsError(
                "no token key configured: set GOLDTRAIL_JWT_SECRET (HS256) or GOLDTRAIL_JWT_PUBLIC_KEY / "
                "GOLDTRAIL_JWT_JWKS (RS256, ES256, EdDSA)"
            )
        secret = dev_secret(data_dir)
    if secret is not None and len(secret.encode()) < 32:
        raise SettingsError("GOLDTRAIL_JWT_SECRET must be at least 32 bytes long")

    algorithms = _algorithms(env.get("GOLDTRAIL_JWT_ALGORITHMS")) or (
        ("RS256", "ES256", "EdDSA") if uses_public_keys else ("HS256",)
    )
    hmac = {a for a in algorithms if a.startswith("HS")}
    if uses_public_keys and hmac:
        raise SettingsError(
            f"GOLDTRAIL_JWT_ALGORITHMS must not allow HMAC ({', '.join(sorted(hmac))}) with public keys"
        )
    if not uses_public_keys and set(algorithms) - hmac:
        raise SettingsError("with GOLDTRAIL_JWT_SECRET only HMAC algorithms (HS256, HS384, HS512) can be allowed")

    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        embedded=embedded,
        jwt_secret=secret,
        jwt_public_key_files=public_keys,
        jwt_jwks_file=jwks,
        jwt_algorithms=algorithms,
        jwt_issuer=_text(env, "jwt_issuer"),
        jwt_audience=_text(env, "jwt_audience"),
        jwt_leeway_seconds=_int(env, "jwt_leeway_seconds"),
        account_claim=_text(env, "account_claim"),
        max_body_bytes=_int(env, "max_body_bytes", minimum=1024),
        max_batch_bytes=_int(env, "max_batch_bytes", minimum=1024),
        max_object_depth=_int(env, "max_object_depth", minimum=1),
        db_pool_size=_int(env, "db_pool_size", minimum=1),
        db_timeout_seconds=_float(env, "db_timeout_seconds"),
        retry_after_seconds=_int(env, "retry_after_seconds", minimum=1),
        idempotency_retention_seconds=_int(env, "idempotency_retention_seconds", minimum=1),
        log_level=_text(env, "log_level").upper(),
        log_format=_choice(env, "log_format", LOG_FORMATS),
        max_head_bytes=_int(env, "max_head_bytes", minimum=1024),
        head_timeout_seconds=_float(env, "head_timeout_seconds"),
        body_timeout_seconds=_float(env, "body_timeout_seconds"),
        keep_alive_seconds=_float(env, "keep_alive_seconds"),
        metrics_port=_port(env, "metrics_port"),
        metrics_host=_text(env, "metrics_host"),
        checkpoint_key_file=_checkpoint_key(env, data_dir, embedded),
        witness_keys=_witness_keys(env),
        integrator=_choice(env, "integrator", ("on", "off")),
        read_replica_urls=_replica_urls(env, database_url),
        replica_max_lag_seconds=_float(env, "replica_max_lag_seconds"),
        replica_wait_seconds=_float(env, "replica_wait_seconds"),
        replica_check_seconds=_float(env, "replica_check_seconds"),
    )
