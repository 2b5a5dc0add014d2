"""Signed notes, checkpoints, cosignatures and proof files in the C2SP formats (signed-note with Ed25519,
tlog-checkpoint, tlog-cosignature's Ed25519 type, tlog-proof@v1). Standard library and `cryptography` only.

Keys are texts in the form Go's golang.org/x/mod/sumdb/note reads and writes:
    verifier key  <name>+<8 hex key ID>+base64(<type byte> || 32-byte Ed25519 public key)
    private key   PRIVATE+KEY+<name>+<8 hex key ID>+base64(<type byte> || 32-byte Ed25519 seed)
with type 0x01 for note signatures and 0x04 for witness cosignatures, and
key ID = SHA-256(name || 0x0A || type || public key)[:4].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE_V1 = 0x04  # timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature)
_TYPES = {ED25519: "Ed25519", COSIGNATURE_V1: "Ed25519 cosignature"}

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100
PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_COSIGNATURE_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1

_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)


class NoteError(ValueError):
    """A key, note, checkpoint, cosignature or proof file is malformed or does not verify."""


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64, padded, canonical: exactly one text per value, so nothing can be slipped in beside it."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if _b64encode(data) != text:
        raise NoteError(f"{what} is not canonical base64")
    return data


def _check_name(name: object, what: str = "key name") -> str:
    if not isinstance(name, str) or not name:
        raise NoteError(f"the {what} must be a non-empty string")
    for char in name:
        if char == "+" or char.isspace() or unicodedata.category(char) in ("Cc", "Zs"):
            raise NoteError(f"the {what} {name!r} contains {char!r}: no spaces, control characters or '+'")
    return name


def key_id(name: str, kind: int, public_key: bytes) -> bytes:
    """The 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public_key).digest()[:4]


def _public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A public key that checks signatures of one (name, key ID)."""

    name: str
    kind: int
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.kind, _public_bytes(self.public_key))

    def text(self) -> str:
        """The verifier key text, `name+hexkeyid+base64(type || public key)`."""
        raw = bytes([self.kind]) + _public_bytes(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{_b64encode(raw)}"

    def renamed(self, name: str) -> Verifier:
        """The same public key under another name (and so another key ID)."""
        return Verifier(_check_name(name), self.kind, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private key that signs as one (name, key ID)."""

    name: str
    kind: int
    private_key: Ed25519PrivateKey

    @property
    def key_id(self) -> bytes:
        return self.verifier().key_id

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.kind, self.private_key.public_key())

    @property
    def vkey(self) -> str:
        """The verifier key text of this signer."""
        return self.verifier().text()

    def text(self) -> str:
        """The private key text, `PRIVATE+KEY+name+hexkeyid+base64(type || seed)`."""
        seed = self.private_key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{_b64encode(bytes([self.kind]) + seed)}"

    def renamed(self, name: str) -> Signer:
        """The same private key under another name (and so another key ID): one deployment key can sign
        every account's checkpoints, each under its own origin."""
        return Signer(_check_name(name), self.kind, self.private_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def _generate(name: str, kind: int) -> tuple[str, str]:
    signer = Signer(_check_name(name), kind, Ed25519PrivateKey.generate())
    return signer.text(), signer.verifier().text()


def generate_key(name: str) -> tuple[str, str]:
    """A new Ed25519 note-signing key: (private key text, verifier key text)."""
    return _generate(name, ED25519)


def generate_witness_key(name: str) -> tuple[str, str]:
    """A new Ed25519 witness cosigning key (type 0x04): (private key text, verifier key text)."""
    return _generate(name, COSIGNATURE_V1)


def _split_key(rest: str, what: str) -> tuple[str, bytes, int, bytes]:
    """name, key ID, type and key material of `name+hexkeyid+base64`."""
    parts = rest.split("+", 2)
    if len(parts) != 3:
        raise NoteError(f"a {what} has the form name+keyid+key")
    name, hex_id, encoded = parts
    _check_name(name)
    if not _HEX_ID.fullmatch(hex_id):
        raise NoteError(f"the key ID of a {what} is 8 lowercase hex digits, not {hex_id!r}")
    raw = _b64decode(encoded, f"the key of {what} {name!r}")
    if len(raw) != 33 or raw[0] not in _TYPES:
        raise NoteError(f"the {what} {name!r} is not an Ed25519 key of type 0x01 or 0x04")
    return name, bytes.fromhex(hex_id), raw[0], raw[1:]


def parse_vkey(text: str) -> Verifier:
    """A verifier from its key text; the key ID must be the one its name, type and key give."""
    if not isinstance(text, str):
        raise NoteError("a verifier key is text")
    name, given_id, kind, public = _split_key(text.strip(), "verifier key")
    verifier = Verifier(name, kind, Ed25519PublicKey.from_public_bytes(public))
    if verifier.key_id != given_id:
        raise NoteError(f"the verifier key {name!r} says key ID {given_id.hex()}; its key has {verifier.key_id.hex()}")
    return verifier


def parse_private_key(text: str) -> Signer:
    """A signer from its private key text; the key ID must be the one its name, type and key give."""
    if not isinstance(text, str) or not text.strip().startswith("PRIVATE+KEY+"):
        raise NoteError("a private key text starts with PRIVATE+KEY+")
    name, given_id, kind, seed = _split_key(text.strip()[len("PRIVATE+KEY+") :], "private key")
    signer = Signer(name, kind, Ed25519PrivateKey.from_private_bytes(seed))
    if signer.key_id != given_id:
        raise NoteError(f"the private key {name!r} says key ID {given_id.hex()}; its key has {signer.key_id.hex()}")
    return signer


def _signer(key: str | Signer) -> Signer:
    return key if isinstance(key, Signer) else parse_private_key(key)


def _verifier(key: str | Verifier) -> Verifier:
    return key if isinstance(key, Verifier) else parse_vkey(key)


def _check_text(text: object, what: str = "note text") -> str:
    if not isinstance(text, str):
        raise NoteError(f"the {what} must be a string")
    if not text.endswith("\n"):
        raise NoteError(f"the {what} must end with a newline")
    for char in text:
        if char < " " and char != "\n":
            raise NoteError(f"the {what} contains the control character {char!r}")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise NoteError(f"the {what} is not valid Unicode (lone surrogate)") from None
    return text


def _signature_line(signer: Signer, signature: bytes) -> str:
    return f"{SIGNATURE_PREFIX}{signer.name} {_b64encode(signer.key_id + signature)}\n"


def sign_note(text: str, key: str | Signer) -> str:
    """The signed note: the text, a blank line, and the key's Ed25519 signature line."""
    signer = _signer(key)
    if signer.kind != ED25519:
        raise NoteError(f"{signer.name!r} is a witness key: it makes cosignatures (see cosign), not note signatures")
    _check_text(text)
    return text + "\n" + _signature_line(signer, signer.sign(text.encode()))


class NoteSignature(NamedTuple):
    name: str
    key_id: bytes
    signature: bytes


def split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """The text and the signature lines of a note, checked for form only (nothing is verified)."""
    if isinstance(note, bytes | bytearray):
        try:
            note = bytes(note).decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("the note is not valid UTF-8") from None
    _check_text(note, "note")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("the note has no blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block:
        raise NoteError("the note has no signature lines")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    return text, [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line {line!r} does not start with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not space:
        raise NoteError(f"signature line {line!r} has no space between the key name and the signature")
    _check_name(name)
    raw = _b64decode(encoded, f"the signature of {name!r}")
    if len(raw) < 5:
        raise NoteError(f"the signature of {name!r} is too short")
    return NoteSignature(name, raw[:4], raw[4:])


def _verifier_map(verifiers: str | Verifier | Iterable[str | Verifier]) -> dict[tuple[str, bytes], Verifier]:
    if isinstance(verifiers, str | Verifier):
        verifiers = [verifiers]
    known: dict[tuple[str, bytes], Verifier] = {}
    for key in verifiers:
        verifier = _verifier(key)
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot] != verifier:
            raise NoteError(f"two different verifier keys share the name {verifier.name!r} and key ID")
        known[slot] = verifier
    if not known:
        raise NoteError("no verifier keys given")
    return known


def _check(verifier: Verifier, text: str, signature: bytes) -> bool:
    if verifier.kind == ED25519:
        return verifier.verify(text.encode(), signature)
    if len(signature) != 8 + 64:
        return False
    timestamp = int.from_bytes(signature[:8], "big")
    return timestamp <= _MAX_TIMESTAMP and verifier.verify(_cosigned_message(text, timestamp), signature[8:])


def open_note(note: str | bytes, verifiers: str | Verifier | Iterable[str | Verifier]) -> str:
    """The text of a note, once verified: at least one signature of a known (name, key ID) verifies, and
    every signature of a known key does; signatures of unknown keys are ignored. A known witness key
    (type 0x04) checks its cosignature. Raises NoteError otherwise."""
    known = _verifier_map(verifiers)
    text, signatures = split_note(note)
    verified: set[tuple[str, bytes]] = set()
    for name, kid, signature in signatures:
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        if (name, kid) in verified:
            raise NoteError(f"the note is signed twice by {name!r}")
        if not _check(verifier, text, signature):
            raise NoteError(f"the signature of {name!r} does not verify: the note was altered or signed by another key")
        verified.add((name, kid))
    if not verified:
        names = ", ".join(sorted({name for name, _, _ in signatures}))
        raise NoteError(f"the note has no signature of a known key (signed by: {names})")
    return text


# Checkpoints (c2sp.org/tlog-checkpoint)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The checkpoint's note text: origin, decimal tree size, base64 root hash, each ending in a newline."""
    if not isinstance(origin, str) or not origin or any(char < " " for char in origin):
        raise NoteError("the origin must be a non-empty line without control characters")
    if type(size) is not int or size < 0:
        raise NoteError(f"the tree size must be a non-negative int, not {size!r}")
    if not isinstance(root, bytes) or len(root) != 32:
        raise NoteError("the root hash must be 32 bytes")
    return f"{origin}\n{size}\n{_b64encode(root)}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint from its note text (the text `open_note` returns), strictly."""
    _check_text(text, "checkpoint")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("a checkpoint has at least three lines: origin, tree size, root hash")
    origin, size, root, *extensions = lines
    if not origin:
        raise NoteError("the checkpoint's origin line is empty")
    if not _DECIMAL.fullmatch(size):
        raise NoteError(f"the checkpoint's tree size {size!r} is not a decimal without leading zeroes")
    digest = _b64decode(root, "the checkpoint's root hash")
    if len(digest) != 32:
        raise NoteError("the checkpoint's root hash is not 32 bytes")
    if any(not line for line in extensions):
        raise NoteError("the checkpoint has an empty extension line")
    return Checkpoint(origin, int(size), digest, tuple(extensions))


# Cosignatures (c2sp.org/tlog-cosignature, Ed25519 type)


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def cosign(checkpoint: str, witness_key: str | Signer, timestamp: int) -> str:
    """The witness's cosignature line for a checkpoint text (without its signatures), made at `timestamp`
    (POSIX seconds); append it to the checkpoint's signed note."""
    signer = _signer(witness_key)
    if signer.kind != COSIGNATURE_V1:
        raise NoteError(f"{signer.name!r} is not a witness key (type 0x04)")
    if type(timestamp) is not int or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise NoteError("the timestamp must be an int between 0 and 2**63 - 1")
    parse_checkpoint(checkpoint)
    signature = signer.sign(_cosigned_message(checkpoint, timestamp))
    return _signature_line(signer, timestamp.to_bytes(8, "big") + signature)


def verify_cosignature(checkpoint: str, line: str, witness_vkey: str | Verifier) -> int:
    """The timestamp of a witness's valid cosignature line on a checkpoint text; NoteError otherwise."""
    verifier = _verifier(witness_vkey)
    if verifier.kind != COSIGNATURE_V1:
        raise NoteError(f"{verifier.name!r} is not a witness key (type 0x04)")
    parse_checkpoint(checkpoint)
    if not isinstance(line, str):
        raise NoteError("a cosignature line is text")
    name, kid, signature = _parse_signature_line(line[:-1] if line.endswith("\n") else line)
    if (name, kid) != (verifier.name, verifier.key_id):
        expected = f"{verifier.name!r} ({verifier.key_id.hex()})"
        raise NoteError(f"the cosignature is by {name!r} ({kid.hex()}), not by the witness {expected}")
    if len(signature) != 8 + 64:
        raise NoteError(f"the cosignature of {name!r} is not a timestamp and an Ed25519 signature")
    if not _check(verifier, checkpoint, signature):
        raise NoteError(f"the cosignature of {name!r} does not verify for this checkpoint and time")
    return int.from_bytes(signature[:8], "big")


# Proof files (c2sp.org/tlog-proof@v1)


class Proof(NamedTuple):
    extra: bytes | None
    index: int
    path: list[bytes]
    checkpoint: str
    """The checkpoint's signed note, verbatim (not verified by parse_proof)."""


def proof_text(index: int, path: Iterable[bytes], checkpoint_note: str, extra: bytes | None = None) -> str:
    """A tlog-proof@v1 file: header, optional extra data, the entry's index, its inclusion path and the
    signed checkpoint note."""
    if type(index) is not int or not 0 <= index < 2**64:
        raise NoteError("the index must be an int between 0 and 2**64 - 1")
    lines = [PROOF_HEADER]
    if extra is not None:
        if not isinstance(extra, bytes):
            raise NoteError("the extra data must be bytes")
        lines.append(f"extra {_b64encode(extra)}")
    lines.append(f"index {index}")
    for step in path:
        if not isinstance(step, bytes) or len(step) != 32:
            raise NoteError("every hash of the inclusion path must be 32 bytes")
        lines.append(_b64encode(step))
    split_note(checkpoint_note)
    return "\n".join(lines) + "\n\n" + checkpoint_note


def parse_proof(text: str) -> Proof:
    """A tlog-proof@v1 file's parts; the checkpoint note is checked for form only (open it with open_note)."""
    if not isinstance(text, str):
        raise NoteError("a proof is text")
    head, blank, checkpoint_note = text.partition("\n\n")
    if not blank:
        raise NoteError("the proof has no blank line before its checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise NoteError(f"the proof does not start with {PROOF_HEADER}")
    position = 1
    extra = None
    if position < len(lines) and lines[position].startswith("extra "):
        extra = _b64decode(lines[position][len("extra ") :], "the proof's extra data")
        position += 1
    if position >= len(lines) or not lines[position].startswith("index "):
        raise NoteError("the proof has no index line")
    number = lines[position][len("index ") :]
    if not _DECIMAL.fullmatch(number) or int(number) >= 2**64:
        raise NoteError(f"the proof's index {number!r} is not a decimal without leading zeroes")
    path = []
    for line in lines[position + 1 :]:
        step = _b64decode(line, "a hash of the proof's inclusion path")
        if len(step) != 32:
            raise NoteError("a hash of the proof's inclusion path is not 32 bytes")
        path.append(step)
    split_note(checkpoint_note)
    return Proof(extra, int(number), path, checkpoint_note)
