"""tap-ledger: the SDK's standard tap tests, and the order and content of what it emits."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from singer_sdk.testing import get_tap_test_class
from tap_ledger.tap import TapLedger

from coulisse.ledger import Ledger, NewOperation


def _ledger_with_writes(url: str) -> Ledger:
    """A ledger holding one pending ERP write per entity, queued in reverse dependency order."""
    ledger = Ledger.open(url)
    run = ledger.start_run("plan")
    payloads: list[tuple[Any, dict[str, Any]]] = [
        (
            "invoice",
            {
                "crm_id": "inv-1",
                "erp_id": None,
                "source": "crm",
                "client_crm_id": "a1",
                "client_erp_id": "42",
                "number": "F-0001",
                "state": "draft",
                "invoice_date": "2026-05-04",
                "currency": "EUR",
                "lines": [
                    {
                        "product_code": "BAGUETTE",
                        "description": "Baguette",
                        "quantity": "10",
                        "unit_price": "1.20",
                        "tax_rate": "0.055",
                    }
                ],
                "total_amount": "12.66",
            },
        ),
        (
            "order",
            {
                "crm_id": "d1",
                "source": "crm",
                "client_crm_id": "a1",
                "client_erp_id": "42",
                "state": "confirmed",
                "lines": [{"product_code": "BAGUETTE", "quantity": "10", "unit_price": "1.20"}],
            },
        ),
        ("product", {"crm_id": "p1", "source": "crm", "code": "BAGUETTE", "unit_price": "1.20"}),
        (
            "client",
            {
                "crm_id": "a1",
                "source": "crm",
                "name": "Boulangerie Dupont SARL",
                "vat": "FR40303265045",
                "active": True,
            },
        ),
    ]
    for entity, payload in payloads:
        link = ledger.link(entity, payload["crm_id"], None, origin="crm")
        ledger.add_operations(
            run,
            [
                NewOperation(
                    link_id=link.id,
                    entity=entity,
                    side="erp",
                    action="create",
                    payload=payload,
                    changed_fields=sorted(set(payload) - {"crm_id", "erp_id", "source"}),
                    source_side="crm",
                    source_key=payload["crm_id"],
                )
            ],
        )
    return ledger


# The SDK's test class needs its config when the module is collected.
_FIXTURE_DIR = Path(tempfile.mkdtemp(prefix="coulisse-tap-ledger-"))
atexit.register(shutil.rmtree, _FIXTURE_DIR, ignore_errors=True)
_FIXTURE_URL = f"sqlite:///{_FIXTURE_DIR / 'ledger.db'}"
_ledger_with_writes(_FIXTURE_URL).close()

# Every standard test applies: tap, stream and attribute tests all run.
TestTapLedgerStandard = get_tap_test_class(
    TapLedger,
    config={"side": "erp", "ledger_url": _FIXTURE_URL},
    parse_env_config=False,  # the project's .env belongs to the demo stack, not to tests
)


def _emitted(config: dict[str, Any], capsys: Any) -> list[dict[str, Any]]:
    TapLedger(config=config).sync_all()
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_writes_come_out_in_dependency_order(sqlite_url: str, capsys: Any) -> None:
    _ledger_with_writes(sqlite_url).close()
    messages = _emitted({"side": "erp", "ledger_url": sqlite_url}, capsys)
    streams = [message["stream"] for message in messages if message["type"] == "RECORD"]
    assert streams == ["clients", "products", "orders", "invoices"]
    client = next(m["record"] for m in messages if m.get("stream") == "clients" and "record" in m)
    assert client["operation"] == "create"
    assert client["name"] == "Boulangerie Dupont SARL"
    invoice = next(m["record"] for m in messages if m.get("stream") == "invoices" and "record" in m)
    assert invoice["lines"][0]["unit_price"] == 1.20
    assert invoice["client_erp_id"] == "42"


def test_nothing_is_emitted_for_the_other_system(sqlite_url: str, capsys: Any) -> None:
    _ledger_with_writes(sqlite_url).close()
    messages = _emitted({"side": "crm", "ledger_url": sqlite_url}, capsys)
    assert [message for message in messages if message["type"] == "RECORD"] == []


def test_claimed_writes_are_emitted_once(sqlite_url: str, capsys: Any) -> None:
    _ledger_with_writes(sqlite_url).close()
    config = {"side": "erp", "ledger_url": sqlite_url, "claim": True, "worker_id": "w1"}
    first = [m for m in _emitted(config, capsys) if m["type"] == "RECORD"]
    second = [m for m in _emitted(config, capsys) if m["type"] == "RECORD"]
    assert len(first) == 4
    assert second == []
    ledger = Ledger.open(sqlite_url)
    assert ledger.count_operations(side="erp", status="in_flight") == 4


def test_an_applied_write_is_not_emitted_again(sqlite_url: str, capsys: Any) -> None:
    ledger = _ledger_with_writes(sqlite_url)
    client = next(
        m
        for m in _emitted({"side": "erp", "ledger_url": sqlite_url}, capsys)
        if m.get("stream") == "clients" and m["type"] == "RECORD"
    )
    assert ledger.record_applied(client["record"]["operation_id"], system_id="42")
    streams = [
        m["stream"]
        for m in _emitted({"side": "erp", "ledger_url": sqlite_url}, capsys)
        if m["type"] == "RECORD"
    ]
    assert streams == ["products", "orders", "invoices"]
