"""The `gold_labels` read model: one row per label (deleted ones kept as tombstones, so ids are
never reused and a run stays known), written only by folding events."""

from __future__ import annotations

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from events.schema import UTCDateTime, metadata, stored_time
from events.types import NULL
from projections.fold import LabelState
from service.storage.store import SqlTransaction

gold_labels = sa.Table(
    "gold_labels",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("output_resource_name", sa.Text, nullable=False),
    sa.Column("text_value", sa.Text, nullable=True),
    # The exact JSON text of the object value; a JSON column type would reorder keys or round numbers.
    sa.Column("object_value", sa.Text, nullable=True),
    sa.Column("object_value_is_partial", sa.Boolean, nullable=True),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("deleted_by", sa.String(255), nullable=True),
    sa.Column("deleted_at", UTCDateTime, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_gold_labels_run_order", "account_id", "run_id", "created_at", "id"),
    # One live label per output resource of a run; deleted labels free the name.
    sa.Index(
        "uq_gold_labels_live_output",
        "account_id",
        "run_id",
        "output_resource_name",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)


def to_row(state: LabelState) -> dict:
    row = msgspec.structs.asdict(state)
    row["object_value"] = None if state.object_value == NULL else bytes(state.object_value).decode()
    return row


def from_row(row: sa.Row) -> LabelState:
    mapping = dict(row._mapping)
    value = mapping.pop("object_value")
    return LabelState(**mapping, object_value=NULL if value is None else msgspec.Raw(value.encode()))


FIELDS = LabelState.__struct_fields__
_OBJECT_VALUE = FIELDS.index("object_value")
_CURRENT = f"SELECT {', '.join(FIELDS)} FROM gold_labels WHERE account_id = :account_id AND id = :id"
_INSERT = f"INSERT INTO gold_labels ({', '.join(FIELDS)}) VALUES ({', '.join(':' + f for f in FIELDS)})"
_MOVE_ON = (
    "UPDATE gold_labels SET text_value = :text_value, object_value = :object_value,"
    " object_value_is_partial = :object_value_is_partial, updated_by = :updated_by, updated_at = :updated_at,"
    " deleted_by = :deleted_by, deleted_at = :deleted_at, version = :version, hash = :hash"
    " WHERE account_id = :account_id AND id = :id AND version = :previous"
)


def to_values(state: LabelState) -> list:
    """The row's values in `FIELDS` order, as a driver takes them (times as aware datetimes)."""
    values = list(msgspec.structs.astuple(state))
    values[_OBJECT_VALUE] = None if state.object_value == NULL else bytes(state.object_value).decode()
    return values


def from_values(values: tuple) -> LabelState:
    """A label from its row's values in `FIELDS` order, as a driver returns them."""
    row = dict(zip(FIELDS, values, strict=True))
    for name in ("created_at", "updated_at", "deleted_at"):
        row[name] = stored_time(row[name])
    if row["object_value_is_partial"] is not None:
        row["object_value_is_partial"] = bool(row["object_value_is_partial"])
    row["object_value"] = NULL if row["object_value"] is None else msgspec.Raw(row["object_value"].encode())
    return LabelState(**row)


async def current_for_write(tx: SqlTransaction, account_id: str, label_id: str) -> LabelState | None:
    """One label, tombstones included, as a write finds it: after the label's earlier queued writers are done
    (where the transaction queues), and before the transaction writes anything. A writer that got in
    between is caught by the guarded `save`, which then refuses the whole write."""
    await tx.queue(account_id, label_id)
    values = await tx.fetchone(_CURRENT, {"account_id": account_id, "id": label_id})
    return None if values is None else from_values(values)


async def save(tx: SqlTransaction, state: LabelState) -> None:
    """Write the state folded from one more event: insert on version 1, else move the row one version on."""
    if state.version == 1:
        await tx.execute(_INSERT, to_row(state))
        return
    # Exactly one row must move on, or the whole transaction (the event with it) is refused.
    await tx.execute_one(_MOVE_ON, {**to_row(state), "previous": state.version - 1})


async def load(conn: AsyncConnection, account_id: str, label_id: str, *, for_update: bool = False) -> LabelState | None:
    """One label, tombstones included; `for_update` locks the row until the transaction ends."""
    query = sa.select(gold_labels).where(gold_labels.c.account_id == account_id, gold_labels.c.id == label_id)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else from_row(row)


async def live_labels_of_run(conn: AsyncConnection, account_id: str, run_id: str) -> list[LabelState]:
    result = await conn.execute(
        sa.select(gold_labels)
        .where(
            gold_labels.c.account_id == account_id,
            gold_labels.c.run_id == run_id,
            gold_labels.c.deleted_at.is_(None),
        )
        .order_by(gold_labels.c.created_at, gold_labels.c.id)
    )
    return [from_row(row) for row in result]


async def run_is_known(conn: AsyncConnection, account_id: str, run_id: str) -> bool:
    query = sa.select(sa.literal(1)).where(gold_labels.c.account_id == account_id, gold_labels.c.run_id == run_id)
    return (await conn.execute(query.limit(1))).first() is not None


async def live_label_named(conn: AsyncConnection, account_id: str, run_id: str, name: str) -> str | None:
    """The id of the live label for this output resource, if there is one."""
    query = sa.select(gold_labels.c.id).where(
        gold_labels.c.account_id == account_id,
        gold_labels.c.run_id == run_id,
        gold_labels.c.output_resource_name == name,
        gold_labels.c.deleted_at.is_(None),
    )
    return (await conn.execute(query)).scalar_one_or_none()
