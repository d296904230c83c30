"""The sink of a canonical stream target-tryton does not write: its writes stay in the ledger.

The ERP's catalogue is the ERP's own (the planner never plans a product for Tryton), so this
only speaks when something planned such a write anyway: the log says which operations were left
pending, so that nobody takes them for applied.
"""

from __future__ import annotations

from typing import Any

from singer_sdk.sinks import BatchSink

from target_tryton.operations import operations_in


class LeftPendingSink(BatchSink):
    """A canonical stream target-tryton does not write: its writes stay in the ledger."""

    def process_batch(self, context: dict[str, Any]) -> None:
        """Say which writes were left pending, so that nobody takes them for applied."""
        ids = sorted(operations_in(context.get("records", [])))
        if ids:
            shown = ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
            self.logger.warning(
                "target-tryton does not write %s yet: %d operations stay pending in the "
                "ledger (%s)",
                self.stream_name,
                len(ids),
                shown,
            )


__all__ = ["LeftPendingSink"]
