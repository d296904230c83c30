"""The products sink: the ERP's catalogue written to BottleCRM, each outcome to the ledger.

Per batch the CRM's product list is read once (one request, two when it did not fit in a page)
and indexed by id and by SKU. Then, operation by operation, in order:

- **create**: a CRM product already holding the code as its SKU is adopted, never duplicated
  (SKUs are unique in the CRM, which answers a second one with a bare HTTP 500): it is given
  the ERP's values. Otherwise the product is created with POST. A create that fails without a
  refusal (a lost answer, a SKU taken meanwhile) reads the list again and adopts what is there.
- **update** and **deactivate**: the product (from the batch's list) is compared with the
  values the plan expected; changed since, nothing is written and the operation goes back to be
  planned again. Otherwise only what differs is sent. Products have no PATCH in BottleCRM:
  their PUT is partial and leaves out what the body does not name (description, category).

The CRM keeps prices to the cent: an ERP price with more decimals is rounded half up, and the
ledger stores what the CRM holds, so reading it back is not a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from singer_sdk.sinks import BatchSink

from coulisse.bottlecrm.client import CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.products import (
    FIELDS_BY_HOME,
    HOMES,
    canonical_product,
    crm_price,
    sku_key,
)
from coulisse.model import Product
from target_bottlecrm.bookkeeping import Bookkeeping, access_message
from target_bottlecrm.connector import field_errors
from target_bottlecrm.sinks import CrmAccessError, CrmStoppedError

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterable, Mapping

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.ledger import Ledger
    from target_bottlecrm.target import TargetBottleCRM

PRODUCT_SCOPES = "invoices:read and invoices:write"
PATH = "invoices/products/"


# -- the CRM's catalogue ---------------------------------------------------------------------


@dataclass
class Catalogue:
    """The CRM's products by id and by SKU (compared as the planner compares codes)."""

    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_sku: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        """Index (or re-index, after a write) one product."""
        product_id = str(row["id"])
        old = self.by_id.get(product_id)
        if old is not None:
            self.by_sku.get(sku_key(old.get("sku")), {}).pop(product_id, None)
        self.by_id[product_id] = row
        if sku_key(row.get("sku")):
            self.by_sku.setdefault(sku_key(row.get("sku")), {})[product_id] = row

    def with_sku(self, code: str) -> list[dict[str, Any]]:
        """The products whose SKU is ``code``, the exact spelling first."""
        rows = list(self.by_sku.get(sku_key(code), {}).values())
        return sorted(rows, key=lambda row: (row.get("sku") != code, str(row["id"])))


class ProductsConnector:
    """Every call the products sink makes to BottleCRM."""

    def __init__(self, client: BottleCrmClient, *, page_size: int = 5000) -> None:
        """Call BottleCRM through ``client`` (retries, backoff, Retry-After)."""
        self.client = client
        self.page_size = page_size

    def catalogue(self) -> Catalogue:
        """Every product, active or not, in one page (the list is ordered by name, which ties,
        so offset pages could skip one): a second read when the first page was too small."""
        limit = self.page_size
        for _attempt in range(4):
            page = self.client.get(PATH, limit=limit, offset=0)
            rows = list(page.get("results") or [])
            count = int(page.get("count") or 0)
            if len(rows) >= count:
                catalogue = Catalogue()
                for row in rows:
                    catalogue.add(row)
                return catalogue
            limit = count + self.page_size
        msg = "BottleCRM's product list kept growing while it was read; run again."
        raise CrmUnavailableError(msg)

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a product; the product as the CRM stored it."""
        answer = self.client.post(PATH, dict(body))
        return dict(answer["product"])

    def update(self, product_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change only the fields in ``body`` (the product's PUT is partial); what it stored."""
        answer = self.client.put(f"{PATH}{product_id}/", dict(body))
        return dict(answer["product"])


# -- one operation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductOperation:
    """One planned write, as tap-ledger emits it: the canonical product and what to change."""

    id: int
    action: str
    product: Product
    changed_fields: tuple[str, ...]
    expected: dict[str, Any]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ProductOperation:
        """Read a ``products`` record of tap-ledger (raises ``ValidationError`` on a bad one)."""
        product = Product.model_validate(record)
        action = str(record["operation"])
        changed = tuple(record.get("changed_fields") or ())
        if action == "deactivate":
            product = product.model_copy(update={"active": False})
            changed = changed if "active" in changed else (*changed, "active")
        return cls(
            id=int(record["operation_id"]),
            action=action,
            product=product,
            changed_fields=changed,
            expected=dict(record.get("expected") or {}),
        )

    @property
    def label(self) -> str:
        """How people recognise it: "product LIC-ANN 'Licence annuelle' (ERP 12, operation 7)"."""
        ids = [f"ERP {self.product.erp_id}"] if self.product.erp_id else []
        if self.product.crm_id:
            ids.append(f"CRM product {self.product.crm_id}")
        ids.append(f"operation {self.id}")
        code = self.product.code or "(no code)"
        return f"product {code} {self.product.name or '(no name)'!r} ({', '.join(ids)})"

    def wanted(self, names: Iterable[str]) -> dict[str, Any]:
        """The CRM fields holding ``names``, with this product's values as the CRM keeps them.

        A value the ERP does not give (no list price, no currency) is not written: the CRM
        cannot hold an empty price, and keeps its organisation's currency.
        """
        values: dict[str, Any] = {}
        for name in names:
            home = HOMES.get(name)
            value = getattr(self.product, name, None)
            if home is None or value is None:
                continue
            if name == "unit_price":
                value = crm_price(value)
            values[home] = value
        return values


def same_value(home: str, current: Any, wanted: Any) -> bool:
    """True when a CRM product field already holds ``wanted`` (950 == "950.00")."""
    if home == "is_active":
        return bool(True if current is None else current) == bool(wanted)
    if home == "price":
        try:
            return Decimal(str(current)) == Decimal(str(wanted))
        except InvalidOperation:
            return False
    left = None if current is None else str(current).strip() or None
    right = None if wanted is None else str(wanted).strip() or None
    return left == right


def same_canonical(name: str, left: Any, right: Any) -> bool:
    """True when two canonical values of product field ``name`` are the same."""
    home = HOMES.get(name, name)
    if home == "price" and (left is None or right is None):
        return left is None and right is None
    return same_value(home, left, right)


def difference(row: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``wanted`` the CRM product ``row`` does not hold yet (a PUT body)."""
    return {
        home: value for home, value in wanted.items() if not same_value(home, row.get(home), value)
    }


def _shown(value: Any) -> str:
    """A value in a clerk's message: '12.50', 'EUR', or (empty)."""
    return "(empty)" if value is None else repr(str(value))


@dataclass(frozen=True)
class Outcome:
    """What became of one operation."""

    status: Literal["applied", "refused", "failed"]
    message: str = ""
    product_id: str | None = None
    stored: dict[str, Any] = field(default_factory=dict)
    field: str | None = None
    wrote: bool = False


# -- the sink --------------------------------------------------------------------------------


class ProductsSink(BatchSink):
    """Applies the ``products`` operations of tap-ledger (side ``crm``) to BottleCRM."""

    MAX_SIZE_DEFAULT = 1000

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the CRM client, the ledger and the run."""
        self._target: TargetBottleCRM = target
        self._crm: ProductsConnector | None = None
        super().__init__(target, stream_name, schema, key_properties)

    @property
    def crm(self) -> ProductsConnector:
        """BottleCRM's catalogue, through the run's HTTP client."""
        if self._crm is None:
            self._crm = ProductsConnector(
                self._target.connector.client,
                page_size=int(self.config.get("page_size", 5000)),
            )
        return self._crm

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
            catalogue = self.crm.catalogue()
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, None)) from exc
            raise
        for record in records:
            try:
                operation = ProductOperation.from_record(record)
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                self._reject_malformed(record, exc)
                continue
            # One at a time: a create or a new code changes which SKUs are taken.
            self._record(operation, self._apply_safely(operation, catalogue))

    def _apply_safely(self, operation: ProductOperation, catalogue: Catalogue) -> Outcome:
        try:
            return self._apply(operation, catalogue)
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, operation)) from exc
            if exc.status == 400:
                return self._refusal(operation, exc)
            if exc.status == 404:
                return Outcome(
                    "failed",
                    f"{operation.label}: the product is no longer in BottleCRM (deleted?); the "
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

    def _apply(self, operation: ProductOperation, catalogue: Catalogue) -> Outcome:
        if operation.action == "create":
            return self._create(operation, catalogue)
        if operation.action in {"update", "deactivate"}:
            return self._update(operation, catalogue)
        return Outcome(
            "refused", f"{operation.label}: target-bottlecrm does not {operation.action} products."
        )

    def _create(self, operation: ProductOperation, catalogue: Catalogue) -> Outcome:
        product = operation.product
        if not product.code:
            return Outcome(
                "refused",
                f"{operation.label}: a product needs a code to be created in the CRM (its SKU, "
                "the only link between the two catalogues). Give it a code in the ERP.",
                field="code",
            )
        if not product.name:
            return Outcome(
                "refused",
                f"{operation.label}: no name to create the product with; BottleCRM needs one.",
                field="name",
            )
        found = catalogue.with_sku(product.code)
        if found:
            return self._adopt(operation, found, catalogue)
        try:
            row = self.crm.create(operation.wanted(HOMES))
        except CrmApiError as exc:
            if exc.status in {400, 401, 403}:
                raise
            # BottleCRM answers a taken SKU with a bare 500; a lost answer looks the same. Read
            # the catalogue again and decide on what is really there.
            fresh = self.crm.catalogue()
            catalogue.by_id, catalogue.by_sku = fresh.by_id, fresh.by_sku
            found = catalogue.with_sku(product.code)
            if not found:
                raise
            return self._adopt(operation, found, catalogue)
        catalogue.add(row)
        return self._applied(operation, row, done="created", wrote=True)

    def _adopt(
        self, operation: ProductOperation, found: list[dict[str, Any]], catalogue: Catalogue
    ) -> Outcome:
        """Make the CRM product with the same SKU this product: the ERP's values go on it."""
        code = operation.product.code
        if len(found) > 1:
            listed = ", ".join(f"{row['sku']!r} ({row['id']})" for row in found)
            return Outcome(
                "refused",
                f"{operation.label}: the CRM has several products whose SKU reads {code}: "
                f"{listed}. Keep one of them (delete or rename the others) and it will be "
                "linked.",
                field="code",
            )
        row = found[0]
        product_id = str(row["id"])
        tracked = self.ledger.links_for("product", "crm", [product_id]).get(product_id)
        if tracked is not None and tracked.id != self.ledger.operation(operation.id).link_id:
            other = f"ERP product {tracked.erp_key}" if tracked.erp_key else "a CRM-only product"
            return Outcome(
                "refused",
                f"{operation.label}: the CRM product with SKU {row.get('sku')!r} "
                f"({row.get('name')!r}) is already followed by Coulisse as {other}; two ERP "
                "products cannot share it. Give one of them another code in the ERP.",
                field="code",
            )
        body = difference(row, operation.wanted(operation.changed_fields))
        if body:
            row = self.crm.update(product_id, body)
            catalogue.add(row)
        how = f"linked to the CRM product with SKU {row.get('sku')!r}"
        done = f"{how}, wrote {', '.join(sorted(body))}" if body else how
        return self._applied(operation, row, done=done, wrote=bool(body))

    def _update(self, operation: ProductOperation, catalogue: Catalogue) -> Outcome:
        product = operation.product
        row = catalogue.by_id.get(product.crm_id or "")
        if row is None:
            return Outcome(
                "failed",
                f"{operation.label}: the product is no longer in BottleCRM (deleted?); the next "
                "CRM scan records the deletion and the plan decides what follows.",
            )
        current = canonical_product(row)
        moved = [
            name
            for name in operation.changed_fields
            if name in operation.expected
            and not same_canonical(name, operation.expected[name], current.get(name))
            and not same_canonical(name, getattr(product, name, None), current.get(name))
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
        body = difference(row, operation.wanted(operation.changed_fields))
        if "sku" in body:
            taken = [
                other
                for other in catalogue.with_sku(body["sku"])
                if str(other["id"]) != str(row["id"])
            ]
            if taken:
                return Outcome(
                    "refused",
                    f"{operation.label}: its new code {body['sku']} is already the SKU of CRM "
                    f"product {taken[0].get('name')!r} ({taken[0]['id']}); SKUs are unique in "
                    "the CRM. Change one of the two codes.",
                    field="code",
                )
        if body:
            row = self.crm.update(str(row["id"]), body)
            catalogue.add(row)
        done = f"{operation.action}d {', '.join(sorted(body))}" if body else "already up to date"
        return self._applied(operation, row, done=done, wrote=bool(body))

    def _applied(
        self, operation: ProductOperation, row: Mapping[str, Any], *, done: str, wrote: bool
    ) -> Outcome:
        """What the CRM holds now, as tap-bottlecrm will read it back."""
        canonical = canonical_product(row)
        stored = {name: canonical.get(name) for name in operation.changed_fields}
        return Outcome("applied", done, product_id=str(row["id"]), stored=stored, wrote=wrote)

    def _refusal(self, operation: ProductOperation, exc: CrmApiError) -> Outcome:
        errors = field_errors(exc)
        if not errors:
            return Outcome("refused", f"{operation.label}: BottleCRM refused it: {exc.detail}")
        sent = operation.wanted(HOMES)
        reasons = "; ".join(
            f"{FIELDS_BY_HOME.get(home, home).replace('_', ' ')} {_shown(sent.get(home))}: "
            f"{message.rstrip('.')}"
            for home, message in errors.items()
        )
        first = next(iter(errors))
        return Outcome(
            "refused",
            f"{operation.label}: BottleCRM refused {reasons}. Correct it in the ERP; the "
            "product is written once it changes.",
            field=FIELDS_BY_HOME.get(first, first),
        )

    def _access_message(self, exc: CrmApiError, operation: ProductOperation | None) -> str:
        return access_message(
            exc,
            operation.label if operation else None,
            (
                "the product catalogue is changed only by a live bcrm_pat_... token of an "
                f"active org-admin profile with the {PRODUCT_SCOPES} scopes"
            ),
        )

    def _reject_malformed(self, record: Mapping[str, Any], exc: Exception) -> None:
        self._books.reject_malformed(record, exc)

    # -- the ledger ---------------------------------------------------------------------------

    def _record(self, operation: ProductOperation, outcome: Outcome) -> None:
        self._books.record(operation.id, operation.label, outcome, outcome.product_id)

    @property
    def _books(self) -> Bookkeeping:
        return Bookkeeping(self.ledger, self.outcomes, self.logger, "product", "product")
