"""The log's Merkle tree is RFC 9162 §2.1 exactly: checked against a reference written here from the RFC's
own definitions (MTH, PATH, PROOF/SUBPROOF over a list of entries), against Certificate Transparency's
published vectors, and by verification refusing every altered proof."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_path,
    inclusion_path,
    leaf_hash,
    node_hash,
    nodes_from_leaves,
    nodes_needed,
    root,
    verify_consistency,
    verify_inclusion,
)

# The reference, straight from RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1, over D[lo:hi] of the entries below.

LARGEST = 5000
ENTRIES = [f"entry {i}".encode() for i in range(LARGEST)]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def below(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def mth(lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + ENTRIES[lo])
    k = below(n)
    return sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi))


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = below(n)
    if m < k:
        return [*ref_path(m, lo, lo + k), mth(lo + k, hi)]
    return [*ref_path(m - k, lo + k, hi), mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if b else [mth(lo, hi)]
    k = below(n)
    if m <= k:
        return [*ref_subproof(m, lo, lo + k, b), mth(lo + k, hi)]
    return [*ref_subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    return ref_subproof(m, 0, n, True)


LEAVES = [leaf_hash(entry) for entry in ENTRIES]
ALL_NODES = nodes_from_leaves(LEAVES)


def tree_of(size: int):
    """A node reader for the first `size` leaves that refuses any node outside them."""

    def node(level: int, index: int) -> bytes:
        assert level >= 0 and index >= 0 and (index + 1) << level <= size, (level, index, size)
        return ALL_NODES(level, index)

    return node


SMALL = 64

# Certificate Transparency's test vectors (RFC 6962 reference suite), used by every CT implementation.
CT_ENTRIES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 8): CT_INCLUSION[(0, 8)],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def test_hashes_are_the_rfcs():
    assert EMPTY_ROOT == sha256(b"") == root(0, ALL_NODES)
    assert leaf_hash(b"abc") == sha256(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == sha256(b"\x01" + b"L" * 32 + b"R" * 32)


def test_certificate_transparency_vectors():
    node = nodes_from_leaves([leaf_hash(entry) for entry in CT_ENTRIES])
    assert [root(size, node).hex() for size in range(1, 9)] == CT_ROOTS
    for (index, size), path in CT_INCLUSION.items():
        assert [step.hex() for step in inclusion_path(index, size, node)] == path
        verify_inclusion(leaf_hash(CT_ENTRIES[index]), index, size, [bytes.fromhex(h) for h in path], root(size, node))
    for (old, new), path in CT_CONSISTENCY.items():
        assert [step.hex() for step in consistency_path(old, new, node)] == path
        verify_consistency(old, new, [bytes.fromhex(h) for h in path], root(old, node), root(new, node))


def test_every_root_path_and_proof_of_small_trees_is_the_references():
    for size in range(1, SMALL + 1):
        node = tree_of(size)
        assert root(size, node) == mth(0, size)
        for index in range(size):
            path = inclusion_path(index, size, node)
            assert path == ref_path(index, 0, size), (index, size)
            verify_inclusion(LEAVES[index], index, size, path, mth(0, size))
        for old in range(1, size + 1):
            proof = consistency_path(old, size, node)
            assert proof == ref_proof(old, size), (old, size)
            verify_consistency(old, size, proof, mth(0, old), mth(0, size))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_large_trees_agree_with_the_reference(data):
    size = data.draw(st.integers(1, LARGEST), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old size")
    node = tree_of(size)
    assert root(size, node) == mth(0, size)
    path = inclusion_path(index, size, node)
    assert path == ref_path(index, 0, size)
    verify_inclusion(LEAVES[index], index, size, path, mth(0, size))
    proof = consistency_path(old, size, node)
    assert proof == ref_proof(old, size)
    verify_consistency(old, size, proof, mth(0, old), mth(0, size))


def flipped(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def refused(function, *args) -> str:
    with pytest.raises(ProofError) as caught:
        function(*args)
    return str(caught.value)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 1023])
def test_inclusion_verification_refuses_anything_altered(size):
    top = mth(0, size)
    for index in sorted({0, size // 2, size - 1}):
        path = ref_path(index, 0, size)
        leaf = LEAVES[index]
        verify_inclusion(leaf, index, size, path, top)
        for bit in (0, 7, 100, 255):
            refused(verify_inclusion, flipped(leaf, bit), index, size, path, top)
            refused(verify_inclusion, leaf, index, size, path, flipped(top, bit))
            for step in range(len(path)):
                changed = [*path]
                changed[step] = flipped(path[step], bit)
                refused(verify_inclusion, leaf, index, size, changed, top)
        for other in {0, index - 1, index + 1, size - 1, size, size + 5} - {index}:
            if other >= 0:
                refused(verify_inclusion, leaf, other, size, path, top)
        for other_size in {size - 1, size + 1, 2 * size, index} - {size}:
            # Against another size's own root. (The same root with another size may pass: a path for leaf 0
            # of 3 also climbs a tree of 4 to the root of 3. The signed checkpoint binds size and root.)
            if other_size > 0:
                refused(verify_inclusion, leaf, index, other_size, path, mth(0, other_size))
        if path:
            assert "shorter" in refused(verify_inclusion, leaf, index, size, path[:-1], top)
        assert "longer" in refused(verify_inclusion, leaf, index, size, [*path, top], top)
        refused(verify_inclusion, leaf, index, size, [top, *path], top)
        assert "32 bytes" in refused(verify_inclusion, leaf, index, size, [*path[:-1], b"short"], top)


@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 3), (3, 7), (4, 8), (6, 8), (7, 64), (37, 100), (512, 1023)])
def test_consistency_verification_refuses_anything_altered(old, new):
    old_root, new_root = mth(0, old), mth(0, new)
    proof = ref_proof(old, new)
    verify_consistency(old, new, proof, old_root, new_root)
    refused(verify_consistency, old, new, proof, new_root, old_root)
    for bit in (0, 9, 255):
        refused(verify_consistency, old, new, proof, flipped(old_root, bit), new_root)
        refused(verify_consistency, old, new, proof, old_root, flipped(new_root, bit))
        for step in range(len(proof)):
            changed = [*proof]
            changed[step] = flipped(proof[step], bit)
            refused(verify_consistency, old, new, changed, old_root, new_root)
    # Other sizes, each with its own root (as in inclusion, a size alone is not bound by the proof).
    for other_old in {old - 1, old + 1} - {0, old}:
        if other_old <= new:
            refused(verify_consistency, other_old, new, proof, mth(0, other_old), new_root)
    refused(verify_consistency, old, new + 1, proof, old_root, mth(0, new + 1))
    refused(verify_consistency, old, new, proof[:-1], old_root, new_root)
    refused(verify_consistency, old, new, [*proof, new_root], old_root, new_root)
    refused(verify_consistency, old, new, [], old_root, new_root)
    refused(verify_consistency, new, old, proof, new_root, old_root)


def test_consistency_of_equal_and_empty_trees():
    verify_consistency(5, 5, [], mth(0, 5), mth(0, 5))
    refused(verify_consistency, 5, 5, [], mth(0, 5), mth(0, 6))
    refused(verify_consistency, 5, 5, [mth(0, 5)], mth(0, 5), mth(0, 5))
    verify_consistency(0, 9, [], EMPTY_ROOT, mth(0, 9))
    refused(verify_consistency, 0, 9, [mth(0, 9)], EMPTY_ROOT, mth(0, 9))
    refused(verify_consistency, 0, 9, [], mth(0, 1), mth(0, 9))
    assert consistency_path(0, 9, tree_of(9)) == [] == consistency_path(9, 9, tree_of(9))


def test_impossible_arguments_are_refused():
    with pytest.raises(ValueError):
        inclusion_path(3, 3, tree_of(3))
    with pytest.raises(ValueError):
        consistency_path(4, 3, tree_of(4))
    with pytest.raises(ValueError):
        root(-1, tree_of(1))
    refused(verify_inclusion, LEAVES[0], 0, 0, [], EMPTY_ROOT)
    refused(verify_inclusion, LEAVES[0], -1, 2, [], EMPTY_ROOT)
    refused(verify_inclusion, LEAVES[0], True, 2, [LEAVES[1]], mth(0, 2))


def reads_of(function, *args: int) -> list[tuple[int, int]]:
    read: list[tuple[int, int]] = []

    def node(level: int, index: int) -> bytes:
        read.append((level, index))
        return ALL_NODES(level, index)

    function(*args, node)
    return read


def only(allowed: list[tuple[int, int]]):
    permitted = set(allowed)

    def node(level: int, index: int) -> bytes:
        assert (level, index) in permitted, f"node ({level}, {index}) was not listed"
        return ALL_NODES(level, index)

    return node


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_nodes_needed_are_exactly_the_nodes_read(data):
    size = data.draw(st.integers(1, LARGEST), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(0, size), label="old size")
    for function, args in (
        (root, (size,)),
        (inclusion_path, (index, size)),
        (consistency_path, (old, size)),
        (CompactRange.resume, (size,)),
    ):
        needed = nodes_needed(function, *args)
        assert len(needed) == len(set(needed))
        assert set(needed) == set(reads_of(function, *args))
        assert all((node_index + 1) << level <= size for level, node_index in needed)
        with_only_those = function(*args, only(needed))
        expected = function(*args, ALL_NODES)
        if isinstance(expected, CompactRange):
            with_only_those, expected = with_only_those.root(), expected.root()
        assert with_only_those == expected


def test_a_compact_range_gives_every_roots_and_the_nodes_it_completes():
    tree = CompactRange()
    assert tree.root() == EMPTY_ROOT and tree.size == 0
    stored: dict[tuple[int, int], bytes] = {}
    for size in range(1, 300):
        for level, index, digest in tree.append(LEAVES[size - 1]):
            assert digest == ALL_NODES(level, index)
            stored[(level, index)] = digest
        assert tree.size == size
        assert tree.root() == mth(0, size)
        resumed = CompactRange.resume(size, lambda level, index: stored[(level, index)])
        assert resumed.root() == tree.root()
    # Every complete subtree of 299 leaves was handed out exactly once.
    assert set(stored) == {(level, i) for level in range(9) for i in range(299 >> level)}
    tree.extend(LEAVES[299:1000])
    assert tree.root() == mth(0, 1000)
    with pytest.raises(ValueError):
        tree.append(b"short")
