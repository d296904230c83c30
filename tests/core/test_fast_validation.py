"""The validation fast paths give the libraries' own results, on large generated samples.

Each fast path answers only for values it is sure of; for those, its answer must be exactly the
library's normalised value (and never a value the library refuses). The samples mix valid and
invalid values, separators, cases and every phone region; each test also checks that the fast
path does answer for the plain values it exists for, so that a silent fallback (correct, but as
slow as before) shows up too.
"""

from __future__ import annotations

import json
import random
import string
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.eu import vat as stdnum_vat
from stdnum.exceptions import ValidationError
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret
from stdnum.util import _char_map

from coulisse.validation import check_plain, check_record, fast, fields, names

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from coulisse.model import Side

SAMPLE = 20_000
FIXTURES = Path(__file__).parent / "fixtures"


def _library(check: Callable[[str], str], value: str) -> str | None:
    try:
        return check(value)
    except ValidationError:
        return None


def _assert_same(
    shortcut: Callable[[str], str | None],
    library: Callable[[str], str | None],
    values: Iterable[str],
) -> float:
    """Every answer of ``shortcut`` is the library's; returns the share of the values the
    library accepts that ``shortcut`` answered."""
    answered = accepted = 0
    for value in values:
        quick = shortcut(value)
        expected = library(value)
        accepted += expected is not None
        if quick is not None:
            answered += 1
            assert quick == expected, value
    return answered / accepted


def _separated(rng: random.Random, digits: str, separators: str) -> str:
    return "".join(
        char + (rng.choice(separators) if rng.random() < 0.3 else "") for char in digits
    ).rstrip(separators)


def _siren(rng: random.Random) -> str:
    base = f"{rng.randrange(10**8):08d}"
    return base + luhn.calc_check_digit(base)


def test_stdnum_maps_no_plain_character_the_fast_paths_read() -> None:
    # The fast paths read ASCII letters, digits, spaces, dots and hyphens as they are.
    plain = string.ascii_letters + string.digits + " .-"
    assert all(_char_map.get(char, char) == char for char in plain)


def test_french_vat_numbers_match_stdnum() -> None:
    rng = random.Random(1)
    values = []
    for _ in range(SAMPLE):
        siren = _siren(rng) if rng.random() < 0.8 else f"{rng.randrange(10**9):09d}"
        if rng.random() < 0.05:
            siren = "000" + siren[3:]
        key = int(siren + "12") % 97 if rng.random() < 0.8 else rng.randrange(100)
        prefix = rng.choice(["FR", "fr", "Fr", "FR ", "FR-", "F R", " FR", "XX"])
        values.append(prefix + _separated(rng, f"{key:02d}{siren}", " .-"))
    share = _assert_same(fast.vat_fr, lambda value: _library(stdnum_vat.validate, value), values)
    assert share > 0.5
    assert fields.vat_number("FR 40 303 265 045") == "FR40303265045"


def test_siren_and_siret_match_stdnum() -> None:
    rng = random.Random(2)
    sirens, sirets = [], []
    for _ in range(SAMPLE):
        siren = _siren(rng) if rng.random() < 0.8 else f"{rng.randrange(10**9):09d}"
        sirens.append(_separated(rng, siren, " .-"))
        if rng.random() < 0.05:
            siren = "356000000"
        base = siren + f"{rng.randrange(10**4):04d}"
        siret = base + luhn.calc_check_digit(base) if rng.random() < 0.8 else base + "7"
        sirets.append(_separated(rng, siret, " ."))
    assert _assert_same(fast.siren, lambda v: _library(stdnum_siren.validate, v), sirens) > 0.5
    assert _assert_same(fast.siret, lambda v: _library(stdnum_siret.validate, v), sirets) > 0.5


def _email_library(value: str) -> str | None:
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


_LOCAL_CHARS = string.ascii_letters + string.digits + "._+-!#$%&'*/=?^`{|}~" + 'é"@ '
_DOMAIN_CHARS = string.ascii_letters + string.digits + "-" * 6 + ".é_"


def _email(rng: random.Random) -> str:
    local = "".join(rng.choice(_LOCAL_CHARS) for _ in range(rng.choice([1, 5, 12, 64, 65])))
    if rng.random() < 0.7:
        local = "".join(char for char in local if char not in 'é"@ ') or "a"
    if rng.random() < 0.05:
        local = rng.choice(["info", "Sales", "POSTMASTER"])
    labels = []
    for _ in range(rng.choice([1, 2, 2, 3])):
        size = rng.choice([1, 3, 10, 63, 64])
        labels.append("".join(rng.choice(_DOMAIN_CHARS) for _ in range(size)))
    if rng.random() < 0.6:
        labels = [
            "".join(c for c in label if c.isascii() and c.isalnum()) or "x" for label in labels
        ]
    tld = rng.choice(["fr", "COM", "local", "test", "onion", "invalid", "arpa", "co", "123", "x1"])
    domain = ".".join([*labels, tld])
    if rng.random() < 0.02:
        domain = "x" * 250 + ".fr"
    return f"{local}@{domain}"


def test_email_addresses_match_email_validator() -> None:
    rng = random.Random(3)
    values = [_email(rng) for _ in range(SAMPLE)]
    values += [
        "Jean.Dupont@Example.FR",
        "contact@boulangerie-dupont.fr",
        "a@b.c",
        "a@xn--bcher-kva.de",
        "a@ab--cd.fr",
        "info@x.fr",
        "a..b@x.fr",
        ".a@x.fr",
        "a@-x.fr",
        "a@x-.fr",
        "a@x.fr.",
        "a@localhost",
        "a@x.local",
    ]
    assert _assert_same(fast.email, _email_library, values) > 0.3
    assert fast.email("contact@Boulangerie-Dupont.FR") == "contact@boulangerie-dupont.fr"


def _phone_library(value: str, region: str) -> str | None:
    result = fields._phone_number(value, region)
    return result if isinstance(result, str) else None


def _phones(rng: random.Random, region: str) -> list[str]:
    """Valid numbers of ``region`` written every plain way, and broken ones."""
    values: list[str] = []
    for kind in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
    ):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        for style in (
            phonenumbers.PhoneNumberFormat.NATIONAL,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.E164,
        ):
            values.append(phonenumbers.format_number(example, style))
        nsn = phonenumbers.national_significant_number(example)
        prefix = str(example.country_code)
        for _ in range(8):
            # Same shape, other digits: some valid, most not.
            spelled = list(nsn)
            spelled[rng.randrange(len(spelled))] = rng.choice(string.digits)
            changed = "".join(spelled)
            values.append("0" + _separated(rng, changed, " .-"))
            values.append(_separated(rng, changed, " .-"))
            values.append("+" + prefix + " " + _separated(rng, changed, " .-"))
            values.append("+" + prefix + "0" + changed)
            values.append("00" + prefix + changed)
            values.append(prefix + changed)
    for _ in range(10):
        size = rng.randrange(1, 18)
        digits = "".join(rng.choice(string.digits) for _ in range(size))
        values.extend([digits, "+" + digits, "0" + digits])
    return values


def test_phone_numbers_match_phonenumbers_in_every_region() -> None:
    rng = random.Random(4)
    answered = accepted = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for value in _phones(rng, region):
            quick = fast.phone(value, region)
            expected = _phone_library(value, region)
            accepted += expected is not None
            if quick is not None:
                answered += 1
                assert quick == expected, (value, region)
    assert answered / accepted > 0.5


def test_french_phone_numbers_take_the_fast_path() -> None:
    rng = random.Random(5)
    values = []
    for _ in range(SAMPLE):
        nsn = rng.choice("123456789") + "".join(rng.choice(string.digits) for _ in range(8))
        pairs = " ".join(nsn[i : i + 2] for i in range(1, 9, 2))
        values.append(
            rng.choice(
                [
                    f"0{nsn}",
                    f"0{nsn[0]} {pairs}",
                    f"0{nsn[0]}.{pairs.replace(' ', '.')}",
                    f"+33{nsn}",
                    f"+33 {nsn[0]} {pairs}",
                    f"+33 0{nsn}",
                    f"0033{nsn}",
                    f"33{nsn}",
                    nsn,
                ]
            )
        )
    share = _assert_same(
        lambda value: fast.phone(value, "FR"), lambda value: _phone_library(value, "FR"), values
    )
    assert share > 0.5
    assert fields.phone_number("01 42 68 53 00", "FR") == "+33142685300"


plain_phones = st.from_regex(r"\A\+?[0-9]{1,6}(?:[ .\-][0-9]{1,6}){0,4}\Z")
regions = st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS))


@given(plain_phones, regions)
def test_a_fast_phone_answer_is_the_librarys(value: str, region: str) -> None:
    quick = fast.phone(value, region)
    if quick is not None:
        assert quick == _phone_library(value, region)


@given(st.from_regex(r"\A[A-Za-z0-9.+_-]{1,20}@[A-Za-z0-9.-]{1,30}\Z"))
def test_a_fast_email_answer_is_the_librarys(value: str) -> None:
    quick = fast.email(value)
    if quick is not None:
        assert quick == _email_library(value)


@pytest.mark.parametrize(
    ("value", "region"),
    [("01 42 68 53 00", "FR"), ("+33 1 42 68 53 00", "DE"), ("030 1234567", "DE")],
)
def test_fields_give_the_same_answer_with_or_without_the_fast_path(value: str, region: str) -> None:
    assert fields.phone_number(value, region) == fields._phone_number(value, region)


_RECORDS: list[tuple[str, dict[str, object]]] = [
    ("client", {"source": "crm", "crm_id": "a1", "name": "Dupont", "vat": "fr 40 303 265 045"}),
    ("client", {"source": "crm", "name": " ", "phone": "02 512 34 56", "billing_country": "be"}),
    ("client", {"source": "erp", "erp_id": 7, "balance_due": "12.50", "last_invoice_date": ""}),
    ("client", {"source": "crm", "email": "bad@", "siret": "732 829 320 00074"}),
    ("client", {"source": "crm", "source_updated_at": "2026-05-04T09:30:00+02:00"}),
    ("product", {"source": "erp", "code": "p1", "unit_price": "1.20", "currency": "eur"}),
    (
        "order",
        {
            "source": "crm",
            "client_crm_id": "a1",
            "order_date": "2026-05-04",
            "lines": [{"product_code": "P1", "quantity": "2", "unit_price": "1.5"}],
        },
    ),
    (
        "invoice",
        {
            "source": "erp",
            "client_erp_id": "4",
            "state": "paid",
            "payments": [{"payment_date": "2026-05-04", "amount": "10"}],
            "taxes": [{"rate": "0.2", "base": "50", "amount": "10"}],
        },
    ),
    ("invoice", {"source": "erp", "state": "open", "total_amount": "12,50"}),
]


@pytest.mark.parametrize(("entity", "data"), _RECORDS)
def test_check_plain_is_check_record_in_plain_form(entity: str, data: dict[str, object]) -> None:
    slow = check_record(entity, data, "crm")  # type: ignore[arg-type]
    fast_check = check_plain(entity, data, "crm")  # type: ignore[arg-type]
    assert fast_check.plain == (slow.record.plain() if slow.record is not None else None)
    assert fast_check.refusals == slow.refusals
    assert fast_check.match_keys == slow.match_keys
    assert fast_check.ok == slow.ok


@given(st.text(alphabet=string.printable, max_size=40))
def test_ascii_names_fold_as_the_general_rule_does(name: str) -> None:
    general = unicodedata.normalize("NFKD", name.casefold())
    general = "".join(char for char in general if not unicodedata.combining(char))
    assert names._fold(name) == general.replace(".", "")


def test_check_plain_agrees_on_every_fixture_and_generated_client() -> None:
    rng = random.Random(6)
    records: list[dict[str, object]] = []
    for path in sorted(FIXTURES.glob("*.singer")):
        for line in path.read_text().splitlines():
            message = json.loads(line)
            if message.get("type") == "RECORD" and message.get("stream") == "clients":
                records.append(message["record"])
    for number in range(2000):
        records.append(
            {
                "source": "crm",
                "crm_id": str(number),
                "name": rng.choice(["Dupont SARL", "Müller GmbH", "", "A.C.M.E."]),
                "vat": rng.choice(["FR40303265045", "FR40 303 265 046", None]),
                "email": rng.choice(["A@B.FR", "x@y", "info@dupont.fr", None]),
                "phone": rng.choice(["01 42 68 53 00", "+33 6 12 34 56 78", "12", None]),
                "billing_country": rng.choice(["France", "fr", "Belgique", None]),
            }
        )
    for data in records:
        side: Side = "erp" if data.get("source") == "erp" else "crm"
        slow = check_record("client", data, side)
        quick = check_plain("client", data, side)
        assert quick.plain == (slow.record.plain() if slow.record is not None else None)
        assert (quick.refusals, quick.match_keys) == (slow.refusals, slow.match_keys)
