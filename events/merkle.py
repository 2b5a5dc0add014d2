"""The Merkle tree of an account's log, exactly as RFC 9162 §2.1: tree hashes, inclusion and consistency
proofs, their verification, and an incremental tree for integrators and verifiers. Standard library only.

A tree is read through a callback `node(level, index)` that gives the hash of the complete subtree of
2**level leaves starting at leaf index * 2**level (level 0: the leaf hashes). Which nodes a function reads
depends only on the sizes and indexes it is given, never on hash values, so `nodes_needed` can list them
all beforehand and a caller can fetch them in one query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Node = Callable[[int, int], bytes]
"""node(level, index) -> the 32-byte hash of leaves [index * 2**level, (index + 1) * 2**level)."""


class ProofError(ValueError):
    """A proof does not verify, or its arguments are impossible; the message says which check failed."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_hash(start: int, count: int, node: Node) -> bytes:
    """MTH of leaves [start, start + count), count >= 1, where start is a multiple of the largest power of two
    not above count (true of every range RFC 9162's recursion visits). The range is a run of complete
    subtrees, largest first; MTH folds them from the right."""
    parts = []
    while count:
        level = count.bit_length() - 1
        parts.append(node(level, start >> level))
        start += 1 << level
        count -= 1 << level
    digest = parts.pop()
    while parts:
        digest = node_hash(parts.pop(), digest)
    return digest


def _check_size(name: str, value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")


def root(size: int, node: Node) -> bytes:
    """MTH of the first `size` leaves."""
    _check_size("size", size)
    return EMPTY_ROOT if size == 0 else _range_hash(0, size, node)


def inclusion_path(index: int, size: int, node: Node) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: sibling hashes from the leaf up to the root's child."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    path: list[bytes] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            path.append(_range_hash(start + k, n - k, node))
            n = k
        else:
            path.append(_range_hash(start, k, node))
            start, n, m = start + k, n - k, m - k
    path.reverse()
    return path


def consistency_path(old_size: int, new_size: int, node: Node) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1; empty when old_size is 0 or equals new_size."""
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    path: list[bytes] = []
    start, n, m, whole = 0, new_size, old_size, True
    while m != n:
        k = _split(n)
        if m <= k:
            path.append(_range_hash(start + k, n - k, node))
            n = k
        else:
            path.append(_range_hash(start, k, node))
            start, n, m, whole = start + k, n - k, m - k, False
    if not whole:
        path.append(_range_hash(start, n, node))
    path.reverse()
    return path


def nodes_needed(function: Callable[..., Any], *args: int) -> list[tuple[int, int]]:
    """The (level, index) nodes `function(*args, node)` reads, in reading order without repeats; e.g.
    `nodes_needed(inclusion_path, 5, 13)`. Works for root, inclusion_path, consistency_path and
    CompactRange.resume, whose reads depend only on their integer arguments."""
    seen: dict[tuple[int, int], None] = {}

    def record(level: int, index: int) -> bytes:
        seen[(level, index)] = None
        return EMPTY_ROOT

    function(*args, record)
    return list(seen)


def _check_hash(name: str, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be {HASH_SIZE} bytes")


def _check_path(path: Any) -> list[bytes]:
    if not isinstance(path, list | tuple):
        raise ProofError("the proof must be a list of hashes")
    for number, step in enumerate(path):
        _check_hash(f"proof hash {number}", step)
    return list(path)


def _proof_size(name: str, value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ProofError(f"{name} must be a non-negative int, got {value!r}")


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: `leaf` (a leaf hash, see `leaf_hash`) is at `index` in the tree of `size` leaves
    whose root is `root`. Raises ProofError naming the failed check."""
    _check_hash("the leaf hash", leaf)
    _check_hash("the root hash", root)
    _proof_size("the leaf index", index)
    _proof_size("the tree size", size)
    steps = _check_path(path)
    if index >= size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in steps:
        if sn == 0:
            raise ProofError(f"the inclusion proof is longer than a tree of size {size} needs ({len(steps)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"the inclusion proof is shorter than leaf {index} of a tree of size {size} needs ({len(steps)} hashes)"
        )
    if r != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root of the tree of size {size}")


def verify_consistency(old_size: int, new_size: int, path: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """RFC 9162 §2.1.4.2: the tree of `new_size` leaves with root `new_root` extends the tree of `old_size`
    leaves with root `old_root`. Equal sizes need an empty proof and equal roots; from the empty tree, an
    empty proof and the empty root. Raises ProofError naming the failed check."""
    _check_hash("the old root hash", old_root)
    _check_hash("the new root hash", new_root)
    _proof_size("the old size", old_size)
    _proof_size("the new size", new_size)
    steps = _check_path(path)
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        if steps:
            raise ProofError("a consistency proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ProofError("the old root is not the root of the empty tree")
        return
    if old_size == new_size:
        if steps:
            raise ProofError("a consistency proof between trees of the same size must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not steps:
        raise ProofError(f"the consistency proof from size {old_size} to {new_size} is empty")
    if old_size & (old_size - 1) == 0:  # the old tree is a complete subtree: its root is the proof's start
        steps.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = steps[0]
    for c in steps[1:]:
        if sn == 0:
            raise ProofError(f"the consistency proof from size {old_size} to {new_size} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"the consistency proof from size {old_size} to {new_size} is too short")
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root (size {new_size})")


class CompactRange:
    """The tree's right edge: one hash per complete subtree of the binary decomposition of the size, largest
    first. Appending a leaf hash and reading the root cost O(log n) time and memory."""

    __slots__ = ("_edge", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._edge: list[bytes] = []

    @classmethod
    def resume(cls, size: int, node: Node) -> CompactRange:
        """The range of a tree of `size` leaves, read from its stored nodes (see `nodes_needed`)."""
        _check_size("size", size)
        tree = cls()
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                tree._edge.append(node(level, start >> level))
                start += 1 << level
        tree._size = size
        return tree

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the next leaf hash; returns the nodes it completed, (level, index, hash), the leaf first,
        for a caller that stores them."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
        index, level, digest = self._size, 0, leaf
        completed = [(0, index, digest)]
        while index & 1:
            digest = node_hash(self._edge.pop(), digest)
            index >>= 1
            level += 1
            completed.append((level, index, digest))
        self._edge.append(digest)
        self._size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append each leaf hash in turn (without listing the nodes completed: a verifier adds millions)."""
        edge, size = self._edge, self._size
        try:
            for leaf in leaves:
                if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
                    raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
                digest, index = leaf, size
                while index & 1:
                    digest = hashlib.sha256(b"\x01" + edge.pop() + digest).digest()  # node_hash(left, digest)
                    index >>= 1
                edge.append(digest)
                size += 1
        finally:
            self._size = size

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        digest = self._edge[-1]
        for left in reversed(self._edge[:-1]):
            digest = node_hash(left, digest)
        return digest


def nodes_from_leaves(leaves: Sequence[bytes]) -> Node:
    """A `node` callback over an in-memory list of leaf hashes (for tests and small trees): every complete
    subtree is computed once, up front."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def node(level: int, index: int) -> bytes:
        if level < 0 or index < 0 or level >= len(levels) or index >= len(levels[level]):
            raise LookupError(f"node ({level}, {index}) is not a complete subtree of {len(leaves)} leaves")
        return levels[level][index]

    return node
