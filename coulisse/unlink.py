"""Undoing a wrong client link (`coulisse links unlink`): two records that are not one client.

A link lives in three places: the ledger, the CRM account (its ``erp_ref`` custom field names
the ERP party) and the ERP party (an identifier ``bottlecrm:<account id>`` names the CRM
account). The references in the systems are what let a lost answer or a rebuilt ledger find a
twin instead of creating a second one, so they must go before the ledger forgets the link:
left in place, the next sync would find the twin again through them. Order, under the ledger's
run lock so that no sync writes in between:

1. the CRM account's ``erp_ref`` is cleared (when it still names this party);
2. the ERP party's identifier naming this account is deleted, and the party is written (its
   own name again) so that tap-tryton's cursor reads it again without the reference;
3. the ledger dissolves the link and records the pair as distinct
   (:meth:`coulisse.ledger.Ledger.dissolve_link`): no rule links them again; the next sync
   matches each anew (same VAT, SIREN, or a probable twin for review) or gives it its own
   twin in the other system.

Each step is harmless to repeat, so a command stopped half-way is finished by running it again.
Orders and invoices are not unlinked this way: their link is the ERP document created from the
CRM one (cancel or correct it in the ERP); products link by code, which a person fixes at the
source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import NoResultFound

from coulisse.bottlecrm.client import CrmApiError
from coulisse.project import ConfigError
from coulisse.tryton.references import crm_reference

if TYPE_CHECKING:
    from collections.abc import Mapping

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.ledger import Ledger
    from coulisse.ledger.store import Link
    from coulisse.tryton.rpc import TrytonClient

#: The CRM custom field that names an account's ERP party.
ERP_REF = "erp_ref"


class UnlinkError(Exception):
    """The link cannot be undone as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Unlinked:
    """What ``unlink_client`` did."""

    link: Link
    crm_reference_cleared: bool
    erp_reference_deleted: bool


#: What the command needs to reach both systems (``.env`` holds them for the local stack).
SETTINGS = (
    "BOTTLECRM_API_URL",
    "BOTTLECRM_API_TOKEN",
    "TRYTON_URL",
    "TRYTON_DATABASE",
    "TRYTON_USERNAME",
    "TRYTON_PASSWORD",
)


def connect(env: Mapping[str, str]) -> tuple[BottleCrmClient, TrytonClient]:
    """The CRM and ERP clients from ``env``; a missing setting is named in the error."""
    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient

    missing = [name for name in SETTINGS if not env.get(name, "").strip()]
    if missing:
        msg = (
            f"{', '.join(missing)} not set: unlinking removes the references both systems keep, "
            "so it needs both; set them in the environment or .env (`coulisse stack up` writes "
            "them for the local stack)"
        )
        raise ConfigError(msg)
    crm = BottleCrmClient(env["BOTTLECRM_API_URL"], env["BOTTLECRM_API_TOKEN"], max_attempts=3)
    erp = TrytonClient(
        env["TRYTON_URL"],
        env["TRYTON_DATABASE"],
        env["TRYTON_USERNAME"],
        env["TRYTON_PASSWORD"],
        max_retries=2,
    )
    return crm, erp


def find_client_link(ledger: Ledger, record: str) -> Link:
    """The client link named by ``record``: a link id, a CRM account id or an ERP party id."""
    from coulisse.model import ENTITIES

    found = {
        link.id: link
        for entity in ENTITIES
        for side in ("crm", "erp")
        for link in ledger.links_for(entity, side, [record]).values()
    }
    if not found and record.isdigit():
        try:
            found = {int(record): ledger.get_link(int(record))}
        except NoResultFound:
            found = {}
    if not found:
        msg = (
            f"{record!r} names no client link (a link id, a CRM account id or an ERP party id; "
            "`coulisse links find ID` shows a record's links)"
        )
        raise UnlinkError(msg)
    if len(found) > 1:
        ids = ", ".join(str(link_id) for link_id in sorted(found))
        msg = f"{record!r} names several links ({ids}): give the link id"
        raise UnlinkError(msg)
    (link,) = found.values()
    if link.entity != "client":
        msg = (
            f"link {link.id} is a {link.entity}'s: only clients are unlinked this way (an order "
            "or an invoice is cancelled or corrected in the ERP; a product is linked by its code)"
        )
        raise UnlinkError(msg)
    if link.crm_key is None or link.erp_key is None:
        msg = (
            f"link {link.id} joins no two records (CRM {link.crm_key or '-'}, ERP "
            f"{link.erp_key or '-'}): nothing to unlink"
        )
        raise UnlinkError(msg)
    return link


def unlink_client(
    ledger: Ledger, link: Link, crm: BottleCrmClient, erp: TrytonClient, *, holder: str
) -> Unlinked:
    """Remove both systems' references, then dissolve ``link`` in the ledger (see module)."""
    from coulisse.ledger import LockBusyError

    assert link.crm_key is not None
    assert link.erp_key is not None
    try:
        with ledger.lock(holder):
            cleared = _clear_crm_reference(crm, link.crm_key, link.erp_key)
            deleted = _delete_erp_reference(erp, link.erp_key, link.crm_key)
            ledger.dissolve_link(link.id)
    except LockBusyError as exc:
        msg = f"a sync is running ({exc}); nothing was changed, run the command again after it"
        raise UnlinkError(msg) from exc
    return Unlinked(link, crm_reference_cleared=cleared, erp_reference_deleted=deleted)


def _clear_crm_reference(crm: BottleCrmClient, account_id: str, party_id: str) -> bool:
    """Clear the account's ``erp_ref`` when it names ``party_id``; True when it was written."""
    try:
        account = crm.get(f"accounts/{account_id}/")
    except CrmApiError as exc:
        if exc.status == 404:
            return False  # deleted in the CRM: no reference left there
        raise
    custom = _custom_fields(account)
    if str(custom.get(ERP_REF) or "") != party_id:
        return False
    crm.patch(f"accounts/{account_id}/", {"custom_fields": {ERP_REF: ""}})
    return True


def _custom_fields(detail: Any) -> dict[str, Any]:
    """An account detail's custom fields (the detail answers ``{"account_obj": {...}}``)."""
    account = detail.get("account_obj") if isinstance(detail, dict) else None
    custom = account.get("custom_fields") if isinstance(account, dict) else None
    return dict(custom) if isinstance(custom, dict) else {}


def _delete_erp_reference(erp: TrytonClient, party_id: str, account_id: str) -> bool:
    """Delete the party's identifier naming ``account_id``; True when there was one."""
    party = int(party_id)
    found = erp.search(
        "party.identifier", [("party", "=", party), ("code", "=", crm_reference(account_id))]
    )
    if not found:
        return False
    erp.model_call("party.identifier", "delete", found)
    # Deleting an identifier writes nothing on the party: write it so the next observation
    # reads the party again, without the reference.
    (row,) = erp.model_call("party.party", "read", [party], ["name"])
    erp.model_call("party.party", "write", [party], {"name": row["name"]})
    return True
