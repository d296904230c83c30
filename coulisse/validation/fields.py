"""Check and normalise one value: VAT, SIREN, SIRET, IBAN, e-mail, phone, country, currency.

Each function returns the normalised value, or a :class:`Refusal` saying what is wrong in words
a clerk understands. They are pure and deterministic (no DNS, no clock). Plain values take the
fast paths of :mod:`coulisse.validation.fast` (same results, a tenth of the time); the others go
to the libraries, whose results are cached: the same phone number read from both systems is
parsed once.

Example:
    >>> vat_number("fr 40 303 265 045")
    'FR40303265045'
    >>> vat_number("FR12345678901").message
    'VAT FR12345678901: check digits do not match'
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from stdnum import iban as stdnum_iban
from stdnum.eu import vat as stdnum_vat
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
    ValidationError,
)
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret

from coulisse.validation import fast
from coulisse.validation.reasons import Reason, Refusal

#: Bounded so that memory stays flat; repeats (a client read from both systems) are close.
_CACHE_SIZE = 8_192

#: What each python-stdnum exception means, said for a person.
_PROBLEMS: tuple[tuple[type[ValidationError], str, str], ...] = (
    (InvalidChecksum, "checksum", "check digits do not match"),
    (InvalidLength, "length", "wrong number of digits"),
    (InvalidFormat, "format", "not in the expected format"),
    (InvalidComponent, "country", "country code unknown or not allowed here"),
)

#: Codes people use that ISO 3166 does not: the EU's VAT prefix for Greece, and "UK".
_COUNTRY_ALIASES = {"EL": "GR", "UK": "GB"}


def _stdnum_refusal(
    exc: ValidationError, *, label: str, field: str, value: str, codes: dict[str, Reason]
) -> Refusal:
    for exc_type, problem, words in _PROBLEMS:
        if isinstance(exc, exc_type):
            code = codes.get(problem, codes["format"])
            return Refusal(code, field, f"{label} {value}: {words}")
    return Refusal(codes["format"], field, f"{label} {value}: not a valid number")


def vat_number(value: str) -> str | Refusal:
    """An EU VAT number in compact form with its country prefix (``FR40303265045``)."""
    return fast.vat_fr(value) or _vat_number(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _vat_number(value: str) -> str | Refusal:
    try:
        return str(stdnum_vat.validate(value))
    except ValidationError as exc:
        codes = {
            "checksum": Reason.VAT_CHECKSUM,
            "length": Reason.VAT_LENGTH,
            "format": Reason.VAT_FORMAT,
            "country": Reason.VAT_COUNTRY,
        }
        return _stdnum_refusal(exc, label="VAT", field="vat", value=value.strip(), codes=codes)


def siren_number(value: str) -> str | Refusal:
    """A French SIREN (9 digits, Luhn key) without spaces."""
    return fast.siren(value) or _siren_number(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _siren_number(value: str) -> str | Refusal:
    try:
        return str(stdnum_siren.validate(value))
    except ValidationError as exc:
        codes = {
            "checksum": Reason.SIREN_CHECKSUM,
            "length": Reason.SIREN_LENGTH,
            "format": Reason.SIREN_FORMAT,
        }
        return _stdnum_refusal(exc, label="SIREN", field="siren", value=value.strip(), codes=codes)


def siret_number(value: str) -> str | Refusal:
    """A French SIRET (SIREN plus establishment number, 14 digits) without spaces."""
    return fast.siret(value) or _siret_number(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _siret_number(value: str) -> str | Refusal:
    try:
        return str(stdnum_siret.validate(value))
    except ValidationError as exc:
        codes = {
            "checksum": Reason.SIRET_CHECKSUM,
            "length": Reason.SIRET_LENGTH,
            "format": Reason.SIRET_FORMAT,
        }
        return _stdnum_refusal(exc, label="SIRET", field="siret", value=value.strip(), codes=codes)


@lru_cache(maxsize=_CACHE_SIZE)
def iban_number(value: str) -> str | Refusal:
    """An IBAN in compact upper-case form."""
    try:
        return str(stdnum_iban.validate(value))
    except ValidationError as exc:
        codes = {
            "checksum": Reason.IBAN_CHECKSUM,
            "length": Reason.IBAN_LENGTH,
            "format": Reason.IBAN_FORMAT,
            "country": Reason.IBAN_COUNTRY,
        }
        return _stdnum_refusal(exc, label="IBAN", field="iban", value=value.strip(), codes=codes)


def email_address(value: str) -> str | Refusal:
    """An e-mail address checked for syntax only (no DNS: we must work offline)."""
    return fast.email(value) or _email_address(value)


@lru_cache(maxsize=_CACHE_SIZE)
def _email_address(value: str) -> str | Refusal:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        return Refusal(Reason.EMAIL_INVALID, "email", f"E-mail {value.strip()}: {exc}")


def phone_number(value: str, default_region: str) -> str | Refusal:
    """A phone number in E.164 (``+33123456789``); national numbers read in ``default_region``."""
    return fast.phone(value, default_region) or _phone_number(value, default_region)


@lru_cache(maxsize=_CACHE_SIZE)
def _phone_number(value: str, default_region: str) -> str | Refusal:
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return Refusal(
            Reason.PHONE_UNREADABLE, "phone", f"Phone {value.strip()}: not a phone number"
        )
    if not phonenumbers.is_valid_number(parsed):
        region = phonenumbers.region_code_for_number(parsed) or default_region
        return Refusal(
            Reason.PHONE_INVALID,
            "phone",
            f"Phone {value.strip()}: not a valid number in {region}",
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=1024)
def country_code(value: str) -> str | Refusal:
    """An ISO 3166 alpha-2 code from a code or an English name, in any case ("france", "Fra")."""
    text = value.strip()
    alias = _COUNTRY_ALIASES.get(text.upper())
    if alias:
        return alias
    try:
        return str(pycountry.countries.lookup(text).alpha_2)
    except LookupError:
        return Refusal(
            Reason.COUNTRY_UNKNOWN,
            "billing_country",
            f"Country {text}: not a country name or ISO code",
        )


@lru_cache(maxsize=256)
def currency_code(value: str) -> str | Refusal:
    """An ISO 4217 currency code in upper case ("eur" becomes "EUR")."""
    text = value.strip().upper()
    if pycountry.currencies.get(alpha_3=text) is None:
        return Refusal(
            Reason.CURRENCY_UNKNOWN, "currency", f"Currency {value.strip()}: not an ISO 4217 code"
        )
    return text
