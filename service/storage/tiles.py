"""How an account's Merkle tree is stored: tiles of 256 node hashes, as in C2SP tlog-tiles.

A tile at tile level L holds the hashes of complete nodes at tree level 8·L, 256 consecutive ones (tile
`index` covers nodes 256·index to 256·index + 255). Level 0 tiles hold leaf hashes. A node at a level
between two tile levels is computed from the tile below it, hashing at most 255 pairs. Only the rightmost
tile of each level is partial: it grows as leaves are appended, and its existing hashes never change, so
a proof at any older tree size reads the same hashes. Any node, and so any proof, needs a few tiles.

Pure: storage reads and writes the tiles (sql.py and the backends); nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Iterable

from events.merkle import leaf_hash, node_hash

HEIGHT = 8
WIDTH = 1 << HEIGHT
HASH = 32

TileKey = tuple[int, int]  # (tile level, tile index)


def tile_of(level: int, index: int) -> tuple[TileKey, int, int]:
    """The tile holding what node (level, index) is made of, the offset of its first hash there, and how many
    of that tile's hashes it spans (a power of two up to 128, or 1 when the node is in the tile itself)."""
    tile_level, below = divmod(level, HEIGHT)
    start = index << below
    return (tile_level, start >> HEIGHT), start % WIDTH, 1 << below


def node_in(tiles: dict[TileKey, bytes], level: int, index: int) -> bytes:
    """The hash of complete node (level, index), from the tiles that hold it."""
    key, offset, span = tile_of(level, index)
    hashes = tiles[key]
    if (offset + span) * HASH > len(hashes):
        raise KeyError(f"node ({level}, {index}) is not complete in the stored tiles")
    row = [hashes[(offset + n) * HASH : (offset + n + 1) * HASH] for n in range(span)]
    while len(row) > 1:
        row = [node_hash(row[n], row[n + 1]) for n in range(0, len(row), 2)]
    return row[0]


def tiles_for(nodes: Iterable[tuple[int, int]]) -> set[TileKey]:
    return {tile_of(level, index)[0] for level, index in nodes}


def right_edge(size: int) -> list[TileKey]:
    """The rightmost tile of each tile level of a tree of `size` leaves that holds any hash: the only tiles
    appending leaves changes, and all that the root at this size is made of."""
    edge, count, level = [], size, 0  # count: complete nodes at tree level HEIGHT·level
    while count:
        if count % WIDTH:
            edge.append((level, count >> HEIGHT))
        count >>= HEIGHT
        level += 1
    return edge


def append(size: int, tiles: dict[TileKey, bytes], entries: Iterable[bytes]) -> tuple[int, dict[TileKey, bytes]]:
    """Append leaves (each an entry: here an event's 32-byte chain hash) to a tree of `size` leaves whose
    right-edge tiles are in `tiles`. Returns the new size and every tile that changed (whole)."""
    changed: dict[TileKey, bytearray] = {}

    def add(level: int, count: int, digest: bytes) -> None:
        """Put complete node number `count` of tree level HEIGHT·level; roll a full tile up one level."""
        key = (level, count >> HEIGHT)
        tile = changed.get(key)
        if tile is None:
            tile = changed[key] = bytearray(tiles.get(key, b""))
        tile += digest
        if len(tile) == WIDTH * HASH:
            row = [bytes(tile[n * HASH : (n + 1) * HASH]) for n in range(WIDTH)]
            while len(row) > 1:
                row = [node_hash(row[n], row[n + 1]) for n in range(0, len(row), 2)]
            add(level + 1, count >> HEIGHT, row[0])

    for entry in entries:
        add(0, size, leaf_hash(entry))
        size += 1
    return size, {key: bytes(tile) for key, tile in changed.items()}
