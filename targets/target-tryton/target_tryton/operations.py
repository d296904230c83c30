"""A planned write as tap-ledger emits it (side ``erp``), whatever the kind of record.

Every stream target-tryton writes carries the canonical record and four keys about the write:
``operation_id`` (the ledger's, passed back with the outcome), ``operation`` (create, update,
deactivate, cancel), ``changed_fields`` (what to write; the rest is context) and ``expected``
(what the ERP held when the write was planned, checked before writing). Each sink reads its
records through a subclass of :class:`PlannedWrite`, which only says how its record is named.

>>> class Thing(PlannedWrite):
...     noun, crm_noun, erp_noun = "thing", "CRM", "row"
>>> thing = Thing.from_record({"operation_id": 3, "operation": "create", "crm_id": "a1",
...                            "name": "Dupont", "changed_fields": ["name"]})
>>> thing.label, thing.values["name"], thing.changed_fields
("thing 'Dupont' (CRM a1, operation 3)", 'Dupont', ('name',))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

#: The keys tap-ledger adds to a canonical record.
OPERATION_KEYS = frozenset({"operation_id", "operation", "changed_fields", "expected"})


class TrytonApplyError(Exception):
    """The run cannot go on: the message names the records, the cause and what to do."""


class RefusedError(Exception):
    """Tryton cannot hold this record as it is; the message is for a clerk."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """One planned write: the record as it should be in Tryton, and what to check first."""

    id: int
    action: str
    values: dict[str, Any]
    changed_fields: tuple[str, ...]
    expected: dict[str, Any] | None

    #: How messages name the record ("client"), its CRM id ("CRM deal") and its Tryton row.
    noun: ClassVar[str] = "record"
    crm_noun: ClassVar[str] = "CRM"
    erp_noun: ClassVar[str] = "row"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Read a tap-ledger record; one without an operation id is not a planned write."""
        operation_id = record.get("operation_id")
        if operation_id is None:
            msg = (
                f"{cls.unplanned_label(record)} has no operation_id: target-tryton applies the "
                "writes planned in the ledger, fed by tap-ledger with side erp"
            )
            raise TrytonApplyError(msg)
        values = {
            key: value
            for key, value in record.items()
            if key not in OPERATION_KEYS and not key.startswith("_sdc_")
        }
        return cls(
            id=int(operation_id),
            action=str(record.get("operation") or "update"),
            values=values,
            changed_fields=tuple(record.get("changed_fields") or ()),
            expected=dict(record["expected"]) if record.get("expected") is not None else None,
        )

    @classmethod
    def unplanned_label(cls, record: Mapping[str, Any]) -> str:
        """How a record that is not a planned write is named: ``client 'A' (CRM a1)``."""
        return f"{cls.noun} {record.get('name')!r} ({cls.crm_noun} {record.get('crm_id')})"

    @property
    def crm_id(self) -> str | None:
        """The record's id in the CRM."""
        value = self.values.get("crm_id")
        return str(value) if value else None

    @property
    def erp_id(self) -> int | None:
        """The record's id in Tryton (None for a create)."""
        value = self.values.get("erp_id")
        return int(value) if value not in {None, ""} else None

    @property
    def name(self) -> str | None:
        """What people call the record (a client's or a deal's name)."""
        value = self.values.get("name")
        return None if value is None else str(value)

    @property
    def label(self) -> str:
        """How messages name the write: ``client 'Dupont SARL' (CRM a1, operation 12)``."""
        where = f"{self.crm_noun} {self.crm_id}, " if self.crm_id else ""
        if self.erp_id is not None:
            where += f"{self.erp_noun} {self.erp_id}, "
        return f"{self.noun} {self.name!r} ({where}operation {self.id})"


def describe(operations: Sequence[PlannedWrite], limit: int = 3) -> str:
    """Name a few writes of a batch: ``client 'A' (...), client 'B' (...) and 18 more``."""
    shown = ", ".join(operation.label for operation in operations[:limit])
    more = len(operations) - limit
    return f"{shown} and {more} more" if more > 0 else shown


def operations_in(records: Iterable[Mapping[str, Any]]) -> Iterator[int]:
    """The operation ids of ``records`` (for messages about writes left pending)."""
    for record in records:
        if record.get("operation_id") is not None:
            yield int(record["operation_id"])


__all__ = [
    "OPERATION_KEYS",
    "PlannedWrite",
    "RefusedError",
    "TrytonApplyError",
    "describe",
    "operations_in",
]
