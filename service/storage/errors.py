"""What storage tells its callers when something goes wrong, whichever backend or driver raised it."""

from __future__ import annotations


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; the request changed nothing."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The database takes no writes (a hot standby, or a read-only default): nothing was written."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the database is read-only (a hot standby?): it takes no writes; point goldtrail at the primary"
            + (f" ({detail})" if detail else "")
        )


class StaleConnection(DatabaseUnavailable):
    """The database had dropped this pooled connection (it restarted) before anything was committed:
    running the same work again on a fresh connection is safe, and is what callers do."""


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection was lost while COMMIT was on its way: the write may or may not have happened."""


class LostRace(Exception):
    """Another writer changed the label between this write's read and its commit (its version is taken, or
    the read-model row moved on): nothing of this write was committed, and running it again is safe."""


class OutputResourceTaken(Exception):
    """A live label of the run already holds this output resource name: nothing was written."""
