"""target-tryton: the apply step's loader for the ERP, fed by tap-ledger (side erp)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TargetCapabilities,
)
from singer_sdk.target_base import Target

from coulisse.ledger import Ledger
from coulisse.model import STREAMS
from coulisse.tryton.rpc import TrytonClient
from target_tryton.connector import PartyConnector
from target_tryton.invoices import InvoicesSink
from target_tryton.orders import OrdersSink
from target_tryton.pending import LeftPendingSink
from target_tryton.sinks import ClientsSink

if TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class UnknownStreamError(ValueError):
    """A stream that is not one of the canonical ones."""


class TargetTryton(Target):
    """Applies the writes planned for the ERP to Tryton and records each outcome.

    ``clients`` become parties, ``orders`` sales and ``invoices`` customer drafts; writes of
    the other canonical streams (``products``: the catalogue is the ERP's) stay pending in the
    ledger, and the log says which.
    """

    name = "target-tryton"
    default_sink_class = ClientsSink

    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
        TargetCapabilities.VALIDATE_RECORDS,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "url",
            th.StringType,
            required=True,
            title="Tryton URL",
            description="Tryton's base URL, e.g. http://127.0.0.1:8610 (JSON-RPC is /<db>/rpc/).",
        ),
        th.Property(
            "database",
            th.StringType,
            required=True,
            title="Database",
            description="The Tryton database holding the company's parties.",
        ),
        th.Property(
            "username",
            th.StringType,
            required=True,
            title="Integration user",
            description=(
                "Login of Tryton's integration user (party access for clients, sales for "
                "orders, customer invoices for invoices); its session is renewed when it "
                "expires."
            ),
        ),
        th.Property(
            "password",
            th.StringType,
            required=True,
            secret=True,
            title="Integration user's password",
            description="Password of the integration user (from TRYTON_PASSWORD, never a file).",
        ),
        th.Property(
            "ledger_url",
            th.StringType,
            secret=True,
            title="Ledger URL",
            description=(
                "SQLAlchemy URL of the ledger (sqlite:///path or postgresql://...), where each "
                "write's outcome is recorded; default $COULISSE_LEDGER_URL."
            ),
        ),
        th.Property(
            "batch_size",
            th.IntegerType,
            default=100,
            title="Records per batch",
            description=(
                "Clients, orders or invoices applied together: each batch costs a handful of "
                "Tryton calls (one create, one write, a few reads) whatever its size, and one "
                "refused record makes Tryton refuse its whole call (then retried one by one)."
            ),
        ),
        th.Property(
            "timeout",
            th.NumberType,
            default=30,
            title="Call timeout (seconds)",
            description=(
                "How long to wait for one Tryton answer. A write that times out is not sent "
                "again blindly: the next run looks for it first."
            ),
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=4,
            title="Retries when Tryton is unavailable",
            description=(
                "Retries, with growing delays, of a call refused with 429/5xx or unanswered."
            ),
        ),
        th.Property(
            "confirm_orders",
            th.BooleanType,
            default=True,
            title="Confirm new sales",
            description=(
                "Confirm each sale made from a won deal right after quoting it (Tryton then "
                "makes its invoice and shipments as the sale's methods say). Off: new sales "
                "stay quotations for a clerk to confirm; their lines are frozen either way."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Connect lazily: ``--about`` and ``--version`` need neither Tryton nor the ledger."""
        super().__init__(*args, **kwargs)
        # One Tryton session serves every sink: drain them one at a time.
        self.max_parallelism = 1
        self._ledger: Ledger | None = None
        self._connector: PartyConnector | None = None

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and migrated) on first use."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.config.get("ledger_url"))
        return self._ledger

    @property
    def connector(self) -> PartyConnector:
        """The Tryton connection, logged in on the first call."""
        if self._connector is None:
            client = TrytonClient(
                self.config["url"],
                self.config["database"],
                self.config["username"],
                self.config["password"],
                timeout=float(self.config.get("timeout", 30)),
                max_retries=int(self.config.get("max_retries", 4)),
            )
            self._connector = PartyConnector(client)
        return self._connector

    @connector.setter
    def connector(self, connector: PartyConnector) -> None:
        self._connector = connector

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """Clients, orders and invoices are written; other canonical streams are left pending;
        other streams are refused."""
        if stream_name == "clients":
            return ClientsSink
        if stream_name == "orders":
            return OrdersSink
        if stream_name == "invoices":
            return InvoicesSink
        if stream_name in STREAMS:
            return LeftPendingSink
        msg = (
            f"stream {stream_name!r} is not a canonical stream; expected one of "
            f"{', '.join(sorted(STREAMS))} (tap-ledger with side erp emits them)"
        )
        raise UnknownStreamError(msg)

    def process_endofpipe(self) -> None:
        """Drain every batch (STATE follows), then close the Tryton session and the ledger."""
        try:
            super().process_endofpipe()
        finally:
            # No logout after a failure: Tryton may be the thing that failed, and an unused
            # session simply expires.
            if self._ledger is not None:
                self._ledger.close()
        if self._connector is not None:
            self._connector.client.close()


if __name__ == "__main__":
    TargetTryton.cli()
