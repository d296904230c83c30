"""How Coulisse marks a Tryton record with the id of its twin in the CRM.

The reference lives in Tryton itself, not only in the ledger, so a crash between a write and the
ledger commit never produces a duplicate (look for the reference before creating) and links can
be rebuilt from the two systems. Tryton's identifier types are a fixed selection, but a party
identifier may have no type: Coulisse stores the CRM account id there, prefixed.

>>> crm_reference("3f0c...")
'bottlecrm:3f0c...'
>>> crm_id_from_reference("bottlecrm:3f0c...")
'3f0c...'
>>> crm_id_from_reference("FR40303265045") is None
True
"""

from __future__ import annotations

PREFIX = "bottlecrm:"

#: Where a sale keeps its deal's id (``sale.sale.reference``) and an invoice its CRM twin's.
SALE_REFERENCE_FIELD = "reference"


def crm_reference(crm_id: str) -> str:
    """The identifier code that marks a party as the twin of CRM account ``crm_id``."""
    return f"{PREFIX}{crm_id}"


def crm_id_from_reference(code: str | None) -> str | None:
    """The CRM id in an identifier code written by :func:`crm_reference`, else None."""
    if code and code.startswith(PREFIX):
        return code[len(PREFIX) :]
    return None
