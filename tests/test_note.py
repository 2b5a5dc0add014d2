"""Signed notes, checkpoints, cosignatures and proof files follow the C2SP specs byte for byte, and every
verification refuses what it must."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.note import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    NoteError,
    checkpoint_text,
    cosign,
    generate_key,
    generate_witness_key,
    key_id,
    open_note,
    parse_checkpoint,
    parse_private_key,
    parse_proof,
    parse_vkey,
    proof_text,
    sign_note,
    split_note,
    verify_cosignature,
)

# The example key and note of Go's golang.org/x/mod/sumdb/note (its documentation and tests): another
# implementation's bytes, so ours is checked against the format, not against itself.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
GO_NOTE = GO_TEXT + "\n— PeterNeumann " + GO_SIGNATURE + "\n"

ROOT = hashlib.sha256(b"root").digest()


def refused(function, *args, match: str | None = None) -> str:
    with pytest.raises(NoteError, match=match) as caught:
        function(*args)
    return str(caught.value)


def test_the_go_example_key_and_note():
    signer = parse_private_key(GO_SKEY)
    assert signer.text() == GO_SKEY
    assert signer.vkey == GO_VKEY == parse_vkey(GO_VKEY).text()
    assert signer.key_id.hex() == "c74f20a3"
    assert sign_note(GO_TEXT, GO_SKEY) == GO_NOTE  # Ed25519 is deterministic
    assert open_note(GO_NOTE, GO_VKEY) == GO_TEXT
    assert open_note(GO_NOTE.encode(), [GO_VKEY]) == GO_TEXT
    refused(open_note, GO_NOTE.replace("cryptography", "cryptographY"), GO_VKEY, match="does not verify")


def test_generated_keys_round_trip():
    skey, vkey = generate_key("goldtrail.example/log")
    signer, verifier = parse_private_key(skey), parse_vkey(vkey)
    assert signer.name == verifier.name == "goldtrail.example/log"
    assert signer.kind == verifier.kind == ED25519
    raw = base64.b64decode(vkey.split("+", 2)[2])
    assert raw[0] == 0x01 and len(raw) == 33
    assert verifier.key_id == key_id("goldtrail.example/log", 0x01, raw[1:])
    assert verifier.key_id == hashlib.sha256(b"goldtrail.example/log\n\x01" + raw[1:]).digest()[:4]
    assert vkey.split("+")[1] == verifier.key_id.hex()
    assert skey.startswith("PRIVATE+KEY+goldtrail.example/log+" + verifier.key_id.hex() + "+")
    note = sign_note("hello\n", skey)
    assert open_note(note, vkey) == "hello\n"
    assert open_note(note, verifier) == "hello\n"
    renamed = signer.renamed("goldtrail.example/log/acme")
    assert renamed.key_id != signer.key_id
    assert open_note(sign_note("hi\n", renamed), renamed.vkey) == "hi\n"
    refused(open_note, sign_note("hi\n", renamed), vkey, match="no signature of a known key")


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\there", "nb\u00a0sp", "line\nbreak", "em\u2003sp"])
def test_key_names_must_be_plain(name):
    refused(generate_key, name)
    signer = parse_private_key(GO_SKEY)
    refused(signer.renamed, name)


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case ID
        "PeterNeumann+c74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # short ID
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # bad base64
        "PeterNeumann+c74f20a3+AhpzZHcHPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x02
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # 31 bytes of key
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_malformed_verifier_keys_are_refused(text):
    refused(parse_vkey, text)


@pytest.mark.parametrize(
    "text",
    [
        GO_VKEY,
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDF",
        "PRIVATE+KEY+PeterNeumann+c74f20a3",
        "PRIVATE+KEY+Other+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    ],
)
def test_malformed_private_keys_are_refused(text):
    refused(parse_private_key, text)


def test_notes_that_must_be_refused():
    skey, vkey = generate_key("log.example")
    other_skey, other_vkey = generate_key("log.example")  # same name, another key: another key ID
    note = sign_note("origin\n1\n", skey)
    assert open_note(note, vkey) == "origin\n1\n"
    # Signed by another key of the same name: its signature is of an unknown key, so nothing verifies.
    refused(open_note, sign_note("origin\n1\n", other_skey), vkey, match="no signature of a known key")
    # A signature of another key carrying this key's ID: a known key whose signature fails.
    forged_sig = base64.b64decode(sign_note("origin\n1\n", other_skey).split(" ")[-1])[4:]
    forged = "origin\n1\n\n— log.example " + base64.b64encode(parse_vkey(vkey).key_id + forged_sig).decode() + "\n"
    refused(open_note, forged, vkey, match="does not verify")
    refused(open_note, note.replace("1", "2", 1), vkey, match="does not verify")  # modified body
    refused(open_note, note.replace("log.example", "log.exampl3"), vkey, match="no signature of a known key")
    refused(open_note, note, generate_key("other.example")[1], match="no signature of a known key")
    assert open_note(note, [vkey, other_vkey]) == "origin\n1\n"
    refused(open_note, note[:-1], vkey, match="newline")
    refused(open_note, note.replace("\n\n", "\n"), vkey, match="blank line")
    refused(open_note, note.replace("—", "-"), vkey, match="em dash")
    refused(open_note, note.replace("— ", "—"), vkey, match="em dash")
    refused(open_note, note.replace("log.example ", "log.example  "), vkey)
    refused(open_note, note.replace("log.example ", "log.example\t"), vkey)
    refused(open_note, note.replace("1\n", "1\r\n", 1), vkey, match="control character")
    refused(open_note, note + "\n", vkey)
    refused(open_note, "origin\n1\n\n", vkey, match="no signature lines")
    refused(open_note, "origin\n1\n\n— log.example AAAA\n", vkey, match="too short")
    refused(open_note, note, [], match="no verifier keys")
    refused(open_note, b"\xff" + note.encode(), vkey, match="UTF-8")
    # A signature whose base64 is not canonical (the last character's spare bits set).
    signature = note.rsplit(" ", 1)[1].rstrip("\n")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    assert signature.endswith("=") and not signature.endswith("==")  # 68 bytes: the last character has 2 spare bits
    loose = signature[:-2] + alphabet[alphabet.index(signature[-2]) ^ 1] + "="
    assert base64.b64decode(loose) == base64.b64decode(signature)
    refused(open_note, note.replace(signature, loose), vkey, match="canonical")


def test_signatures_beside_the_known_one():
    skey, vkey = generate_key("log.example")
    other_skey, other_vkey = generate_key("witness.example")
    note = sign_note("text\n", skey)
    extra = sign_note("text\n", other_skey).split("\n\n")[1]
    both = note + extra
    assert open_note(both, vkey) == "text\n"  # an unknown key's line is ignored
    assert open_note(both, [vkey, other_vkey]) == "text\n"
    bad_extra = extra.replace(extra.split(" ")[-1][10:14], "AAAA")
    refused(open_note, note + bad_extra, [vkey, other_vkey], match="witness.example")  # a known key fails
    assert open_note(note + bad_extra, vkey) == "text\n"  # unknown: ignored
    refused(open_note, note + note.split("\n\n")[1], vkey, match="twice")
    lines = "".join(f"— k{i} AAAAAAA=\n" for i in range(100))
    refused(open_note, note + lines, vkey, match="more than 100")


def test_sign_note_wants_a_proper_text():
    skey, _ = generate_key("log.example")
    refused(sign_note, "no newline", skey)
    refused(sign_note, "bell\a\n", skey)
    refused(sign_note, "x\n", generate_witness_key("w.example")[0], match="witness key")


note_text = st.lists(
    st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=30), min_size=1, max_size=5
).map(lambda lines: "\n".join(lines) + "\n")


@settings(max_examples=100, deadline=None)
@given(note_text, st.data())
def test_any_text_round_trips_and_any_change_is_caught(text, data):
    signer = parse_private_key(GO_SKEY)
    note = sign_note(text, signer)
    assert open_note(note, GO_VKEY) == text
    assert split_note(note)[0] == text
    position = data.draw(st.integers(0, len(text) - 1), label="position")
    replacement = data.draw(st.sampled_from(["x", "\n", "é", ""]), label="replacement")
    changed = text[:position] + replacement + text[position + 1 :]
    if changed != text and changed.endswith("\n"):
        with pytest.raises(NoteError):
            open_note(changed + note[len(text) :], GO_VKEY)


# Checkpoints


def test_checkpoint_round_trip():
    text = checkpoint_text("goldtrail.example/acme", 20852163, ROOT)
    assert text == f"goldtrail.example/acme\n20852163\n{base64.b64encode(ROOT).decode()}\n"
    assert parse_checkpoint(text) == Checkpoint("goldtrail.example/acme", 20852163, ROOT)
    assert parse_checkpoint(checkpoint_text("o", 0, ROOT)).size == 0
    assert parse_checkpoint(text + "ext one\next two\n").extensions == ("ext one", "ext two")
    # The spec's own example.
    example = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert parse_checkpoint(example).size == 20852163
    assert checkpoint_text("example.com/behind-the-sofa", 20852163, parse_checkpoint(example).root) == example


@pytest.mark.parametrize(
    "size", ["01", "+1", "-1", " 1", "1 ", "", "١", "1e3", "0x10", "1_000"], ids=lambda size: repr(size)
)
def test_checkpoint_sizes_are_plain_decimals(size):
    refused(parse_checkpoint, f"o\n{size}\n{base64.b64encode(ROOT).decode()}\n")


@pytest.mark.parametrize(
    "text",
    [
        "o\n1\n" + base64.b64encode(ROOT).decode(),  # no final newline
        "o\n1\n",
        "\n1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n",
        "o\n1\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\next\n",
    ],
)
def test_malformed_checkpoints_are_refused(text):
    refused(parse_checkpoint, text)


def test_checkpoint_text_refuses_what_cannot_be_written():
    refused(checkpoint_text, "", 1, ROOT)
    refused(checkpoint_text, "two\nlines", 1, ROOT)
    refused(checkpoint_text, "o", -1, ROOT)
    refused(checkpoint_text, "o", 1, ROOT[:31])


# Cosignatures


def test_cosignature_round_trip():
    skey, vkey = generate_key("goldtrail.example/acme")
    wkey, wvkey = generate_witness_key("witness.example/w1")
    witness = parse_vkey(wvkey)
    assert witness.kind == COSIGNATURE_V1
    raw = base64.b64decode(wvkey.split("+", 2)[2])
    assert raw[0] == 0x04
    assert witness.key_id == hashlib.sha256(b"witness.example/w1\n\x04" + raw[1:]).digest()[:4]
    text = checkpoint_text("goldtrail.example/acme", 42, ROOT)
    line = cosign(text, wkey, 1679315147)
    assert line.startswith("— witness.example/w1 ") and line.endswith("\n")
    signature = base64.b64decode(line.split(" ")[-1])
    assert len(signature) == 4 + 8 + 64
    assert signature[:4] == witness.key_id
    assert int.from_bytes(signature[4:12], "big") == 1679315147
    message = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    witness.public_key.verify(signature[12:], message)  # the spec's signed message, exactly
    assert verify_cosignature(text, line, wvkey) == 1679315147
    assert verify_cosignature(text, line.rstrip("\n"), witness) == 1679315147
    # The cosigned note opens with the log's key, the witness's key, or both.
    note = sign_note(text, skey) + line
    assert open_note(note, vkey) == open_note(note, wvkey) == open_note(note, [vkey, wvkey]) == text


def test_cosignatures_that_must_be_refused():
    wkey, wvkey = generate_witness_key("witness.example/w1")
    text = checkpoint_text("goldtrail.example/acme", 42, ROOT)
    line = cosign(text, wkey, 1679315147)
    refused(verify_cosignature, checkpoint_text("goldtrail.example/acme", 43, ROOT), line, wvkey, match="not verify")
    refused(verify_cosignature, checkpoint_text("goldtrail.example/acme2", 42, ROOT), line, wvkey)
    raw = base64.b64decode(line.split(" ")[-1])
    moved = raw[:4] + (1679315148).to_bytes(8, "big") + raw[12:]
    other_time = line.rsplit(" ", 1)[0] + " " + base64.b64encode(moved).decode() + "\n"
    refused(verify_cosignature, text, other_time, wvkey, match="not verify")
    refused(verify_cosignature, text, line, generate_witness_key("witness.example/w1")[1], match="not by the witness")
    refused(verify_cosignature, text, line, generate_key("witness.example/w1")[1], match="not a witness key")
    refused(verify_cosignature, "not a checkpoint\n", line, wvkey)
    refused(cosign, text, generate_key("log.example")[0], 1, match="not a witness key")
    refused(cosign, text, wkey, -1)
    refused(cosign, text, wkey, 2**63)
    refused(cosign, "not a checkpoint\n", wkey, 1)
    refused(open_note, sign_note(text, generate_key("l.example")[0]) + other_time, wvkey, match="does not verify")


# Proof files


def test_proof_round_trip():
    skey, _ = generate_key("goldtrail.example/acme")
    checkpoint = sign_note(checkpoint_text("goldtrail.example/acme", 109482, ROOT), skey)
    path = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    text = proof_text(73894, path, checkpoint)
    assert text == (
        "c2sp.org/tlog-proof@v1\nindex 73894\n"
        + "".join(base64.b64encode(step).decode() + "\n" for step in path)
        + "\n"
        + checkpoint
    )
    assert parse_proof(text) == (None, 73894, path, checkpoint)
    with_extra = proof_text(0, [], checkpoint, b"age-v1.2.1-darwin-arm64.tar.gz")
    assert with_extra.startswith("c2sp.org/tlog-proof@v1\nextra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6\nindex 0\n\n")
    assert parse_proof(with_extra) == (b"age-v1.2.1-darwin-arm64.tar.gz", 0, [], checkpoint)
    assert parse_proof(proof_text(1, path[:1], checkpoint, b"")).extra == b""


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda t: t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"), "start"),
        (lambda t: t.replace("index 7\n", "index 07\n"), "leading"),
        (lambda t: t.replace("index 7\n", "index -7\n"), "leading"),
        (lambda t: t.replace("index 7\n", ""), "index line"),
        (lambda t: t.replace("index 7\n", "index 7\nextra AAAA\n"), "base64|32 bytes"),
        (lambda t: t.replace("\n\n", "\n", 1), "blank line|base64|32 bytes"),
        (lambda t: t.replace("index 7\n", "index 7\nAAAA\n"), "32 bytes"),
        (lambda t: t.replace("index 7\n", "index 7\nnot base64!\n"), "base64"),
        (lambda t: t.split("\n\n", 1)[0] + "\n\nnot a note\n", "blank line"),
    ],
)
def test_malformed_proofs_are_refused(change, match):
    skey, _ = generate_key("goldtrail.example/acme")
    checkpoint = sign_note(checkpoint_text("goldtrail.example/acme", 9, ROOT), skey)
    text = proof_text(7, [ROOT, ROOT], checkpoint)
    parse_proof(text)
    refused(parse_proof, change(text), match=match)
