"""One sink per canonical stream: batches of records become one ledger transaction each."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from coulisse.ledger import ObservedRecord
from coulisse.model import STREAMS

if TYPE_CHECKING:
    from coulisse.ledger import Ledger, ObserveStats
    from coulisse.model import Entity, Side


def _timestamp(value: Any) -> dt.datetime | None:
    """``source_updated_at`` as an aware datetime; a malformed one is left to the planner."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else None
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else None


class LedgerSink(BatchSink):
    """Stores a canonical stream's records as observations of the configured system."""

    MAX_SIZE_DEFAULT = 10_000

    @property
    def entity(self) -> Entity:
        """The canonical entity of this stream (``clients`` -> ``client``)."""
        return STREAMS[self.stream_name]

    @property
    def side(self) -> Side:
        """The system the records were read from."""
        side: Side = self.config["side"]
        return side

    @property
    def validate_schema(self) -> bool:
        """Off unless configured: the planner validates every record with the canonical model,
        and a malformed value must reach the ledger to be quarantined, not stop the stream."""
        return bool(self.config.get("validate_records", False))

    def _validate_and_parse(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep values exactly as the system sent them when not validating.

        The SDK would turn date-time strings into datetime objects (and "repair" bad ones);
        the ledger stores what the system said and the planner parses it, so an unreadable
        date is quarantined with a reason instead of silently changed.
        """
        if self._validator is None:
            return record
        parsed: dict[str, Any] = super()._validate_and_parse(record)
        return parsed

    @property
    def ledger(self) -> Ledger:
        """The ledger, shared by every sink of the target."""
        ledger: Ledger = self._target_ledger()
        return ledger

    def _target_ledger(self) -> Any:
        return self._target.ledger

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the ledger and the run."""
        self._target = target
        #: ACTIVATE_VERSION messages received: one opens a full scan, a second closes it.
        self.activations = 0
        super().__init__(target, stream_name, schema, key_properties)

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Queue the record for the next batch."""
        context.setdefault("records", []).append(record)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Write the batch to the ledger in one transaction."""
        records: list[dict[str, Any]] = context.get("records", [])
        if not records:
            return
        key_field = f"{self.side}_id"
        observed: list[ObservedRecord] = []
        for record in records:
            data = {key: value for key, value in record.items() if not key.startswith("_sdc_")}
            key = data.get(key_field)
            if key is None or key == "":
                msg = (
                    f"a {self.stream_name} record from the {self.side.upper()} has no "
                    f"{key_field}: the tap must send each record's id"
                )
                raise ValueError(msg)
            data[key_field] = str(key)
            data.setdefault("source", self.side)
            observed.append(
                ObservedRecord(str(key), data, _timestamp(data.get("source_updated_at")))
            )
        stats: ObserveStats = self.ledger.observe(
            self._target.run_id, self.side, self.entity, observed, version=self._target.run_id
        )
        self._target.stats[self.entity].add(stats)
        self.logger.info(
            "%s from the %s: %d new, %d changed, %d unchanged",
            self.stream_name,
            self.side.upper(),
            stats.created,
            stats.updated,
            stats.unchanged,
        )

    @property
    def full_scan(self) -> bool:
        """Whether the tap read the whole stream: it opened a full scan and closed it.

        A tap that fails halfway sends only the opening message; sweeping then would mark the
        records it never reached as deleted.
        """
        return self.activations >= 2

    def activate_version(self, new_version: int) -> None:
        """The tap opens (first message) or closes (second) a full scan.

        The sweep happens once the whole input was read (see ``TargetLedger``), never before.
        """
        del new_version
        self.activations += 1
