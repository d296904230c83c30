"""Validation and normalisation: each refusal has a stable code and a sentence a clerk reads."""

from __future__ import annotations

import pytest

from coulisse.validation import Reason, Refusal, check_record, company_name_key, fields


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("FR40303265045", "FR40303265045"),
        ("fr 40 303 265 045", "FR40303265045"),
        ("BE 0403.170.701", "BE0403170701"),
    ],
)
def test_vat_numbers_are_stored_compact(value: str, expected: str) -> None:
    assert fields.vat_number(value) == expected


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        ("FR12345678901", Reason.VAT_CHECKSUM, "VAT FR12345678901: check digits do not match"),
        ("FR1234", Reason.VAT_LENGTH, "VAT FR1234: wrong number of digits"),
        ("XX123456789", Reason.VAT_COUNTRY, "VAT XX123456789: country code unknown"),
    ],
)
def test_bad_vat_numbers_are_refused_with_a_reason(value: str, code: Reason, message: str) -> None:
    refusal = fields.vat_number(value)
    assert isinstance(refusal, Refusal)
    assert refusal.code == code
    assert refusal.message.startswith(message)
    assert refusal.field == "vat"


def test_siren_siret_and_iban_use_their_check_digits() -> None:
    assert fields.siren_number("303 265 045") == "303265045"
    assert fields.siret_number("732 829 320 00074") == "73282932000074"
    assert fields.iban_number("fr76 3000 6000 0112 3456 7890 189") == "FR7630006000011234567890189"
    siren = fields.siren_number("303265046")
    assert isinstance(siren, Refusal)
    assert siren.code == Reason.SIREN_CHECKSUM
    iban = fields.iban_number("FR7630006000011234567890188")
    assert isinstance(iban, Refusal)
    assert iban.message == "IBAN FR7630006000011234567890188: check digits do not match"


def test_phone_numbers_become_e164_with_the_default_region() -> None:
    assert fields.phone_number("01 42 68 53 00", "FR") == "+33142685300"
    assert fields.phone_number("+33 1 42 68 53 00", "DE") == "+33142685300"
    assert fields.phone_number("030 1234567", "DE") == "+49301234567"
    unreadable = fields.phone_number("call me", "FR")
    assert isinstance(unreadable, Refusal)
    assert unreadable.code == Reason.PHONE_UNREADABLE
    invalid = fields.phone_number("12", "FR")
    assert isinstance(invalid, Refusal)
    assert invalid.message == "Phone 12: not a valid number in FR"


def test_email_is_checked_for_syntax_without_any_network() -> None:
    assert fields.email_address("Jean.Dupont@Example.FR") == "Jean.Dupont@example.fr"
    # A domain that does not exist passes: we never do DNS lookups.
    assert fields.email_address("a@no-such-domain-coulisse.fr") == "a@no-such-domain-coulisse.fr"
    refusal = fields.email_address("lefevre@")
    assert isinstance(refusal, Refusal)
    assert refusal.code == Reason.EMAIL_INVALID
    assert refusal.message.startswith("E-mail lefevre@: ")


@pytest.mark.parametrize("value", ["france", "FR", "Fra", "fr", "FRANCE", "250"])
def test_countries_are_read_from_names_and_codes_in_any_case(value: str) -> None:
    assert fields.country_code(value) == "FR"


def test_unknown_country_and_currency_are_refused() -> None:
    country = fields.country_code("Atlantis")
    assert isinstance(country, Refusal)
    assert country.message == "Country Atlantis: not a country name or ISO code"
    assert fields.currency_code("eur") == "EUR"
    currency = fields.currency_code("EUX")
    assert isinstance(currency, Refusal)
    assert currency.code == Reason.CURRENCY_UNKNOWN


def test_a_valid_client_is_normalised_and_gets_match_keys() -> None:
    data = {
        "crm_id": "a1",
        "source": "crm",
        "name": "Boulangerie Dupont SARL",
        "vat": "fr 40 303 265 045",
        "phone": "02 512 34 56",
        "billing_country": "Belgique",
        "billing_postal_code": "1000",
    }
    # "Belgique" is not an ISO name: the record is held back, and its phone, read as French
    # (the default region), is not a valid number either.
    refused = check_record("client", data, "crm")
    assert [refusal.code for refusal in refused.refusals] == [
        Reason.COUNTRY_UNKNOWN,
        Reason.PHONE_INVALID,
    ]

    checked = check_record("client", {**data, "billing_country": "belgium"}, "crm")
    assert checked.ok
    assert checked.record is not None
    values = checked.record.data()
    assert values["vat"] == "FR40303265045"
    assert values["billing_country"] == "BE"
    # The client's country decides how a national phone number is read.
    assert values["phone"] == "+3225123456"
    assert checked.match_keys == {
        "vat": "FR40303265045",
        "siren": "303265045",
        "name": "boulangerie dupont|1000",
    }


def test_unreadable_values_are_refused_field_by_field() -> None:
    checked = check_record(
        "invoice",
        {
            "erp_id": 9,
            "source": "erp",
            "client_erp_id": 42,
            "state": "open",
            "invoice_date": "2026-13-01",
            "total_amount": "12,50",
            "lines": [{"quantity": "two", "unit_price": 10}],
        },
        "erp",
    )
    assert checked.record is None
    assert {(refusal.field, refusal.message) for refusal in checked.refusals} == {
        (
            "state",
            "State 'open': not one of 'draft', 'posted', 'partially_paid', 'paid' or 'cancelled'",
        ),
        ("invoice_date", "Invoice date '2026-13-01': not a date (expected YYYY-MM-DD)"),
        ("total_amount", "Total amount '12,50': not an amount"),
        ("lines.0.quantity", "Line 1 quantity 'two': not an amount"),
    }


def test_cross_field_checks_tie_siret_and_vat_to_the_siren() -> None:
    checked = check_record(
        "client",
        {
            "source": "crm",
            "name": "Dupont",
            "siren": "732829320",
            "siret": "30326504500012",
            "vat": "FR40303265045",
        },
        "crm",
    )
    codes = {refusal.code for refusal in checked.refusals}
    assert Reason.VAT_NOT_OF_SIREN in codes
    assert Reason.SIRET_NOT_OF_SIREN in codes or Reason.SIRET_CHECKSUM in codes


def test_invoice_totals_must_add_up() -> None:
    checked = check_record(
        "invoice",
        {
            "source": "erp",
            "erp_id": "1",
            "client_erp_id": "42",
            "untaxed_amount": "100.00",
            "tax_amount": "20.00",
            "total_amount": "121.00",
            "amount_due": "130.00",
        },
        "erp",
    )
    assert [refusal.code for refusal in checked.refusals] == [
        Reason.TOTALS_MISMATCH,
        Reason.AMOUNT_DUE_ABOVE_TOTAL,
    ]


def test_a_record_read_from_one_system_cannot_claim_the_other() -> None:
    checked = check_record("product", {"source": "crm", "code": "P1"}, "erp")
    assert [refusal.code for refusal in checked.refusals] == [Reason.WRONG_SOURCE]


def test_checking_is_deterministic() -> None:
    data = {"source": "crm", "name": "X", "vat": "FR1", "email": "bad@", "phone": "0"}
    first = check_record("client", data, "crm")
    second = check_record("client", dict(data), "crm")
    assert first.refusals == second.refusals


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Boulangerie Dupont SARL", "boulangerie dupont"),
        ("SAS Société Générale", "Societe Generale SA"),
        ("ACME S.A.S.", "Acme"),
        ("Müller GmbH", "MULLER"),
    ],
)
def test_name_keys_ignore_case_accents_and_legal_forms(one: str, other: str) -> None:
    assert company_name_key(one) == company_name_key(other)


def test_name_keys_keep_different_companies_apart() -> None:
    assert company_name_key("Dupont Frères") != company_name_key("Dupont")
