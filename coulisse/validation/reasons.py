"""Why a record is refused: a stable code for machines and a sentence for the clerk who fixes it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes; dashboards, alerts and tests key on these, so never rename one."""

    INVALID_VALUE = "invalid_value"
    MISSING_VALUE = "missing_value"
    VAT_FORMAT = "vat_format"
    VAT_LENGTH = "vat_length"
    VAT_CHECKSUM = "vat_checksum"
    VAT_COUNTRY = "vat_country"
    VAT_NOT_OF_SIREN = "vat_not_of_siren"
    SIREN_FORMAT = "siren_format"
    SIREN_LENGTH = "siren_length"
    SIREN_CHECKSUM = "siren_checksum"
    SIRET_FORMAT = "siret_format"
    SIRET_LENGTH = "siret_length"
    SIRET_CHECKSUM = "siret_checksum"
    SIRET_NOT_OF_SIREN = "siret_not_of_siren"
    IBAN_FORMAT = "iban_format"
    IBAN_LENGTH = "iban_length"
    IBAN_CHECKSUM = "iban_checksum"
    IBAN_COUNTRY = "iban_country"
    EMAIL_INVALID = "email_invalid"
    PHONE_UNREADABLE = "phone_unreadable"
    PHONE_INVALID = "phone_invalid"
    COUNTRY_UNKNOWN = "country_unknown"
    CURRENCY_UNKNOWN = "currency_unknown"
    AMOUNT_NEGATIVE = "amount_negative"
    QUANTITY_NOT_POSITIVE = "quantity_not_positive"
    TOTALS_MISMATCH = "totals_mismatch"
    AMOUNT_DUE_ABOVE_TOTAL = "amount_due_above_total"
    CLIENT_MISSING = "client_missing"
    WRONG_SOURCE = "wrong_source"
    #: An order line names a product the ERP's catalogue does not have.
    PRODUCT_UNKNOWN = "product_unknown"
    #: A CRM draft invoice for a deal whose ERP sale makes its own invoice.
    INVOICE_OF_SALE = "invoice_of_sale"
    #: The record's reference names a record of the other system linked to another one.
    LINK_TAKEN = "link_taken"
    #: The system itself refused our write (Tryton's own VAT check, a CRM 400...).
    REFUSED_BY_CRM = "refused_by_crm"
    REFUSED_BY_ERP = "refused_by_erp"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One reason a record cannot be synchronised as it is.

    Example:
        >>> str(Refusal(Reason.VAT_CHECKSUM, "vat", "VAT FR12: check digits do not match"))
        'VAT FR12: check digits do not match'
    """

    code: Reason
    field: str | None
    message: str

    def __str__(self) -> str:
        return self.message
