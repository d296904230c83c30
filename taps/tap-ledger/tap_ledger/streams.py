"""One stream per canonical entity, each record a write planned for the configured system."""

from __future__ import annotations

import copy
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import typing as th
from singer_sdk.streams import Stream

from coulisse.model import MODELS, stream_schema

if TYPE_CHECKING:
    from collections.abc import Iterable

    from singer_sdk.helpers.types import Context

    from coulisse.ledger import Ledger, Operation
    from coulisse.model import Entity, Side

#: What the loader needs beyond the record: which write, and what to check before writing.
OPERATION_PROPERTIES = th.PropertiesList(
    th.Property(
        "operation_id",
        th.IntegerType,
        required=True,
        description="Ledger operation id; pass it to Ledger.record_applied once written.",
    ),
    th.Property(
        "operation",
        th.StringType(allowed_values=["create", "update", "deactivate", "cancel"]),
        required=True,
        description="The kind of write.",
    ),
    th.Property(
        "changed_fields",
        th.ArrayType(th.StringType),
        description="Fields to write; the other fields are context.",
    ),
    th.Property(
        "expected",
        th.ObjectType(additional_properties=True),
        description="The system's values of the changed fields when planned (check, then write).",
    ),
).to_dict()["properties"]

PAGE_SIZE = 1000


@cache
def _schema(entity: Entity) -> dict[str, Any]:
    schema = stream_schema(MODELS[entity], permissive=False)
    schema["properties"].update(copy.deepcopy(OPERATION_PROPERTIES))
    return schema


class OperationStream(Stream):
    """Pending writes of one entity for the configured system, oldest first."""

    entity: ClassVar[Entity]
    primary_keys: ClassVar[list[str]] = ["operation_id"]
    replication_key = None

    @property
    def schema(self) -> dict[str, Any]:
        """The strict canonical schema plus the operation's fields."""
        return _schema(self.entity)

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Read the ledger page by page (memory stays flat); claim the writes if configured."""
        del context
        ledger: Ledger = self._tap.ledger  # type: ignore[attr-defined]
        side: Side = self.config["side"]
        if self.config.get("claim"):
            worker = self.config.get("worker_id") or "tap-ledger"
            while operations := ledger.claim_operations(
                side, worker, entity=self.entity, limit=PAGE_SIZE
            ):
                yield from (self._record(operation) for operation in operations)
            return
        after = 0
        while operations := ledger.pending_operations(
            side, entity=self.entity, after_id=after, limit=PAGE_SIZE
        ):
            yield from (self._record(operation) for operation in operations)
            after = operations[-1].id

    def _record(self, operation: Operation) -> dict[str, Any]:
        # Through the canonical model: every field present, amounts as Decimal, dates as text.
        record = MODELS[self.entity].model_validate(operation.payload).plain()
        return {
            **record,
            "operation_id": operation.id,
            "operation": operation.action,
            "changed_fields": operation.changed_fields,
            "expected": operation.expected,
        }


class ClientsStream(OperationStream):
    """Clients to create or update."""

    name = "clients"
    entity = "client"


class ProductsStream(OperationStream):
    """Products to create or update."""

    name = "products"
    entity = "product"


class OrdersStream(OperationStream):
    """Orders to create, update or cancel."""

    name = "orders"
    entity = "order"


class InvoicesStream(OperationStream):
    """Invoices to create, update or cancel."""

    name = "invoices"
    entity = "invoice"
