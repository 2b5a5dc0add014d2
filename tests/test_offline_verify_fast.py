"""verify_log's fast paths change nothing it reports: checking well-formed lines in one pass, and checking chunks of
lines in worker processes, give the very report of the line-by-line checks verify_log was first written with
(`reference_verify_log` below), for clean logs and for tampering anywhere."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import canonical, offline
from events.canonical import GENESIS_HASH, payload_digest
from events.merkle import CompactRange, leaf_hash
from events.offline import ExportedEvent, Problem, Report, event_hash, verify_log
from tests.test_offline_verify import ACCOUNT, VKEY, build_log, checkpoint, lines_of

# The reference: verify_log as first written, one line at a time ------------------------------------------------


def _reference_loads(text):
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise offline._Bad("not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=offline._no_duplicate_keys, parse_constant=offline._refuse_constant)
    except RecursionError:
        raise offline._Bad("not JSON: nested too deeply") from None
    except ValueError as error:
        raise offline._Bad(f"not JSON ({error})") from None


def _numbered(lines, report):
    iterator = iter(lines)
    number = 0
    while True:
        try:
            text = next(iterator)
        except StopIteration:
            return
        except UnicodeDecodeError as error:
            report.add(Problem(f"the export is not valid UTF-8 ({error.reason}); {number:,} lines were read"))
            return
        number += 1
        yield number, text


def reference_verify_log(lines, checkpoint_note, vkey, account_id=None) -> Report:
    report = Report()
    try:
        checkpoint, account = offline._trusted_checkpoint(checkpoint_note, vkey, account_id)
    except (offline.NoteError, ValueError, TypeError) as error:
        report.add(Problem(f"checkpoint refused: {error}"))
        return report
    report.origin, report.account_id, report.tree_size = checkpoint.origin, account, checkpoint.size
    tree = CompactRange()
    links = offline._Links()
    expected = 0
    for number, text in _numbered(lines, report):
        if not (text.strip() if isinstance(text, str | bytes | bytearray) else text):
            continue
        event = None
        try:
            event = offline._parse_event(_reference_loads(text))
            report.entries += 1
            problem = offline._entry_problem(account, event)
            if problem is None and event.log_index != expected:
                if event.log_index > expected:
                    missing = f"{expected}" if event.log_index == expected + 1 else f"{expected}–{event.log_index - 1}"
                    problem = f"comes where log index {expected} was expected: log index {missing} is missing"
                else:
                    problem = f"comes after log index {expected - 1}: log indexes must increase one by one"
            expected = max(expected, event.log_index + 1)
            link_problem = links.problem(event)
            problem = problem or link_problem
            if tree.size < checkpoint.size:
                tree.append(leaf_hash(bytes.fromhex(event.hash)))
                report.covered += 1
            else:
                report.beyond += 1
        except offline._Bad as error:
            problem = str(error)
        except (TypeError, ValueError, UnicodeError) as error:
            problem = f"cannot be checked ({error})"
        if problem is not None:
            report.add(
                Problem(problem, number, *(() if event is None else (event.log_index, event.label_id, event.version)))
            )
    report.labels = len(links.last)
    if tree.size < checkpoint.size:
        report.add(
            Problem(
                f"the export ends after {tree.size:,} entries but the checkpoint covers {checkpoint.size:,}: "
                f"log index {tree.size} onwards is missing",
                log_index=tree.size,
            )
        )
    elif tree.root() != checkpoint.root:
        report.add(
            Problem(
                f"the Merkle root of the first {checkpoint.size:,} entries is not the checkpoint's: "
                "the export is not the log the checkpoint was signed for"
            )
        )
    return report


def same_reports(lines, note, vkey=VKEY, chunks=(1, 4), **options) -> Report:
    """The reference's report, once verify_log has given it in this process and in two worker processes with
    chunks of each size in `chunks` (`lines` may be a function giving fresh lines each time)."""
    fresh = lines if callable(lines) else lambda: lines
    expected = reference_verify_log(fresh(), note, vkey, **options)
    assert verify_log(fresh(), note, vkey, workers=1, **options) == expected
    for size in chunks:
        parallel = verify_log(fresh(), note, vkey, workers=2, parallel_from=0, chunk_lines=size, **options)
        assert parallel == expected, size
    return expected


# A longer log: six labels of five versions, written in turn, in both chain formats -----------------------------

LABELS = [f"10000000-0000-4000-8000-00000000000{n}" for n in range(6)]


def long_log(account: str = ACCOUNT) -> list[ExportedEvent]:
    events: list[ExportedEvent] = []
    last: dict[str, str] = {}
    for version in range(1, 6):
        for number, label in enumerate(LABELS):
            payload = json.dumps({"v": version, "text": f'line "{number}"\n\t✓ \u2028 \x7f', "n": [1.5, None]})
            event = ExportedEvent(
                log_index=len(events),
                label_id=label,
                run_id="run \\ 1",
                version=version,
                type="GoldLabelUpdated" if version > 1 else "GoldLabelCreated",
                actor=f"user {number} é",
                recorded_at=f"2026-01-02T03:04:{len(events):02d}.000000Z",
                request_id=f"req-{len(events)}",
                reason=None if number % 2 else f"why {version}\u0001",
                prev_hash=last.get(label, GENESIS_HASH),
                hash="",
                chain=1 + (number + version) % 2,
                payload=payload,
            )
            if event.chain == 2 and number == 1:
                event = dataclasses.replace(event, payload_sha256=payload_digest(payload))
            if event.chain == 2 and number == 3:
                event = dataclasses.replace(event, payload=None, payload_sha256=payload_digest(payload))
            if number == 5:
                event = dataclasses.replace(event, account_id=account)
            event = dataclasses.replace(event, hash=event_hash(account, event))
            last[label] = event.hash
            events.append(event)
    return events


EVENTS = long_log()
LINES = lines_of(EVENTS)
NOTE = checkpoint(EVENTS)


def first(predicate) -> int:
    return next(n for n, event in enumerate(EVENTS) if predicate(event))


FORMAT_1 = first(lambda e: e.chain == 1)
WITH_DIGEST = first(lambda e: e.payload is not None and e.payload_sha256 is not None)
ERASED = first(lambda e: e.payload is None)
WITH_ACCOUNT = first(lambda e: e.account_id is not None)


def test_the_long_log_verifies_the_same_everywhere():
    report = same_reports(LINES, NOTE)
    assert report.ok, report.summary()
    assert (report.entries, report.labels) == (30, 6)
    assert same_reports(lines_of(build_log()), checkpoint(build_log())).ok
    assert same_reports(LINES, checkpoint(EVENTS, 17)).beyond == 13


def test_well_formed_lines_take_the_one_pass_path():
    """Every line of the test logs is checked in one pass, and what that finds is what the detailed checks find."""
    heads = offline._heads(ACCOUNT)
    for line in [*LINES, *lines_of(build_log()), *(json.dumps(e.to_json(), ensure_ascii=False) for e in EVENTS)]:
        fast = offline._well_formed(line, ACCOUNT, heads)
        assert fast is not None, line
        assert fast == offline._check_line(line, ACCOUNT)
        assert offline._well_formed(line.encode(), ACCOUNT, heads) == fast
    # The service's NDJSON feed adds a cursor and the payload's object: other fields are ignored.
    feed = json.dumps({"cursor": "c1", **EVENTS[4].to_json(), "data": {"a": [1, {"b": 2.5}], "c": None}})
    assert offline._well_formed(feed, ACCOUNT, heads) == offline._check_line(feed, ACCOUNT)
    assert offline._well_formed(feed, ACCOUNT, heads) is not None


def replaced(lines: list, where: int, *changes: tuple[str, str]) -> list:
    lines = list(lines)
    for old, new in changes:
        assert old in lines[where], (old, lines[where])
        lines[where] = lines[where].replace(old, new, 1)
    return lines


def field(where: int, name: str, value) -> list:
    line = EVENTS[where].to_json()
    if value is KeyError:
        del line[name]
    else:
        line[name] = value
    return [*LINES[:where], json.dumps(line) + "\n", *LINES[where + 1 :]]


def forged(where: int, name: str, value) -> list:
    """A field changed and the hash recomputed to match: only the field's own check can catch it."""
    event = dataclasses.replace(EVENTS[where], **{name: value})
    fields = (ACCOUNT, event.label_id, event.version, event.run_id, event.type)
    rest = (event.actor, event.recorded_at, event.request_id, event.reason, event.prev_hash)
    if event.chain == 1:
        digest = canonical.hash_fields(*fields, event.payload, *rest)
    else:
        digest = canonical.hash_fields_v2(*fields, event.payload_sha256 or payload_digest(event.payload), *rest)
    return lines_of([*EVENTS[:where], dataclasses.replace(event, hash=digest), *EVENTS[where + 1 :]])


def renumbered(events: list[ExportedEvent]) -> list:
    return lines_of([dataclasses.replace(event, log_index=n) for n, event in enumerate(events)])


TAMPERED = {
    "payload rewritten": replaced(LINES, 7, ("line", "LINE")),
    "actor rewritten, last line": replaced(LINES, 29, ("user 5", "mallory")),
    "actor rewritten, first line": replaced(LINES, 0, ("user 0", "mallory")),
    "line removed": LINES[:11] + LINES[12:],
    "line removed, renumbered": renumbered(EVENTS[:11] + EVENTS[12:]),
    "line repeated": [*LINES[:9], LINES[8], *LINES[9:]],
    "lines swapped": [*LINES[:5], LINES[6], LINES[5], *LINES[7:]],
    "versions swapped, renumbered": renumbered([EVENTS[6], *EVENTS[1:6], EVENTS[0], *EVENTS[7:]]),
    "tail cut": LINES[:20],
    "head cut": LINES[3:],
    "blank lines": ["\n", *LINES[:4], "   \n", "", *LINES[4:], "\n"],
    "bytes lines": [line.encode() for line in LINES],
    "leading space, CRLF": [" " + line.rstrip("\n") + "\r\n" for line in LINES],
    "BOM": ["\ufeff" + LINES[0], *LINES[1:]],
    "trailing garbage": replaced(LINES, 4, ("}\n", "} x\n")),
    "two objects on a line": [LINES[0].rstrip("\n") + LINES[1], *LINES[2:]],
    "not JSON": [*LINES[:3], "{not json\n", *LINES[3:]],
    "an array": [*LINES[:3], "[1, 2]\n", *LINES[3:]],
    "an empty object": [*LINES[:3], "{}\n", *LINES[3:]],
    "nested too deeply": [*LINES[:3], "[" * 100_000 + "]" * 100_000, *LINES[3:]],
    "a huge number": [*LINES[:3], "1" * 5000, *LINES[3:]],
    "a duplicate key": replaced(LINES, 2, ('"actor"', '"actor": "x", "actor"')),
    "a duplicate key inside another field": replaced(LINES, 2, ('"actor"', '"x": {"a": 1, "a": 2}, "actor"')),
    "NaN": replaced(LINES, 2, ('"log_index": 2', '"log_index": NaN')),
    "Infinity inside another field": replaced(LINES, 2, ('"actor"', '"x": [-Infinity], "actor"')),
    "other fields": replaced(LINES, 2, ('"actor"', '"cursor": "c", "data": {"a": [1.5, true, null]}, "actor"')),
    "version true": field(0, "version", True),
    "version 1.0": field(0, "version", 1.0),
    "version 0": field(6, "version", 0),
    "chain true": field(FORMAT_1, "chain", True),
    "chain 2.0": field(0, "chain", 2.0),
    "log_index true": field(1, "log_index", True),
    "log_index 1.0": field(1, "log_index", 1.0),
    "chain 3": field(0, "chain", 3),
    "log_index -1": field(0, "log_index", -1),
    "log_index text": field(0, "log_index", "0"),
    "reason 5": field(1, "reason", 5),
    "reason missing": field(1, "reason", KeyError),
    "hash uppercase": field(3, "hash", EVENTS[3].hash.upper()),
    "prev_hash short": field(9, "prev_hash", EVENTS[9].prev_hash[:-1]),
    "prev_hash of another version": field(13, "prev_hash", EVENTS[1].hash),
    "forged: prev_hash uppercase": forged(7, "prev_hash", EVENTS[7].prev_hash.upper()),
    "forged: first prev_hash not hex": forged(0, "prev_hash", "x" * 64),
    "forged: erased payload's payload_sha256 uppercase": forged(
        ERASED, "payload_sha256", EVENTS[ERASED].payload_sha256.upper()
    ),
    "forged: erased payload's payload_sha256 short": forged(ERASED, "payload_sha256", "ab"),
    "forged: chain 3": forged(0, "chain", 3),
    "payload null": field(FORMAT_1, "payload", None),
    "payload missing, format 1": field(FORMAT_1, "payload", KeyError),
    "payload and payload_sha256 missing": field(ERASED, "payload_sha256", KeyError),
    "erased payload's payload_sha256 wrong": field(ERASED, "payload_sha256", "0" * 64),
    "payload_sha256 wrong": field(WITH_DIGEST, "payload_sha256", "0" * 64),
    "payload_sha256 uppercase": field(WITH_DIGEST, "payload_sha256", EVENTS[WITH_DIGEST].payload_sha256.upper()),
    "payload_sha256 on format 1": field(FORMAT_1, "payload_sha256", payload_digest(EVENTS[FORMAT_1].payload)),
    "payload_sha256 wrong on format 1": field(FORMAT_1, "payload_sha256", "1" * 64),
    "account_id other": field(WITH_ACCOUNT, "account_id", "other"),
    "account_id null": field(WITH_ACCOUNT, "account_id", None),
    "account_id given and right": field(0, "account_id", ACCOUNT),
    "actor missing": field(0, "actor", KeyError),
    "actor a number": field(0, "actor", 7),
    "a lone surrogate": replaced(LINES, 2, ('"actor": "user 2', '"actor": "\\ud800user 2')),
    "a lone surrogate in the payload": replaced(LINES, 0, ("line", "\\\\ud800line")),
    "not text": [*LINES[:3], 42, None, 0, b"\xff\xfe", bytearray(LINES[3].encode()), *LINES[4:]],
    "many problems": [line.replace("user", "mallory") for line in LINES] * 5,
}


CLEAN = {
    "blank lines",
    "bytes lines",
    "leading space, CRLF",
    "other fields",
    "account_id given and right",
    "payload_sha256 on format 1",
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_tampering_is_reported_the_same_everywhere(name):
    report = same_reports(TAMPERED[name], NOTE)
    assert report.ok == (name in CLEAN), report.summary()


def test_more_than_the_kept_problems_are_counted_the_same():
    report = same_reports(TAMPERED["many problems"], NOTE, chunks=(4, 64))
    assert report.problem_count > offline.MAX_PROBLEMS == len(report.problems)


def test_checkpoints_are_refused_or_read_the_same_everywhere():
    assert not same_reports(LINES, checkpoint(EVENTS, account="other")).ok  # every hash is for another account
    assert not same_reports(LINES, NOTE, account_id="other").ok
    assert not same_reports(LINES, "garbage\n").ok
    assert not same_reports(LINES, checkpoint(EVENTS, 40)).ok
    assert same_reports([], checkpoint(EVENTS, 0)).ok


def test_an_export_that_stops_decoding_is_reported_the_same_everywhere(tmp_path):
    def stopping(at):
        def lines():
            yield from LINES[:at]
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

        return lines

    for at in (0, 1, 6, 7, 29, 30):
        report = same_reports(stopping(at), NOTE)
        assert any("not valid UTF-8" in problem.problem for problem in report.problems)
    export = tmp_path / "export.jsonl"
    export.write_bytes("".join(LINES[:8]).encode() + b"\xff\xfe\n" + "".join(LINES[8:]).encode())

    def text_file():
        with export.open(encoding="utf-8") as lines:
            yield from lines

    assert "not valid UTF-8" in same_reports(text_file, NOTE).first.problem
    assert same_reports(lambda: export.open("rb"), NOTE).first.line == 9


def test_bytes_that_are_not_utf8_read_as_the_cli_reads_them_are_reported_the_same_everywhere(tmp_path):
    export = tmp_path / "export.jsonl"
    data = "".join(LINES).encode()
    for old, new in ((b"user 2", b"\xffser 2"), (b"req-7", b"\xfeeq-7"), (b'"hash": "', b'"hash": "\xc3')):
        data = data.replace(old, new, 1)
    export.write_bytes(data)
    report = same_reports(lambda: export.open(encoding="utf-8", errors="surrogateescape"), NOTE)
    problems = [problem.problem for problem in report.problems]
    assert "64 lowercase hex" in problems[0] and any("lone surrogate" in problem for problem in problems), problems


# Random tampering -----------------------------------------------------------------------------------------------

edits = st.one_of(
    st.tuples(st.just("char"), st.integers(0, 10**6), st.sampled_from('0af"\\{}[],: \n\t\u00e9\ud800xN1-')),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("repeat"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("swap"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(["{}", "[]", "", "null", '{"a":1}', "\n"])),
)


def edited(lines: list[str], changes) -> list[str]:
    lines = list(lines)
    for kind, where, what in changes:
        if not lines and kind != "insert":
            continue
        n = where % max(1, len(lines))
        if kind == "char":
            position = (where // 7) % max(1, len(lines[n]))
            lines[n] = lines[n][:position] + what + lines[n][position + 1 :]
        elif kind == "delete":
            del lines[n]
        elif kind == "repeat":
            lines.insert(n, lines[n])
        elif kind == "swap" and n + 1 < len(lines):
            lines[n], lines[n + 1] = lines[n + 1], lines[n]
        elif kind == "insert":
            lines.insert(n, what)
    return lines


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(edits, min_size=1, max_size=4))
def test_random_tampering_is_reported_as_line_by_line(changes):
    lines = edited(LINES, changes)
    assert verify_log(lines, NOTE, VKEY, workers=1) == reference_verify_log(lines, NOTE, VKEY)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(edits, min_size=1, max_size=4), size=st.integers(1, 8))
def test_random_tampering_is_reported_the_same_by_worker_processes(changes, size):
    lines = edited(LINES, changes)
    parallel = verify_log(lines, NOTE, VKEY, workers=2, parallel_from=0, chunk_lines=size)
    assert parallel == reference_verify_log(lines, NOTE, VKEY)


any_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.tuples(any_text, any_text, any_text, any_text, any_text, any_text),
    reason=st.none() | any_text,
    version=st.integers(1, 2**70),
    log_index=st.integers(0, 2**70),
    payload=any_text,
    form=st.sampled_from(["1", "1+digest", "2", "2+digest", "2 erased"]),
    account=any_text,
    with_account=st.booleans(),
    ascii_only=st.booleans(),
)
def test_the_one_pass_check_hashes_what_the_chain_module_hashes(
    texts, reason, version, log_index, payload, form, account, with_account, ascii_only
):
    label_id, run_id, type_, actor, recorded_at, request_id = texts
    event = ExportedEvent(
        log_index=log_index,
        label_id=label_id,
        run_id=run_id,
        version=version,
        type=type_,
        actor=actor,
        recorded_at=recorded_at,
        request_id=request_id,
        reason=reason,
        prev_hash="ab" * 32,
        hash="",
        chain=1 if form.startswith("1") else 2,
        payload=None if form == "2 erased" else payload,
        payload_sha256=payload_digest(payload) if "digest" in form or "erased" in form else None,
        account_id=account if with_account else None,
    )
    event = dataclasses.replace(event, hash=event_hash(account, event))
    line = json.dumps(event.to_json(), ensure_ascii=ascii_only)
    fast = offline._well_formed(line, account, offline._heads(account))
    assert fast is not None
    assert fast == offline._check_line(line, account)
    # Another account's log: the one-pass check leaves it to the detailed checks, which name it.
    assert offline._well_formed(line, account + "x", offline._heads(account + "x")) is None


# Worker processes: chosen automatically, and never needed ---------------------------------------------------------


def test_worker_processes_are_used_for_large_exports_when_there_are_cpus(monkeypatch):
    started = []

    class Pool(offline.ProcessPoolExecutor):
        def __init__(self, workers):
            started.append(workers)
            super().__init__(workers)

    monkeypatch.setattr(offline, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(offline, "_cpus", lambda: 2)
    assert verify_log(LINES, NOTE, VKEY, parallel_from=30, chunk_lines=4).ok
    assert started == []  # 30 lines are not more than 30
    assert verify_log(LINES, NOTE, VKEY, parallel_from=29, chunk_lines=4).ok
    assert started == [2]
    monkeypatch.setattr(offline, "_cpus", lambda: 1)
    assert verify_log(LINES, NOTE, VKEY, parallel_from=0, chunk_lines=4).ok
    assert started == [2]


def test_without_worker_processes_the_lines_are_checked_here(monkeypatch):
    refused = []

    def no_processes(workers):
        refused.append(workers)
        raise OSError("no semaphores here")

    monkeypatch.setattr(offline, "ProcessPoolExecutor", no_processes)
    assert not same_reports(TAMPERED["lines swapped"], NOTE, chunks=(5,)).ok
    assert refused == [2]

    class Broken:
        def __init__(self, workers):
            self.calls = 0

        def submit(self, function, *args):
            self.calls += 1
            if self.calls > 2:
                raise BrokenProcessPool("a worker died")
            future: Future = Future()
            future.set_exception(BrokenProcessPool("a worker died"))
            return future

        def shutdown(self, wait=True, cancel_futures=False):
            pass

    monkeypatch.setattr(offline, "ProcessPoolExecutor", Broken)
    same_reports(TAMPERED["payload rewritten"], NOTE, chunks=(2, 5))
    unpicklable = [*LINES[:3], lambda: None, *LINES[3:]]
    monkeypatch.undo()
    assert "cannot be checked" in same_reports(unpicklable, NOTE, chunks=(2,)).first.problem


def test_lines_are_read_a_few_chunks_ahead_only():
    """Memory stays bounded: the reading runs at most a few chunks ahead of the ordered checks."""
    read = []

    def lines():
        for number in range(200):
            read.append(number)
            yield from LINES if number == 0 else ["\n"] * 30

    seen = []
    real_add = offline._Log.add

    def add(log, results, report):
        seen.append((len(read), log.number))
        real_add(log, results, report)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offline._Log, "add", add)
        assert verify_log(lines(), NOTE, VKEY, workers=2, parallel_from=0, chunk_lines=30).ok
    assert len(seen) == 200
    # Two chunks being checked, one waiting, one whose results are being added: never more.
    assert max(read_chunks - done / 30 for read_chunks, done in seen) == 4, seen
