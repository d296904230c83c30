"""What Coulisse's taps share on top of singer-sdk.

A full scan tells the loader which records the system no longer holds: whatever it did not send.
singer-sdk announces a full-table read with one ACTIVATE_VERSION *before* the records, so a tap
that dies halfway looks, to the loader, like a complete scan of half the records. Coulisse's
taps therefore close each completed full scan with a second ACTIVATE_VERSION of the same version
(the Singer convention of taps that predate the SDK), and ``target-ledger`` sweeps deletions only
for streams closed that way.
"""

from __future__ import annotations

from typing import Any

from singer_sdk.streams import Stream

FULL_TABLE = "FULL_TABLE"


class ClosesFullScans(Stream):
    """A stream that sends a closing ACTIVATE_VERSION once a full scan has read everything.

    singer-sdk calls ``finalize_state_progress_markers`` after a stream's ``sync`` returned, so
    after its last record: never after a failure.
    """

    def finalize_state_progress_markers(self, state: dict[Any, Any] | None = None) -> None:
        """Close the full scan (if this run was one), then finalize the state as usual."""
        version = getattr(self, "_stream_version", None)
        if (
            state is None
            and self.selected
            and self.replication_method == FULL_TABLE
            and self.emit_activate_version_messages
            and version is not None
        ):
            self._write_activate_version_message(version)
        super().finalize_state_progress_markers(state)
