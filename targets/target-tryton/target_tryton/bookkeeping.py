"""What every target-tryton sink tells the ledger about the writes it applies, and the log.

Clients, orders and invoices differ in how they are written to Tryton, not in how an outcome
is recorded: applied (with the Tryton id and the values as Tryton stored them), refused (a
quarantine reason a clerk reads: Tryton will not hold the record as it is) or failed (a reason
that passes: planned and tried again). A Tryton failure that stops the run becomes one message
naming the writes it leaves pending.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coulisse.ledger import LedgerError
from coulisse.tryton.rpc import TrytonError
from target_tryton.operations import TrytonApplyError, describe

if TYPE_CHECKING:
    import logging
    from collections.abc import Iterator, Mapping, Sequence

    from coulisse.ledger import Ledger
    from target_tryton.operations import PlannedWrite


@dataclass(slots=True)
class Tally:
    """What a batch did, for the log line: counts per kind, in ``kinds`` order."""

    kinds: tuple[str, ...]
    counts: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        return ", ".join(f"{self.counts[kind]} {kind}" for kind in self.kinds if self.counts[kind])


@dataclass(slots=True)
class Bookkeeping:
    """One sink's ledger, log and tally, for one kind of record (``records``: "clients")."""

    ledger: Ledger
    logger: logging.Logger
    tally: Tally
    records: str

    def refused(self, operation: PlannedWrite, message: str, *, field: str | None = None) -> None:
        """Tryton will not hold this record as it is: quarantine it with the reason."""
        self.logger.warning("%s", message)
        self.tally.counts["refused"] += 1
        self.ledger.record_refused(operation.id, message=message, field=field)

    def failed(self, operation: PlannedWrite, message: str) -> None:
        """Not written this time, for a reason that passes: planned and tried again."""
        self.logger.warning("%s", message)
        self.tally.counts["replan"] += 1
        self.ledger.record_failed(operation.id, message=message)

    def applied(
        self,
        operation: PlannedWrite,
        system_id: int,
        stored: Mapping[str, Any],
        *,
        row: str,
        compare: str,
    ) -> None:
        """Record the write as applied, as Tryton ``row`` ``system_id`` holding ``stored``.

        ``compare`` starts the advice when the ledger refuses the link ("Compare sale 12").
        """
        try:
            recorded = self.ledger.record_applied(
                operation.id, system_id=str(system_id), stored=dict(stored)
            )
        except LedgerError as exc:
            msg = (
                f"{operation.label} was written to Tryton as {row} {system_id}, but the ledger "
                f"refused to record it: {exc}. {compare} with the ledger's link before the "
                "next run."
            )
            raise TrytonApplyError(msg) from exc
        if not recorded:
            self.logger.info("%s was already recorded by another run", operation.label)

    @contextmanager
    def calling(
        self,
        doing: str,
        operations: Sequence[PlannedWrite],
        *,
        passing: tuple[type[TrytonError], ...] = (),
    ) -> Iterator[None]:
        """Turn a Tryton failure that stops the run into a message naming the writes.

        Errors in ``passing`` are the caller's to handle (a refusal, a timestamp mismatch).
        """
        try:
            yield
        except TrytonError as exc:
            if isinstance(exc, passing):
                raise
            msg = (
                f"target-tryton stopped while {doing} {describe(operations)}: {exc} These "
                f"{self.records}' writes stay pending in the ledger and are retried on the next "
                "run."
            )
            raise TrytonApplyError(msg) from exc


__all__ = ["Bookkeeping", "Tally"]
