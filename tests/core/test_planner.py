"""Planner scenarios, from observed records to queued writes, applied to two simulated systems."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from typer.testing import CliRunner

from coulisse.ledger import EventItem, Ledger, ObservedRecord
from coulisse.planner import Planner, PlanSummary
from coulisse.planner.cli import app
from coulisse.policy import SyncPolicy

if TYPE_CHECKING:
    from coulisse.model import Entity, Side

DUPONT = {
    "name": "Boulangerie Dupont SARL",
    "vat": "FR40303265045",
    "email": "contact@boulangerie-dupont.fr",
    "phone": "01 42 68 53 00",
    "billing_street": "12 rue de la Paix",
    "billing_postal_code": "75002",
    "billing_city": "Paris",
    "billing_country": "France",
}


class World:
    """Two simulated systems around one ledger; the ERP rewrites what it stores, as Tryton does."""

    def __init__(self, ledger: Ledger, policy: SyncPolicy | None = None) -> None:
        self.ledger = ledger
        self.planner = Planner(ledger, policy)
        self.systems: dict[Side, dict[Entity, dict[str, dict[str, Any]]]] = {
            "crm": {"client": {}, "product": {}, "order": {}, "invoice": {}},
            "erp": {"client": {}, "product": {}, "order": {}, "invoice": {}},
        }
        self.next_id = 100

    def put(self, side: Side, entity: Entity, key: str, **values: Any) -> None:
        record = self.systems[side][entity].setdefault(key, {f"{side}_id": key, "source": side})
        record.update(values)

    def observe(self, side: Side, entity: Entity = "client", *, full_scan: bool = False) -> None:
        run = self.ledger.start_run("observe", side)
        records = [
            ObservedRecord(key, dict(record)) for key, record in self.systems[side][entity].items()
        ]
        self.ledger.observe(run, side, entity, records, version=run)
        if full_scan:
            self.ledger.sweep_unseen(run, side, entity, run, max_deleted_ratio=1.0)

    def plan(self, **kwargs: Any) -> PlanSummary:
        return self.planner.plan(**kwargs)

    def apply(self, side: Side) -> int:
        """Write every pending operation into ``side`` and tell the ledger what it stored."""
        operations = self.ledger.pending_operations(side)
        for operation in operations:
            store = self.systems[side][operation.entity]
            key = operation.payload.get(f"{side}_id")
            if key is None:
                self.next_id += 1
                key = str(self.next_id)
            written = {name: operation.payload[name] for name in operation.changed_fields}
            if side == "erp":
                # Tryton keeps phones in international form with spaces; cities in capitals.
                if written.get("phone") == "+33142685300":
                    written["phone"] = "+33 1 42 68 53 00"
                if written.get("billing_city"):
                    written["billing_city"] = str(written["billing_city"]).upper()
                if operation.action == "create" and operation.entity == "client":
                    written.update(erp_code=f"C{key}", balance_due=Decimal("0.00"), currency="EUR")
                    written["crm_id"] = operation.payload["crm_id"]
            record = store.setdefault(key, {f"{side}_id": key, "source": side})
            for reference in ("client_crm_id", "client_erp_id"):
                if reference in operation.payload:
                    record[reference] = operation.payload[reference]
            record.update(written)
            assert self.ledger.record_applied(operation.id, system_id=key, stored=written)
        return len(operations)

    def sync(self) -> None:
        """Observe, plan, apply both ways, until nothing moves (at most a few rounds)."""
        for _ in range(4):
            self.observe("crm")
            self.observe("erp")
            summary = self.plan()
            if summary.is_empty:
                return
            self.apply("crm")
            self.apply("erp")
        raise AssertionError("the systems never settled")


def test_a_new_crm_client_is_created_in_the_erp_and_then_nothing_moves(
    sqlite_ledger: Ledger,
) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.observe("crm")
    summary = world.plan()
    assert summary.sides["erp"].creates == 1
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert operation.payload["name"] == "Boulangerie Dupont SARL"
    assert operation.payload["phone"] == "+33142685300"
    assert operation.payload["billing_country"] == "FR"
    assert "balance_due" not in operation.changed_fields
    world.apply("erp")
    world.sync()
    (erp_client,) = world.systems["erp"]["client"].values()
    crm_client = world.systems["crm"]["client"]["a1"]
    # The ERP's status fields reached the CRM; the ERP kept its own phone and city spelling.
    assert crm_client["erp_code"] == erp_client["erp_code"]
    assert crm_client["balance_due"] == Decimal("0.00")
    assert erp_client["phone"] == "+33 1 42 68 53 00"
    assert erp_client["billing_city"] == "PARIS"
    assert crm_client["billing_city"] == "Paris"
    # A re-run with no real change writes nothing.
    world.observe("crm")
    world.observe("erp")
    assert world.plan().is_empty


def test_same_vat_links_instead_of_creating_a_duplicate(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("erp", "client", "42", name="BOULANGERIE DUPONT", vat="fr 40 303 265 045")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.linked == 1
    assert summary.sides["erp"].creates == 0
    assert summary.sides["crm"].creates == 0
    link = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"]
    assert link.erp_key == "42"
    # The CRM owns the name: the ERP's spelling is overwritten.
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert operation.payload["name"] == "Boulangerie Dupont SARL"
    assert operation.expected == {
        "billing_city": None,
        "billing_country": None,
        "billing_postal_code": None,
        "billing_street": None,
        "email": None,
        "name": "BOULANGERIE DUPONT",
        "phone": None,
    }


def test_a_french_vat_number_matches_a_siren(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("erp", "client", "42", name="Dupont", siren="303 265 045")
    world.observe("crm")
    world.observe("erp")
    assert world.plan().linked == 1


def test_same_name_and_postcode_waits_for_a_person(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", name="Menuiserie Martin SAS", billing_postal_code="69002")
    world.put("erp", "client", "57", name="MENUISERIE MARTIN", billing_postal_code="69 002")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.reviews == 1
    assert summary.sides["erp"].creates == 0
    assert summary.sides["crm"].creates == 0
    assert sqlite_ledger.count_links() == 0
    # Still waiting at the next plan, without a second review.
    assert world.plan().reviews == 0
    (review,) = sqlite_ledger.reviews()
    sqlite_ledger.decide_review(review.id, same=True)
    summary = world.plan()
    assert sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key == "57"
    assert summary.sides["erp"].creates == 0


def test_a_record_under_review_waits_even_once_its_twin_is_linked_elsewhere(
    sqlite_ledger: Ledger,
) -> None:
    """Seen in bench/clients.py: the ERP twin got linked by VAT to another CRM record, so it
    was no longer a candidate, and the record under review was created in the ERP."""
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", name="Menuiserie Martin SAS", billing_postal_code="69002")
    world.put("erp", "client", "57", name="MENUISERIE MARTIN", billing_postal_code="69002")
    world.observe("crm")
    world.observe("erp")
    assert world.plan().reviews == 1
    # The same company, entered again in the CRM with its VAT: it links to the ERP client.
    world.put("erp", "client", "57", vat="FR40303265045")
    world.put("crm", "client", "b2", name="Menuiserie Martin", vat="FR40303265045")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert sqlite_ledger.links_for("client", "crm", ["b2"])["b2"].erp_key == "57"
    assert summary.sides["erp"].creates == 0, "a1 still waits for a person"
    assert world.plan().sides["erp"].creates == 0
    assert [r.crm_key for r in sqlite_ledger.reviews()] == ["a1"]


def test_different_clients_with_the_same_name_are_both_kept(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", name="Garage Central", billing_postal_code="69002")
    world.put("erp", "client", "57", name="Garage Central", billing_postal_code="69002")
    world.observe("crm")
    world.observe("erp")
    world.plan()
    (review,) = sqlite_ledger.reviews()
    sqlite_ledger.decide_review(review.id, same=False)
    summary = world.plan()
    assert summary.sides["erp"].creates == 1
    assert summary.sides["crm"].creates == 1


def test_an_invalid_client_is_quarantined_until_fixed(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **{**DUPONT, "vat": "FR12345678901"})
    world.observe("crm")
    summary = world.plan()
    assert summary.quarantined == 1
    assert summary.sides["erp"].creates == 0
    (entry,) = sqlite_ledger.quarantined()
    assert entry.message == "VAT FR12345678901: check digits do not match"
    # Nothing new: still held, no write.
    world.observe("crm")
    assert world.plan().sides["erp"].creates == 0
    assert len(sqlite_ledger.quarantined()) == 1
    world.put("crm", "client", "a1", vat="FR40303265045")
    world.observe("crm")
    assert world.plan().sides["erp"].creates == 1
    assert sqlite_ledger.quarantined() == []


def test_a_refusal_by_the_erp_holds_the_client_until_it_changes(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.observe("crm")
    world.plan()
    (operation,) = sqlite_ledger.pending_operations("erp")
    sqlite_ledger.record_refused(operation.id, message="Name: refused by the ERP (too long)")
    world.observe("crm")
    assert world.plan().sides["erp"].creates == 0
    assert [entry.reason for entry in sqlite_ledger.quarantined()] == ["refused_by_erp"]
    world.put("crm", "client", "a1", name="Dupont")
    world.observe("crm")
    assert world.plan().sides["erp"].creates == 1
    assert sqlite_ledger.quarantined() == []


def _linked_pair(world: World) -> None:
    world.put("crm", "client", "a1", **DUPONT)
    world.observe("crm")
    world.plan()
    world.apply("erp")
    world.sync()


def test_different_changes_to_a_shared_field_wait_for_a_person(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_pair(world)
    erp_key = next(iter(world.systems["erp"]["client"]))
    world.put("crm", "client", "a1", billing_street="14 rue de la Paix")
    world.put("erp", "client", erp_key, billing_street="12 bis rue de la Paix")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.conflicts == 1
    assert summary.sides["crm"].total == 0
    assert summary.sides["erp"].total == 0
    (conflict,) = sqlite_ledger.conflicts()
    assert (conflict.field, conflict.base_value) == ("billing_street", "12 rue de la Paix")
    assert (conflict.crm_value, conflict.erp_value) == (
        "14 rue de la Paix",
        "12 bis rue de la Paix",
    )
    sqlite_ledger.resolve_conflict(conflict.id, choice="erp")
    summary = world.plan()
    (operation,) = sqlite_ledger.pending_operations("crm")
    assert operation.changed_fields == ["billing_street"]
    assert operation.payload["billing_street"] == "12 bis rue de la Paix"
    assert sqlite_ledger.conflicts() == []
    world.apply("crm")
    world.sync()
    assert world.systems["crm"]["client"]["a1"]["billing_street"] == "12 bis rue de la Paix"


def test_newest_policy_settles_conflicts_by_update_time(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger, SyncPolicy.model_validate({"clients": {"on_conflict": "newest"}}))
    _linked_pair(world)
    erp_key = next(iter(world.systems["erp"]["client"]))
    world.put("crm", "client", "a1", billing_street="A", source_updated_at="2026-05-04T10:00:00Z")
    world.put(
        "erp", "client", erp_key, billing_street="B", source_updated_at="2026-05-04T11:00:00Z"
    )
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.conflicts == 0
    (operation,) = sqlite_ledger.pending_operations("crm")
    assert operation.payload["billing_street"] == "B"


def test_a_client_deleted_in_the_crm_is_deactivated_in_the_erp(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_pair(world)
    world.put("crm", "client", "a2", name="Other", billing_postal_code="1")
    world.observe("crm")
    world.plan()
    world.apply("erp")
    world.sync()
    del world.systems["crm"]["client"]["a1"]
    world.observe("crm", full_scan=True)
    summary = world.plan()
    assert summary.sides["erp"].deactivations == 1
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert operation.action == "deactivate"
    assert operation.payload["active"] is False


def test_an_order_waits_for_its_client_to_exist_in_the_erp(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    # The catalogue is the ERP's: the product the order's line names is already there.
    world.put("erp", "product", "p1", code="BAGUETTE", name="Baguette")
    world.observe("erp", "product")
    world.put("crm", "client", "a1", **DUPONT)
    world.put(
        "crm",
        "order",
        "d1",
        client_crm_id="a1",
        state="draft",
        currency="EUR",
        lines=[{"product_code": "BAGUETTE", "quantity": "10", "unit_price": "1.20"}],
    )
    world.observe("crm")
    world.observe("crm", "order")
    summary = world.plan()
    assert summary.sides["erp"].creates == 1  # the client only
    assert summary.deferred == 1
    world.apply("erp")
    summary = world.plan()
    assert summary.deferred == 0
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert operation.entity == "order"
    erp_client = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key
    assert operation.payload["client_erp_id"] == erp_client
    assert operation.payload["lines"] == [
        {
            "product_code": "BAGUETTE",
            "description": None,
            "quantity": Decimal("10"),
            "unit_price": Decimal("1.20"),
        }
    ]


def test_a_posted_invoice_is_the_erps(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.observe("crm")
    world.plan()
    world.apply("erp")
    world.sync()
    erp_client = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key
    assert erp_client is not None
    invoice = {
        "client_erp_id": erp_client,
        "number": "INV-2026-0042",
        "state": "posted",
        "invoice_date": "2026-05-04",
        "due_date": "2026-06-03",
        "currency": "EUR",
        "untaxed_amount": "100.00",
        "tax_amount": "20.00",
        "total_amount": "120.00",
        "amount_due": "120.00",
    }
    world.put("erp", "invoice", "9", **invoice)
    world.observe("erp", "invoice")
    world.plan()
    (operation,) = sqlite_ledger.pending_operations("crm")
    assert (operation.entity, operation.action) == ("invoice", "create")
    assert operation.payload["client_crm_id"] == "a1"
    world.apply("crm")
    world.observe("crm", "invoice")
    world.observe("erp", "invoice")
    assert world.plan().is_empty
    # A sales advisor edits the mirrored amount: the ERP's figure comes back.
    crm_invoice = next(iter(world.systems["crm"]["invoice"]))
    world.put("crm", "invoice", crm_invoice, amount_due="0.00")
    world.observe("crm", "invoice")
    world.plan()
    (operation,) = sqlite_ledger.pending_operations("crm")
    assert operation.payload["amount_due"] == Decimal("120.00")


def test_a_dry_run_writes_nothing(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("crm", "client", "a2", **{**DUPONT, "vat": "FR1", "name": "Other"})
    world.observe("crm")
    dry = world.plan(dry_run=True)
    assert dry.sides["erp"].creates == 1
    assert dry.quarantined == 1
    assert sqlite_ledger.count_operations() == 0
    assert sqlite_ledger.quarantined() == []
    assert sqlite_ledger.count_links() == 0
    real = world.plan()
    assert real.to_dict()["systems"] == dry.to_dict()["systems"]


def test_plan_command_prints_the_plan_per_system(sqlite_url: str) -> None:
    ledger = Ledger.open(sqlite_url)
    world = World(ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("crm", "client", "a2", **{**DUPONT, "vat": "FR12345678901", "name": "Other"})
    world.observe("crm")
    ledger.close()
    runner = CliRunner()
    result = runner.invoke(app, ["--ledger-url", sqlite_url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "ERP" in result.output
    assert "create client a1 Boulangerie Dupont SARL" in result.output
    assert "VAT FR12345678901: check digits do not match" in result.output
    result = runner.invoke(app, ["--ledger-url", sqlite_url, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["systems"]["erp"]["creates"] == 1
    assert plan["quarantined"] == 1
    result = runner.invoke(app, ["--ledger-url", sqlite_url, "--dry-run", "--json"])
    assert json.loads(result.output)["systems"]["erp"]["creates"] == 0


# -- orders wait for their products ---------------------------------------------------------------


def _order_with_a_baguette(world: World) -> None:
    world.put("crm", "client", "a1", **DUPONT)
    world.put(
        "crm",
        "order",
        "d1",
        client_crm_id="a1",
        state="draft",
        currency="EUR",
        lines=[
            {"product_code": "baguette", "quantity": "10", "unit_price": "1.20"},
            {"description": "Delivery", "quantity": "1", "unit_price": "5.00"},
        ],
    )
    world.observe("crm")
    world.observe("crm", "order")


def test_an_order_naming_a_product_the_erp_lacks_waits_in_quarantine(ledger: Ledger) -> None:
    world = World(ledger)
    _order_with_a_baguette(world)
    world.plan()
    world.apply("erp")
    # The client is in the ERP now, the product is nowhere: the order waits, and a person
    # sees why (the catalogue is the ERP's: nothing else will bring the product).
    summary = world.plan()
    assert summary.deferred == 1
    assert ledger.count_operations(side="erp", status="pending") == 0
    (item,) = [item for item in summary.items if item.kind == "deferral"]
    assert item.text.startswith("d1: product BAGUETTE is not in the ERP catalogue")
    (held,) = ledger.quarantined(entity="order")
    assert (held.side, held.source_key, held.reason) == ("crm", "d1", "product_unknown")
    assert "add it in the ERP" in held.message
    # Planned again, it is still one quarantine entry.
    world.plan()
    assert len(ledger.quarantined(entity="order")) == 1
    # The ERP's catalogue gets the product (codes compare in upper case): the order goes and
    # leaves the quarantine.
    world.put("erp", "product", "p7", code="BAGUETTE", name="Baguette")
    world.observe("erp", "product")
    summary = world.plan()
    assert summary.sides["erp"].creates == 1
    (operation,) = ledger.pending_operations("erp", entity="order")
    assert [line["product_code"] for line in operation.payload["lines"]] == ["baguette", None]
    assert ledger.quarantined(entity="order") == []


def test_a_product_only_the_crm_has_is_not_created_in_the_erp(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    # The catalogue is the ERP's: a CRM-only product stays in the CRM, and an order naming it
    # waits for the ERP to have it.
    world.put("crm", "product", "cp1", code="BAGUETTE", name="Baguette")
    world.observe("crm", "product")
    _order_with_a_baguette(world)
    summary = world.plan()
    assert summary.sides["erp"].creates == 1  # the client only
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert operation.entity == "client"
    world.apply("erp")
    summary = world.plan()
    assert summary.deferred == 1
    assert sqlite_ledger.pending_operations("erp", entity="order") == []


def test_an_order_without_products_only_waits_for_its_client(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put(
        "crm",
        "order",
        "d1",
        client_crm_id="a1",
        state="draft",
        lines=[{"description": "Consulting", "quantity": "2", "unit_price": "300.00"}],
    )
    world.observe("crm")
    world.observe("crm", "order")
    world.plan()
    world.apply("erp")
    assert world.plan().sides["erp"].creates == 1


# -- two records of one system sharing an identifier ----------------------------------------------

DUPONT_BIS = {**DUPONT, "name": "Dupont Traiteur", "billing_postal_code": "75011"}


def test_two_crm_clients_sharing_a_vat_wait_for_a_person(ledger: Ledger) -> None:
    world = World(ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("crm", "client", "a2", **DUPONT_BIS)
    world.observe("crm")
    summary = world.plan()
    assert summary.reviews == 1
    assert summary.deferred == 2
    assert summary.sides["erp"].creates == 0
    assert ledger.count_links() == 0
    (duplicate,) = ledger.duplicates()
    assert (duplicate.side, duplicate.first_key, duplicate.second_key, duplicate.reason) == (
        "crm",
        "a1",
        "a2",
        "same_vat",
    )
    # Still waiting at the next plan, without a second review item.
    summary = world.plan()
    assert (summary.reviews, summary.deferred, summary.sides["erp"].creates) == (0, 2, 0)
    # Two establishments of one company: both go to the ERP.
    ledger.decide_duplicate(duplicate.id, same=False)
    summary = world.plan()
    assert summary.sides["erp"].creates == 2
    assert ledger.duplicates() == []


def test_an_erp_client_sharing_a_vat_with_two_crm_clients_is_linked_to_neither(
    ledger: Ledger,
) -> None:
    world = World(ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("crm", "client", "a2", **DUPONT_BIS)
    world.put("erp", "client", "42", name="DUPONT", vat="FR40303265045")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.linked == 0
    assert summary.sides["crm"].total == summary.sides["erp"].total == 0
    assert summary.deferred == 3
    deferrals = {item.key: item.text for item in summary.items if item.kind == "deferral"}
    assert deferrals["42"].endswith(
        "CRM clients a1, a2 share its VAT FR40303265045: waiting for review"
    )
    (duplicate,) = ledger.duplicates()
    ledger.decide_duplicate(duplicate.id, same=False)
    summary = world.plan()
    # The first links to the ERP's client by VAT; the other is a client of its own.
    assert summary.linked == 1
    assert ledger.links_for("client", "crm", ["a1"])["a1"].erp_key == "42"
    assert summary.sides["erp"].creates == 1


def test_a_crm_client_sharing_a_siren_with_two_erp_clients_is_linked_to_neither(
    sqlite_ledger: Ledger,
) -> None:
    world = World(sqlite_ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("erp", "client", "42", name="Dupont", vat="FR40303265045")
    world.put("erp", "client", "43", name="Dupont Lyon", siren="303 265 045")
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.linked == 0
    assert summary.sides["crm"].total == summary.sides["erp"].total == 0
    (duplicate,) = sqlite_ledger.duplicates()
    assert (duplicate.side, duplicate.reason) == ("erp", "same_siren")
    # One client entered twice in the ERP: held until the ERP is cleaned up.
    sqlite_ledger.decide_duplicate(duplicate.id, same=True)
    assert world.plan().sides["crm"].total == 0
    del world.systems["erp"]["client"]["43"]
    world.observe("erp", full_scan=True)
    summary = world.plan()
    assert sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key == "42"


def test_a_new_duplicate_of_a_linked_client_waits_and_the_client_carries_on(
    sqlite_ledger: Ledger,
) -> None:
    world = World(sqlite_ledger)
    _linked_pair(world)
    world.put("crm", "client", "a2", **DUPONT_BIS)
    world.put("crm", "client", "a1", email="compta@boulangerie-dupont.fr")
    world.observe("crm")
    summary = world.plan()
    assert summary.reviews == 1
    assert summary.sides["erp"].creates == 0
    # The linked client's change still reaches the ERP.
    (operation,) = sqlite_ledger.pending_operations("erp")
    assert (operation.source_key, operation.changed_fields) == ("a1", ["email"])


def test_events_of_one_record_in_one_statement_are_folded(ledger: Ledger) -> None:
    run = ledger.start_run("plan")
    ledger.record_events(
        run,
        [
            EventItem("crm", "client", "a1", "deferred", {"why": "x"}),
            EventItem("crm", "client", "a1", "unchanged"),
            EventItem("crm", "client", "a2", "unchanged"),
            EventItem("crm", "client", "a2", "updated"),
        ],
    )
    assert ledger.events(run) == {
        ("crm", "client", "a1"): "deferred",
        ("crm", "client", "a2"): "updated",
    }


def test_an_idle_plan_checks_and_writes_nothing(ledger: Ledger) -> None:
    world = World(ledger)
    _linked_pair(world)
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.is_empty
    assert summary.checked == 0
    assert summary.deferred == 0


def test_duplicates_are_found_across_chunks(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.planner = Planner(sqlite_ledger, chunk_size=2)
    for number in range(1, 6):
        world.put("crm", "client", f"a{number}", name=f"Client {number}", siren=_SIRENS[number])
    world.put("crm", "client", "a5", name="Client 5 bis", siren=_SIRENS[1])
    world.observe("crm")
    summary = world.plan()
    assert summary.reviews == 1
    assert summary.sides["erp"].creates == 3
    assert {item.key for item in summary.items if item.kind == "deferral"} == {"a1", "a5"}
    (duplicate,) = sqlite_ledger.duplicates()
    assert (duplicate.first_key, duplicate.second_key) == ("a1", "a5")


#: Valid SIRENs (Luhn), by client number.
_SIRENS = {1: "303265045", 2: "732829320", 3: "552100554", 4: "542065479", 5: "443061841"}


# -- which way each kind of document flows ---------------------------------------------------------


def _linked_dupont(world: World) -> None:
    world.put("crm", "client", "a1", **DUPONT)
    world.observe("crm")
    world.plan()
    world.apply("erp")


def _invoice(state: str, **values: Any) -> dict[str, Any]:
    return {
        "state": state,
        "currency": "EUR",
        "untaxed_amount": "100.00",
        "tax_amount": "20.00",
        "total_amount": "120.00",
        **values,
    }


def test_an_erp_invoice_reaches_the_crm_once_posted(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_dupont(world)
    erp_party = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key
    world.put("erp", "invoice", "i1", **_invoice("draft", client_erp_id=erp_party))
    world.observe("erp", "invoice")
    summary = world.plan()
    assert summary.sides["crm"].creates == 0, "a draft may still change: not mirrored"
    world.put("erp", "invoice", "i1", state="posted", number="FA-2026-0001")
    world.observe("erp", "invoice")
    summary = world.plan()
    assert summary.sides["crm"].creates == 1
    (operation,) = sqlite_ledger.pending_operations("crm", entity="invoice")
    assert operation.payload["client_crm_id"] == "a1"
    assert operation.payload["number"] == "FA-2026-0001"


def test_an_erp_sale_and_a_crm_product_stay_where_they_are(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_dupont(world)
    erp_party = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key
    world.put("erp", "order", "s1", client_erp_id=erp_party, state="confirmed", currency="EUR")
    world.put("crm", "product", "cp1", code="CRM-ONLY", name="Advisor's own item")
    world.observe("erp", "order")
    world.observe("crm", "product")
    summary = world.plan()
    assert summary.sides["crm"].creates == 0, "a sale typed in the ERP does not become a deal"
    assert summary.sides["erp"].creates == 0, "the catalogue is the ERP's"


def test_a_crm_draft_invoice_stays_in_the_crm_by_default(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_dupont(world)
    world.put("crm", "invoice", "v2", **_invoice("draft", client_crm_id="a1"))
    world.observe("crm", "invoice")
    summary = world.plan()
    assert summary.sides["erp"].creates == 0
    assert sqlite_ledger.pending_operations("erp") == []


def test_a_crm_draft_invoice_goes_to_the_erp_unless_its_deal_has_a_sale(
    sqlite_ledger: Ledger,
) -> None:
    world = World(sqlite_ledger)
    world.planner = Planner(sqlite_ledger, crm_invoices_to_erp=True)
    _linked_dupont(world)
    # A deal that became an ERP sale, and a draft invoice the advisor typed for it.
    world.put("crm", "order", "d1", client_crm_id="a1", state="draft", currency="EUR")
    world.observe("crm", "order")
    world.plan()
    world.apply("erp")
    world.put("crm", "invoice", "v1", **_invoice("draft", client_crm_id="a1", order_crm_id="d1"))
    # And one with no deal behind it.
    world.put("crm", "invoice", "v2", **_invoice("draft", client_crm_id="a1"))
    world.observe("crm", "invoice")
    summary = world.plan()
    (operation,) = sqlite_ledger.pending_operations("erp", entity="invoice")
    assert operation.source_key == "v2"
    assert summary.sides["erp"].creates == 1
    (held,) = sqlite_ledger.quarantined(entity="invoice")
    assert (held.source_key, held.reason) == ("v1", "invoice_of_sale")
    assert "delete this CRM draft" in held.message


def test_a_product_deleted_in_the_crm_stays_in_the_erp_catalogue(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    world.put("erp", "product", "p1", code="PAIN", name="Pain", unit_price="1.20")
    world.observe("erp", "product")
    world.plan()
    world.apply("crm")
    (crm_key,) = world.systems["crm"]["product"]
    del world.systems["crm"]["product"][crm_key]
    world.observe("crm", "product", full_scan=True)
    summary = world.plan()
    assert summary.sides["erp"].total == 0, "the catalogue is the ERP's"
    assert sqlite_ledger.pending_operations("erp") == []


def test_two_deals_claiming_one_sale_leave_the_second_in_quarantine(sqlite_ledger: Ledger) -> None:
    world = World(sqlite_ledger)
    _linked_dupont(world)
    erp_party = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"].erp_key
    # Sale s1 says it is deal d1's; deal d2's ERP reference (typed, or copied) names s1 too.
    world.put("erp", "order", "s1", crm_id="d1", client_erp_id=erp_party, state="confirmed")
    world.put("crm", "order", "d1", erp_id="s1", client_crm_id="a1", state="confirmed")
    world.put("crm", "order", "d2", erp_id="s1", client_crm_id="a1", state="confirmed")
    world.observe("erp", "order")
    world.observe("crm", "order")
    world.plan()
    (held,) = sqlite_ledger.quarantined(entity="order")
    assert (held.source_key, held.reason) == ("d2", "link_taken")
    assert "is linked to" in held.message
    # Planned again: still one entry, nothing written for d2.
    world.plan()
    assert len(sqlite_ledger.quarantined(entity="order")) == 1
    assert [op.source_key for op in sqlite_ledger.pending_operations("erp")] == []
