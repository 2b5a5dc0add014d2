"""Bearer-token authentication, black-box over HTTP: every way a token can be missing, malformed or
untrustworthy is a 401 with a `WWW-Authenticate: Bearer` challenge and a JSON error that never echoes
the token; scopes are 403. Covers the HS256 secret, PEM public keys (RS256, ES256, EdDSA), JWKS files,
and the key settings that load_settings must refuse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import RSAAlgorithm
from litestar.testing import TestClient

from service.settings import Settings, SettingsError, load_settings
from tests.helpers import (
    AUDIT,
    READ,
    SECRET,
    WRITE,
    assert_error,
    auth,
    bearer,
    create_label,
    label_url,
    labels_url,
    post_label,
    token,
)

OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
HS512_SECRET = "a-secret-of-64-bytes-as-rfc-7518-wants-for-hs512-".ljust(64, "x")


# --- helpers --------------------------------------------------------------------------------------


def assert_unauthorized(response, *fragments: str, sent: str | None = None) -> dict:
    """401, JSON error, a Bearer challenge, and nothing of the sent token in the answer."""
    body = assert_error(response, 401, *fragments)
    assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    if sent:
        assert sent not in response.text
        for part in sent.split("."):
            if len(part) >= 8:
                assert part not in response.text, (part, response.text)
    return body


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims(**overrides: object) -> dict[str, object]:
    """A valid claim set (sub alice, account acme, ten minutes to live); a None override drops a claim."""
    now = int(time.time())
    payload: dict[str, object] = {"sub": "alice", "account_id": "acme", "iat": now, "exp": now + 600}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def signed(key, algorithm: str, headers: dict | None = None, **overrides: object) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def unsigned_token(alg: str = "none", **overrides: object) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(**overrides))}."


def hs256_by_hand(secret: bytes, **overrides: object) -> str:
    """HS256 computed with hmac directly: PyJWT refuses to use a PEM public key as an HMAC secret."""
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(claims(**overrides))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def read(client: TestClient, headers: dict[str, str], run_id: str | None = None):
    return client.get(labels_url(run_id), headers=headers)


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_pem(path: Path, *private_keys) -> Path:
    path.write_bytes(b"".join(public_pem(key) for key in private_keys))
    return path


def rsa_jwk(private_key, kid: str) -> dict:
    jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def serve(start_app, sqlite_url) -> Callable[..., TestClient]:
    """Start an app with extra GOLDTRAIL_* settings (on SQLite: tokens never reach the database)."""
    return lambda **env: start_app(sqlite_url, **env)


@pytest.fixture
def serve_pem(serve, tmp_path) -> Callable[..., TestClient]:
    """An app that trusts the public halves of the given private keys, from one PEM file."""

    def start(*private_keys, **env: str) -> TestClient:
        path = write_pem(tmp_path / f"public-{uuid.uuid4().hex[:6]}.pem", *private_keys)
        return serve(GOLDTRAIL_JWT_SECRET="", GOLDTRAIL_JWT_PUBLIC_KEY=str(path), **env)

    return start


# --- the Authorization header ---------------------------------------------------------------------


V1_ROUTES = [
    ("GET", "/v1/run/{run}/gold-labels"),
    ("POST", "/v1/run/{run}/gold-labels"),
    ("GET", "/v1/run/{run}/gold-label/{label}"),
    ("PUT", "/v1/run/{run}/gold-label/{label}"),
    ("DELETE", "/v1/run/{run}/gold-label/{label}"),
]


@pytest.mark.parametrize(("method", "path"), V1_ROUTES)
def test_every_v1_route_without_a_token_is_401(sqlite_client, method, path):
    url = path.format(run=uuid.uuid4(), label=uuid.uuid4())
    response = sqlite_client.request(method, url, json={"output_resource_name": "x"})
    assert_unauthorized(response, "missing bearer token")


def test_missing_authorization_header_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, {}), "missing bearer token", "Bearer <JWT>")


def test_basic_scheme_is_401(sqlite_client):
    response = read(sqlite_client, {"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert_unauthorized(response, "must be 'Bearer <JWT>'", sent="YWxpY2U6c2VjcmV0")


def test_valid_jwt_under_another_scheme_is_401(sqlite_client):
    jwt_token = token()
    response = read(sqlite_client, {"Authorization": f"Token {jwt_token}"})
    assert_unauthorized(response, "must be 'Bearer <JWT>'", sent=jwt_token)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer     "])
def test_bearer_with_empty_token_is_401(sqlite_client, header):
    assert_unauthorized(read(sqlite_client, {"Authorization": header}), "must be 'Bearer <JWT>'")


@pytest.mark.parametrize("garbage", ["not-a-jwt-at-all", "abc.def.ghi", "eyJhbGciOiJIUzI1NiJ9.%%%.zzz", "....."])
def test_garbage_token_is_401(sqlite_client, garbage):
    response = read(sqlite_client, {"Authorization": f"Bearer {garbage}"})
    assert_unauthorized(response, "not a well-formed JWT", sent=garbage)


def test_bearer_scheme_is_case_insensitive(sqlite_client):
    response = post_label(sqlite_client, headers={"Authorization": f"bearer {token()}"})
    assert response.status_code == 201, response.text


def test_valid_token_is_accepted_and_names_user_and_account(client):
    response = post_label(client, headers=auth(account="acme-auth", user="bob"))
    assert response.status_code == 201, response.text
    label = response.json()
    assert label["account_id"] == "acme-auth" and label["created_by"] == "bob"


def test_a_valid_token_of_another_account_finds_nothing_of_this_one(client):
    """The account comes from the token alone: another account's valid token meets 404s, as for nothing."""
    run_id = str(uuid.uuid4())
    label = create_label(client, run_id, auth(account="owner-acct"))
    other = auth(account="other-acct", scope=f"{READ} {WRITE}")
    assert_error(client.get(label_url(run_id, label["id"]), headers=other), 404)
    assert_error(read(client, other, run_id), 404, "run")
    assert_error(client.put(label_url(run_id, label["id"]), json={"text_value": "x"}, headers=other), 404)
    assert client.get(label_url(run_id, label["id"]), headers=auth(account="owner-acct")).json() == label


# --- signature and algorithm (HS256 secret) -------------------------------------------------------


def test_token_signed_with_another_secret_is_401(sqlite_client):
    jwt_token = token(secret=OTHER_SECRET)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "signature does not match", sent=jwt_token)


def test_token_with_tampered_payload_is_401(sqlite_client):
    header, _, signature = token(account="acme").split(".")
    forged = f"{header}.{b64json(claims(account_id='someone-else'))}.{signature}"
    assert_unauthorized(read(sqlite_client, bearer(forged)), "signature does not match", sent=forged)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_token_is_401(sqlite_client, alg):
    jwt_token = unsigned_token(alg)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "algorithm", "not accepted", sent=jwt_token)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the right secret, for HS512 too short
def test_hs512_token_is_401_when_only_hs256_is_allowed(sqlite_client):
    jwt_token = jwt.encode(claims(), SECRET, algorithm="HS512")
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "'HS512' is not accepted", "HS256", sent=jwt_token)


def test_hs512_token_is_accepted_when_allowed(serve):
    client = serve(GOLDTRAIL_JWT_SECRET=HS512_SECRET, GOLDTRAIL_JWT_ALGORITHMS="HS256,HS512")
    response = post_label(client, headers=bearer(jwt.encode(claims(), HS512_SECRET, algorithm="HS512")))
    assert response.status_code == 201, response.text


def test_rs256_token_is_401_when_a_secret_is_configured(sqlite_client, rsa_key):
    jwt_token = signed(rsa_key, "RS256")
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "'RS256' is not accepted", sent=jwt_token)


# --- time claims ----------------------------------------------------------------------------------


def test_expired_token_is_401(sqlite_client):
    jwt_token = token(ttl=-60)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "expired", sent=jwt_token)


def test_token_expiring_right_now_is_401(sqlite_client):
    jwt_token = token(ttl=-1)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "expired")


def test_token_with_nbf_in_the_future_is_401(sqlite_client):
    jwt_token = token(nbf=int(time.time()) + 600)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "not valid yet", sent=jwt_token)


def test_token_with_iat_in_the_future_is_401(sqlite_client):
    jwt_token = token(iat=int(time.time()) + 600)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "not valid yet")


def test_token_with_nbf_in_the_past_is_accepted(sqlite_client):
    response = post_label(sqlite_client, headers=auth(nbf=int(time.time()) - 60))
    assert response.status_code == 201, response.text


def test_leeway_lets_a_just_expired_token_through(serve):
    client = serve(GOLDTRAIL_JWT_LEEWAY_SECONDS="120")
    response = post_label(client, headers=auth(ttl=-30))
    assert response.status_code == 201, response.text


def test_leeway_does_not_let_a_long_expired_token_through(serve):
    client = serve(GOLDTRAIL_JWT_LEEWAY_SECONDS="120")
    assert_unauthorized(read(client, auth(ttl=-600)), "expired")


def test_leeway_lets_a_slightly_early_nbf_through(serve):
    client = serve(GOLDTRAIL_JWT_LEEWAY_SECONDS="120")
    response = post_label(client, headers=auth(nbf=int(time.time()) + 30))
    assert response.status_code == 201, response.text


def test_non_numeric_exp_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(exp="tomorrow")), "not a well-formed JWT")


# --- required and identity claims -----------------------------------------------------------------


def test_missing_exp_is_401(sqlite_client):
    jwt_token = token(exp=None)
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), "'exp'", sent=jwt_token)


def test_missing_sub_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(user=None)), "'sub'")


def test_empty_sub_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(user="")), "'sub'")


def test_whitespace_sub_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(user="   ")), "'sub'")


def test_non_string_sub_is_401(sqlite_client):
    jwt_token = jwt.encode(claims(sub=42), SECRET, algorithm="HS256")
    assert_unauthorized(read(sqlite_client, bearer(jwt_token)), sent=jwt_token)


def test_missing_account_claim_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(account=None)), "'account_id'")


def test_empty_string_account_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(account="")), "'account_id'", "non-empty string")


def test_whitespace_account_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(account="   ")), "'account_id'")


@pytest.mark.parametrize("value", [42, 0, True, ["acme"], {"id": "acme"}])
def test_non_string_account_is_401(sqlite_client, value):
    assert_unauthorized(read(sqlite_client, auth(account=value)), "'account_id'", "non-empty string")


def test_overlong_account_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(account="a" * 256)), "'account_id'", "255")


def test_account_of_255_characters_is_accepted(sqlite_client):
    response = post_label(sqlite_client, headers=auth(account="a" * 255))
    assert response.status_code == 201, response.text


def test_account_with_nul_character_is_401(sqlite_client):
    assert_unauthorized(read(sqlite_client, auth(account="acme\x00evil")), "'account_id'")


def test_body_cannot_override_the_token_account_or_user(client):
    response = client.post(
        labels_url(),
        json={"output_resource_name": "x", "account_id": "evil", "created_by": "mallory"},
        headers=auth(account="acme-body", user="carol"),
    )
    if response.status_code == 201:
        assert response.json()["account_id"] == "acme-body"
        assert response.json()["created_by"] == "carol"
    else:
        assert_error(response, 400)


def test_custom_account_claim_is_honoured(serve):
    client = serve(GOLDTRAIL_ACCOUNT_CLAIM="tenant")
    jwt_token = jwt.encode(claims(account_id=None, tenant="globex"), SECRET, algorithm="HS256")
    response = post_label(client, headers=bearer(jwt_token))
    assert response.status_code == 201, response.text
    assert response.json()["account_id"] == "globex"


def test_custom_account_claim_ignores_account_id(serve):
    client = serve(GOLDTRAIL_ACCOUNT_CLAIM="tenant")
    assert_unauthorized(read(client, auth(account="acme")), "'tenant'")


# --- issuer and audience --------------------------------------------------------------------------

ISSUER = "https://issuer.example.com/"
AUDIENCE = "goldtrail-api"


@pytest.fixture
def iss_aud_client(serve) -> TestClient:
    return serve(GOLDTRAIL_JWT_ISSUER=ISSUER, GOLDTRAIL_JWT_AUDIENCE=AUDIENCE)


def test_right_issuer_and_audience_are_accepted(iss_aud_client):
    response = post_label(iss_aud_client, headers=auth(iss=ISSUER, aud=AUDIENCE))
    assert response.status_code == 201, response.text


def test_audience_list_containing_this_service_is_accepted(iss_aud_client):
    response = post_label(iss_aud_client, headers=auth(iss=ISSUER, aud=["other-api", AUDIENCE]))
    assert response.status_code == 201, response.text


def test_wrong_issuer_is_401(iss_aud_client):
    jwt_token = token(iss="https://evil.example.com/", aud=AUDIENCE)
    assert_unauthorized(read(iss_aud_client, bearer(jwt_token)), "issuer (iss)", sent=jwt_token)


def test_missing_issuer_is_401_when_configured(iss_aud_client):
    assert_unauthorized(read(iss_aud_client, auth(aud=AUDIENCE)), "'iss'")


def test_wrong_audience_is_401(iss_aud_client):
    jwt_token = token(iss=ISSUER, aud="some-other-api")
    assert_unauthorized(read(iss_aud_client, bearer(jwt_token)), "audience (aud)", sent=jwt_token)


def test_missing_audience_is_401_when_configured(iss_aud_client):
    assert_unauthorized(read(iss_aud_client, auth(iss=ISSUER)), "'aud'")


def test_issuer_and_audience_are_not_checked_when_not_configured(sqlite_client):
    response = post_label(sqlite_client, headers=auth(iss="https://anyone.example/", aud="anything"))
    assert response.status_code == 201, response.text


# --- the 401 contract, across failures ------------------------------------------------------------

BAD_TOKENS: dict[str, Callable[[], str]] = {
    "garbage": lambda: "garbage-token-value-0123456789",
    "other secret": lambda: token(secret=OTHER_SECRET),
    "expired": lambda: token(ttl=-60),
    "not yet valid": lambda: token(nbf=int(time.time()) + 600),
    "alg none": lambda: unsigned_token("none"),
    "hs512": lambda: jwt.encode(claims(), HS512_SECRET, algorithm="HS512"),
    "no sub": lambda: token(user=None),
    "no account": lambda: token(account=None),
    "no exp": lambda: token(exp=None),
    "integer account": lambda: token(account=7),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_every_401_has_a_bearer_challenge_and_never_echoes_the_token(sqlite_client, kind):
    jwt_token = BAD_TOKENS[kind]()
    response = read(sqlite_client, bearer(jwt_token))
    assert_unauthorized(response, sent=jwt_token)
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert 'realm="goldtrail"' in response.headers["www-authenticate"]
    assert set(response.json()) == {"error"}


# --- two Authorization headers -------------------------------------------------------------------
# Proxies and frameworks disagree on which of two headers wins (the first, the last, both joined),
# so a request carrying two is ambiguous: it is refused whatever the order and whatever the tokens.


def with_raw_headers(client: TestClient, method: str, path: str, headers: list[tuple[str, str]], **kwargs):
    """Send each header as its own entry of the ASGI scope, as a server does with repeated header lines
    (the test client would join two values of one name into one, which a server never does)."""

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as raw:
            return await raw.request(method, path, headers=headers, **kwargs)

    return client.blocking_portal.call(send)


def two_accounts_run(client) -> tuple[str, dict[str, dict]]:
    """A run holding one label of each of two accounts: what an ambiguous request must not reveal."""
    run_id = str(uuid.uuid4())
    labels = {}
    for account in (f"first-{uuid.uuid4().hex[:8]}", f"second-{uuid.uuid4().hex[:8]}"):
        labels[account] = create_label(client, run_id, auth(account), output_resource_name=f"of-{account}")
    return run_id, labels


def assert_ambiguous(response, labels: dict[str, dict], *tokens: str) -> None:
    """401 naming the two headers, and nothing of either account or either token in the answer."""
    assert_unauthorized(response, "Authorization header")
    assert set(response.json()) == {"error"}
    for label in labels.values():
        for value in (label["id"], label["output_resource_name"], label["account_id"]):
            assert value not in response.text, (value, response.text)
    for jwt_token in tokens:
        assert_unauthorized(response, sent=jwt_token)


def two_headers(first: str, second: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]


@pytest.mark.parametrize("valid_first", [True, False], ids=["valid-then-forged", "forged-then-valid"])
def test_a_valid_and_a_forged_authorization_header_are_401_in_either_order(sqlite_client, valid_first):
    run_id, labels = two_accounts_run(sqlite_client)
    account = next(iter(labels))
    valid, forged = token(account), token(account, secret=OTHER_SECRET)
    pair = (valid, forged) if valid_first else (forged, valid)
    response = with_raw_headers(sqlite_client, "GET", labels_url(run_id), two_headers(*pair))
    assert_ambiguous(response, labels, valid, forged)


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first"])
def test_valid_tokens_of_two_accounts_in_two_authorization_headers_are_401(sqlite_client, order):
    run_id, labels = two_accounts_run(sqlite_client)
    tokens = [token(account) for account in labels]
    if order == "second-then-first":
        tokens.reverse()
    response = with_raw_headers(sqlite_client, "GET", labels_url(run_id), two_headers(*tokens))
    assert_ambiguous(response, labels, *tokens)


def test_the_same_valid_token_in_two_authorization_headers_is_401(sqlite_client):
    run_id, labels = two_accounts_run(sqlite_client)
    jwt_token = token(next(iter(labels)))
    response = with_raw_headers(sqlite_client, "GET", labels_url(run_id), two_headers(jwt_token, jwt_token))
    assert_ambiguous(response, labels, jwt_token)


def test_two_authorization_headers_on_a_write_are_401_and_store_nothing(client):
    run_id, labels = two_accounts_run(client)
    first, second = (token(account) for account in labels)
    body = {"output_resource_name": "ambiguous"}
    response = with_raw_headers(client, "POST", labels_url(run_id), two_headers(first, second), json=body)
    assert_ambiguous(response, labels, first, second)
    for account, label in labels.items():
        assert client.get(labels_url(run_id), headers=auth(account)).json() == [label]


def test_one_authorization_header_sent_raw_is_accepted(client):
    """The raw sender itself is sound: the same request with one header answers as usual."""
    run_id, labels = two_accounts_run(client)
    account = next(iter(labels))
    response = with_raw_headers(client, "GET", labels_url(run_id), [("Authorization", f"Bearer {token(account)}")])
    assert response.status_code == 200, response.text
    assert response.json() == [labels[account]]


# --- scopes ---------------------------------------------------------------------------------------


@pytest.fixture
def existing_run(sqlite_client) -> str:
    """A run holding one label of account acme, so reads answer 200 rather than 404."""
    run_id = str(uuid.uuid4())
    assert post_label(sqlite_client, run_id, auth()).status_code == 201
    return run_id


def test_no_scope_claim_grants_read_and_write(sqlite_client, existing_run):
    assert read(sqlite_client, auth(), existing_run).status_code == 200
    assert post_label(sqlite_client, headers=auth()).status_code == 201


def test_scp_list_with_read_can_read(sqlite_client, existing_run):
    response = read(sqlite_client, auth(scp=[READ]), existing_run)
    assert response.status_code == 200, response.text
    assert len(response.json()) == 1


def test_scp_list_with_read_cannot_write(sqlite_client):
    assert_error(post_label(sqlite_client, headers=auth(scp=[READ])), 403, f"'{WRITE}'")


def test_scp_list_with_write_can_write(sqlite_client):
    assert post_label(sqlite_client, headers=auth(scp=[WRITE])).status_code == 201


def test_scope_string_with_read_and_write_can_write_and_read(sqlite_client, existing_run):
    headers = auth(scope=f"{READ} {WRITE}")
    assert post_label(sqlite_client, headers=headers).status_code == 201
    assert read(sqlite_client, headers, existing_run).status_code == 200


def test_scope_string_with_read_only_cannot_write(sqlite_client):
    assert_error(post_label(sqlite_client, headers=auth(scope=READ)), 403, "lacks", f"'{WRITE}'")


def test_scope_string_with_write_only_cannot_read(sqlite_client, existing_run):
    assert_error(read(sqlite_client, auth(scope=WRITE), existing_run), 403, f"'{READ}'")


def test_audit_scope_only_cannot_read_labels(sqlite_client, existing_run):
    assert_error(read(sqlite_client, auth(scope=AUDIT), existing_run), 403, f"'{READ}'")


def test_audit_scope_only_cannot_write_labels(sqlite_client):
    assert_error(post_label(sqlite_client, headers=auth(scp=[AUDIT])), 403, f"'{WRITE}'")


def test_empty_scope_string_grants_nothing(sqlite_client, existing_run):
    assert_error(read(sqlite_client, auth(scope=""), existing_run), 403, f"'{READ}'")


def test_scope_lookalikes_do_not_grant_access(sqlite_client, existing_run):
    headers = auth(scope="gold_labels:read:x gold_labels:reader GOLD_LABELS:READ")
    assert_error(read(sqlite_client, headers, existing_run), 403, f"'{READ}'")


# --- health routes --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_routes_answer_200_without_a_token(sqlite_client, path):
    response = sqlite_client.get(path)
    assert response.status_code == 200, response.text
    assert "www-authenticate" not in response.headers


# --- PEM public keys: RS256, ES256, EdDSA ---------------------------------------------------------


def test_rs256_token_with_pem_public_key_is_accepted(serve_pem, rsa_key):
    client = serve_pem(rsa_key)
    response = post_label(client, headers=bearer(signed(rsa_key, "RS256", sub="dave", account_id="initech")))
    assert response.status_code == 201, response.text
    assert response.json()["account_id"] == "initech" and response.json()["created_by"] == "dave"


def test_rs256_token_signed_with_another_rsa_key_is_401(serve_pem, rsa_key, rsa_key_2):
    client = serve_pem(rsa_key)
    jwt_token = signed(rsa_key_2, "RS256")
    assert_unauthorized(read(client, bearer(jwt_token)), "signature does not match", sent=jwt_token)


def test_expired_rs256_token_is_401(serve_pem, rsa_key):
    client = serve_pem(rsa_key)
    assert_unauthorized(read(client, bearer(signed(rsa_key, "RS256", exp=int(time.time()) - 60))), "expired")


def test_key_confusion_hs256_signed_with_the_public_pem_is_401(serve_pem, rsa_key):
    client = serve_pem(rsa_key)
    forged = hs256_by_hand(public_pem(rsa_key))
    assert jwt.get_unverified_header(forged)["alg"] == "HS256"
    assert_unauthorized(read(client, bearer(forged)), "'HS256' is not accepted", sent=forged)


def test_key_confusion_with_exact_pem_file_bytes_is_401(serve, rsa_key, tmp_path):
    path = write_pem(tmp_path / "confusion.pem", rsa_key)
    client = serve(GOLDTRAIL_JWT_SECRET="", GOLDTRAIL_JWT_PUBLIC_KEY=str(path))
    for secret in (path.read_bytes(), path.read_bytes().strip()):
        forged = hs256_by_hand(secret)
        assert_unauthorized(read(client, bearer(forged)), "'HS256' is not accepted", sent=forged)


def test_alg_none_token_is_401_with_public_keys(serve_pem, rsa_key):
    client = serve_pem(rsa_key)
    assert_unauthorized(read(client, bearer(unsigned_token("none"))), "not accepted")


def test_pem_file_with_two_keys_accepts_tokens_from_both(serve_pem, rsa_key, rsa_key_2):
    client = serve_pem(rsa_key, rsa_key_2)
    for key in (rsa_key, rsa_key_2):
        response = post_label(client, headers=bearer(signed(key, "RS256")))
        assert response.status_code == 201, response.text


def test_two_pem_files_accept_tokens_from_both(serve, rsa_key, rsa_key_2, tmp_path):
    first = write_pem(tmp_path / "one.pem", rsa_key)
    second = write_pem(tmp_path / "two.pem", rsa_key_2)
    client = serve(GOLDTRAIL_JWT_SECRET="", GOLDTRAIL_JWT_PUBLIC_KEY=f"{first}, {second}")
    for key in (rsa_key, rsa_key_2):
        assert post_label(client, headers=bearer(signed(key, "RS256"))).status_code == 201


def test_es256_token_with_ec_p256_public_key_is_accepted(serve_pem, ec_key):
    client = serve_pem(ec_key)
    response = post_label(client, headers=bearer(signed(ec_key, "ES256")))
    assert response.status_code == 201, response.text


def test_es256_token_signed_with_another_ec_key_is_401(serve_pem, ec_key):
    client = serve_pem(ec_key)
    other = ec.generate_private_key(ec.SECP256R1())
    assert_unauthorized(read(client, bearer(signed(other, "ES256"))), "signature does not match")


def test_eddsa_token_with_ed25519_public_key_is_accepted(serve_pem, ed_key):
    client = serve_pem(ed_key)
    response = post_label(client, headers=bearer(signed(ed_key, "EdDSA")))
    assert response.status_code == 201, response.text


def test_eddsa_token_signed_with_another_ed25519_key_is_401(serve_pem, ed_key):
    client = serve_pem(ed_key)
    other = ed25519.Ed25519PrivateKey.generate()
    assert_unauthorized(read(client, bearer(signed(other, "EdDSA"))), "signature does not match")


def test_rs256_token_is_401_when_algorithms_allow_only_es256(serve_pem, rsa_key):
    client = serve_pem(rsa_key, GOLDTRAIL_JWT_ALGORITHMS="ES256")
    assert_unauthorized(read(client, bearer(signed(rsa_key, "RS256"))), "'RS256' is not accepted")


MISMATCHES = [
    pytest.param("rsa", "ES256"),
    pytest.param("rsa", "EdDSA"),
    pytest.param("ec", "RS256"),
    pytest.param("ec", "EdDSA"),
    pytest.param("ed", "RS256"),
    pytest.param("ed", "ES256"),
]


@pytest.mark.parametrize(("configured", "algorithm"), MISMATCHES)
def test_token_alg_of_another_key_family_is_401(serve_pem, rsa_key, ec_key, ed_key, configured, algorithm):
    configured_key = {"rsa": rsa_key, "ec": ec_key, "ed": ed_key}[configured]
    signing_key = {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key}[algorithm]
    client = serve_pem(configured_key)
    assert_unauthorized(read(client, bearer(signed(signing_key, algorithm))), "signature does not match")


def test_pem_file_with_rsa_and_ec_keys_accepts_es256_tokens(serve_pem, rsa_key, ec_key):
    client = serve_pem(rsa_key, ec_key)
    response = post_label(client, headers=bearer(signed(ec_key, "ES256")))
    assert response.status_code == 201, response.text


def test_pem_file_with_rsa_and_ec_keys_accepts_rs256_tokens(serve_pem, rsa_key, ec_key):
    client = serve_pem(rsa_key, ec_key)
    response = post_label(client, headers=bearer(signed(rsa_key, "RS256")))
    assert response.status_code == 201, response.text


# --- JWKS -----------------------------------------------------------------------------------------


@pytest.fixture
def jwks_client(serve, rsa_key, rsa_key_2, tmp_path) -> TestClient:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk(rsa_key, "k1"), rsa_jwk(rsa_key_2, "k2")]}))
    return serve(GOLDTRAIL_JWT_SECRET="", GOLDTRAIL_JWT_JWKS=str(path))


def test_jwks_token_with_kid_k2_is_verified_with_k2(jwks_client, rsa_key_2):
    response = post_label(jwks_client, headers=bearer(signed(rsa_key_2, "RS256", headers={"kid": "k2"})))
    assert response.status_code == 201, response.text


def test_jwks_token_with_kid_k1_is_verified_with_k1(jwks_client, rsa_key):
    response = post_label(jwks_client, headers=bearer(signed(rsa_key, "RS256", headers={"kid": "k1"})))
    assert response.status_code == 201, response.text


def test_jwks_unknown_kid_is_401(jwks_client, rsa_key):
    jwt_token = signed(rsa_key, "RS256", headers={"kid": "k3"})
    assert_unauthorized(read(jwks_client, bearer(jwt_token)), "unknown key id", sent=jwt_token)


def test_jwks_kid_k1_signed_by_k2_is_401(jwks_client, rsa_key_2):
    jwt_token = signed(rsa_key_2, "RS256", headers={"kid": "k1"})
    assert_unauthorized(read(jwks_client, bearer(jwt_token)), "signature does not match", sent=jwt_token)


def test_jwks_token_signed_by_an_unlisted_key_is_401(jwks_client):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwt_token = signed(stranger, "RS256", headers={"kid": "k1"})
    assert_unauthorized(read(jwks_client, bearer(jwt_token)), "signature does not match")


def test_jwks_hs256_token_is_401(jwks_client):
    forged = hs256_by_hand(b"k1")
    assert_unauthorized(read(jwks_client, bearer(forged)), "'HS256' is not accepted", sent=forged)


def test_jwks_kid_of_an_rsa_key_with_es256_alg_is_401(jwks_client, ec_key):
    jwt_token = signed(ec_key, "ES256", headers={"kid": "k1"})
    assert_unauthorized(read(jwks_client, bearer(jwt_token)), "signature does not match")


# --- settings that must be refused ----------------------------------------------------------------


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    return {"GOLDTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'settings.sqlite3'}", "GOLDTRAIL_DATA_DIR": str(tmp_path)}


@pytest.fixture
def pem_path(tmp_path, rsa_key) -> str:
    return str(write_pem(tmp_path / "settings.pem", rsa_key))


@pytest.fixture
def jwks_path(tmp_path, rsa_key) -> str:
    path = tmp_path / "settings-jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk(rsa_key, "k1")]}))
    return str(path)


def load(base_env: dict[str, str], **extra: str) -> Settings:
    return load_settings({**base_env, **extra})


def test_settings_refuse_secret_and_public_key_together(base_env, pem_path):
    with pytest.raises(SettingsError, match="not both"):
        load(base_env, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_JWT_PUBLIC_KEY=pem_path)


def test_settings_refuse_secret_and_jwks_together(base_env, jwks_path):
    with pytest.raises(SettingsError, match="not both"):
        load(base_env, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_JWT_JWKS=jwks_path)


@pytest.mark.parametrize("algorithms", ["RS256 HS256", "HS256", "RS256,HS512", "hs256"])
def test_settings_refuse_hmac_algorithms_with_public_keys(base_env, pem_path, algorithms):
    with pytest.raises(SettingsError, match="HMAC"):
        load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=pem_path, GOLDTRAIL_JWT_ALGORITHMS=algorithms)


def test_settings_refuse_hmac_algorithms_with_jwks(base_env, jwks_path):
    with pytest.raises(SettingsError, match="HMAC"):
        load(base_env, GOLDTRAIL_JWT_JWKS=jwks_path, GOLDTRAIL_JWT_ALGORITHMS="RS256 HS256")


@pytest.mark.parametrize("algorithms", ["none", "HS256 none", "HS256,NONE", "None"])
def test_settings_refuse_alg_none_with_a_secret(base_env, algorithms):
    with pytest.raises(SettingsError, match="'none'"):
        load(base_env, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_JWT_ALGORITHMS=algorithms)


def test_settings_refuse_alg_none_with_public_keys(base_env, pem_path):
    with pytest.raises(SettingsError, match="'none'"):
        load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=pem_path, GOLDTRAIL_JWT_ALGORITHMS="RS256 none")


def test_settings_refuse_a_secret_shorter_than_32_bytes(base_env):
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load(base_env, GOLDTRAIL_JWT_SECRET="x" * 31)


def test_settings_accept_a_secret_of_exactly_32_bytes(base_env):
    assert load(base_env, GOLDTRAIL_JWT_SECRET="x" * 32).jwt_secret == "x" * 32


def test_settings_count_secret_length_in_bytes(base_env):
    assert load(base_env, GOLDTRAIL_JWT_SECRET="é" * 16).jwt_secret == "é" * 16  # 16 characters, 32 bytes
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load(base_env, GOLDTRAIL_JWT_SECRET="x" * 29 + "é")  # 30 characters, 31 bytes


def test_settings_refuse_a_missing_public_key_file(base_env, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match="does not exist"):
        load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=missing)


def test_settings_refuse_one_missing_file_among_several(base_env, pem_path, tmp_path):
    with pytest.raises(SettingsError, match=r"nope\.pem"):
        load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=f"{pem_path},{tmp_path / 'nope.pem'}")


def test_settings_refuse_a_missing_jwks_file(base_env, tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load(base_env, GOLDTRAIL_JWT_JWKS=str(tmp_path / "nope.json"))


def test_settings_refuse_no_key_at_all_with_a_database_url(base_env):
    with pytest.raises(SettingsError, match="no token key configured"):
        load(base_env)


def test_settings_refuse_asymmetric_algorithms_with_a_secret(base_env):
    with pytest.raises(SettingsError, match="only HMAC"):
        load(base_env, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_JWT_ALGORITHMS="HS256 RS256")


def test_settings_refuse_a_negative_leeway(base_env):
    with pytest.raises(SettingsError, match="GOLDTRAIL_JWT_LEEWAY_SECONDS"):
        load(base_env, GOLDTRAIL_JWT_SECRET=SECRET, GOLDTRAIL_JWT_LEEWAY_SECONDS="-5")


def test_settings_default_to_hs256_with_a_secret(base_env):
    assert load(base_env, GOLDTRAIL_JWT_SECRET=SECRET).jwt_algorithms == ("HS256",)


def test_settings_default_to_asymmetric_algorithms_with_public_keys(base_env, pem_path):
    settings = load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=pem_path)
    assert settings.jwt_algorithms == ("RS256", "ES256", "EdDSA")
    assert settings.jwt_secret is None and settings.uses_public_keys


def test_settings_split_public_key_paths_on_spaces_and_commas(base_env, tmp_path, rsa_key, rsa_key_2):
    paths = [str(write_pem(tmp_path / f"{n}.pem", key)) for n, key in (("a", rsa_key), ("b", rsa_key_2))]
    settings = load(base_env, GOLDTRAIL_JWT_PUBLIC_KEY=f" {paths[0]} ,{paths[1]} ")
    assert settings.jwt_public_key_files == (Path(paths[0]), Path(paths[1]))


def test_settings_read_issuer_audience_leeway_and_account_claim(base_env):
    settings = load(
        base_env,
        GOLDTRAIL_JWT_SECRET=SECRET,
        GOLDTRAIL_JWT_ISSUER=ISSUER,
        GOLDTRAIL_JWT_AUDIENCE=AUDIENCE,
        GOLDTRAIL_JWT_LEEWAY_SECONDS="30",
        GOLDTRAIL_ACCOUNT_CLAIM="tenant",
    )
    assert (settings.jwt_issuer, settings.jwt_audience) == (ISSUER, AUDIENCE)
    assert settings.jwt_leeway_seconds == 30 and settings.account_claim == "tenant"


def test_a_token_accepted_before_is_refused_once_it_expires(sqlite_client):
    """Verified tokens are remembered for speed, never past their expiry."""
    short = {"Authorization": f"Bearer {token(ttl=2)}"}
    run = f"/v1/run/{uuid.uuid4()}/gold-labels"
    assert sqlite_client.post(run, json={"output_resource_name": "o"}, headers=short).status_code == 201
    assert sqlite_client.get(run, headers=short).status_code == 200
    time.sleep(2.2)
    assert_unauthorized(sqlite_client.get(run, headers=short), "expired")
