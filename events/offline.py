"""Offline verification of an account's exported log and of a label version's proof bundle: what
`goldtrail verify-log` and `goldtrail verify-proof` run, with no database, settings or network.
Standard library and `cryptography` only.

Export line (JSON Lines, one event per line, in log order):
    {"log_index": 0, "label_id": "…", "run_id": "…", "version": 1, "type": "GoldLabelCreated",
     "actor": "alice", "recorded_at": "2026-01-02T03:04:05.060708Z", "request_id": "…", "reason": null,
     "prev_hash": "<64 hex>", "hash": "<64 hex>", "chain": 1, "payload": "<the stored payload JSON text>"}
`chain` is the hash format (events.canonical): 1 hashes the payload text, 2 its SHA-256. A format 2 event
may carry `payload_sha256` (lowercase hex) instead of, or beside, `payload` (an erased payload leaves only
the digest); where both are present they must agree. `account_id` may be present and must then be the
checkpoint's account. Other fields are ignored.

The checkpoint names the account: its origin is `<log name>/<account id>` with the account id
percent-encoded (`log_origin`), so it never holds a '/'. The verifier key is named either for the log
(the origin is `<key name>/<account id>`) or for that account's log (the origin is the key name, as
tlog-checkpoint recommends); `origin_account` reads both. An `account_id` given to the verifier must be
the one the origin names.

Proof bundle (a JSON document):
    {"format": "goldtrail-proof/v1", "account_id": "…", "run_id": "…", "label_id": "…", "version": V,
     "events": [the label's events 1..V in the export line shape, each with its log_index],
     "proof": "<c2sp.org/tlog-proof@v1 text for version V's entry>"}
The inclusion proof covers version V's chain hash; its prev_hash chain covers versions 1..V-1.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import chain, islice
from json.encoder import encode_basestring as _string  # the escaping events.canonical writes
from typing import Any
from urllib.parse import quote, unquote

from events.canonical import FORMAT_2_TAG, GENESIS_HASH, hash_fields, hash_fields_v2, payload_digest
from events.merkle import CompactRange, ProofError, leaf_hash, verify_inclusion
from events.note import Checkpoint, NoteError, Verifier, open_note, parse_checkpoint, parse_proof, parse_vkey

BUNDLE_FORMAT = "goldtrail-proof/v1"
MAX_PROBLEMS = 100
"""A report keeps the first problems only (it still counts them all)."""

_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)


class _Bad(Exception):
    """One entry is unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class ExportedEvent:
    """One export line: an event as its account's log holds it (see the module docstring)."""

    log_index: int
    label_id: str
    run_id: str
    version: int
    type: str
    actor: str
    recorded_at: str
    request_id: str
    reason: str | None
    prev_hash: str
    hash: str
    chain: int
    payload: str | None = None
    payload_sha256: str | None = None
    account_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The export line's object (fields that are None and optional are left out)."""
        line = {
            "log_index": self.log_index,
            "label_id": self.label_id,
            "run_id": self.run_id,
            "version": self.version,
            "type": self.type,
            "actor": self.actor,
            "recorded_at": self.recorded_at,
            "request_id": self.request_id,
            "reason": self.reason,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "chain": self.chain,
        }
        for name in ("payload", "payload_sha256", "account_id"):
            if getattr(self, name) is not None:
                line[name] = getattr(self, name)
        return line


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        names = [name for name, _ in pairs]
        raise _Bad(f"the key {next(n for n in names if names.count(n) > 1)!r} appears twice")
    return found


def _loads(text: str | bytes) -> Any:
    """JSON that means one thing to every reader: duplicate keys are refused, as are NaN and Infinity."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("not valid UTF-8") from None
    try:
        if type(text) is str and not text.startswith("\ufeff"):
            return _DECODER.decode(text)  # what json.loads does with a str, minus building a decoder each time
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except RecursionError:
        raise _Bad("not JSON: nested too deeply") from None
    except ValueError as error:
        raise _Bad(f"not JSON ({error})") from None


def _refuse_constant(name: str) -> Any:
    raise _Bad(f"not JSON: {name} is not a JSON value")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
_SCAN = _DECODER.scan_once  # (text, index) -> (value, end): raw_decode without its wrapping


def _field(line: dict[str, Any], name: str, kinds: tuple[type, ...], required: bool = True) -> Any:
    if name not in line:
        if required:
            raise _Bad(f"the field {name!r} is missing")
        return None
    value = line[name]
    # bool is an int in Python, never in an export.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
        raise _Bad(f"the field {name!r} must be {names}, not {json.dumps(value)[:40]}")
    return value


def _hex64(line: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = _field(line, name, (str,), required)
    if value is not None and not _HEX64.fullmatch(value):
        raise _Bad(f"the field {name!r} is not 64 lowercase hex digits")
    return value


def parse_event(line: Any) -> ExportedEvent:
    """An export line's object, checked for shape (not for its hash). Raises ValueError naming the field."""
    try:
        return _parse_event(line)
    except _Bad as error:
        raise ValueError(str(error)) from None


def _parse_event(line: Any) -> ExportedEvent:
    if not isinstance(line, dict):
        raise _Bad("not a JSON object")
    log_index = _field(line, "log_index", (int,))
    version = _field(line, "version", (int,))
    if log_index < 0:
        raise _Bad(f"log_index {log_index} is negative")
    if version < 1:
        raise _Bad(f"version {version} is not 1 or more")
    chain = _field(line, "chain", (int,))
    if chain not in (1, 2):
        raise _Bad(f"chain format {chain} is unknown (1 or 2)")
    event = ExportedEvent(
        log_index=log_index,
        label_id=_field(line, "label_id", (str,)),
        run_id=_field(line, "run_id", (str,)),
        version=version,
        type=_field(line, "type", (str,)),
        actor=_field(line, "actor", (str,)),
        recorded_at=_field(line, "recorded_at", (str,)),
        request_id=_field(line, "request_id", (str,)),
        reason=_field(line, "reason", (str, type(None))),
        prev_hash=_hex64(line, "prev_hash"),  # type: ignore[arg-type]
        hash=_hex64(line, "hash"),  # type: ignore[arg-type]
        chain=chain,
        payload=_field(line, "payload", (str,), required=False),
        payload_sha256=_hex64(line, "payload_sha256", required=False),
        account_id=_field(line, "account_id", (str,), required=False),
    )
    if event.payload is None and (chain == 1 or event.payload_sha256 is None):
        raise _Bad("the field 'payload' is missing" + ("" if chain == 1 else " (and so is 'payload_sha256')"))
    return event


def event_hash(account_id: str, event: ExportedEvent) -> str:
    """The chain hash the event's fields give, in its chain format. Raises ValueError if the payload and
    its digest disagree or a text cannot be hashed."""
    try:
        return _event_hash(account_id, event)
    except _Bad as error:
        raise ValueError(str(error)) from None


def _event_hash(account_id: str, event: ExportedEvent) -> str:
    try:
        digest = None if event.payload is None else payload_digest(event.payload)
        if digest is not None and event.payload_sha256 is not None and digest != event.payload_sha256:
            raise _Bad("payload_sha256 is not the SHA-256 of the payload")
        fields = (account_id, event.label_id, event.version, event.run_id, event.type)
        rest = (event.actor, event.recorded_at, event.request_id, event.reason, event.prev_hash)
        if event.chain == 1:
            return hash_fields(*fields, event.payload, *rest)  # type: ignore[arg-type]
        return hash_fields_v2(*fields, digest or event.payload_sha256, *rest)  # type: ignore[arg-type]
    except UnicodeEncodeError:
        raise _Bad("a text field holds a lone surrogate, which no stored event can") from None


def _entry_problem(account_id: str, event: ExportedEvent) -> str | None:
    if event.account_id is not None and event.account_id != account_id:
        return f"account_id {event.account_id!r} is not the checkpoint's account {account_id!r}"
    if _event_hash(account_id, event) != event.hash:
        return "its fields do not hash to its hash: the event was altered after it was written"
    return None


class _Links:
    """Each label's newest hash and version, to check prev_hash links and gapless versions."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, int]] = {}

    def problem(self, event: ExportedEvent) -> str | None:
        previous_hash, previous_version = self.last.get(event.label_id, (GENESIS_HASH, 0))
        self.last[event.label_id] = (event.hash, event.version)
        return _link_problem(previous_hash, previous_version, event.version, event.prev_hash)


def _link_problem(previous_hash: str, previous_version: int, version: int, prev_hash: str) -> str | None:
    """What is wrong with an event's version and prev_hash after its label's previous ones (0 and
    GENESIS_HASH before its first)."""
    if version != previous_version + 1:
        if previous_version == 0:
            return f"the label's first event is version {version}, not 1"
        return f"version {version} follows version {previous_version} of its label"
    if prev_hash != previous_hash:
        if previous_version == 0:
            return f"version 1 must have prev_hash {GENESIS_HASH[:8]}…, the chain's start"
        return f"prev_hash is not the hash of version {previous_version} of its label"
    return None


@dataclass(frozen=True)
class Problem:
    """What is wrong, and where: the export line (1-based), and the entry's log index, label and version
    when they could be read."""

    problem: str
    line: int | None = None
    log_index: int | None = None
    label_id: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.log_index is not None:
            where.append(f"log index {self.log_index}")
        if self.label_id is not None:
            where.append(f"label {self.label_id} version {self.version}")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem


@dataclass
class Report:
    """The outcome of verify_log: `ok` when the checkpoint verifies and every entry checks out."""

    origin: str | None = None
    account_id: str | None = None
    tree_size: int | None = None
    entries: int = 0
    """Entries read (lines that held an event)."""
    covered: int = 0
    """Entries within the checkpoint's tree size."""
    beyond: int = 0
    """Entries after the checkpoint's tree size: their chains are checked, but no checkpoint covers them."""
    labels: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def summary(self) -> str:
        head = (
            f"{self.entries:,} entries of {self.labels:,} labels; checkpoint {self.origin} size {self.tree_size}"
            if self.origin is not None
            else "no trusted checkpoint"
        )
        if self.beyond:
            head += f"; {self.beyond:,} entries after the checkpoint (chains checked, not covered)"
        if self.ok:
            return f"OK: {head}"
        return f"FAILED ({self.problem_count:,} problems; the first: {self.first}): {head}"


def log_origin(log_name: str, account_id: str) -> str:
    """The checkpoint origin of an account's log: `<log name>/<account id>`, the account id percent-encoded
    (RFC 3986, every byte but letters, digits and `-._~`), so that any id makes one line without '/',
    spaces or '+' (and so can also serve as a key name)."""
    return f"{log_name}/{quote(account_id, safe='')}"


def origin_account(origin: str, key_name: str) -> str:
    """The account id of a checkpoint origin signed by the key `key_name`. The key is either named for the
    log (origin `<key name>/<account id>`) or for the account's log itself (origin == key name, account id
    after its last '/'). Raises NoteError otherwise."""
    if origin == key_name:
        log_name, _, encoded = origin.rpartition("/")
    elif origin.startswith(key_name + "/"):
        log_name, encoded = key_name, origin[len(key_name) + 1 :]
    else:
        raise NoteError(f"the checkpoint's origin {origin!r} is not a log of the key {key_name!r}")
    if not log_name or not encoded or "/" in encoded:
        raise NoteError(f"the checkpoint's origin {origin!r} is not <log name>/<account id>")
    try:
        account_id = unquote(encoded, errors="strict")
        canonical = quote(account_id, safe="")
    except UnicodeError:
        canonical = None
    if canonical != encoded:
        raise NoteError(f"the account id in the checkpoint's origin {origin!r} is not percent-encoded canonically")
    return account_id


def _trusted_checkpoint(checkpoint_note: str, vkey: str | Verifier, account_id: str | None) -> tuple[Checkpoint, str]:
    """The checkpoint and its account, once its signature, origin and account check out; NoteError otherwise."""
    verifier = vkey if isinstance(vkey, Verifier) else parse_vkey(vkey)
    checkpoint = parse_checkpoint(open_note(checkpoint_note, verifier))
    account = origin_account(checkpoint.origin, verifier.name)
    if account_id is not None and account != account_id:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is the log of {account!r}, not {account_id!r}")
    return checkpoint, account


def _index_problem(log_index: int, expected: int) -> str:
    if log_index > expected:
        missing = f"{expected}" if log_index == expected + 1 else f"{expected}–{log_index - 1}"
        return f"comes where log index {expected} was expected: log index {missing} is missing"
    return f"comes after log index {expected - 1}: log indexes must increase one by one"


# Checking the lines of an export ---------------------------------------------------------------------------------
#
# Each line is checked on its own (`_check_lines`, which worker processes can run on chunks of lines), giving one
# result per line, in order:
#   None                            a blank line;
#   str                             a line that holds no usable event: the problem;
#   _Unusable                       an event whose fields cannot be hashed (entries counts it, nothing else does);
#   (log_index, label_id, version, prev_hash, hash, leaf, problem)
#                                   an event, its leaf hash and its own problem (None, or a wrong account or hash).
# `_Log` then takes the results in order for what depends on order: dense log indexes, each label's links, the
# tree of the first `size` entries and which problem comes first. So a report is the same however the lines
# were divided between processes.

PARALLEL_FROM = 50_000
"""verify_log checks lines in worker processes only when an export has more lines than this."""
CHUNK_LINES = 10_000
"""Lines a worker checks at once; a few chunks at most are read ahead of the ordered checks."""

_MISSING = object()
_FORMAT_2_HEAD = _string(FORMAT_2_TAG)


@dataclass(frozen=True, slots=True)
class _Unusable:
    problem: str
    log_index: int
    label_id: str
    version: int


def _well_formed(text: Any, account: str, heads: tuple[str, str]) -> tuple | None:
    """A line's result in one pass when it is a well-formed event of `account` whose fields hash to its hash;
    None for anything else, and `_check_line` then says exactly what. Every check here is at least as strict as
    `_loads`, `_parse_event` and `_entry_problem`, and the bytes hashed are canonical.canonical_bytes(_v2)'s:
    the head (`heads`) holds the account, hex digests need no escaping, an exact int prints as int.__repr__."""
    try:
        if type(text) is not str:
            text = text.decode()  # bytes; anything else raises
        # The object from the line's first character, with no BOM or leading space (json.loads refuses the one,
        # accepts the other: both take the slow path), then only JSON whitespace.
        line, end = _SCAN(text, 0)
        if end != len(text) and text[end:].strip(" \t\n\r"):
            return None
        if type(line) is not dict:
            return None
        log_index, version, chain = line["log_index"], line["version"], line["chain"]
        label_id, run_id, type_, actor = line["label_id"], line["run_id"], line["type"], line["actor"]
        recorded_at, request_id, reason = line["recorded_at"], line["request_id"], line["reason"]
        prev_hash, hash_ = line["prev_hash"], line["hash"]
    except Exception:  # not JSON, a duplicate key, NaN, a missing field, not text …: the detailed checks say which
        return None
    if (
        type(log_index) is not int
        or type(version) is not int
        or type(chain) is not int
        or (chain != 1 and chain != 2)
        or log_index < 0
        or version < 1
        or type(label_id) is not str
        or type(run_id) is not str
        or type(type_) is not str
        or type(actor) is not str
        or type(recorded_at) is not str
        or type(request_id) is not str
        or (reason is not None and type(reason) is not str)
        or type(prev_hash) is not str
        or type(hash_) is not str
        or not _HEX64.fullmatch(prev_hash)
    ):
        return None
    get = line.get
    account_id = get("account_id", _MISSING)
    if account_id is not _MISSING and account_id != account:
        return None
    payload = get("payload", _MISSING)
    if payload is _MISSING:
        payload = None
    elif type(payload) is not str:
        return None
    payload_sha256 = get("payload_sha256", _MISSING)
    if payload_sha256 is _MISSING:
        payload_sha256 = None
    elif type(payload_sha256) is not str or not _HEX64.fullmatch(payload_sha256):
        return None
    try:
        digest = payload_sha256
        if payload is None:
            if chain == 1 or digest is None:
                return None
        elif chain == 2 or digest is not None:
            digest = sha256(payload.encode()).hexdigest()
            if payload_sha256 is not None and digest != payload_sha256:
                return None
        middle = f"{_string(label_id)},{version},{_string(run_id)},{_string(type_)},"
        reason_json = "null" if reason is None else _string(reason)
        tail = f',{_string(actor)},{_string(recorded_at)},{_string(request_id)},{reason_json},"{prev_hash}"]'
        if chain == 2:
            entry = sha256(f'{heads[1]}{middle}"{digest}"{tail}'.encode())
        else:
            entry = sha256(f"{heads[0]}{middle}{payload}{tail}".encode())
    except UnicodeEncodeError:  # a lone surrogate
        return None
    if entry.hexdigest() != hash_:
        return None
    return (log_index, label_id, version, prev_hash, hash_, sha256(b"\x00" + entry.digest()).digest(), None)


def _check_line(text: Any, account: str) -> Any:
    """A line's result (see above) from the detailed checks, which name the first thing wrong."""
    if not (text.strip() if isinstance(text, str | bytes | bytearray) else text):
        return None
    event = None
    try:
        event = _parse_event(_loads(text))
        problem = _entry_problem(account, event)
        leaf = leaf_hash(bytes.fromhex(event.hash))
        return (event.log_index, event.label_id, event.version, event.prev_hash, event.hash, leaf, problem)
    except _Bad as error:
        problem = str(error)
    except (TypeError, ValueError, UnicodeError) as error:  # defensive: garbage must never crash a verifier
        problem = f"cannot be checked ({error})"
    return problem if event is None else _Unusable(problem, event.log_index, event.label_id, event.version)


def _heads(account: str) -> tuple[str, str]:
    """The start of format 1's and format 2's hashed texts, up to the account's comma (see _well_formed)."""
    return f"[{_string(account)},", f"[{_FORMAT_2_HEAD},{_string(account)},"


def _check_lines(account: str, lines: list[Any]) -> list[Any]:
    """Each line's result, checked against `account`; never raises on bad input. What runs in worker processes."""
    heads = _heads(account)
    results: list[Any] = []
    append = results.append
    for text in lines:
        result = _well_formed(text, account, heads)
        append(_check_line(text, account) if result is None else result)
    return results


class _Log:
    """What depends on the order of the entries, fed each chunk's results in order: log indexes 0, 1, 2, …,
    each label's links, the tree of the first `size` entries, and the report's problems in line order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tree = CompactRange()
        self.links = _Links()
        self.expected = 0
        self.number = 0

    def add(self, results: list[Any], report: Report) -> None:
        number, expected, last = self.number, self.expected, self.links.last
        room = self.size - self.tree.size
        leaves: list[bytes] = []
        entries = beyond = 0
        for result in results:
            number += 1
            if type(result) is not tuple:
                if result is None:
                    continue
                if type(result) is str:
                    report.add(Problem(result, number))
                else:
                    entries += 1
                    report.add(Problem(result.problem, number, result.log_index, result.label_id, result.version))
                continue
            log_index, label_id, version, prev_hash, hash_, leaf, problem = result
            entries += 1
            if log_index == expected:
                expected += 1
            else:
                if problem is None:
                    problem = _index_problem(log_index, expected)
                if log_index > expected:
                    expected = log_index + 1
            previous = last.get(label_id)
            last[label_id] = (hash_, version)
            if previous is None:
                if version != 1 or prev_hash != GENESIS_HASH:
                    problem = problem or _link_problem(GENESIS_HASH, 0, version, prev_hash)
            elif version != previous[1] + 1 or prev_hash != previous[0]:
                problem = problem or _link_problem(*previous, version, prev_hash)
            if room:
                leaves.append(leaf)
                room -= 1
            else:
                beyond += 1
            if problem is not None:
                report.add(Problem(problem, number, log_index, label_id, version))
        self.tree.extend(leaves)
        report.entries += entries
        report.covered += len(leaves)
        report.beyond += beyond
        self.number, self.expected = number, expected


def _chunks(lines: Iterable[Any], size: int, unreadable: list[Problem]) -> Iterator[list[Any]]:
    """The lines in lists of `size`. A text file that is not UTF-8 ends the reading with a problem (in
    `unreadable`) instead of an exception; a file opened in binary mode has each bad line named instead."""
    iterator = iter(lines)
    read = 0
    while True:
        chunk: list[Any] = []
        try:
            chunk.extend(islice(iterator, size))  # keeps the lines read before an exception
        except UnicodeDecodeError as error:
            # A text file decodes ahead of the lines it hands out, so the bad line cannot be located here.
            read += len(chunk)
            if chunk:
                yield chunk
            unreadable.append(Problem(f"the export is not valid UTF-8 ({error.reason}); {read:,} lines were read"))
            return
        if not chunk:
            return
        read += len(chunk)
        yield chunk
        if len(chunk) < size:
            return


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _checked_chunks(
    lines: Iterable[Any], account: str, workers: int | None, parallel_from: int, chunk_lines: int, unreadable: list
) -> Iterator[list[Any]]:
    """Each chunk's results, in order: checked here, or by `workers` processes once more than `parallel_from`
    lines have been read."""
    chunks = _chunks(lines, max(1, chunk_lines), unreadable)
    if (_cpus() if workers is None else workers) > 1:
        ahead, count = [], 0
        for chunk in chunks:
            ahead.append(chunk)
            count += len(chunk)
            if count > parallel_from:
                yield from _in_workers(chain(ahead, chunks), account, _cpus() if workers is None else workers)
                return
        chunks = iter(ahead)
    for chunk in chunks:
        yield _check_lines(account, chunk)


def _in_workers(chunks: Iterator[list[Any]], account: str, workers: int) -> Iterator[list[Any]]:
    try:
        pool = ProcessPoolExecutor(workers)
    except (OSError, ImportError, NotImplementedError):  # no processes or semaphores here: check in this one
        for chunk in chunks:
            yield _check_lines(account, chunk)
        return
    pending: deque[tuple[Future | None, list[Any]]] = deque()
    try:
        for chunk in chunks:
            try:
                future: Future | None = pool.submit(_check_lines, account, chunk)
            except RuntimeError:  # the pool broke (BrokenProcessPool is one)
                future = None
            pending.append((future, chunk))
            while len(pending) > workers + 1:  # bounded memory: a few chunks in flight
                yield _chunk_results(*pending.popleft(), account)
        while pending:
            yield _chunk_results(*pending.popleft(), account)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunk_results(future: Future | None, chunk: list[Any], account: str) -> list[Any]:
    if future is not None:
        try:
            return future.result()
        except Exception:  # the pool failed (a worker died, a line could not be sent): the chunk is checked here
            pass
    return _check_lines(account, chunk)


def verify_log(
    lines: Iterable[str | bytes],
    checkpoint_note: str,
    vkey: str | Verifier,
    account_id: str | None = None,
    *,
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
    chunk_lines: int = CHUNK_LINES,
) -> Report:
    """Check an account's exported log against its signed checkpoint: the signature and origin (see
    `origin_account`), every entry's chain hash, each label's prev_hash links and gapless versions, log indexes
    0, 1, 2, … without gaps or repeats, at least the checkpoint's size of entries, and the Merkle root of
    the first `size` entries' chain hashes. Never raises on bad input: every problem is in the report.

    An export of more than `parallel_from` lines is checked in chunks of `chunk_lines` lines by `workers`
    processes (default: one per CPU; 1 checks everything in this process), the order-dependent checks staying
    here: the report is the same either way."""
    report = Report()
    try:
        checkpoint, account = _trusted_checkpoint(checkpoint_note, vkey, account_id)
    except (NoteError, ValueError, TypeError) as error:
        report.add(Problem(f"checkpoint refused: {error}"))
        return report
    report.origin, report.account_id, report.tree_size = checkpoint.origin, account, checkpoint.size
    log = _Log(checkpoint.size)
    unreadable: list[Problem] = []
    for results in _checked_chunks(lines, account, workers, parallel_from, chunk_lines, unreadable):
        log.add(results, report)
    for problem in unreadable:
        report.add(problem)
    report.labels = len(log.links.last)
    tree = log.tree
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


def verify_tlog_proof(proof: str, entry_hash: bytes, vkey: str | Verifier) -> tuple[Checkpoint, int]:
    """Check a tlog-proof@v1 text for an entry (its 32 bytes, before leaf hashing) against the log's key:
    the checkpoint's signature, its origin (an account's log of that key, see `origin_account`), and the
    inclusion of leaf_hash(entry) at the proof's index.
    Returns the checkpoint and the index; raises NoteError or ProofError naming what failed."""
    verifier = vkey if isinstance(vkey, Verifier) else parse_vkey(vkey)
    parsed = parse_proof(proof)
    checkpoint = parse_checkpoint(open_note(parsed.checkpoint, verifier))
    origin_account(checkpoint.origin, verifier.name)
    verify_inclusion(leaf_hash(entry_hash), parsed.index, checkpoint.size, parsed.path, checkpoint.root)
    return checkpoint, parsed.index


@dataclass(frozen=True)
class BundleReport:
    """The outcome of verify_bundle: `problem` is None when the label version is proven."""

    problem: str | None
    account_id: str | None = None
    run_id: str | None = None
    label_id: str | None = None
    version: int | None = None
    log_index: int | None = None
    tree_size: int | None = None
    origin: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is not None:
            return f"FAILED: {self.problem}"
        return (
            f"OK: label {self.label_id} version {self.version} of run {self.run_id} (account {self.account_id}) "
            f"is entry {self.log_index} of {self.origin} at tree size {self.tree_size}"
        )


def bundle_json(account_id: str, run_id: str, label_id: str, events: list[ExportedEvent], proof: str) -> str:
    """A proof bundle for the label version of the last of `events` (versions 1..V of one label)."""
    return json.dumps(
        {
            "format": BUNDLE_FORMAT,
            "account_id": account_id,
            "run_id": run_id,
            "label_id": label_id,
            "version": events[-1].version if events else 0,
            "events": [event.to_json() for event in events],
            "proof": proof,
        },
        ensure_ascii=False,
    )


def verify_bundle(bundle_text: str | bytes, vkey: str | Verifier) -> BundleReport:
    """Check a label version's proof bundle offline: the checkpoint's signature, origin and account, every
    event's chain hash and links from version 1, and the inclusion of the version's chain hash at its log
    index in the checkpoint's tree. Never raises on bad input."""
    known: dict[str, Any] = {}
    try:
        _check_bundle(bundle_text, vkey, known)
    except (_Bad, NoteError, ProofError) as error:
        return BundleReport(str(error), **known)
    except (TypeError, ValueError, UnicodeError) as error:  # defensive: garbage must never crash a verifier
        return BundleReport(f"the bundle cannot be checked ({error})", **known)
    return BundleReport(None, **known)


def _check_bundle(bundle_text: str | bytes, vkey: str | Verifier, known: dict[str, Any]) -> None:
    document = _loads(bundle_text)
    if not isinstance(document, dict):
        raise _Bad("the bundle is not a JSON object")
    if document.get("format") != BUNDLE_FORMAT:
        raise _Bad(f"the bundle's format is not {BUNDLE_FORMAT!r}")
    for name, kinds in (("account_id", (str,)), ("run_id", (str,)), ("label_id", (str,)), ("version", (int,))):
        known[name] = _field(document, name, kinds)
    version = known["version"]
    events = _field(document, "events", (list,))
    proof = _field(document, "proof", (str,))
    if version < 1 or len(events) != version:
        raise _Bad(f"the bundle proves version {version} but holds {len(events)} events (versions 1 to {version})")
    try:
        parsed = parse_proof(proof)
    except NoteError as error:
        raise NoteError(f"the bundle's proof: {error}") from None
    try:
        checkpoint, _ = _trusted_checkpoint(parsed.checkpoint, vkey, known["account_id"])
    except NoteError as error:
        raise NoteError(f"checkpoint refused: {error}") from None
    known["origin"], known["tree_size"] = checkpoint.origin, checkpoint.size
    links = _Links()
    previous_index = -1
    for position, line in enumerate(events):
        try:
            event = _parse_event(line)
        except _Bad as error:
            raise _Bad(f"event {position + 1} of the bundle: {error}") from None
        where = f"version {event.version} (log index {event.log_index})"
        if event.version != position + 1:
            raise _Bad(f"event {position + 1} of the bundle is version {event.version}")
        if event.label_id != known["label_id"] or event.run_id != known["run_id"]:
            raise _Bad(f"{where} is not an event of label {known['label_id']} in run {known['run_id']}")
        problem = _entry_problem(known["account_id"], event) or links.problem(event)
        if problem is not None:
            raise _Bad(f"{where}: {problem}")
        if event.log_index <= previous_index:
            raise _Bad(f"{where} comes before version {event.version - 1} in the log (log index {previous_index})")
        previous_index = event.log_index
    known["log_index"] = event.log_index  # the events are versions 1..version, so there is a last one
    if parsed.index != event.log_index:
        raise _Bad(f"the inclusion proof is for log index {parsed.index}, not version {version}'s {event.log_index}")
    try:
        leaf = leaf_hash(bytes.fromhex(event.hash))
        verify_inclusion(leaf, parsed.index, checkpoint.size, parsed.path, checkpoint.root)
    except ProofError as error:
        raise ProofError(f"version {version} is not in the checkpoint's tree: {error}") from None
