"""Fast paths in front of the validation libraries, for the values most records carry.

python-stdnum, email-validator and phonenumbers handle every spelling the world uses, at about
100 microseconds per client. Most values are plainer: an ASCII address, a French VAT number,
digits with spaces. Each function here recognises one such plain shape, decides it with the
same rule the library applies to it, and returns the library's normalised value, or None when
the value is not of that shape *or is refused*: the caller then asks the library, so refusals
and their messages always come from the library itself. ``tests/core/test_fast_validation.py``
compares both on large generated samples.

Example:
    >>> vat_fr("FR 40 303 265 045")
    'FR40303265045'
    >>> vat_fr("FR12345678901") is None  # bad check digits: the library says why
    True
    >>> phone("01 42 68 53 00", "FR")
    '+33142685300'
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import email_validator
import phonenumbers
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from phonenumbers import PhoneMetadata

if TYPE_CHECKING:
    from collections.abc import Callable

    from phonenumbers import PhoneNumberDesc

# -- French VAT, SIREN, SIRET (python-stdnum) ---------------------------------------------------

#: What ``stdnum.eu.vat`` and ``stdnum.fr.tva`` read as a French VAT number: "FR", then 11
#: digits that spaces, dots and hyphens may separate (they are removed).
_VAT_FR = re.compile(r"[Ff][Rr](?:[ .\-]*[0-9]){11}")
#: ``stdnum.fr.siren`` and ``stdnum.fr.siret`` remove spaces and dots only.
_SIREN = re.compile(r"[0-9](?:[ .]*[0-9]){8}")
_SIRET = re.compile(r"[0-9](?:[ .]*[0-9]){13}")
_NOT_DIGITS = re.compile(r"[^0-9]")
#: The Luhn value of each digit at an even position from the right (doubled, digits summed).
_DOUBLED = str.maketrans("0123456789", "0246813579")


def _luhn(digits: str) -> bool:
    """``stdnum.luhn``'s check, on ASCII digits only."""
    total = sum(map(int, digits[-1::-2])) + sum(map(int, digits[-2::-2].translate(_DOUBLED)))
    return total % 10 == 0


def vat_fr(value: str) -> str | None:
    """A valid French VAT number, compact (``FR`` and 11 digits); None to ask the library."""
    if _VAT_FR.fullmatch(value) is None:
        return None
    digits = _NOT_DIGITS.sub("", value[2:])
    siren = digits[2:]
    # Numbers of Monaco ("000" after the key) are valid VAT numbers but not SIRENs.
    if siren[:3] != "000" and not _luhn(siren):
        return None
    if int(digits[:2]) != int(siren + "12") % 97:
        return None
    return "FR" + digits


def siren(value: str) -> str | None:
    """A valid SIREN without separators; None to ask the library."""
    if _SIREN.fullmatch(value) is None:
        return None
    digits = _NOT_DIGITS.sub("", value)
    return digits if _luhn(digits) else None


def siret(value: str) -> str | None:
    """A valid SIRET without separators; None to ask the library (La Poste has its own rule)."""
    if _SIRET.fullmatch(value) is None:
        return None
    digits = _NOT_DIGITS.sub("", value)
    if digits.startswith("356000000"):
        return None
    return digits if _luhn(digits) and _luhn(digits[:9]) else None


# -- e-mail (email-validator, without deliverability checks) -------------------------------------

#: An ASCII dot-atom before the @ (email-validator keeps it as it is) and an ASCII host name
#: after it: labels of letters, digits and inner hyphens, at least one dot, ending in a letter.
_EMAIL = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*)"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)"
)
_EMAIL_MAX_LENGTH = 254
_LOCAL_PART_MAX_LENGTH = 64
_DOMAIN_MAX_LENGTH = 253


def email(value: str) -> str | None:
    """``validate_email(value).normalized`` for a plain ASCII address; None to ask the library.

    Left to the library: anything non-ASCII, quoted or bracketed; "--" in the domain (Punycode
    and reserved label forms); role mailboxes it lower-cases (``Info@``); special-use domains
    (``.local``, ``.test``...); lengths near the limits.
    """
    if len(value) > _EMAIL_MAX_LENGTH:
        return None
    match = _EMAIL.fullmatch(value)
    if match is None:
        return None
    local, domain = match.groups()
    if (
        len(local) > _LOCAL_PART_MAX_LENGTH
        or len(domain) > _DOMAIN_MAX_LENGTH
        or "--" in domain
        or not domain[-1].isalpha()
        or local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES
    ):
        return None
    domain = domain.lower()
    # Read at each call, as the library does: an application may extend the list.
    for special in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == special or domain.endswith("." + special):
            return None
    return f"{local}@{domain}"


# -- phone numbers (phonenumbers) ---------------------------------------------------------------

#: Digits in groups separated by one space, dot or hyphen, with or without a leading "+".
_PHONE = re.compile(r"(\+?)([0-9]+(?:[ .\-][0-9]+)*)")
_PLAIN_PREFIX = re.compile(r"[0-9]*")
_MIN_NSN, _MAX_NSN = 2, 17


class _Plan(NamedTuple):
    """What ``phonenumbers.parse`` needs from a region's metadata to read plain digits."""

    country_code: int
    country_prefix: str
    #: The region's international call prefix ("00"), to leave such numbers to the library.
    idd: re.Pattern[str] | None
    #: The national prefix stripped when parsing ("0"), when it is plain digits.
    national_prefix: str
    general: re.Pattern[str]
    lengths: frozenset[int]
    #: ``is_valid_number`` for a national significant number of this country, when the
    #: country is one region (else the library decides which region a number belongs to).
    valid: Callable[[str], bool] | None


#: The number types ``phonenumbers`` tries, in its order; any match makes a number valid.
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
    "mobile",
)
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P")


def _validity(metadata: PhoneMetadata) -> Callable[[str], bool] | None:
    """``_number_type_helper(number, metadata) != UNKNOWN`` with one regex per length group.

    A number is valid when it matches the general description and at least one type's
    (lengths first, then pattern), which is what ``is_valid_number_for_region`` checks.
    """
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code or 0, ())
    general = metadata.general_desc
    if (
        len(regions) != 1
        or regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        or general is None
        or not general.national_number_pattern
    ):
        return None
    by_lengths: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for name in _TYPES:
        desc: PhoneNumberDesc | None = getattr(metadata, name)
        if desc is None or not desc.national_number_pattern:
            continue
        if _BACKREFERENCE.search(desc.national_number_pattern):
            return None
        by_lengths[tuple(desc.possible_length or ())].append(desc.national_number_pattern)
    general_lengths = frozenset(general.possible_length)
    general_pattern = re.compile(general.national_number_pattern)
    groups = [
        (
            frozenset(lengths) if lengths else None,
            re.compile("|".join(f"(?:{p})" for p in patterns)),
        )
        for lengths, patterns in by_lengths.items()
    ]

    def valid(number: str) -> bool:
        size = len(number)
        if size not in general_lengths or general_pattern.fullmatch(number) is None:
            return False
        return any(
            (lengths is None or size in lengths) and pattern.fullmatch(number) is not None
            for lengths, pattern in groups
        )

    return valid


def _plan(metadata: PhoneMetadata | None) -> _Plan | None:
    """The reading plan of a region, or None when its rules are not plain enough for a shortcut."""
    if metadata is None or metadata.country_code is None:
        return None
    prefix = metadata.national_prefix_for_parsing or ""
    general = metadata.general_desc
    if (
        _PLAIN_PREFIX.fullmatch(prefix) is None
        or metadata.national_prefix_transform_rule
        or general is None
        or not general.national_number_pattern
        or not general.possible_length
    ):
        return None
    idd = metadata.international_prefix
    return _Plan(
        country_code=metadata.country_code,
        country_prefix=str(metadata.country_code),
        idd=re.compile(idd) if idd else None,
        national_prefix=prefix,
        general=re.compile(general.national_number_pattern),
        lengths=frozenset(general.possible_length)
        - frozenset(general.possible_length_local_only or ()),
        valid=_validity(metadata),
    )


@cache
def _region_plan(region: str) -> _Plan | None:
    if region != region.upper() or region not in phonenumbers.SUPPORTED_REGIONS:
        return None
    return _plan(PhoneMetadata.metadata_for_region(region, None))


@cache
def _country_plan(country_code: int) -> _Plan | None:
    region = phonenumbers.region_code_for_country_code(country_code)
    return _plan(PhoneMetadata.metadata_for_region_or_calling_code(country_code, region))


def _significant(digits: str, plan: _Plan) -> str | None:
    """The national significant number ``parse`` keeps, when it is certain; else None.

    ``parse`` strips the national prefix when what is left is a possible number of the
    region (its general pattern and lengths); a number without the prefix is kept as it is.
    """
    prefix = plan.national_prefix
    if prefix and digits.startswith(prefix):
        rest = digits[len(prefix) :]
        if len(rest) not in plan.lengths or plan.general.fullmatch(rest) is None:
            return None
        digits = rest
    if not _MIN_NSN <= len(digits) <= _MAX_NSN or digits[0] == "0":
        # Leading zeros are kept apart (Italy) by parse: leave them to it.
        return None
    return digits


def _international(digits: str) -> tuple[_Plan, str] | None:
    """The country's plan and the rest of the number, after "+"; None to ask the library."""
    if len(digits) <= _MIN_NSN or digits[0] == "0":
        return None
    # Country calling codes are one to three digits and none is the prefix of another.
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            plan = _country_plan(code)
            return None if plan is None else (plan, digits[size:])
    return None


def _national(digits: str, region: str) -> tuple[_Plan, str] | None:
    """The region's plan and the number, without "+"; None to ask the library."""
    plan = _region_plan(region)
    if plan is None or (plan.idd is not None and plan.idd.match(digits) is not None):
        return None
    # parse may read the region's own country code at the start: leave that to it.
    return None if digits.startswith(plan.country_prefix) else (plan, digits)


def phone(value: str, default_region: str) -> str | None:
    """A valid number in E.164, for plain digits; None to ask the library.

    Plain means digits in groups, national (read in ``default_region``) or after a "+".
    Validity is ``phonenumbers.is_valid_number``'s rule; only the parsing is shortened.
    """
    match = _PHONE.fullmatch(value)
    if match is None:
        return None
    plus, grouped = match.groups()
    digits = grouped.replace(" ", "").replace(".", "").replace("-", "")
    found = _international(digits) if plus else _national(digits, default_region)
    if found is None:
        return None
    plan, national = found
    significant = _significant(national, plan)
    if significant is None:
        return None
    if plan.valid is not None:
        valid = plan.valid(significant)
    else:
        number = phonenumbers.PhoneNumber(
            country_code=plan.country_code, national_number=int(significant)
        )
        valid = phonenumbers.is_valid_number(number)
    return f"+{plan.country_code}{significant}" if valid else None
