"""The clients sink: each planned client operation written to BottleCRM, its outcome to the ledger.

Per batch the organisation's accounts are read once and indexed by ERP reference and by name.
Then, operation by operation:

- **create**: an account already carrying the client's ERP reference is our own earlier write
  whose answer was lost: it is adopted, never created twice. A free name is created with POST.
  A taken name (BottleCRM keeps account names unique, ignoring case) is adopted when the account
  is the same company (same VAT or SIREN), else the operation is refused with the reason.
- **update** and **deactivate**: the account is read first and compared with the values the plan
  expected; changed since (someone edited it in the CRM), nothing is written and the operation
  goes back to the ledger to be planned again. Otherwise only what differs is sent with PATCH.

Adopting an existing account fills its blanks, sets the ERP reference and the ERP's status,
and keeps whatever the CRM's people wrote there: those values are left out of ``stored``, so the
next plan sees them as the CRM's changes. Each outcome is in the ledger before the next
operation starts, so a crash loses at most the answer of one write, which the next run finds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from singer_sdk.sinks import BatchSink

from coulisse.bottlecrm.client import CrmApiError, CrmUnavailableError
from coulisse.model import Client
from target_bottlecrm.bookkeeping import Bookkeeping, access_message, admin_token
from target_bottlecrm.connector import (
    ERP_STATUS,
    HOMES,
    SCOPES,
    MissingCurrencyError,
    account_key,
    account_values,
    canonical_field,
    field_errors,
    is_blank,
    name_key,
    name_taken,
    patch_body,
    same_canonical,
    same_company,
    same_stored,
)

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping

    from coulisse.ledger import Ledger
    from target_bottlecrm.connector import Account, AccountIndex, AccountsConnector
    from target_bottlecrm.target import TargetBottleCRM


class CrmAccessError(RuntimeError):
    """BottleCRM refused the token: every further write would be refused too."""


class CrmStoppedError(RuntimeError):
    """BottleCRM stopped answering; the operations not yet applied stay pending."""


@dataclass(frozen=True)
class ClientOperation:
    """One planned write, as tap-ledger emits it: the canonical client and what to change."""

    id: int
    action: str
    client: Client
    changed_fields: tuple[str, ...]
    expected: dict[str, Any]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ClientOperation:
        """Read a ``clients`` record of tap-ledger (raises ``ValidationError`` on a bad one)."""
        client = Client.model_validate(record)
        action = str(record["operation"])
        changed = tuple(record.get("changed_fields") or ())
        if action == "deactivate":
            client = client.model_copy(update={"active": False})
            changed = changed if "active" in changed else (*changed, "active")
        return cls(
            id=int(record["operation_id"]),
            action=action,
            client=client,
            changed_fields=changed,
            expected=dict(record.get("expected") or {}),
        )

    @property
    def label(self) -> str:
        """How people recognise the record: "client 'Dupont SARL' (ERP 77, operation 12)"."""
        ids = [f"ERP {self.client.erp_id}"] if self.client.erp_id else []
        if self.client.crm_id:
            ids.append(f"CRM account {self.client.crm_id}")
        ids.append(f"operation {self.id}")
        return f"client {self.client.name or '(no name)'!r} ({', '.join(ids)})"


@dataclass(frozen=True)
class Outcome:
    """What became of one operation."""

    status: Literal["applied", "refused", "failed"]
    message: str = ""
    account_id: str | None = None
    stored: dict[str, Any] = field(default_factory=dict)
    field: str | None = None
    wrote: bool = False


def _identity(vat: Any, siren: Any) -> str:
    parts = [f"VAT {vat}" if vat else "", f"SIREN {siren}" if siren else ""]
    return " and ".join(part for part in parts if part) or "no VAT or SIREN"


class ClientsSink(BatchSink):
    """Applies the ``clients`` operations of tap-ledger (side ``crm``) to BottleCRM."""

    MAX_SIZE_DEFAULT = 1000

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the CRM connector, the ledger and the run."""
        self._target: TargetBottleCRM = target
        super().__init__(target, stream_name, schema, key_properties)

    @property
    def crm(self) -> AccountsConnector:
        """The BottleCRM connector, shared by the run."""
        return self._target.connector

    @property
    def ledger(self) -> Ledger:
        """The ledger the operations come from and their outcomes go to."""
        return self._target.ledger

    @property
    def outcomes(self) -> Counter[str]:
        """Counts per outcome for the run's statistics."""
        return self._target.outcomes

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Queue the operation for the next batch."""
        context.setdefault("records", []).append(record)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Apply the batch's operations one by one, each outcome recorded before the next."""
        records: list[dict[str, Any]] = context.get("records", [])
        if not records:
            return
        try:
            self._process(records)
        except Exception:
            self._target.finish_run("failed")
            raise

    def _process(self, records: list[dict[str, Any]]) -> None:
        try:
            self.crm.check_custom_fields()
            index = self.crm.accounts()
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, None)) from exc
            raise
        operations: list[ClientOperation] = []
        for record in records:
            try:
                operations.append(ClientOperation.from_record(record))
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                self._reject_malformed(record, exc)
        # Creates go one by one: each may meet the CRM's unique-name rule, and the index of
        # names grows with every account created. Updates and deactivations touch one known
        # account each, so they go several at a time (BottleCRM answers a PATCH in about
        # 0.1 s; one at a time, a first day of thousands of status mirrors takes minutes).
        for operation in operations:
            if operation.action == "create":
                self._record(operation, self._apply_safely(operation, index))
        others = [operation for operation in operations if operation.action != "create"]
        workers = max(1, int(self.config.get("parallel_writes", 6)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._apply_safely, op, index): op for op in others}
            stopped: BaseException | None = None
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except CrmStoppedError as exc:
                    stopped = stopped or exc
                    for pending in futures:
                        pending.cancel()
                    continue
                # Outcomes are recorded here, in this thread, as each write completes.
                self._record(futures[future], outcome)
            if stopped is not None:
                raise stopped

    # -- one operation ------------------------------------------------------------------------

    def _apply_safely(self, operation: ClientOperation, index: AccountIndex) -> Outcome:
        try:
            return self._apply(operation, index)
        except MissingCurrencyError as exc:
            return Outcome(
                "refused",
                f"{operation.label}: {exc}; the ERP must give the client's currency.",
                field="currency",
            )
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, operation)) from exc
            if exc.status == 400:
                return self._refusal(operation, exc)
            if exc.status == 404:
                return Outcome(
                    "failed",
                    f"{operation.label}: the account is no longer in BottleCRM (deleted?); "
                    "the next CRM scan records the deletion and the plan decides what follows.",
                )
            return Outcome("failed", f"{operation.label}: {exc} It is tried again at the next run.")
        except CrmUnavailableError as exc:
            self.ledger.record_failed(operation.id, message=f"{operation.label}: {exc}")
            self.outcomes["failed"] += 1
            raise CrmStoppedError(
                f"{exc} Stopped at {operation.label}; it and the operations after it stay "
                "pending for the next run."
            ) from exc

    def _apply(self, operation: ClientOperation, index: AccountIndex) -> Outcome:
        if operation.action == "create":
            return self._create(operation, index)
        if operation.action in {"update", "deactivate"}:
            return self._update(operation)
        return Outcome(
            "refused", f"{operation.label}: target-bottlecrm does not {operation.action} clients."
        )

    def _create(self, operation: ClientOperation, index: AccountIndex) -> Outcome:
        client = operation.client
        if not client.erp_id:
            return Outcome(
                "refused",
                f"{operation.label}: a client created in the CRM must carry its ERP id "
                "(kept in the erp_ref custom field, it prevents duplicates).",
                field="erp_id",
            )
        ours = index.by_ref.get(client.erp_id)
        if ours is not None:
            self.logger.info(
                "%s: account %s already carries ERP reference %s (an earlier answer was "
                "lost); adopting it instead of creating a second one",
                operation.label,
                ours["id"],
                client.erp_id,
            )
            return self._adopt(operation, str(ours["id"]), index, "found after a lost answer")
        if not client.name:
            return Outcome(
                "refused",
                f"{operation.label}: no name to create the account with; BottleCRM needs one.",
                field="name",
            )
        taken = index.by_name.get(name_key(client.name))
        if taken is not None:
            return self._name_taken(operation, taken, index)
        values = {
            key: value for key, value in account_values(client, HOMES).items() if value is not None
        }
        body = patch_body(values)
        if client.currency:
            body["currency"] = client.currency
        try:
            account_id = self.crm.create(body)
        except CrmApiError as exc:
            if not name_taken(exc):
                raise
            # Created in the CRM since the batch began (or by our own retried POST whose
            # first answer was lost): read the accounts again and decide on the real one.
            fresh = self.crm.accounts()
            index.by_ref.update(fresh.by_ref)
            index.by_name.update(fresh.by_name)
            taken = index.by_name.get(name_key(client.name))
            if taken is None:
                raise
            return self._name_taken(operation, taken, index)
        account = self.crm.account(account_id)
        index.add(account.row)
        return self._applied(operation, account, kept=set(), done="created", wrote=True)

    def _name_taken(
        self, operation: ClientOperation, account: Mapping[str, Any], index: AccountIndex
    ) -> Outcome:
        client = operation.client
        account_id = str(account["id"])
        custom = account.get("custom_fields") or {}
        ref = custom.get("erp_ref")
        if ref and str(ref) == client.erp_id:
            return self._adopt(operation, account_id, index, "found after a lost answer")
        name = account.get("name")
        if ref:
            return Outcome(
                "refused",
                f"An account named {name!r} already exists in the CRM and belongs to ERP "
                f"client {ref}, not to ERP client {client.erp_id} ({client.name!r}); rename "
                "one of them or link them by hand.",
                field="name",
            )
        proof = same_company(account, client)
        if proof is None:
            return Outcome(
                "refused",
                f"An account named {name!r} already exists in the CRM with "
                f"{_identity(custom.get('vat'), custom.get('siren'))}, while ERP client "
                f"{client.erp_id} ({client.name!r}) has {_identity(client.vat, client.siren)}; "
                "rename one of them or link them by hand.",
                field="name",
            )
        tracked = self.ledger.links_for("client", "crm", [account_id]).get(account_id)
        if tracked is not None and tracked.id != self.ledger.operation(operation.id).link_id:
            # Coulisse already follows that account as another client (maybe with a write of
            # its own to the ERP on the way): linking it here would leave two ledger entries.
            other = f"ERP client {tracked.erp_key}" if tracked.erp_key else "a CRM-only client"
            return Outcome(
                "refused",
                f"An account named {name!r} ({proof}) already exists in the CRM, and Coulisse "
                f"already follows it as {other}; link them by hand.",
                field="name",
            )
        self.logger.info(
            "%s: the name is taken by account %s, the same company (%s); linking them",
            operation.label,
            account_id,
            proof,
        )
        return self._adopt(operation, account_id, index, f"linked to the same company ({proof})")

    def _adopt(
        self, operation: ClientOperation, account_id: str, index: AccountIndex, how: str
    ) -> Outcome:
        """Make an existing account the client's: fill its blanks, set the ERP's reference and
        status, keep what the CRM's people wrote."""
        account = self.crm.account(account_id)
        wanted = account_values(operation.client, {*operation.changed_fields, "erp_id"})
        body: dict[str, Any] = {}
        kept: set[str] = set()
        for key, value in wanted.items():
            current = account_key(account.row, key)
            if same_stored(key, current, value):
                continue
            name = canonical_field(key)
            if name not in ERP_STATUS and not is_blank(key, current):
                # The CRM's people wrote something else there: it stays.
                kept.add(name)
                continue
            body[key] = value
        if body:
            self.crm.update(account_id, patch_body(body))
            account = self.crm.account(account_id)
        index.add(account.row)
        done = f"{how}, wrote {', '.join(sorted(body))}" if body else how
        return self._applied(operation, account, kept=kept, done=done, wrote=bool(body))

    def _update(self, operation: ClientOperation) -> Outcome:
        client = operation.client
        if not client.crm_id:
            return Outcome(
                "failed",
                f"{operation.label}: an update without the CRM account id; it is planned again.",
            )
        account = self.crm.account(client.crm_id)
        current = account.canonical()
        moved = [
            name
            for name in operation.changed_fields
            if name in operation.expected
            and not same_canonical(name, operation.expected[name], current.get(name))
            and not same_canonical(name, getattr(client, name, None), current.get(name))
        ]
        if moved:
            changes = "; ".join(
                f"{name} was {operation.expected[name]!r} when planned and is "
                f"{current.get(name)!r} now"
                for name in moved
            )
            return Outcome(
                "failed",
                f"{operation.label} changed in BottleCRM since it was planned ({changes}); "
                "nothing written, it is planned again from the CRM's new values.",
            )
        wanted = account_values(client, {*operation.changed_fields, "erp_id"})
        body = {
            key: value
            for key, value in wanted.items()
            if not same_stored(key, account_key(account.row, key), value)
        }
        if body:
            self.crm.update(client.crm_id, patch_body(body))
            account = self.crm.account(client.crm_id)
        done = f"{operation.action}d {', '.join(sorted(body))}" if body else "already up to date"
        return self._applied(operation, account, kept=set(), done=done, wrote=bool(body))

    def _applied(
        self,
        operation: ClientOperation,
        account: Account,
        *,
        kept: set[str],
        done: str,
        wrote: bool,
    ) -> Outcome:
        canonical = account.canonical()
        stored = {
            name: canonical.get(name) for name in operation.changed_fields if name not in kept
        }
        return Outcome("applied", done, account_id=account.id, stored=stored, wrote=wrote)

    def _refusal(self, operation: ClientOperation, exc: CrmApiError) -> Outcome:
        errors = field_errors(exc)
        if not errors:
            return Outcome("refused", f"{operation.label}: BottleCRM refused it: {exc.detail}")
        reasons = "; ".join(
            f"{canonical_field(key)} {self._sent(operation, key)!r}: {message.rstrip('.')}"
            for key, message in errors.items()
        )
        first = next(iter(errors))
        return Outcome(
            "refused",
            f"{operation.label}: BottleCRM refused {reasons}. Correct it in the ERP; the "
            "client is written once it changes.",
            field=canonical_field(first),
        )

    @staticmethod
    def _sent(operation: ClientOperation, key: str) -> Any:
        try:
            return account_values(operation.client, [canonical_field(key)]).get(key)
        except MissingCurrencyError:
            return None

    def _access_message(self, exc: CrmApiError, operation: ClientOperation | None) -> str:
        return access_message(
            exc,
            operation.label if operation else None,
            admin_token(SCOPES),
        )

    def _reject_malformed(self, record: Mapping[str, Any], exc: Exception) -> None:
        self._books.reject_malformed(record, exc)

    # -- the ledger ---------------------------------------------------------------------------

    def _record(self, operation: ClientOperation, outcome: Outcome) -> None:
        self._books.record(operation.id, operation.label, outcome, outcome.account_id)

    @property
    def _books(self) -> Bookkeeping:
        return Bookkeeping(self.ledger, self.outcomes, self.logger, "client", "account")


class PendingSink(BatchSink):
    """A canonical stream this target does not write yet: its operations stay in the ledger."""

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Count the operation; nothing is written and the ledger keeps it pending."""
        context["count"] = int(context.get("count", 0)) + 1

    def process_batch(self, context: dict[str, Any]) -> None:
        """Say how many operations are left for a later version of the target."""
        count = int(context.get("count", 0))
        if count:
            self.logger.warning(
                "target-bottlecrm does not write %s yet: %d operations stay pending in the "
                "ledger (select only `clients` in meltano.yml to silence this)",
                self.stream_name,
                count,
            )
