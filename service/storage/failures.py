"""The kinds of database failure a backend recognises in its driver's errors, for storage to act on."""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    UNREACHABLE = "the database cannot be reached, or is busy past waiting"
    DISCONNECTED = "the server closed this connection (as on a restart)"
    READ_ONLY = "the database takes no writes"
    LOST_RACE = "another writer changed the label first"
    NAME_TAKEN = "a live label already holds the output resource name"
    TOO_LATE = "the write reached the database after its deadline"
