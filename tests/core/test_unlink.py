"""Undoing a wrong link: the ledger forgets it, and no rule ever links the pair again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from coulisse.ledger import LedgerError
from coulisse.unlink import UnlinkError, find_client_link
from tests.core.test_planner import DUPONT, World

if TYPE_CHECKING:
    from coulisse.ledger import Ledger

MARTIN = {
    "name": "Martin Frères SA",
    "siren": "552100554",
    "billing_postal_code": "69002",
    "billing_country": "FR",
}


def _wrongly_linked(world: World) -> None:
    """CRM a1 (Dupont) and ERP 42 (Martin) carry each other's id: linked by reference."""
    world.put("crm", "client", "a1", **DUPONT, erp_id="42")
    world.put("erp", "client", "42", **MARTIN, crm_id="a1")
    world.observe("crm")
    world.observe("erp")
    assert world.plan().linked == 1


def test_an_unlinked_pair_is_never_linked_again_and_each_gets_its_own_twin(
    ledger: Ledger,
) -> None:
    world = World(ledger)
    _wrongly_linked(world)
    link = ledger.links_for("client", "crm", ["a1"])["a1"]
    assert ledger.pending_operations("erp"), "the wrong link was about to rename Martin"

    before = ledger.dissolve_link(link.id)

    assert (before.crm_key, before.erp_key) == ("a1", "42")
    assert ledger.pending_operations("erp") == [], "the wrong link's writes are dropped"
    assert ledger.links_for("client", "crm", ["a1"]) == {}
    assert ledger.links_for("client", "erp", ["42"]) == {}
    # Even with the references still in both systems (read before they were removed), the
    # next plan links neither to the other: each is created in the other system.
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.linked == 0
    assert summary.sides["erp"].creates == 1
    assert summary.sides["crm"].creates == 1
    (to_erp,) = ledger.pending_operations("erp")
    (to_crm,) = ledger.pending_operations("crm")
    assert (to_erp.payload["name"], to_erp.payload["crm_id"]) == (DUPONT["name"], "a1")
    assert (to_crm.payload["name"], to_crm.payload["erp_id"]) == (MARTIN["name"], "42")
    assert [review.status for review in ledger.reviews(status=None)] == ["distinct"]


def test_an_unlinked_pair_sharing_a_vat_is_not_linked_by_it_again(ledger: Ledger) -> None:
    world = World(ledger)
    world.put("crm", "client", "a1", **DUPONT)
    world.put("erp", "client", "42", name="Dupont Boulangerie", vat=DUPONT["vat"])
    world.observe("crm")
    world.observe("erp")
    assert world.plan().linked == 1
    ledger.dissolve_link(ledger.links_for("client", "crm", ["a1"])["a1"].id)
    world.observe("crm")
    world.observe("erp")
    summary = world.plan()
    assert summary.linked == 0
    assert ledger.links_for("client", "erp", ["42"])["42"].crm_key is None


def test_a_link_is_found_by_either_record_or_its_id_and_only_clients_unlink(
    sqlite_ledger: Ledger,
) -> None:
    world = World(sqlite_ledger)
    _wrongly_linked(world)
    link = sqlite_ledger.links_for("client", "crm", ["a1"])["a1"]
    assert find_client_link(sqlite_ledger, "a1").id == link.id
    assert find_client_link(sqlite_ledger, "42").id == link.id
    with pytest.raises(UnlinkError, match="names no client link"):
        find_client_link(sqlite_ledger, "nobody")
    order = sqlite_ledger.link("order", "d1", "7", origin="crm")
    with pytest.raises(UnlinkError, match="only clients are unlinked"):
        find_client_link(sqlite_ledger, "d1")
    sqlite_ledger.dissolve_link(link.id)
    with pytest.raises(UnlinkError, match="joins no two records"):
        find_client_link(sqlite_ledger, str(link.id))
    with pytest.raises(LedgerError, match="joins no two records"):
        sqlite_ledger.dissolve_link(link.id)
    assert order.id != link.id
