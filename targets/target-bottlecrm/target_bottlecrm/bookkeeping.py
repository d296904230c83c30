"""What every target-bottlecrm sink tells the ledger about the operations it applies.

Clients, products, deals and invoices differ in how they are written to BottleCRM, not in how an
outcome is recorded: applied (with the CRM id and the values as BottleCRM stored them), refused
(a quarantine reason a clerk reads) or failed (tried again at the next run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from coulisse.ledger import LedgerError

if TYPE_CHECKING:
    import logging
    from collections import Counter
    from collections.abc import Mapping

    from coulisse.bottlecrm.client import CrmApiError
    from coulisse.ledger import Ledger


class OperationOutcome(Protocol):
    """What became of one operation, as each sink's ``Outcome`` says it."""

    @property
    def status(self) -> Literal["applied", "refused", "failed"]: ...
    @property
    def message(self) -> str: ...
    @property
    def stored(self) -> dict[str, Any]: ...
    @property
    def field(self) -> str | None: ...
    @property
    def wrote(self) -> bool: ...


@dataclass(frozen=True)
class Bookkeeping:
    """The ledger, outcome counters and log of one sink, for one kind of CRM record.

    ``entity`` names the canonical record ("client"), ``crm_record`` what it is in BottleCRM
    ("account"), ``written`` how a write is described ("written to", "status written to").
    """

    ledger: Ledger
    outcomes: Counter[str]
    logger: logging.Logger
    entity: str
    crm_record: str
    written: str = "written to"

    def record(
        self,
        operation_id: int,
        label: str,
        outcome: OperationOutcome,
        system_id: str | None,
    ) -> None:
        """Tell the ledger what became of the operation, count it and log it."""
        if outcome.status == "applied":
            try:
                done = self.ledger.record_applied(
                    operation_id, system_id=system_id, stored=outcome.stored
                )
            except LedgerError as exc:
                message = (
                    f"{label}: {self.written} CRM {self.crm_record} {system_id}, but the "
                    f"ledger refuses the link ({exc}); link them by hand."
                )
                self.ledger.record_refused(operation_id, message=message)
                self.outcomes["refused"] += 1
                self.logger.warning("%s", message)
                return
            self.outcomes["applied" if outcome.wrote else "already_in_crm"] += 1
            self.logger.info(
                "%s: %s (CRM %s %s)%s",
                label,
                outcome.message,
                self.crm_record,
                system_id,
                "" if done else "; the ledger had already recorded it",
            )
        elif outcome.status == "refused":
            self.ledger.record_refused(operation_id, message=outcome.message, field=outcome.field)
            self.outcomes["refused"] += 1
            self.logger.warning("%s", outcome.message)
        else:
            self.ledger.record_failed(operation_id, message=outcome.message)
            self.outcomes["failed"] += 1
            self.logger.warning("%s", outcome.message)

    def reject_malformed(self, record: Mapping[str, Any], exc: Exception) -> None:
        """A record tap-ledger sent that is not a canonical record: refuse its operation."""
        operation_id = record.get("operation_id")
        message = (
            f"{self.entity} operation {operation_id}: not a canonical {self.entity} record ({exc})"
        )
        if isinstance(operation_id, int):
            self.ledger.record_refused(operation_id, message=message)
            self.outcomes["refused"] += 1
            self.logger.warning("%s", message)
            return
        msg = f"{message}; the record has no operation_id, so tap-ledger did not send it"
        raise ValueError(msg) from exc


def access_message(exc: CrmApiError, label: str | None, token: str) -> str:
    """Why BottleCRM refused the token (401/403), and what the token must be.

    ``token`` completes "Check api_token: ...", e.g. "it must be a live bcrm_pat_... token of
    an active org-admin profile with the accounts:write scopes".
    """
    where = f" while applying {label}" if label else ""
    return (
        f"BottleCRM refused {exc.method} {exc.path} ({exc.status}: "
        f"{exc.detail.rstrip('.')}){where}. Check api_token: {token}. The operations not yet "
        "applied stay pending."
    )


def admin_token(scopes: str) -> str:
    """The usual requirement: a live org-admin token with ``scopes``."""
    return (
        "it must be a live bcrm_pat_... token of an active org-admin profile with the "
        f"{scopes} scopes"
    )
