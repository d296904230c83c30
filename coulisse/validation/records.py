"""Check a whole observed record: parse it into the canonical model, then normalise and validate.

Example:
    >>> checked = check_record("client", {"source": "crm", "name": "Dupont", "vat": "FR1"}, "crm")
    >>> [refusal.code.value for refusal in checked.refusals]
    ['vat_length']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from coulisse.model.records import (
    MODELS,
    CanonicalRecord,
    Client,
    Entity,
    Invoice,
    Order,
    Product,
    Side,
    _plain,
)
from coulisse.validation import fields
from coulisse.validation.names import company_name_key
from coulisse.validation.reasons import Reason, Refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pydantic_core import ErrorDetails

_PROBLEM_WORDS: dict[str, str] = {
    "decimal_parsing": "not an amount",
    "decimal_type": "not an amount",
    "finite_number": "not an amount",
    "date_parsing": "not a date (expected YYYY-MM-DD)",
    "date_from_datetime_parsing": "not a date (expected YYYY-MM-DD)",
    "date_from_datetime_inexact": "not a date (expected YYYY-MM-DD)",
    "date_type": "not a date (expected YYYY-MM-DD)",
    "datetime_parsing": "not a date and time",
    "datetime_from_date_parsing": "not a date and time",
    "datetime_type": "not a date and time",
    "timezone_aware": "a date and time without a time zone",
    "bool_parsing": "not yes or no",
    "bool_type": "not yes or no",
    "list_type": "not a list",
    "model_type": "not a group of values",
    "string_type": "not text",
}


@dataclass(frozen=True, slots=True)
class ValidationSettings:
    """Choices that validation needs but records do not carry."""

    #: Region for phone numbers written without a country prefix, when the record has no country.
    default_phone_region: str = "FR"


_DEFAULTS = ValidationSettings()


@dataclass(slots=True)
class CheckedPlain:
    """:class:`CheckedRecord` with the normalised record as plain data (``record.plain()``)."""

    plain: dict[str, Any] | None
    refusals: list[Refusal] = field(default_factory=list)
    match_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the record may be synchronised."""
        return self.plain is not None and not self.refusals


@dataclass(slots=True)
class CheckedRecord:
    """A record after checking: the normalised record (None if unreadable) and what is wrong."""

    record: CanonicalRecord | None
    refusals: list[Refusal] = field(default_factory=list)
    #: Keys used to match records across systems (``vat``, ``siren``, ``name``, ``code``).
    match_keys: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the record may be synchronised."""
        return self.record is not None and not self.refusals


def _label(location: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for part in location:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1].rstrip('s')} {part + 1}"
        else:
            parts.append(str(part).replace("_", " "))
    text = " ".join(parts)
    return text[:1].upper() + text[1:]


def _from_pydantic(error: ErrorDetails) -> Refusal:
    location = tuple(error["loc"])
    name = ".".join(str(part) for part in location)
    if error["type"] == "missing":
        return Refusal(Reason.MISSING_VALUE, name, f"{_label(location)}: missing")
    words = _PROBLEM_WORDS.get(error["type"])
    if error["type"] == "literal_error":
        words = f"not one of {error.get('ctx', {}).get('expected', '')}"
    shown = repr(error["input"])
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return Refusal(
        Reason.INVALID_VALUE, name, f"{_label(location)} {shown}: {words or error['msg']}"
    )


def _normalise(
    updates: dict[str, Any],
    refusals: list[Refusal],
    name: str,
    value: str | None,
    check: Callable[[str], str | Refusal],
) -> str | None:
    if value is None:
        return None
    result = check(value)
    if isinstance(result, Refusal):
        refusals.append(result)
        return None
    updates[name] = result
    return result


def _check_client(
    client: Client, settings: ValidationSettings
) -> tuple[dict[str, Any], list[Refusal], dict[str, str]]:
    updates: dict[str, Any] = {}
    refusals: list[Refusal] = []
    if client.name is None:
        refusals.append(Refusal(Reason.MISSING_VALUE, "name", "Name: missing"))
    vat = _normalise(updates, refusals, "vat", client.vat, fields.vat_number)
    siren = _normalise(updates, refusals, "siren", client.siren, fields.siren_number)
    siret = _normalise(updates, refusals, "siret", client.siret, fields.siret_number)
    _normalise(updates, refusals, "iban", client.iban, fields.iban_number)
    _normalise(updates, refusals, "email", client.email, fields.email_address)
    country = _normalise(
        updates, refusals, "billing_country", client.billing_country, fields.country_code
    )
    region = country or settings.default_phone_region
    _normalise(
        updates, refusals, "phone", client.phone, lambda text: fields.phone_number(text, region)
    )
    _normalise(updates, refusals, "currency", client.currency, fields.currency_code)
    if siren and siret and not siret.startswith(siren):
        refusals.append(
            Refusal(
                Reason.SIRET_NOT_OF_SIREN,
                "siret",
                f"SIRET {siret}: does not belong to SIREN {siren}",
            )
        )
    if siren and vat and vat.startswith("FR") and vat[4:] != siren:
        refusals.append(
            Refusal(Reason.VAT_NOT_OF_SIREN, "vat", f"VAT {vat}: does not belong to SIREN {siren}")
        )
    keys: dict[str, str] = {}
    if vat:
        keys["vat"] = vat
    # A French VAT number embeds the SIREN: a client known by VAT on one side and by SIREN
    # on the other is still the same client.
    company_siren = siren or (siret[:9] if siret else None)
    if company_siren is None and vat and vat.startswith("FR"):
        company_siren = vat[4:]
    if company_siren:
        keys["siren"] = company_siren
    if client.name:
        postcode = (client.billing_postal_code or "").replace(" ", "").upper()
        keys["name"] = f"{company_name_key(client.name)}|{postcode}"
    return updates, refusals, keys


def _check_product(product: Product) -> tuple[dict[str, Any], list[Refusal], dict[str, str]]:
    updates: dict[str, Any] = {}
    refusals: list[Refusal] = []
    if product.code is None:
        refusals.append(Refusal(Reason.MISSING_VALUE, "code", "Product code: missing"))
    if product.unit_price is not None and product.unit_price < 0:
        refusals.append(
            Refusal(
                Reason.AMOUNT_NEGATIVE, "unit_price", f"Unit price {product.unit_price}: negative"
            )
        )
    _normalise(updates, refusals, "currency", product.currency, fields.currency_code)
    keys = {"code": product.code.upper()} if product.code else {}
    return updates, refusals, keys


def _check_order(order: Order) -> tuple[dict[str, Any], list[Refusal], dict[str, str]]:
    updates: dict[str, Any] = {}
    refusals: list[Refusal] = []
    if order.client_crm_id is None and order.client_erp_id is None:
        refusals.append(Refusal(Reason.CLIENT_MISSING, "client", "Order: no client"))
    for number, line in enumerate(order.lines, start=1):
        if line.quantity <= 0:
            refusals.append(
                Refusal(
                    Reason.QUANTITY_NOT_POSITIVE,
                    f"lines.{number - 1}.quantity",
                    f"Line {number} quantity {line.quantity}: must be more than zero",
                )
            )
    _normalise(updates, refusals, "currency", order.currency, fields.currency_code)
    return updates, refusals, {}


def _check_invoice(invoice: Invoice) -> tuple[dict[str, Any], list[Refusal], dict[str, str]]:
    updates: dict[str, Any] = {}
    refusals: list[Refusal] = []
    if invoice.client_crm_id is None and invoice.client_erp_id is None:
        refusals.append(Refusal(Reason.CLIENT_MISSING, "client", "Invoice: no client"))
    _normalise(updates, refusals, "currency", invoice.currency, fields.currency_code)
    untaxed, tax, total = invoice.untaxed_amount, invoice.tax_amount, invoice.total_amount
    if untaxed is not None and tax is not None and total is not None and untaxed + tax != total:
        refusals.append(
            Refusal(
                Reason.TOTALS_MISMATCH,
                "total_amount",
                f"Total {total}: is not untaxed amount {untaxed} plus tax {tax}",
            )
        )
    due = invoice.amount_due
    if due is not None and total is not None and due > total:
        refusals.append(
            Refusal(
                Reason.AMOUNT_DUE_ABOVE_TOTAL,
                "amount_due",
                f"Amount due {due}: more than the invoice total {total}",
            )
        )
    if due is not None and due < Decimal(0):
        refusals.append(
            Refusal(Reason.AMOUNT_NEGATIVE, "amount_due", f"Amount due {due}: negative")
        )
    return updates, refusals, {}


def _check(
    entity: Entity, data: Mapping[str, Any], side: Side, settings: ValidationSettings
) -> tuple[CanonicalRecord | None, dict[str, Any], list[Refusal], dict[str, str]]:
    """The parsed record, its normalised values, its refusals and its match keys."""
    model = MODELS[entity]
    try:
        record = model.model_validate(data)
    except ValidationError as exc:
        return None, {}, [_from_pydantic(error) for error in exc.errors()], {}
    refusals: list[Refusal] = []
    if record.source != side:
        refusals.append(
            Refusal(
                Reason.WRONG_SOURCE,
                "source",
                f"Source {record.source}: record was read from the {side.upper()}",
            )
        )
    if isinstance(record, Client):
        updates, found, keys = _check_client(record, settings)
    elif isinstance(record, Product):
        updates, found, keys = _check_product(record)
    elif isinstance(record, Order):
        updates, found, keys = _check_order(record)
    else:
        assert isinstance(record, Invoice)
        updates, found, keys = _check_invoice(record)
    refusals.extend(found)
    return record, updates, refusals, keys


def check_record(
    entity: Entity,
    data: Mapping[str, Any],
    side: Side,
    settings: ValidationSettings | None = None,
) -> CheckedRecord:
    """Parse ``data`` as observed on ``side`` and return the normalised record and its refusals."""
    record, updates, refusals, keys = _check(entity, data, side, settings or _DEFAULTS)
    if record is not None and updates:
        record = record.model_copy(update=updates)
    return CheckedRecord(record, refusals, keys)


#: Values ``CanonicalRecord.plain`` keeps as they are (it only rewrites dates and nested parts).
_PLAIN_TYPES = frozenset({str, bool, int, Decimal, type(None)})


def check_plain(
    entity: Entity,
    data: Mapping[str, Any],
    side: Side,
    settings: ValidationSettings | None = None,
) -> CheckedPlain:
    """:func:`check_record` with the record as ``record.plain()`` gives it, made faster.

    The planner stores the plain form only: building it straight from the parsed record (the
    normalised values are text) saves a model copy and most of the conversion.
    """
    record, updates, refusals, keys = _check(entity, data, side, settings or _DEFAULTS)
    if record is None:
        return CheckedPlain(None, refusals, keys)
    plain = {
        name: value if type(value) in _PLAIN_TYPES else _plain(value)
        for name, value in record.model_dump(mode="python").items()
    }
    plain.update(updates)
    return CheckedPlain(plain, refusals, keys)
