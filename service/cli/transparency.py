"""The commands of the verifiable log that need no database and no settings: generating keys, checking an
exported log or a proof bundle offline (events.offline: standard library and `cryptography` only), and
witnessing a log over HTTP."""

from __future__ import annotations

import base64
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import httpx

from events import merkle, note
from events.offline import verify_bundle, verify_log


def generate(name: str, output: Path, witness: bool, out: TextIO = sys.stdout) -> int:
    """Write a new private key to `output` (readable by its owner only) and print its verifier key."""
    private, vkey = (note.generate_witness_key if witness else note.generate_key)(name)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"goldtrail: {output} exists: keys are never overwritten", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as handle:
        handle.write(private + "\n")
    print(vkey, file=out)
    return 0


def check_log(export: Path, checkpoint: Path, vkey: str, account: str | None, out: TextIO = sys.stdout) -> int:
    with open(export, encoding="utf-8", errors="surrogateescape") as lines:
        report = verify_log(lines, checkpoint.read_text(), vkey, account)
    for problem in report.problems:
        print(f"BAD {problem}", file=out)
    print(report.summary(), file=out)
    return 0 if report.ok else 1


def check_bundle(bundle: Path, vkey: str, out: TextIO = sys.stdout) -> int:
    report = verify_bundle(bundle.read_bytes(), vkey)
    print(report.summary(), file=out)
    return 0 if report.ok else 1


class Refused(Exception):
    """The log showed the witness something it must not cosign (a fork, a rollback, a bad signature)."""


def witness(url: str, token: str, key_file: Path, log_vkey: str, state: Path, out: TextIO = sys.stdout) -> int:
    """One round of witnessing an account's log: fetch its latest checkpoint, check its signature, prove it
    consistent with the last checkpoint this witness cosigned (kept in `state`), cosign it, and hand the
    cosignature back. A log that shows two different trees of one size, or a smaller tree, is refused."""
    signer = note.parse_private_key(key_file.read_text())
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30) as client:
        try:
            latest = _fetched(client.get("/v1/audit/checkpoint"), "the checkpoint").text
            text = note.open_note(latest, log_vkey)
            new = note.parse_checkpoint(text)
            seen = note.parse_checkpoint(state.read_text()) if state.exists() else None
            if seen is not None:
                _consistent(client, seen, new)
        except (Refused, note.NoteError, merkle.ProofError) as error:
            print(f"REFUSED: {error}", file=out)
            return 1
        line = note.cosign(text, signer, int(time.time()))
        body = {"tree_size": new.size, "cosignature": line}
        _fetched(client.post("/v1/audit/checkpoint/cosignatures", json=body), "the cosignature")
    state.write_text(text)
    print(f"cosigned {new.origin} at tree size {new.size}", file=out)
    return 0


def _consistent(client: httpx.Client, seen: note.Checkpoint, new: note.Checkpoint) -> None:
    if new.origin != seen.origin:
        raise Refused(f"the checkpoint is of {new.origin}, not {seen.origin}")
    if new.size < seen.size:
        raise Refused(f"the log shrank from {seen.size} to {new.size} entries")
    if new.size == seen.size:
        if new.root != seen.root:
            raise Refused(f"two different trees of size {new.size}: the log forked")
        return
    if seen.size == 0:
        return
    proof = _fetched(
        client.get("/v1/audit/proof/consistency", params={"from": seen.size, "to": new.size}), "a consistency proof"
    ).json()
    hashes = [_base64(h) for h in proof["hashes"]]
    merkle.verify_consistency(seen.size, new.size, hashes, seen.root, new.root)


def _base64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _fetched(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 300:
        try:
            detail = response.json().get("error", response.text)
        except (ValueError, AttributeError):
            detail = response.text[:200]
        raise SystemExit(f"goldtrail: could not get {what}: {response.status_code} {detail}")
    return response
