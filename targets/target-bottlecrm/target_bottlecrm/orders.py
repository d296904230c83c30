"""The orders sink: the ERP's sale status mirrored onto its CRM deal, and nothing else.

A deal is the sales team's: Coulisse never creates one, never moves its stage and never edits
its lines. What it writes are the deal's ERP custom fields (``erp_ref``, ``erp_sale_number``,
``erp_sale_state``, ``erp_untaxed_total``, ``erp_shipment_progress``, ``erp_invoice_progress``),
with PATCH (PUT would clear the deal's advisors, contacts and tags) and only those whose value
changed, compared with the deal as read just before. The ERP's values win whatever the deal
holds: they are the ERP's to say.

A planned change to a field the CRM has no place for (the tax and total amounts), or to the
deal's own content after the hand-off, is recorded with the deal's own value as what the CRM
stored: the next plan reads it as our echo, not as a change, and nothing is written again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from singer_sdk.sinks import BatchSink

from coulisse.bottlecrm.client import CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.custom_fields import existing_definitions
from coulisse.bottlecrm.deals import STATUS_FIELDS, order_from_deal, status_value
from coulisse.model import Order
from target_bottlecrm.bookkeeping import Bookkeeping, access_message, admin_token
from target_bottlecrm.connector import CrmSetupError, field_errors
from target_bottlecrm.sinks import CrmAccessError, CrmStoppedError, Outcome

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.ledger import Ledger
    from target_bottlecrm.target import TargetBottleCRM

SCOPES = "opportunities:read, opportunities:write and custom-fields:read"
_SKIP = frozenset({"crm_id", "erp_id", "source", "source_updated_at"})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class OrderOperation:
    """One planned status mirror, as tap-ledger emits it."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        """Read an ``orders`` record of tap-ledger (raises ``ValidationError`` on a bad one)."""
        self.order = Order.model_validate(record).plain()
        self.id = int(record["operation_id"])
        self.action = str(record["operation"])
        self.changed_fields = tuple(record.get("changed_fields") or ())

    @property
    def deal_id(self) -> str | None:
        """The deal's id in the CRM."""
        value = self.order.get("crm_id")
        return str(value) if value else None

    @property
    def label(self) -> str:
        """How people recognise it: "order 'Projet 1' (ERP sale 7, CRM deal d1, operation 12)"."""
        ids = [f"ERP sale {self.order['erp_id']}"] if self.order.get("erp_id") else []
        if self.deal_id:
            ids.append(f"CRM deal {self.deal_id}")
        ids.append(f"operation {self.id}")
        return f"order {self.order.get('name') or '(no name)'!r} ({', '.join(ids)})"


class OrdersSink(BatchSink):
    """Applies the ``orders`` operations of tap-ledger (side ``crm``): the ERP's status."""

    MAX_SIZE_DEFAULT = 1000

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the CRM client, the ledger and the run."""
        self._target: TargetBottleCRM = target
        self._checked = False
        super().__init__(target, stream_name, schema, key_properties)

    @property
    def crm(self) -> BottleCrmClient:
        """The BottleCRM client shared by the run (retries, backoff, Decimal numbers)."""
        return self._target.connector.client

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
        """Apply the batch, each outcome recorded as its write completes."""
        records: list[dict[str, Any]] = context.get("records", [])
        if not records:
            return
        try:
            self._process(records)
        except Exception:
            self._target.finish_run("failed")
            raise

    def _process(self, records: list[dict[str, Any]]) -> None:
        self._check_custom_fields()
        operations: list[OrderOperation] = []
        for record in records:
            try:
                operations.append(OrderOperation(record))
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                self._reject_malformed(record, exc)
        # Each deal is read and patched on its own (about 0.1 s each): several at a time.
        workers = max(1, int(self.config.get("parallel_writes", 6)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(self._apply_safely, op): op for op in operations}
            stopped: BaseException | None = None
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except CrmStoppedError as exc:
                    stopped = stopped or exc
                    for pending in futures:
                        pending.cancel()
                    continue
                self._record(futures[future], outcome)
            if stopped is not None:
                raise stopped

    def _check_custom_fields(self) -> None:
        """Fail once, before any write, when a deal custom field Coulisse writes is missing.

        BottleCRM drops unknown custom-field keys without a word: the status would never show,
        and every run would write it again.
        """
        if self._checked:
            return
        try:
            definitions = existing_definitions(self.crm)
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, None)) from exc
            raise
        missing = [
            key
            for key in STATUS_FIELDS.values()
            if not (definitions.get(("Opportunity", key)) or {}).get("is_active", False)
        ]
        if missing:
            raise CrmSetupError(
                "BottleCRM has no active deal (Opportunity) custom field "
                + ", ".join(missing)
                + "; it would silently drop those values. Create them with `coulisse doctor "
                "--fix` (locally `coulisse stack up` does it), then run again."
            )
        self._checked = True

    # -- one operation ------------------------------------------------------------------------

    def _apply_safely(self, operation: OrderOperation) -> Outcome:
        try:
            return self._apply(operation)
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, operation)) from exc
            if exc.status == 400:
                errors = field_errors(exc)
                detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or exc.detail
                return Outcome(
                    "refused",
                    f"{operation.label}: BottleCRM refused the ERP status on the deal "
                    f"({detail.rstrip('.')}). Correct the deal in the CRM; the status is "
                    "written again once it changes.",
                )
            if exc.status == 404:
                return Outcome(
                    "failed",
                    f"{operation.label}: the deal is no longer in BottleCRM (deleted?); the "
                    "next CRM scan records the deletion and the plan decides what follows.",
                )
            return Outcome("failed", f"{operation.label}: {exc} It is tried again at the next run.")
        except CrmUnavailableError as exc:
            self.ledger.record_failed(operation.id, message=f"{operation.label}: {exc}")
            self.outcomes["failed"] += 1
            raise CrmStoppedError(
                f"{exc} Stopped at {operation.label}; it and the operations after it stay "
                "pending for the next run."
            ) from exc

    def _apply(self, operation: OrderOperation) -> Outcome:
        if operation.action == "create":
            return Outcome(
                "refused",
                f"{operation.label}: Coulisse never creates deals in the CRM (a sale made in "
                "the ERP stays there); create the deal by hand if the sales team needs it.",
            )
        if operation.action not in {"update", "cancel"}:
            return Outcome(
                "refused", f"{operation.label}: target-bottlecrm does not {operation.action} deals."
            )
        if not operation.deal_id:
            return Outcome(
                "failed",
                f"{operation.label}: a status mirror without the CRM deal id; planned again.",
            )
        deal = self.crm.get(f"opportunities/{operation.deal_id}/")["opportunity_obj"]
        custom = dict(deal.get("custom_fields") or {})
        fields = {"erp_id", *operation.changed_fields}
        body: dict[str, Any] = {}
        try:
            for name, key in STATUS_FIELDS.items():
                if name not in fields and not (
                    name == "untaxed_amount" and "currency" in operation.changed_fields
                ):
                    continue
                wanted = status_value(name, operation.order)
                if _text(custom.get(key)) != _text(wanted):
                    body[key] = wanted
        except ValueError as exc:
            return Outcome(
                "refused",
                f"{operation.label}: {exc}; the ERP must give the order's currency.",
                field="currency",
            )
        if body:
            self.crm.patch(f"opportunities/{operation.deal_id}/", {"custom_fields": body})
            # BottleCRM stores text custom fields as sent and drops emptied ones.
            custom.update(body)
            custom = {key: value for key, value in custom.items() if value not in {None, ""}}
        stored_deal = {**deal, "custom_fields": custom}
        canonical = order_from_deal(stored_deal)
        stored = {
            name: canonical.get(name) for name in operation.changed_fields if name not in _SKIP
        }
        done = f"wrote {', '.join(sorted(body))}" if body else "already up to date"
        return Outcome(
            "applied", done, account_id=operation.deal_id, stored=stored, wrote=bool(body)
        )

    def _access_message(self, exc: CrmApiError, operation: OrderOperation | None) -> str:
        return access_message(
            exc,
            operation.label if operation else None,
            admin_token(SCOPES),
        )

    def _reject_malformed(self, record: Mapping[str, Any], exc: Exception) -> None:
        self._books.reject_malformed(record, exc)

    # -- the ledger ---------------------------------------------------------------------------

    def _record(self, operation: OrderOperation, outcome: Outcome) -> None:
        self._books.record(operation.id, operation.label, outcome, outcome.account_id)

    @property
    def _books(self) -> Bookkeeping:
        return Bookkeeping(
            self.ledger, self.outcomes, self.logger, "order", "deal", written="status written to"
        )
