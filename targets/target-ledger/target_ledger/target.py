"""target-ledger: the observe step's loader; every connector tap writes into it."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecReader
from singer_sdk.helpers.capabilities import CapabilitiesEnum, PluginCapabilities
from singer_sdk.target_base import Target

from coulisse.ledger import Ledger, ObserveStats
from coulisse.model import STREAMS
from target_ledger.sinks import LedgerSink

if TYPE_CHECKING:
    from singer_sdk.sinks import Sink

    from coulisse.model import Entity


class UnknownStreamError(ValueError):
    """A stream that is not one of the canonical ones."""


class TargetLedger(Target):
    """Stores canonical records (clients, products, orders, invoices) observed in one system."""

    name = "target-ledger"
    default_sink_class = LedgerSink
    # msgspec parses numbers straight into Decimal, several times faster than the stdlib.
    message_reader_class = MsgSpecReader

    # The SDK's validate_records setting defaults to true; ours is declared below, off.
    capabilities: ClassVar[list[CapabilitiesEnum]] = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
        PluginCapabilities.ACTIVATE_VERSION,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "side",
            th.StringType(allowed_values=["crm", "erp"]),
            required=True,
            title="System",
            description="The system the records were read from: crm or erp.",
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
            "validate_records",
            th.BooleanType,
            default=False,
            title="Validate records against the stream schema",
            description=(
                "Off by default: the planner validates every record with the canonical model "
                "and quarantines bad values instead of stopping the stream."
            ),
        ),
        th.Property(
            "max_deleted_ratio",
            th.NumberType,
            default=0.5,
            title="Largest share of records a full scan may delete",
            description=(
                "After a full scan, records not seen are marked deleted, unless more than "
                "this share of them would be: a truncated scan is not a mass deletion."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Open the ledger lazily: ``--about`` and ``--version`` need no database."""
        super().__init__(*args, **kwargs)
        self._ledger: Ledger | None = None
        # Sinks drain in parallel threads; alembic's migration context is process-global.
        self._opening = threading.RLock()
        self._run_id: int | None = None
        self.stats: dict[Entity, ObserveStats] = defaultdict(ObserveStats)

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened (and migrated) on first use."""
        with self._opening:
            if self._ledger is None:
                self._ledger = Ledger.open(self.config.get("ledger_url"))
        return self._ledger

    @property
    def run_id(self) -> int:
        """This observation run, started on the first batch."""
        with self._opening:
            if self._run_id is None:
                self._run_id = self.ledger.start_run("observe", self.config["side"])
        return self._run_id

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """Only canonical streams are accepted; anything else is a mapping mistake upstream."""
        if stream_name not in STREAMS:
            msg = (
                f"stream {stream_name!r} is not a canonical stream; "
                f"expected one of {', '.join(sorted(STREAMS))}"
            )
            raise UnknownStreamError(msg)
        return LedgerSink

    def process_endofpipe(self) -> None:
        """Drain, then sweep deletions for streams that were fully scanned, then close the run."""
        try:
            super().process_endofpipe()
            for sink in self._sinks_active.values():
                if isinstance(sink, LedgerSink) and sink.full_scan:
                    deleted = self.ledger.sweep_unseen(
                        self.run_id,
                        sink.side,
                        sink.entity,
                        self.run_id,
                        max_deleted_ratio=float(self.config.get("max_deleted_ratio", 0.5)),
                    )
                    self.logger.info(
                        "%s: %d records no longer in the %s, marked deleted",
                        sink.stream_name,
                        deleted,
                        sink.side.upper(),
                    )
        except Exception:
            if self._run_id is not None:
                self.ledger.finish_run(self._run_id, status="failed", stats=self._stats())
            raise
        if self._run_id is not None:
            self.ledger.finish_run(self._run_id, stats=self._stats())
        if self._ledger is not None:
            self._ledger.close()

    def _stats(self) -> dict[str, dict[str, int]]:
        return {
            entity: {"created": s.created, "updated": s.updated, "unchanged": s.unchanged}
            for entity, s in self.stats.items()
        }


if __name__ == "__main__":
    TargetLedger.cli()
