"""The hash chain's values are permanent: events written long ago must still hash to what they were
sealed with, whatever the code that computes it now."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from events import canonical, chain
from events.chain import CHAIN_FORMAT, chain_hash, hash_fields, seal
from events.types import GENESIS_HASH, GoldLabelCreated, GoldLabelUpdated, PendingEvent, format_time

RUN = "6f1d3c2a-9b8e-4f7a-a1c2-3d4e5f607182"
LABEL = "0b9c3f4e-2a61-4d8e-9f0a-5c7d1e2b3a49"

# Hashes computed by the chain's first version (033c7c3); if these change, every stored event fails to verify.
SEALED = [
    (
        PendingEvent(
            account_id="acme",
            stream_id=LABEL,
            version=1,
            run_id=RUN,
            data=GoldLabelCreated(run_id=RUN, output_resource_name='summary "α"\n', text_value="The cat sat. ✓"),
            actor="alice",
            recorded_at=datetime(2026, 1, 2, 3, 4, 5, 60708, tzinfo=UTC),
            request_id="req-1",
            reason=None,
            prev_hash=GENESIS_HASH,
        ),
        "2b22ffe62285790ac46c5e121c9e953b5d939f12a3363b6f766adab0e62edf05",
    ),
    (
        PendingEvent(
            account_id="acme",
            stream_id=LABEL,
            version=2,
            run_id=RUN,
            data=GoldLabelUpdated(
                object_value=msgspec.Raw(
                    b'{"z":1,"a":0.98765432109876543210,"big":1234567890123456789012345,"s":"\\u00e9"}'
                ),
                object_value_is_partial=True,
            ),
            actor="bob",
            recorded_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
            request_id="req-2",
            reason="reviewed — by the eval team",
            prev_hash="ab" * 32,
        ),
        "10b7b0db557b15f628a7368946ce8535c27865487426bfb4f50dca112756d333",
    ),
]


def _parts(event: PendingEvent) -> tuple[tuple, tuple]:
    fields = (event.account_id, event.stream_id, event.version, event.run_id, event.type)
    rest = (event.actor, format_time(event.recorded_at), event.request_id, event.reason, event.prev_hash)
    return fields, rest


def test_chain_format_1_gives_the_hashes_events_have_always_had():
    """Every event written before chain format 2 keeps verifying under format 1."""
    for event, digest in SEALED:
        data, _ = seal(event)
        fields, rest = _parts(event)
        assert chain_hash(1, *fields, data, *rest) == hash_fields(*fields, data, *rest) == digest


def test_new_events_are_sealed_in_format_2_over_the_payloads_sha256():
    """Format 2 commits to the payload through its digest (so it can one day be erased), and the standard
    library form an auditor runs gives the same hash as the service's."""
    assert CHAIN_FORMAT == 2
    for event, digest in SEALED:
        data, sealed = seal(event)
        fields, rest = _parts(event)
        assert sealed == canonical.hash_fields_v2(*fields, hashlib.sha256(data).hexdigest(), *rest)
        assert sealed != digest  # not format 1's hash of the same event


def test_the_stored_text_of_an_event_hashes_as_its_sealed_bytes():
    """A replay hashes the payload as the text the database returns, and the time as the text it spells."""
    for event, _ in SEALED:
        data, sealed = seal(event)
        fields, rest = _parts(event)
        assert chain_hash(2, *fields, data.decode(), *rest) == chain_hash(2, *fields, data, *rest) == sealed


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@given(
    fields=st.tuples(text, text, st.integers(1, 2**31), text, text, text, text, text, text),
    reason=st.none() | text,
    payload=st.binary(max_size=64),
)
def test_the_services_format_2_hash_is_the_standard_library_one_an_auditor_recomputes(fields, reason, payload):
    account, stream, version, run, event_type, actor, recorded_at, request_id, prev = fields
    digest = hashlib.sha256(payload).hexdigest()
    args = (account, stream, version, run, event_type, digest, actor, recorded_at, request_id, reason, prev)
    assert chain.hash_fields_v2(*args) == canonical.hash_fields_v2(*args)
    assert chain.chain_hash(2, account, stream, version, run, event_type, payload, actor, recorded_at, request_id,
                            reason, prev) == canonical.hash_fields_v2(*args)  # fmt: skip
