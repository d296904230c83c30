"""tap-ledger: the apply step's extractor; its output feeds target-bottlecrm or target-tryton."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk import Tap
from singer_sdk import typing as th

from coulisse.ledger import Ledger
from tap_ledger.streams import ClientsStream, InvoicesStream, OrdersStream, ProductsStream

if TYPE_CHECKING:
    from singer_sdk.streams import Stream


class TapLedger(Tap):
    """Emits the writes planned for one system, clients and products before orders and invoices."""

    name = "tap-ledger"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "side",
            th.StringType(allowed_values=["crm", "erp"]),
            required=True,
            title="System",
            description="The system whose pending writes to emit: crm or erp.",
        ),
        th.Property(
            "ledger_url",
            th.StringType,
            title="Ledger URL",
            description=(
                "SQLAlchemy URL of the ledger (sqlite:///path or postgresql://...); "
                "default $COULISSE_LEDGER_URL, else coulisse-ledger.db."
            ),
        ),
        th.Property(
            "claim",
            th.BooleanType,
            default=False,
            title="Claim the writes",
            description=(
                "Mark each emitted write as taken by this worker, so that several apply "
                "workers never get the same one (a lost claim is handed out again later)."
            ),
        ),
        th.Property(
            "worker_id",
            th.StringType,
            title="Worker name",
            description="Who claims the writes (host and process), shown in the ledger.",
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Open the ledger lazily: discovery needs no database."""
        self._ledger: Ledger | None = None
        super().__init__(*args, **kwargs)

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and migrated) on first use."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.config.get("ledger_url"))
        return self._ledger

    @property
    def streams(self) -> dict[str, Stream]:
        """The streams in dependency order; the SDK sorts them by name (invoices first)."""
        loaded = super().streams
        order = [ClientsStream.name, ProductsStream.name, OrdersStream.name, InvoicesStream.name]
        ordered = {name: loaded[name] for name in order if name in loaded}
        self._streams = ordered
        return ordered

    def discover_streams(self) -> list[Stream]:
        """The canonical streams, in dependency order (the order they are emitted in)."""
        return [
            ClientsStream(self),
            ProductsStream(self),
            OrdersStream(self),
            InvoicesStream(self),
        ]


if __name__ == "__main__":
    TapLedger.cli()
