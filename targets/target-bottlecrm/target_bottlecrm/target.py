"""target-bottlecrm: the apply step's loader for the CRM; tap-ledger (side crm) feeds it."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities
from singer_sdk.target_base import Target

from coulisse.bottlecrm.client import BottleCrmClient
from coulisse.ledger import Ledger
from coulisse.model import STREAMS
from target_bottlecrm.connector import SCOPES, AccountsConnector
from target_bottlecrm.invoices import InvoicesSink
from target_bottlecrm.orders import OrdersSink
from target_bottlecrm.products import ProductsSink
from target_bottlecrm.sinks import ClientsSink, PendingSink

if TYPE_CHECKING:
    from singer_sdk.sinks import Sink


class UnknownStreamError(ValueError):
    """A stream that is not one of the canonical ones."""


class TargetBottleCRM(Target):
    """Writes the client operations planned for the CRM into BottleCRM, then tells the ledger."""

    name = "target-bottlecrm"
    default_sink_class = ClientsSink
    # msgspec parses numbers straight into Decimal: amounts never pass through float.
    message_reader_class = MsgSpecReader

    # No flattening (``expected`` is an object) and no schema validation: each record is read
    # through the canonical model, and a bad one is refused alone instead of stopping the run.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.StringType,
            required=True,
            title="API URL",
            description="BottleCRM's base URL, e.g. http://127.0.0.1:8600 (its API is /api/).",
        ),
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            title="Personal access token",
            description=(
                f"A bcrm_pat_... token of an org-admin profile with the {SCOPES} scopes "
                "(BottleCRM's write scope does not include read)."
            ),
        ),
        th.Property(
            "ledger_url",
            th.StringType,
            secret=True,
            title="Ledger URL",
            description=(
                "SQLAlchemy URL of the ledger the operations come from and their outcomes go "
                "to (sqlite:///path or postgresql://...); default $COULISSE_LEDGER_URL, else "
                "coulisse-ledger.db."
            ),
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=5000,
            title="Page size",
            description=(
                "Accounts per list request when the accounts are read at the start of each "
                "batch. BottleCRM puts the organisation's whole contact, lead and user lists "
                "on every page, so few large pages are cheapest."
            ),
        ),
        th.Property(
            "timeout",
            th.NumberType,
            default=120,
            title="Request timeout",
            description=(
                "Seconds before a CRM request is abandoned and retried. A page of 5,000 accounts "
                "is about 7 MB and takes BottleCRM 25 to 40 s to build at 8,000 accounts."
            ),
        ),
        th.Property(
            "parallel_writes",
            th.IntegerType,
            default=6,
            title="Parallel writes",
            description=(
                "Updates and deactivations sent at once (creates always go one by one, for the "
                "CRM's unique-name rule). Keep it at or below the CRM's worker threads."
            ),
        ),
        th.Property(
            "followup_tasks",
            th.BooleanType,
            default=True,
            title="Follow-up tasks",
            description=(
                "Give the advisor of an account with an overdue ERP invoice one CRM task to "
                "follow it up (marked with the Task custom field coulisse_ref, never created "
                "twice). Needs the tasks:write scope."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Open the ledger and the CRM lazily: ``--about`` and ``--version`` need neither."""
        super().__init__(*args, **kwargs)
        # One stream after the other: an order must never be written before its client.
        self.max_parallelism = 1
        self._ledger: Ledger | None = None
        self._connector: AccountsConnector | None = None
        self._run_id: int | None = None
        self.outcomes: Counter[str] = Counter()

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and migrated) on first use; the run starts with it."""
        if self._ledger is None:
            self._ledger = Ledger.open(self.config.get("ledger_url"))
            self._run_id = self._ledger.start_run("apply", "crm")
        return self._ledger

    @property
    def connector(self) -> AccountsConnector:
        """BottleCRM's accounts, through one HTTP client (retries, backoff, Retry-After)."""
        if self._connector is None:
            client = BottleCrmClient(
                str(self.config["api_url"]),
                str(self.config["api_token"]),
                timeout=float(self.config.get("timeout", 120)),
            )
            self._connector = AccountsConnector(
                client, page_size=int(self.config.get("page_size", 5000))
            )
        return self._connector

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """``clients`` is written; other canonical streams wait; anything else is a mistake."""
        if stream_name == "clients":
            return ClientsSink
        if stream_name == "products":
            return ProductsSink
        if stream_name == "invoices":
            return InvoicesSink
        if stream_name == "orders":
            return OrdersSink
        if stream_name in STREAMS:
            return PendingSink
        msg = (
            f"stream {stream_name!r} is not a canonical stream; "
            f"expected one of {', '.join(sorted(STREAMS))}"
        )
        raise UnknownStreamError(msg)

    def process_endofpipe(self) -> None:
        """Drain every sink, then close the apply run with what it did."""
        try:
            super().process_endofpipe()
        except Exception:
            self.finish_run("failed")
            raise
        self.finish_run("succeeded")

    def finish_run(self, status: Literal["succeeded", "failed"]) -> None:
        """Record the end of the apply run and what it did (once), and close the ledger."""
        if self._ledger is None:
            return
        if self._run_id is not None:
            self._ledger.finish_run(self._run_id, status=status, stats=dict(self.outcomes))
        self.logger.info(
            "BottleCRM: %d written, %d already there, %d refused, %d to retry",
            self.outcomes["applied"],
            self.outcomes["already_in_crm"],
            self.outcomes["refused"],
            self.outcomes["failed"],
        )
        self._ledger.close()
        self._ledger = None


if __name__ == "__main__":
    TargetBottleCRM.cli()
