"""Offline verification: the chain's canonical bytes without msgspec (byte for byte the service's), chain
format 2, `verify_log` over an exported log and `verify_bundle` over a label version's proof bundle, and
proof that all of it runs with the standard library and `cryptography` alone."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import canonical, chain
from events.merkle import CompactRange, inclusion_path, leaf_hash, nodes_from_leaves
from events.note import checkpoint_text, generate_key, parse_private_key, proof_text, sign_note
from events.offline import (
    ExportedEvent,
    bundle_json,
    event_hash,
    log_origin,
    origin_account,
    verify_bundle,
    verify_log,
    verify_tlog_proof,
)
from events.types import (
    GENESIS_HASH,
    GoldLabelCreated,
    GoldLabelDeleted,
    GoldLabelUpdated,
    PendingEvent,
    encode_data,
    format_time,
)

ROOT_DIR = Path(__file__).resolve().parent.parent
RUN = "6f1d3c2a-9b8e-4f7a-a1c2-3d4e5f607182"
LABEL = "0b9c3f4e-2a61-4d8e-9f0a-5c7d1e2b3a49"

# Canonical bytes ---------------------------------------------------------------------------------------

any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)  # control characters included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
payloads = st.one_of(json_values.map(lambda value: json.dumps(value, ensure_ascii=False)), any_text)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.tuples(any_text, any_text, st.integers(1, 2**63 - 1), any_text, any_text),
    payload=payloads,
    rest=st.tuples(any_text, any_text, any_text, st.none() | any_text, any_text),
)
def test_the_standard_library_writes_the_services_canonical_bytes(fields, payload, rest):
    for data in (payload, payload.encode()):
        expected = chain.canonical_bytes(*fields, data, *rest)
        assert canonical.canonical_bytes(*fields, data, *rest) == expected
        assert canonical.hash_fields(*fields, data, *rest) == chain.hash_fields(*fields, data, *rest)
    # The form the module's docstring gives an auditor: json.dumps of each value, the payload as it is.
    pieces = [json.dumps(value, ensure_ascii=False, separators=(",", ":")) for value in (*fields, *rest)]
    assert expected == ("[" + ",".join([*pieces[:5], payload, *pieces[5:]]) + "]").encode()


def test_the_chain_keeps_the_hashes_events_were_sealed_with():
    """test_chain.py's first format 1 vector, through the standard-library form."""
    event = PendingEvent(
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
    )
    data = encode_data(event.data)
    fields = ("acme", LABEL, 1, RUN, "GoldLabelCreated", data.decode(), "alice", format_time(event.recorded_at))
    digest = "2b22ffe62285790ac46c5e121c9e953b5d939f12a3363b6f766adab0e62edf05"
    assert canonical.hash_fields(*fields, "req-1", None, GENESIS_HASH) == digest
    assert chain.hash_fields(*fields, "req-1", None, GENESIS_HASH) == digest
    assert canonical.GENESIS_HASH == GENESIS_HASH


FIELDS = (
    "acme",
    LABEL,
    2,
    RUN,
    "GoldLabelUpdated",
    '{"a":1}',
    "bob",
    "2026-01-02T03:04:06.000000Z",
    "r",
    None,
    "ab" * 32,
)


def test_format_2_hashes_the_payload_digest_under_its_own_tag():
    digest = canonical.payload_digest(FIELDS[5])
    assert digest == canonical.payload_digest(FIELDS[5].encode()) and len(digest) == 64
    v2 = (*FIELDS[:5], digest, *FIELDS[6:])
    assert canonical.canonical_bytes_v2(*v2).startswith(b'["goldtrail-event/2","acme",')
    assert canonical.hash_fields_v2(*v2) != canonical.hash_fields(*FIELDS)
    # Not even an account named like the tag can make a format 1 input equal a format 2 input.
    as_v1 = (canonical.FORMAT_2_TAG, *v2[1:5], digest, *v2[6:])
    assert canonical.canonical_bytes(*as_v1) != canonical.canonical_bytes_v2(*v2)
    with pytest.raises(TypeError):
        canonical.hash_fields_v2(*v2[:2], True, *v2[3:])


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10), replacement=any_text | st.integers(1, 10**6) | st.none())
def test_format_2_changes_with_any_field(position, replacement):
    before = (*FIELDS[:5], canonical.payload_digest(FIELDS[5]), *FIELDS[6:])
    original = before[position]
    if position == 2:
        replacement = replacement if isinstance(replacement, int) else 3
    elif position == 9:
        replacement = replacement if isinstance(replacement, str) or replacement is None else "why"
    elif position == 5:
        replacement = canonical.payload_digest(str(replacement))  # any change of the payload changes its digest
    elif not isinstance(replacement, str):
        replacement = str(replacement)
    if replacement == original:
        return
    after = (*before[:position], replacement, *before[position + 1 :])
    assert canonical.hash_fields_v2(*after) != canonical.hash_fields_v2(*before)


# Stdlib and cryptography only -----------------------------------------------------------------------------

BLOCKED_IMPORT = textwrap.dedent(
    """
    import sys

    class Refuse:
        BLOCKED = {"msgspec", "sqlalchemy", "litestar", "service", "projections", "psycopg", "jwt", "alembic"}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is not available to an offline verifier")
            return None

    sys.meta_path.insert(0, Refuse())
    import events.canonical, events.merkle, events.note, events.offline
    from events.canonical import hash_fields
    from events.merkle import EMPTY_ROOT
    from events.note import checkpoint_text, generate_key, sign_note
    from events.offline import verify_bundle, verify_log

    skey, vkey = generate_key("goldtrail.test")
    note = sign_note(checkpoint_text("goldtrail.test/acme", 0, EMPTY_ROOT), skey)
    assert verify_log([], note, vkey).ok
    assert not verify_bundle("{}", vkey).ok
    assert len(hash_fields("a", "l", 1, "r", "t", "{}", "x", "t", "q", None, "0" * 64)) == 64
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in Refuse.BLOCKED)
    assert not loaded, loaded
    print("offline verification runs on the standard library and cryptography")
    """
)


def test_offline_verification_needs_only_the_standard_library_and_cryptography():
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT_DIR)!r})\n" + BLOCKED_IMPORT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT_DIR,
    )
    assert result.returncode == 0, result.stderr
    assert "standard library" in result.stdout


# A log to verify --------------------------------------------------------------------------------------

LOG_NAME = "goldtrail.test"
ACCOUNT = "acme"
START = datetime(2026, 1, 2, 3, 4, 5, 60708, tzinfo=UTC)
LABELS = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(4)]


def build_log(account: str = ACCOUNT) -> list[ExportedEvent]:
    """Four labels written in turn, three rounds: creates, updates (object values, reasons), one delete, and a
    fourth label hashed in chain format 2 whose last payload was erased."""
    events: list[ExportedEvent] = []
    last: dict[str, tuple[int, str]] = {}
    for round_ in range(3):
        for number, label in enumerate(LABELS):
            version, prev = last.get(label, (0, GENESIS_HASH))
            version += 1
            if round_ == 0:
                data = GoldLabelCreated(run_id=RUN, output_resource_name=f"out {number}", text_value="The cat ✓\n")
            elif round_ == 2 and number == 0:
                data = GoldLabelDeleted()
            else:
                raw = f'{{"z":{round_},"a":0.98765432109876543210,"s":"\\u00e9 é"}}'.encode()
                data = GoldLabelUpdated(object_value=msgspec.Raw(raw), object_value_is_partial=True)
            pending = PendingEvent(
                account_id=account,
                stream_id=label,
                version=version,
                run_id=RUN,
                data=data,
                actor=f"user {number}",
                recorded_at=START + timedelta(seconds=len(events)),
                request_id=f"req-{len(events)}",
                reason=None if round_ == 0 else "reviewed — by the eval team",
                prev_hash=prev,
            )
            payload = encode_data(pending.data)
            when = format_time(pending.recorded_at)
            digest = chain.hash_fields(
                account, label, version, RUN, pending.type, payload, pending.actor, when, pending.request_id,
                pending.reason, prev,
            )  # fmt: skip
            event = ExportedEvent(
                log_index=len(events),
                label_id=label,
                run_id=RUN,
                version=version,
                type=pending.type,
                actor=pending.actor,
                recorded_at=when,
                request_id=pending.request_id,
                reason=pending.reason,
                prev_hash=prev,
                hash=digest,
                chain=1,
                payload=payload.decode(),
            )
            assert event_hash(account, event) == digest
            if number == 3:  # format 2: the digest of the payload, the payload kept, then erased
                event = dataclasses.replace(event, chain=2)
                event = dataclasses.replace(event, hash=event_hash(account, event))
                if round_ == 1:
                    event = dataclasses.replace(event, payload_sha256=canonical.payload_digest(event.payload))
                if round_ == 2:
                    event = dataclasses.replace(event, payload=None, payload_sha256=canonical.payload_digest(payload))
            events.append(event)
            last[label] = (version, event.hash)
    return events


def rehash(events: list[ExportedEvent], account: str = ACCOUNT) -> list[ExportedEvent]:
    """The events with every hash and link recomputed in order: a forger's consistent rewrite."""
    last: dict[str, str] = {}
    out = []
    for event in events:
        event = dataclasses.replace(event, prev_hash=last.get(event.label_id, GENESIS_HASH))
        event = dataclasses.replace(event, hash=event_hash(account, event))
        last[event.label_id] = event.hash
        out.append(event)
    return out


def lines_of(events: list[ExportedEvent]) -> list[str]:
    return [json.dumps(event.to_json(), ensure_ascii=False) + "\n" for event in events]


def tree_root(events: list[ExportedEvent], size: int) -> bytes:
    tree = CompactRange()
    tree.extend(leaf_hash(bytes.fromhex(event.hash)) for event in events[:size])
    return tree.root()


KEY, VKEY = generate_key(LOG_NAME)


def checkpoint(events: list[ExportedEvent], size: int | None = None, account: str = ACCOUNT, key: str = KEY) -> str:
    size = len(events) if size is None else size
    return sign_note(checkpoint_text(log_origin(LOG_NAME, account), size, tree_root(events, size)), key)


def test_an_untouched_log_verifies():
    events = build_log()
    assert {event.chain for event in events} == {1, 2}
    assert any(event.payload is None for event in events)
    report = verify_log(lines_of(events), checkpoint(events), VKEY)
    assert report.ok, report.summary()
    assert (report.entries, report.covered, report.beyond, report.labels) == (12, 12, 0, 4)
    assert report.account_id == ACCOUNT and report.tree_size == 12 and report.origin == "goldtrail.test/acme"
    assert report.summary().startswith("OK")
    assert verify_log(lines_of(events), checkpoint(events), VKEY, account_id=ACCOUNT).ok
    # Blank lines are nothing; bytes lines are read as UTF-8.
    assert verify_log(["\n", *[line.encode() for line in lines_of(events)], "  \n"], checkpoint(events), VKEY).ok


def test_entries_after_the_checkpoint_are_checked_and_counted():
    events = build_log()
    report = verify_log(lines_of(events), checkpoint(events, 5), VKEY)
    assert report.ok and (report.covered, report.beyond) == (5, 7)
    assert "7 entries after the checkpoint" in report.summary()
    tampered = lines_of(events)
    tampered[9] = tampered[9].replace('"user 1"', '"mallory"')
    assert verify_log(tampered, checkpoint(events, 5), VKEY).first.line == 10


def test_a_key_named_for_the_accounts_log_verifies_too():
    events = build_log()
    origin = log_origin(LOG_NAME, ACCOUNT)
    signer = parse_private_key(KEY).renamed(origin)
    note = sign_note(checkpoint_text(origin, 12, tree_root(events, 12)), signer)
    assert verify_log(lines_of(events), note, signer.vkey).ok
    refused = verify_log(lines_of(events), note, VKEY)  # the same key under the log's name signed nothing here
    assert not refused.ok and "no signature of a known key" in refused.first.problem


def test_any_account_id_fits_in_an_origin():
    account = "team a/β+1%"
    events = build_log(account)
    origin = log_origin(LOG_NAME, account)
    assert origin == "goldtrail.test/team%20a%2F%CE%B2%2B1%25"
    assert origin_account(origin, LOG_NAME) == account
    report = verify_log(lines_of(events), checkpoint(events, account=account), VKEY)
    assert report.ok, report.summary()
    assert report.account_id == account
    assert verify_log(lines_of(events), checkpoint(events, account=account), VKEY, account_id=account).ok


def first_problem(lines, note=None, vkey=VKEY, **options):
    report = verify_log(lines, checkpoint(build_log()) if note is None else note, vkey, **options)
    assert not report.ok
    assert report.problem_count >= 1 and report.first is report.problems[0]
    assert report.summary().startswith("FAILED")
    return report.first


def test_a_rewritten_payload_or_actor_is_named():
    events = build_log()
    for where, old, new in ((2, "The cat", "The dog"), (6, '"user 2"', '"mallory"')):
        lines = lines_of(events)
        lines[where] = lines[where].replace(old, new)
        problem = first_problem(lines)
        assert (problem.line, problem.log_index, problem.label_id) == (where + 1, where, events[where].label_id)
        assert problem.version == events[where].version
        assert "do not hash to its hash" in problem.problem
        assert str(problem).startswith(f"line {where + 1}, log index {where}, label {events[where].label_id} version")


def test_a_consistent_rewrite_does_not_match_the_checkpoint():
    events = build_log()
    forged = rehash([dataclasses.replace(e, actor="mallory") if e.log_index == 5 else e for e in events])
    problem = first_problem(lines_of(forged), checkpoint(events))
    assert "Merkle root" in problem.problem and problem.line is None


def test_an_erased_payload_that_disagrees_with_its_digest_is_named():
    events = build_log()
    wrong = [
        dataclasses.replace(e, payload_sha256="0" * 64) if e.chain == 2 and e.payload is not None else e for e in events
    ]
    problem = first_problem(lines_of(wrong))
    assert problem.log_index == 3 and "payload_sha256" in problem.problem
    chain_1_without_payload = [dataclasses.replace(e, payload=None) if e.log_index == 0 else e for e in events]
    assert "'payload' is missing" in first_problem(lines_of(chain_1_without_payload)).problem


def test_a_removed_event_is_named():
    events = build_log()
    problem = first_problem(lines_of(events[:4] + events[5:]))
    assert (problem.line, problem.log_index) == (5, 5)
    assert "log index 4 is missing" in problem.problem
    # Removed with the later indexes renumbered: the label's next version names the gap.
    renumbered = [dataclasses.replace(e, log_index=n) for n, e in enumerate(events[:4] + events[5:])]
    problem = first_problem(lines_of(renumbered))
    assert (problem.log_index, problem.label_id, problem.version) == (7, events[4].label_id, 3)
    assert "version 3 follows version 1" in problem.problem


def test_a_reordered_pair_is_named():
    events = build_log()
    swapped = [*events[:6], events[7], events[6], *events[8:]]
    problem = first_problem(lines_of(swapped))
    assert (problem.line, problem.log_index) == (7, 7)
    assert "log index 6 was expected" in problem.problem
    # The same order with the indexes renumbered still fails: the tree covers the order.
    renumbered = [dataclasses.replace(e, log_index=n) for n, e in enumerate(swapped)]
    assert "Merkle root" in first_problem(lines_of(renumbered)).problem
    # Two versions of one label swapped: the later version comes first.
    label_swap = [events[4], events[1], events[2], events[3], events[0], *events[5:]]
    renumbered = [dataclasses.replace(e, log_index=n) for n, e in enumerate(label_swap)]
    problem = first_problem(lines_of(renumbered))
    assert (problem.line, problem.label_id) == (1, events[0].label_id)
    assert "log index 0 was expected" not in problem.problem


def test_a_truncated_tail_is_named():
    events = build_log()
    problem = first_problem(lines_of(events[:10]))
    assert problem.log_index == 10 and "log index 10 onwards is missing" in problem.problem
    assert "covers 12" in problem.problem
    assert "log index 0 onwards" in first_problem([]).problem


def test_a_wrong_key_or_another_origin_is_refused():
    events = build_log()
    problem = first_problem(lines_of(events), vkey=generate_key(LOG_NAME)[1])
    assert problem.problem.startswith("checkpoint refused") and problem.line is None
    other_key, other_vkey = generate_key("elsewhere.test")
    problem = first_problem(lines_of(events), checkpoint(events, key=other_key), other_vkey)
    assert "not a log of the key 'elsewhere.test'" in problem.problem  # the origin is goldtrail.test/acme
    assert problem.problem.startswith("checkpoint refused")
    # Another account's checkpoint over the same tree: refused when the account is named, and otherwise every
    # hash is recomputed for the account the checkpoint names.
    other = checkpoint(events, account="other")
    problem = first_problem(lines_of(events), other, account_id=ACCOUNT)
    assert "'other', not 'acme'" in problem.problem
    problem = first_problem(lines_of(events), other)
    assert problem.line == 1 and "do not hash" in problem.problem
    refused_key = first_problem(lines_of(events), vkey="not a key")
    assert "checkpoint refused" in refused_key.problem
    assert "checkpoint refused" in first_problem(lines_of(events), note="garbage\n").problem


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ("{}", "'log_index' is missing"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ("1" * 5000, "not JSON"),
    ],
)
def test_garbage_lines_are_named_never_raised(line, expected):
    events = build_log()
    lines = lines_of(events)
    lines.insert(3, line)
    problem = first_problem(lines)
    assert problem.line == 4 and expected in problem.problem, problem


def field_changed(name, value):
    line = build_log()[0].to_json()
    if value is KeyError:
        del line[name]
    else:
        line[name] = value
    return json.dumps(line)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("version", True, "must be int"),
        ("version", 1.0, "must be int"),
        ("version", 0, "not 1 or more"),
        ("log_index", -1, "negative"),
        ("log_index", "0", "must be int"),
        ("reason", 5, "must be str or null"),
        ("hash", "AB" * 32, "64 lowercase hex"),
        ("prev_hash", "0" * 63, "64 lowercase hex"),
        ("chain", 3, "unknown"),
        ("payload", None, "must be str"),
        ("actor", KeyError, "'actor' is missing"),
        ("account_id", "other", "not the checkpoint's account"),
    ],
)
def test_malformed_fields_are_named(name, value, expected):
    lines = lines_of(build_log())
    lines[0] = field_changed(name, value)
    problem = first_problem(lines)
    assert problem.line == 1 and expected in problem.problem, problem


def test_ambiguous_json_is_refused():
    lines = lines_of(build_log())
    assert "appears twice" in first_problem([lines[0].replace('"actor"', '"actor":"x","actor"', 1), *lines[1:]]).problem
    nan = lines[0].replace('"log_index":0', '"log_index":NaN').replace('"log_index": 0', '"log_index": NaN')
    assert "NaN" in first_problem([nan, *lines[1:]]).problem
    assert "UTF-8" in first_problem([b"\xff\xfe", *lines]).problem
    surrogate = lines[0].replace('"actor": "user 0"', '"actor": "\\ud800"')
    assert "lone surrogate" in first_problem([surrogate, *lines[1:]]).problem
    assert "cannot be checked" in first_problem([42, *lines]).problem  # not even text


def test_an_export_file_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path):
    events = build_log()
    export = tmp_path / "export.jsonl"
    export.write_bytes("".join(lines_of(events[:3])).encode() + b"\xff\xfe\n" + "".join(lines_of(events[3:])).encode())
    with export.open(encoding="utf-8") as text_file:
        report = verify_log(text_file, checkpoint(events), VKEY)
    assert not report.ok and "not valid UTF-8" in report.first.problem
    with export.open("rb") as binary_file:
        problem = verify_log(binary_file, checkpoint(events), VKEY).first
    assert (problem.line, problem.problem) == (4, "not valid UTF-8")


# Proof bundles --------------------------------------------------------------------------------------------


def bundle(events: list[ExportedEvent], label: str, version: int, size: int | None = None, key: str = KEY) -> str:
    size = len(events) if size is None else size
    mine = [e for e in events if e.label_id == label][:version]
    node = nodes_from_leaves([leaf_hash(bytes.fromhex(e.hash)) for e in events[:size]])
    index = mine[-1].log_index
    proof = proof_text(index, inclusion_path(index, size, node), checkpoint(events, size, key=key))
    return bundle_json(ACCOUNT, RUN, label, mine, proof)


def test_a_label_versions_bundle_verifies():
    events = build_log()
    for label in LABELS:
        for version in (1, 2, 3):
            report = verify_bundle(bundle(events, label, version), VKEY)
            assert report.ok, report.summary()
            assert (report.label_id, report.version, report.account_id, report.run_id) == (label, version, ACCOUNT, RUN)
            assert report.log_index == [e for e in events if e.label_id == label][version - 1].log_index
            assert report.tree_size == 12 and report.origin == "goldtrail.test/acme"
            assert report.summary().startswith("OK")
    # At an earlier tree size that already held the version.
    assert verify_bundle(bundle(events, LABELS[1], 2, size=6), VKEY).ok
    # The proof inside is a plain tlog-proof@v1 that any C2SP verifier checks.
    document = json.loads(bundle(events, LABELS[2], 3))
    entry = bytes.fromhex(document["events"][-1]["hash"])
    found, index = verify_tlog_proof(document["proof"], entry, VKEY)
    assert (found.size, index) == (12, 10)


def changed_bundle(text: str, change) -> str:
    document = json.loads(text)
    change(document)
    return json.dumps(document, ensure_ascii=False)


def set_event(position: int, name: str, value):
    def change(document):
        document["events"][position][name] = value

    return change


def refused_bundle(text: str, vkey: str = VKEY) -> str:
    report = verify_bundle(text, vkey)
    assert not report.ok and report.summary().startswith("FAILED")
    return report.problem


def test_bundles_that_must_be_refused():
    events = build_log()
    good = bundle(events, LABELS[1], 3)
    label = LABELS[1]
    assert "version 2 (log index 5)" in refused_bundle(changed_bundle(good, set_event(1, "actor", "mallory")))
    assert "do not hash" in refused_bundle(changed_bundle(good, set_event(1, "actor", "mallory")))
    payload = json.loads(good)["events"][0]["payload"].replace("The cat", "The dog")
    assert "version 1 (log index 1)" in refused_bundle(changed_bundle(good, set_event(0, "payload", payload)))
    # Rewritten consistently: the chain holds, but the last version's hash is not in the checkpoint's tree.
    forged = rehash([dataclasses.replace(e, actor="mallory") if e.log_index == 5 else e for e in events])
    mine = [e for e in forged if e.label_id == label]
    proof = json.loads(good)["proof"]
    assert "not in the checkpoint's tree" in refused_bundle(bundle_json(ACCOUNT, RUN, label, mine, proof))
    # A missing version, or a version claimed beyond the events.
    assert "holds 2 events" in refused_bundle(changed_bundle(good, lambda d: d["events"].pop(1)))
    assert "holds 3 events" in refused_bundle(changed_bundle(good, lambda d: d.update(version=4)))
    # Versions out of order.
    swapped = changed_bundle(good, lambda d: d["events"].reverse())
    assert "is version 3" in refused_bundle(swapped)
    # Another label, run or account named by the bundle.
    assert "not an event of label" in refused_bundle(changed_bundle(good, lambda d: d.update(label_id=LABELS[2])))
    assert "not an event of label" in refused_bundle(changed_bundle(good, lambda d: d.update(run_id="x")))
    assert "not 'other'" in refused_bundle(changed_bundle(good, lambda d: d.update(account_id="other")))
    # The proof's index moved, its path altered, another key's checkpoint.
    moved = changed_bundle(good, lambda d: d.update(proof=d["proof"].replace("index 9\n", "index 8\n")))
    assert "for log index 8" in refused_bundle(moved)
    path_line = json.loads(good)["proof"].split("\n")[2]
    altered = path_line[:5] + ("A" if path_line[5] != "A" else "B") + path_line[6:]
    tampered = changed_bundle(good, lambda d: d.update(proof=d["proof"].replace(path_line, altered)))
    assert "not in the checkpoint's tree" in refused_bundle(tampered)
    assert "checkpoint refused" in refused_bundle(good, generate_key(LOG_NAME)[1])
    other_key, other_vkey = generate_key(LOG_NAME)
    assert "checkpoint refused" in refused_bundle(bundle(events, label, 3, key=other_key))
    assert verify_bundle(bundle(events, label, 3, key=other_key), other_vkey).ok
    # A checkpoint from before the version was logged.
    early = changed_bundle(good, lambda d: d.update(proof=proof_text(9, [], checkpoint(events, 8))))
    assert "leaf index 9 is not in a tree of size 8" in refused_bundle(early)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        "{}",
        '{"format": "goldtrail-proof/v2"}',
        '{"format": "goldtrail-proof/v1"}',
        '{"format": "goldtrail-proof/v1", "account_id": "a", "run_id": "r", "label_id": "l", "version": 1,'
        ' "events": [{}], "proof": ""}',
        '{"format": "goldtrail-proof/v1", "account_id": "a", "run_id": "r", "label_id": "l", "version": 1,'
        ' "events": "x", "proof": ""}',
        b"\xff",
    ],
)
def test_garbage_bundles_are_refused_never_raised(text):
    assert refused_bundle(text)


def test_a_bundle_with_a_garbled_proof_is_refused():
    events = build_log()
    good = bundle(events, LABELS[3], 3)
    for proof in ("", "c2sp.org/tlog-proof@v1\n", "c2sp.org/tlog-proof@v1\nindex 11\n\nnot a note\n"):
        assert refused_bundle(changed_bundle(good, lambda d, p=proof: d.update(proof=p)))
