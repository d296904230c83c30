"""target-bottlecrm's invoices: ERP invoices mirrored in the live test CRM.

Each test builds real operations: an ERP client and its invoices, shaped as tap-tryton emits
them, are observed into a temporary SQLite ledger beside a new CRM account with the same VAT
(the CRM side through the real tap-bottlecrm and target-ledger); the planner links the client,
plans the invoice, and tap-ledger (side crm) feeds target-bottlecrm in-process.
"""

from __future__ import annotations

import datetime as dt
import io
import uuid
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from stdnum import luhn
from stdnum.fr import tva
from tap_bottlecrm.tap import TapBottleCRM
from tap_ledger.tap import TapLedger
from target_bottlecrm.target import TargetBottleCRM
from target_ledger.target import TargetLedger

from coulisse.ledger import Ledger, ObservedRecord
from coulisse.ledger import tables as t
from coulisse.planner import Planner
from coulisse.policy import SyncPolicy
from coulisse.stack.envfile import read_env_file
from tests.invoicing import advisor_profiles, crm_mirrors, follow_up_tasks, today
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from coulisse.bottlecrm.client import BottleCrmClient
    from tests.conftest import LiveStack

pytestmark = pytest.mark.live


# -- the ERP side, as tap-tryton emits it -------------------------------------------------------


def _siren() -> str:
    body = f"{uuid.uuid4().int % 10**8:08d}"
    return body + luhn.calc_check_digit(body)


@dataclass
class ErpClient:
    """An ERP-only client (its records as tap-tryton emits them) and its CRM twin account."""

    erp_id: str
    vat: str
    siren: str
    name: str
    account_id: str = ""
    invoices: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "erp_id": self.erp_id,
            "source": "erp",
            "name": self.name,
            "vat": self.vat,
            "siren": self.siren,
            "billing_country": "FR",
            "active": True,
            "erp_code": f"C{self.erp_id}",
            "currency": "EUR",
            "balance_due": Decimal(0),
            "overdue_amount": Decimal(0),
        }


def new_client() -> ErpClient:
    siren = _siren()
    vat = f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"
    assert tva.is_valid(vat)
    tag = uuid.uuid4().hex[:6]
    return ErpClient(
        erp_id=str(200_000 + uuid.uuid4().int % 10**8),
        vat=vat,
        siren=siren,
        name=f"Brasserie Fournier {tag}",
    )


def erp_invoice(client: ErpClient, **values: Any) -> dict[str, Any]:
    """A posted two-rate invoice of ``client``, as tap-tryton reads it."""
    erp_id = str(300_000 + uuid.uuid4().int % 10**8)
    record: dict[str, Any] = {
        "erp_id": erp_id,
        "source": "erp",
        "source_updated_at": dt.datetime.now(dt.UTC).isoformat(),
        "client_erp_id": client.erp_id,
        "number": f"FAC-T-{erp_id}",
        "state": "posted",
        "invoice_date": (today() - dt.timedelta(days=5)).isoformat(),
        "due_date": (today() + dt.timedelta(days=25)).isoformat(),
        "currency": "EUR",
        "lines": [
            {
                "product_code": "CONS-DEMI",
                "description": "Demi-journée de conseil",
                "quantity": Decimal(2),
                "unit_price": Decimal(520),
                "tax_rate": Decimal("0.20"),
            },
            {
                "product_code": "LIVRE-GUIDE",
                "description": "Guide pratique imprimé",
                "quantity": Decimal(3),
                "unit_price": Decimal("29.90"),
                "tax_rate": Decimal("0.055"),
            },
        ],
        "taxes": [
            {"rate": Decimal("0.055"), "base": Decimal("89.70"), "amount": Decimal("4.93")},
            {"rate": Decimal("0.20"), "base": Decimal("1040.00"), "amount": Decimal("208.00")},
        ],
        "untaxed_amount": Decimal("1129.70"),
        "tax_amount": Decimal("212.93"),
        "total_amount": Decimal("1342.63"),
        "amount_due": Decimal("1342.63"),
        "overdue": False,
        "payments": [],
    }
    record.update(values)
    client.invoices.append(record)
    return record


def payment(amount: str, reference: str) -> dict[str, Any]:
    return {"payment_date": today().isoformat(), "amount": Decimal(amount), "reference": reference}


# -- the pipeline, in-process -----------------------------------------------------------------


def crm_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {"api_url": env["BOTTLECRM_API_URL"], "api_token": env["BOTTLECRM_API_TOKEN"], **extra}


@dataclass
class Setup:
    live: LiveStack
    ledger: Ledger
    config: dict[str, Any]
    crm: BottleCrmClient

    def observe_erp(self, client: ErpClient) -> None:
        run = self.ledger.start_run("observe", "erp")
        self.ledger.observe(run, "erp", "client", [ObservedRecord(client.erp_id, client.record())])
        self.ledger.observe(
            run, "erp", "invoice", [ObservedRecord(i["erp_id"], i) for i in client.invoices]
        )
        self.ledger.finish_run(run)

    def observe_crm(self, streams: tuple[str, ...] = ("clients", "invoices")) -> None:
        """tap-bottlecrm into target-ledger, as the observe job runs them."""
        out = io.StringIO()
        config = crm_config(self.live)
        catalog = catalog_of(TapBottleCRM, config, streams)
        with redirect_stdout(out):
            TapBottleCRM(config=config, catalog=catalog, parse_env_config=False).sync_all()
        with redirect_stdout(io.StringIO()):
            TargetLedger(
                config={"side": "crm", "ledger_url": self.config["ledger_url"]},
                parse_env_config=False,
            ).listen(file_input=io.StringIO(out.getvalue()))

    def sync(self, client: ErpClient, **config: Any) -> TargetBottleCRM:
        """Observe both sides, plan, apply to the CRM: one `coulisse sync` for this client."""
        self.observe_erp(client)
        self.observe_crm()
        Planner(self.ledger, SyncPolicy.default()).plan()
        out = io.StringIO()
        with redirect_stdout(out):
            TapLedger(
                config={"side": "crm", "ledger_url": self.config["ledger_url"]},
                parse_env_config=False,
            ).sync_all()
        target = TargetBottleCRM(config={**self.config, **config}, parse_env_config=False)
        with redirect_stdout(io.StringIO()):
            target.listen(file_input=io.StringIO(out.getvalue()))
        return target

    def operations(self, entity: str = "invoice") -> list[Any]:
        with self.ledger.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.operations)
                    .where(t.operations.c.side == "crm", t.operations.c.entity == entity)
                    .order_by("id")
                )
            )

    def account(self, client: ErpClient, *, advisor: bool = True, contact: bool = True) -> str:
        """The CRM account of ``client`` (same VAT and SIREN), with an advisor and a contact."""
        body: dict[str, Any] = {
            "name": client.name,
            "country": "FR",
            "custom_fields": {"vat": client.vat, "siren": client.siren},
        }
        if advisor:
            body["assigned_to"] = advisor_profiles(self.crm)[:1]
        client.account_id = str(self.crm.post("accounts/", body)["id"])
        if contact:
            self.crm.post(
                "contacts/",
                {
                    "first_name": "Hélène",
                    "last_name": "Fournier",
                    "email": f"helene.{uuid.uuid4().hex[:6]}@fournier.example",
                    "account": client.account_id,
                },
            )
        return client.account_id


@pytest.fixture
def setup(live: LiveStack, tmp_path: Path) -> Iterator[Setup]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url)
    yield Setup(live, ledger, crm_config(live, ledger_url=url), live.stack.crm.client())
    ledger.close()


def fresh(setup: Setup, tmp_path: Path) -> Setup:
    """Another ledger on the same systems: as if every answer of the first run had been lost."""
    url = f"sqlite:///{tmp_path / f'lost-{uuid.uuid4().hex[:6]}.db'}"
    return Setup(setup.live, Ledger.open(url), crm_config(setup.live, ledger_url=url), setup.crm)


def amount(value: Any) -> Decimal:
    return Decimal(str(value))


# -- tests --------------------------------------------------------------------------------------


def test_a_posted_erp_invoice_is_mirrored_once_with_the_erps_figures(setup: Setup):
    client = new_client()
    setup.account(client)
    invoice = erp_invoice(client)

    target = setup.sync(client)
    assert target.outcomes["refused"] == 0
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["account"]["id"] == client.account_id
    custom = mirror["custom_fields"]
    assert custom["erp_number"] == invoice["number"]
    assert custom["erp_state"] == "posted"
    assert custom["erp_total"] == "1342.63 EUR"
    assert custom["erp_untaxed_total"] == "1129.70 EUR"
    assert custom["erp_tax_total"] == "212.93 EUR"
    assert custom["erp_amount_due"] == "1342.63 EUR"
    assert custom["erp_overdue"] is False
    # The CRM's own totals are the ERP's: one tax-included line per VAT rate, tax rate 0.
    assert amount(mirror["total_amount"]) == Decimal("1342.63")
    assert amount(mirror["tax_rate"]) == 0
    assert [(i["name"], amount(i["unit_price"])) for i in mirror["line_items"]] == [
        ("VAT 5.5%, tax included", Decimal("94.63")),
        ("VAT 20%, tax included", Decimal("1248.00")),
    ]
    # Issued without the customer's email: BottleCRM sent nothing and schedules no reminder.
    assert mirror["status"] == "Sent"
    assert mirror["client_email"] == ""
    assert mirror["reminder_enabled"] is False
    assert mirror["issue_date"] == invoice["invoice_date"]
    assert mirror["due_date"] == invoice["due_date"]
    (operation,) = setup.operations()
    assert operation.status == "applied"

    # Read back, the mirror is our own write: the next plan has nothing to do.
    setup.observe_crm()
    Planner(setup.ledger, SyncPolicy.default()).plan()
    assert len(setup.operations()) == 1


def test_a_lost_answer_is_found_again_never_mirrored_twice(setup: Setup, tmp_path: Path):
    client = new_client()
    setup.account(client)
    invoice = erp_invoice(client)
    setup.sync(client)

    # A second ledger knows nothing of the first write: the plan creates the invoice again.
    again = fresh(setup, tmp_path)
    try:
        again.observe_erp(client)
        again.observe_crm(("clients",))
        Planner(again.ledger, SyncPolicy.default()).plan()
        out = io.StringIO()
        with redirect_stdout(out):
            TapLedger(
                config={"side": "crm", "ledger_url": again.config["ledger_url"]},
                parse_env_config=False,
            ).sync_all()
        target = TargetBottleCRM(config=again.config, parse_env_config=False)
        with redirect_stdout(io.StringIO()):
            target.listen(file_input=io.StringIO(out.getvalue()))
        (operation,) = again.operations()
        assert operation.action == "create"
        assert operation.status == "applied"
    finally:
        again.ledger.close()
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["status"] == "Sent"


def test_payments_follow_the_erp_and_are_never_added_twice(setup: Setup):
    client = new_client()
    setup.account(client)
    invoice = erp_invoice(
        client,
        state="partially_paid",
        amount_due=Decimal("842.63"),
        payments=[payment("500.00", "2026-T-0001")],
    )
    setup.sync(client)
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["status"] == "Partially_Paid"
    assert amount(mirror["amount_due"]) == Decimal("842.63")
    assert mirror["custom_fields"]["erp_state"] == "partially_paid"

    # Paid in full in the ERP.
    invoice.update(
        state="paid",
        amount_due=Decimal(0),
        payments=[payment("500.00", "2026-T-0001"), payment("842.63", "2026-T-0002")],
        source_updated_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    setup.sync(client)
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["status"] == "Paid"
    assert amount(mirror["amount_due"]) == 0
    assert mirror["custom_fields"]["erp_state"] == "paid"
    assert mirror["custom_fields"]["erp_amount_due"] == "0.00 EUR"
    assert sorted((p["reference_number"], amount(p["amount"])) for p in mirror["payments"]) == [
        ("2026-T-0001", Decimal("500.00")),
        ("2026-T-0002", Decimal("842.63")),
    ]

    # A rerun with nothing new writes nothing and pays nothing twice.
    before = len(setup.operations())
    setup.sync(client)
    assert len(setup.operations()) == before
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert len(mirror["payments"]) == 2


def test_an_overdue_invoice_gives_the_advisor_one_follow_up_task(setup: Setup, tmp_path: Path):
    client = new_client()
    setup.account(client)
    invoice = erp_invoice(
        client,
        invoice_date=(today() - dt.timedelta(days=60)).isoformat(),
        due_date=(today() - dt.timedelta(days=30)).isoformat(),
        overdue=True,
    )
    setup.sync(client)
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["custom_fields"]["erp_overdue"] is True
    (task,) = follow_up_tasks(setup.crm, client.account_id, invoice["erp_id"])
    account = setup.crm.get(f"accounts/{client.account_id}/")["account_obj"]
    assert [p["id"] for p in task["assigned_to"]] == [p["id"] for p in account["assigned_to"]]
    assert invoice["number"] in task["title"]
    assert task["status"] == "New"

    # A partial payment of the late invoice, and a rerun whose answers were lost: still one.
    invoice.update(
        state="partially_paid",
        amount_due=Decimal("1000.00"),
        payments=[payment("342.63", "2026-T-0003")],
        source_updated_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    setup.sync(client)
    again = fresh(setup, tmp_path)
    try:
        again.observe_erp(client)
        again.observe_crm(("clients",))
        Planner(again.ledger, SyncPolicy.default()).plan()
        out = io.StringIO()
        with redirect_stdout(out):
            TapLedger(
                config={"side": "crm", "ledger_url": again.config["ledger_url"]},
                parse_env_config=False,
            ).sync_all()
        with redirect_stdout(io.StringIO()):
            TargetBottleCRM(config=again.config, parse_env_config=False).listen(
                file_input=io.StringIO(out.getvalue())
            )
    finally:
        again.ledger.close()
    assert len(follow_up_tasks(setup.crm, client.account_id, invoice["erp_id"])) == 1


def test_no_follow_up_task_when_turned_off_and_a_contact_for_an_account_without_one(
    setup: Setup,
):
    client = new_client()
    setup.account(client, advisor=False, contact=False)
    invoice = erp_invoice(
        client,
        invoice_date=(today() - dt.timedelta(days=60)).isoformat(),
        due_date=(today() - dt.timedelta(days=30)).isoformat(),
        overdue=True,
    )
    setup.sync(client, followup_tasks=False)
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["custom_fields"]["erp_overdue"] is True
    assert follow_up_tasks(setup.crm, client.account_id, invoice["erp_id"]) == []
    # BottleCRM bills an invoice to a contact: the account got one, without an email.
    (contact,) = setup.crm.get(f"accounts/{client.account_id}/")["contacts"]
    assert mirror["contact"]["id"] == contact["id"]
    assert not contact.get("email")


def test_cancelled_in_the_erp_is_cancelled_in_the_crm(setup: Setup):
    client = new_client()
    setup.account(client)
    invoice = erp_invoice(client)
    setup.sync(client)
    invoice.update(
        state="cancelled",
        amount_due=Decimal(0),
        source_updated_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    setup.sync(client)
    (mirror,) = crm_mirrors(setup.crm, invoice["erp_id"])
    assert mirror["status"] == "Cancelled"
    assert mirror["custom_fields"]["erp_state"] == "cancelled"
    assert [op.action for op in setup.operations()] == ["create", "cancel"]


def test_an_invoice_of_an_account_deleted_meanwhile_is_refused_not_retried(setup: Setup):
    client = new_client()
    setup.account(client, contact=False)
    invoice = erp_invoice(client)
    setup.observe_erp(client)
    setup.observe_crm()
    Planner(setup.ledger, SyncPolicy.default()).plan()
    # Between the plan and the write, someone deletes the account in the CRM.
    setup.crm.delete(f"accounts/{client.account_id}/")
    out = io.StringIO()
    with redirect_stdout(out):
        TapLedger(
            config={"side": "crm", "ledger_url": setup.config["ledger_url"]},
            parse_env_config=False,
        ).sync_all()
    target = TargetBottleCRM(config=setup.config, parse_env_config=False)
    with redirect_stdout(io.StringIO()):
        target.listen(file_input=io.StringIO(out.getvalue()))
    (operation,) = setup.operations()
    # Retrying would fail the same way at every run: the clerk reads why instead.
    assert operation.status == "refused"
    held = [
        e for e in setup.ledger.quarantined(entity="invoice") if e.source_key == invoice["erp_id"]
    ]
    assert held
    assert "no longer in BottleCRM" in held[0].message
    assert crm_mirrors(setup.crm, invoice["erp_id"]) == []
