"""The canonical model and the Singer schemas generated from it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from singer_sdk.sinks.core import JSONSchemaValidator

from coulisse.model import MODELS, Client, Invoice, entity_schema, stream_schema


def test_money_is_decimal_and_times_are_utc() -> None:
    invoice = Invoice.model_validate(
        {
            "source": "erp",
            "erp_id": 7,
            "source_updated_at": "2026-05-04T11:30:00+02:00",
            "total_amount": "120.10",
            "currency": "EUR",
            "payments": [{"payment_date": "2026-05-10", "amount": 20.1}],
        }
    )
    assert invoice.erp_id == "7"
    assert invoice.total_amount == Decimal("120.10")
    assert invoice.payments[0].amount == Decimal("20.1")
    assert invoice.source_updated_at == dt.datetime(2026, 5, 4, 9, 30, tzinfo=dt.UTC)


def test_a_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Client.model_validate({"source": "crm", "source_updated_at": "2026-05-04T11:30:00"})


def test_blank_text_means_no_value() -> None:
    client = Client.model_validate({"source": "crm", "vat": "  ", "name": " Dupont "})
    assert client.vat is None
    assert client.name == "Dupont"


@pytest.mark.parametrize("entity", list(MODELS))
def test_permissive_schemas_let_bad_values_through(entity: str) -> None:
    validator = JSONSchemaValidator(entity_schema(entity, permissive=True))  # type: ignore[arg-type]
    record = {
        name: "not what you expect"
        for name in MODELS[entity].model_fields  # type: ignore[index]
        if name not in {"lines", "taxes", "payments"}
    }
    validator.validate(record)


def test_strict_schema_describes_types_and_formats() -> None:
    schema = stream_schema(Invoice, permissive=False)
    properties = schema["properties"]
    assert properties["total_amount"] == {"type": ["number", "null"]}
    assert properties["invoice_date"] == {"type": ["string", "null"], "format": "date"}
    assert properties["source_updated_at"]["format"] == "date-time"
    assert "posted" in properties["state"]["enum"]
    line = properties["lines"]["items"]["properties"]
    assert line["quantity"] == {"type": ["number"]}


def test_data_fields_leave_out_ids_and_references() -> None:
    assert "client_crm_id" not in Invoice.data_fields()
    assert "crm_id" not in Client.data_fields()
    assert "balance_due" in Client.data_fields()
