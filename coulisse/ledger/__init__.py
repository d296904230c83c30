"""The ledger: observed records, links, snapshots, operations, quarantine, conflicts, runs."""

from __future__ import annotations

from coulisse.ledger.codec import content_hash
from coulisse.ledger.store import (
    DEFAULT_URL,
    Conflict,
    Duplicate,
    EventItem,
    Ledger,
    LedgerError,
    Link,
    LockBusyError,
    NewOperation,
    ObservedRecord,
    ObserveStats,
    Operation,
    QuarantineEntry,
    QuarantineItem,
    Review,
    SweepRefusedError,
)

__all__ = [
    "DEFAULT_URL",
    "Conflict",
    "Duplicate",
    "EventItem",
    "Ledger",
    "LedgerError",
    "Link",
    "LockBusyError",
    "NewOperation",
    "ObserveStats",
    "ObservedRecord",
    "Operation",
    "QuarantineEntry",
    "QuarantineItem",
    "Review",
    "SweepRefusedError",
    "content_hash",
]
