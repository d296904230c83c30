"""The custom fields Coulisse needs in a BottleCRM organisation, and the idempotent set-up of them.

BottleCRM has no VAT, SIREN or ERP-status fields, so Coulisse adds them as custom fields. Its
custom-field types are text, textarea, number (stored as a float: never money), dropdown, date
and checkbox; there is no datetime. So money is text (``"1234.50 EUR"``) and timestamps are text
(ISO 8601, UTC). ``ensure_custom_fields`` runs on any customer's CRM (``coulisse doctor --fix``
and ``coulisse stack up`` call it): it creates what is missing, re-activates what an admin
deactivated, and refuses to silently reuse a field whose type is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from coulisse.bottlecrm.client import BottleCrmClient

FieldType = Literal["text", "textarea", "number", "dropdown", "date", "checkbox"]


@dataclass(frozen=True)
class CustomField:
    """One custom field: the CRM model it extends, its key, label and type."""

    target_model: str
    key: str
    label: str
    field_type: FieldType = "text"
    options: tuple[tuple[str, str], ...] = ()


ORDER_STATES = (
    ("draft", "Draft"),
    ("quotation", "Quotation"),
    ("confirmed", "Confirmed"),
    ("processing", "Processing"),
    ("done", "Done"),
    ("cancelled", "Cancelled"),
)

INVOICE_STATES = (
    ("draft", "Draft"),
    ("posted", "Posted"),
    ("partially_paid", "Partially paid"),
    ("paid", "Paid"),
    ("cancelled", "Cancelled"),
)

COULISSE_FIELDS: tuple[CustomField, ...] = (
    # Accounts (clients): fiscal identity, owned by whoever the policy says.
    CustomField("Account", "vat", "VAT number"),
    CustomField("Account", "siren", "SIREN"),
    # Accounts: the ERP's reference and the ERP-owned status, mirrored.
    CustomField("Account", "erp_ref", "ERP reference"),
    CustomField("Account", "erp_client_code", "ERP client code"),
    CustomField("Account", "erp_balance_due", "Balance due (ERP)"),
    CustomField("Account", "erp_overdue_amount", "Overdue amount (ERP)"),
    CustomField("Account", "erp_last_invoice_date", "Last invoice date (ERP)", "date"),
    # Deals: the ERP sale behind a won deal.
    CustomField("Opportunity", "erp_ref", "ERP reference"),
    CustomField("Opportunity", "erp_sale_number", "ERP sale number"),
    CustomField("Opportunity", "erp_sale_state", "ERP sale state", "dropdown", ORDER_STATES),
    CustomField("Opportunity", "erp_untaxed_total", "Untaxed total (ERP)"),
    CustomField("Opportunity", "erp_shipment_progress", "Shipment progress (ERP)"),
    CustomField("Opportunity", "erp_invoice_progress", "Invoice progress (ERP)"),
    # Invoices: the ERP's own figures, kept beside the CRM's mirror.
    CustomField("Invoice", "erp_ref", "ERP reference"),
    CustomField("Invoice", "erp_number", "ERP invoice number"),
    CustomField("Invoice", "erp_state", "ERP invoice state", "dropdown", INVOICE_STATES),
    CustomField("Invoice", "erp_total", "Total incl. tax (ERP)"),
    CustomField("Invoice", "erp_untaxed_total", "Untaxed total (ERP)"),
    CustomField("Invoice", "erp_tax_total", "Tax total (ERP)"),
    CustomField("Invoice", "erp_amount_due", "Amount due (ERP)"),
    CustomField("Invoice", "erp_overdue", "Overdue (ERP)", "checkbox"),
    # Tasks: marks the follow-up tasks Coulisse creates, so a rebuild finds them.
    CustomField("Task", "coulisse_ref", "Coulisse reference"),
)


class CustomFieldMismatchError(RuntimeError):
    """A field with Coulisse's key exists in the CRM with another type."""


@dataclass
class CustomFieldReport:
    """What ``ensure_custom_fields`` found and did."""

    created: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    #: Dropdowns that lacked some of Coulisse's values (added; an admin's own values kept).
    extended: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.reactivated or self.extended)


def _name(spec: CustomField) -> str:
    return f"{spec.target_model}.{spec.key}"


def existing_definitions(client: BottleCrmClient) -> dict[tuple[str, str], dict[str, object]]:
    """The organisation's custom-field definitions by (target model, key), active or not."""
    payload = client.get("custom-fields/", include_counts="false")
    return {(str(row["target_model"]), str(row["key"])): row for row in payload["definitions"]}


def ensure_custom_fields(
    client: BottleCrmClient, fields: tuple[CustomField, ...] = COULISSE_FIELDS
) -> CustomFieldReport:
    """Create or re-activate Coulisse's custom fields; idempotent.

    Needs an org-admin token with ``custom-fields:read`` and ``custom-fields:write``. A field
    whose key exists with another type raises ``CustomFieldMismatchError`` naming it: changing
    a type under existing values would lose data, so that is a person's decision.
    """
    report = CustomFieldReport()
    existing = existing_definitions(client)
    mismatched = [
        f"{_name(spec)} is {existing[(spec.target_model, spec.key)]['field_type']}, "
        f"Coulisse needs {spec.field_type}"
        for spec in fields
        if (spec.target_model, spec.key) in existing
        and existing[(spec.target_model, spec.key)]["field_type"] != spec.field_type
    ]
    if mismatched:
        raise CustomFieldMismatchError(
            "custom fields with the wrong type in the CRM: "
            + "; ".join(mismatched)
            + ". Rename or delete those fields in BottleCRM (Settings > Custom fields), "
            "then run `coulisse doctor --fix`."
        )
    for order, spec in enumerate(fields):
        row = existing.get((spec.target_model, spec.key))
        if row is None:
            body: dict[str, object] = {
                "target_model": spec.target_model,
                "key": spec.key,
                "label": spec.label,
                "field_type": spec.field_type,
                "display_order": 100 + order,
            }
            if spec.options:
                body["options"] = [{"value": v, "label": label} for v, label in spec.options]
            client.post("custom-fields/", body)
            report.created.append(_name(spec))
        else:
            update: dict[str, object] = {}
            if not row.get("is_active", True):
                update["is_active"] = True
                report.reactivated.append(_name(spec))
            options = _missing_options(spec, row)
            if options:
                update["options"] = options
                report.extended.append(_name(spec))
            if update:
                client.put(f"custom-fields/{row['id']}/", update)
            else:
                report.present.append(_name(spec))
    return report


def _missing_options(spec: CustomField, row: dict[str, object]) -> list[dict[str, str]] | None:
    """The dropdown's options with Coulisse's missing values added, or None if none is missing.

    Values are only ever added: a record may hold a value an admin added, and dropping it from
    the list would make that record invalid.
    """
    if spec.field_type != "dropdown":
        return None
    raw = row.get("options")
    existing = (
        [dict(option) for option in raw if isinstance(option, dict)]
        if isinstance(raw, list)
        else []
    )
    values = {str(option.get("value")) for option in existing}
    missing = [{"value": v, "label": label} for v, label in spec.options if v not in values]
    if not missing:
        return None
    return [
        {"value": str(o.get("value")), "label": str(o.get("label"))} for o in existing
    ] + missing
