"""Tryton's side of target-tryton: parties read, created and written in batches over JSON-RPC.

A Coulisse client is a Tryton ``party.party`` with three kinds of rows hanging from it, each
with its own ``_timestamp`` for compare-and-set:

- identifiers (``party.identifier``): the VAT (``eu_vat``, or ``fr_tva``), the SIREN
  (``fr_siren``, stored spaced: ``"719 000 093"``) and, with no type, the CRM twin's id
  ``"bottlecrm:<crm id>"`` (:mod:`coulisse.tryton.references`);
- addresses (``party.address``): the billing address is the first one flagged for invoices,
  else the first one, as Tryton itself picks it;
- contact mechanisms (``party.contact_mechanism``): the first email, phone (else mobile) and
  website. Tryton rewrites phones to international form (``"+33 2 17 82 87 36"``, compact
  ``"+33217828736"``): the compact form is what observations of Tryton emit.

One :meth:`PartyConnector.read` call brings a whole batch of parties with every row and
timestamp (Tryton reads ``addresses.street`` through the relation); one
:meth:`PartyConnector.write` call writes a whole batch (``write(ids, values, ids, values...)``)
in one transaction, child rows nested in their party's values::

    >>> party = Party.from_row(
    ...     {
    ...         "id": 7, "_timestamp": "1.5", "name": "Dupont SARL", "code": "C7",
    ...         "active": True,
    ...         "addresses.": [], "contact_mechanisms.": [],
    ...         "identifiers.": [
    ...             {"id": 3, "_timestamp": "1.5", "type": "fr_siren", "code": "719 000 093",
    ...              "code_compact": "719000093", "active": True},
    ...         ],
    ...     }
    ... )
    >>> party.as_client()["siren"]
    '719000093'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coulisse.tryton.references import crm_id_from_reference, crm_reference

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from coulisse.tryton.rpc import TrytonClient

logger = logging.getLogger(__name__)

PARTY = "party.party"
ADDRESS = "party.address"
CONTACT_MECHANISM = "party.contact_mechanism"
IDENTIFIER = "party.identifier"
COUNTRY = "country.country"

#: Canonical identifier fields and the Tryton identifier types read for each, the first one
#: also the type a new identifier gets.
IDENTIFIER_TYPES: dict[str, tuple[str, ...]] = {"vat": ("eu_vat", "fr_tva"), "siren": ("fr_siren",)}
SIRET_TYPE = "fr_siret"
#: Canonical contact fields and the contact mechanism types read for each, preferred first.
MECHANISM_TYPES: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone", "mobile"),
    "website": ("website",),
}
#: Canonical billing address fields and the ``party.address`` field of each.
ADDRESS_FIELDS: dict[str, str] = {
    "billing_street": "street",
    "billing_postal_code": "postal_code",
    "billing_city": "city",
    "billing_country": "country",
}

_CHILD_FIELDS: dict[str, tuple[str, ...]] = {
    "addresses": ("street", "postal_code", "city", "country.code", "invoice"),
    "contact_mechanisms": ("type", "value", "value_compact"),
    "identifiers": ("type", "code", "code_compact", "address"),
}
#: Everything a batch read brings back, child rows and every row's timestamp included.
PARTY_READ_FIELDS: tuple[str, ...] = (
    "name",
    "code",
    "active",
    "_timestamp",
    *(
        f"{relation}.{name}"
        for relation, names in _CHILD_FIELDS.items()
        for name in (*names, "active", "_timestamp")
    ),
)


def stamp_key(model: str, record_id: int) -> str:
    """The key of a row in Tryton's ``_timestamp`` context: ``"party.party,7"``."""
    return f"{model},{record_id}"


@dataclass(frozen=True, slots=True)
class Party:
    """A party as Tryton holds it now, with its active child rows and their timestamps."""

    id: int
    timestamp: str
    name: str | None
    code: str | None
    active: bool
    addresses: tuple[dict[str, Any], ...] = ()
    mechanisms: tuple[dict[str, Any], ...] = ()
    identifiers: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Party:
        """Build from a :data:`PARTY_READ_FIELDS` row; inactive child rows are left out."""

        def children(relation: str) -> tuple[dict[str, Any], ...]:
            rows = row.get(f"{relation}.") or []
            return tuple(dict(child) for child in rows if child.get("active", True))

        return cls(
            id=int(row["id"]),
            timestamp=str(row["_timestamp"]),
            name=row.get("name"),
            code=row.get("code"),
            active=bool(row.get("active", True)),
            addresses=children("addresses"),
            mechanisms=children("contact_mechanisms"),
            identifiers=children("identifiers"),
        )

    def billing_address(self) -> dict[str, Any] | None:
        """The address invoices go to: the first flagged for invoices, else the first."""
        flagged = [address for address in self.addresses if address.get("invoice")]
        candidates = flagged or list(self.addresses)
        return candidates[0] if candidates else None

    def mechanism(self, canonical_field: str) -> dict[str, Any] | None:
        """The contact mechanism holding ``email``, ``phone`` or ``website``."""
        for kind in MECHANISM_TYPES[canonical_field]:
            for mechanism in self.mechanisms:
                if mechanism.get("type") == kind:
                    return mechanism
        return None

    def identifier(self, canonical_field: str) -> dict[str, Any] | None:
        """The identifier holding ``vat`` or ``siren``."""
        for kind in IDENTIFIER_TYPES[canonical_field]:
            for row in self.identifiers:
                if row.get("type") == kind:
                    return row
        return None

    def siret(self) -> str | None:
        """The SIRET of the billing address's establishment, else the first one, compact."""
        rows = [row for row in self.identifiers if row.get("type") == SIRET_TYPE]
        billing = self.billing_address()
        own = [row for row in rows if billing is not None and row.get("address") == billing["id"]]
        candidates = own or rows
        return _compact_code(candidates[0]) if candidates else None

    @property
    def crm_id(self) -> str | None:
        """The CRM twin's id, from the untyped ``bottlecrm:`` identifier, if any."""
        for row in self.identifiers:
            if row.get("type") is None:
                found = crm_id_from_reference(row.get("code"))
                if found is not None:
                    return found
        return None

    def as_client(self) -> dict[str, Any]:
        """The party as canonical client values, in the form an observation reads them.

        VAT, SIREN and SIRET compact (``"719000093"``); the phone in the international form
        Tryton rewrote it to, compact (``"+33217828736"``, which Tryton shows as
        ``"+33 2 17 82 87 36"``); the country as its ISO code. Recorded as what Tryton stored,
        the next observation of these values is recognised as our own echo.
        """
        client: dict[str, Any] = {
            "erp_id": str(self.id),
            "crm_id": self.crm_id,
            "name": self.name,
            "active": self.active,
            "erp_code": self.code,
            "siret": self.siret(),
            # Tryton holds no IBAN without the bank module: an observation reads none.
            "iban": None,
        }
        for name in IDENTIFIER_TYPES:
            row = self.identifier(name)
            client[name] = _compact_code(row) if row else None
        for name in MECHANISM_TYPES:
            row = self.mechanism(name)
            client[name] = (row.get("value_compact") or row.get("value")) if row else None
        address = self.billing_address() or {}
        for name, column in ADDRESS_FIELDS.items():
            if column == "country":
                country = address.get("country.")
                client[name] = country.get("code") if country else None
            else:
                client[name] = address.get(column)
        return client


def _compact_code(identifier: Mapping[str, Any]) -> str | None:
    """An identifier's code without spacing; a French VAT keeps its ``FR`` prefix.

    >>> _compact_code({"type": "fr_tva", "code": "40 303 265 045", "code_compact": None})
    'FR40303265045'
    """
    text = str(identifier.get("code_compact") or identifier.get("code") or "")
    text = "".join(text.split()).upper()
    if identifier.get("type") == "fr_tva" and text and not text[:2].isalpha():
        text = f"FR{text}"
    return text or None


@dataclass(slots=True)
class PartyWrite:
    """Values to write on parties, with the timestamps of every row they touch."""

    party_ids: list[int]
    values: dict[str, Any]
    timestamps: dict[str, str] = field(default_factory=dict)


class PartyConnector:
    """The Tryton calls target-tryton makes, each for a whole batch of clients."""

    def __init__(self, client: TrytonClient) -> None:
        """Talk to Tryton through ``client`` (which logs in again when its session expires)."""
        self.client = client
        self._countries: dict[str, int] = {}

    @property
    def url(self) -> str:
        """Where Tryton answers, for messages."""
        return self.client.url

    def find_by_reference(self, crm_ids: Iterable[str]) -> dict[str, int]:
        """Parties already carrying the reference of these CRM clients: ``{crm_id: party}``.

        One search for the whole batch. Inactive identifiers count too: a reference found is a
        party created by an earlier run, whatever happened to it since.
        """
        references = sorted({crm_reference(crm_id) for crm_id in crm_ids})
        if not references:
            return {}
        rows = self.client.search_read(
            IDENTIFIER,
            [("code", "in", references), ("type", "=", None)],
            ["code", "party"],
            order=[("id", "ASC")],
            context={"active_test": False},
        )
        found: dict[str, int] = {}
        for row in rows:
            crm_id = crm_id_from_reference(row["code"])
            if crm_id is not None and row.get("party") is not None:
                found.setdefault(crm_id, int(row["party"]))
        return found

    def country_ids(self, codes: Iterable[str]) -> dict[str, int]:
        """Tryton's country ids by ISO code; asked once per code for the whole run."""
        wanted = {code.upper() for code in codes if code}
        missing = sorted(wanted - set(self._countries))
        if missing:
            for row in self.client.search_read(COUNTRY, [("code", "in", missing)], ["code"]):
                self._countries[str(row["code"]).upper()] = int(row["id"])
        return {code: self._countries[code] for code in wanted if code in self._countries}

    def create(self, values_list: Sequence[Mapping[str, Any]]) -> list[int]:
        """Create parties (with their rows) in one call; one refused party fails them all."""
        return self.client.create(PARTY, values_list)

    def read(self, party_ids: Iterable[int]) -> dict[int, Party]:
        """Parties by id with every active child row and timestamp, in one call.

        Parties deleted from Tryton are missing from the answer; inactive ones are there.
        """
        ids = sorted(set(party_ids))
        if not ids:
            return {}
        rows = self.client.search_read(
            PARTY,
            [("id", "in", ids)],
            PARTY_READ_FIELDS,
            context={"active_test": False},
        )
        return {int(row["id"]): Party.from_row(row) for row in rows}

    def write(self, writes: Sequence[PartyWrite]) -> None:
        """Apply every write in one call and one transaction, compare-and-set on each row.

        Raises :class:`~coulisse.tryton.rpc.TrytonConcurrencyError` when any row changed since
        its timestamp was read, :class:`~coulisse.tryton.rpc.TrytonUserError` when Tryton
        refuses a value; then nothing of the call is written.
        """
        if not writes:
            return
        arguments: list[Any] = []
        timestamps: dict[str, str] = {}
        for write in writes:
            arguments.extend([list(write.party_ids), write.values])
            timestamps.update(write.timestamps)
        self.client.model_call(PARTY, "write", *arguments, context={"_timestamp": timestamps})


__all__ = [
    "ADDRESS",
    "ADDRESS_FIELDS",
    "CONTACT_MECHANISM",
    "IDENTIFIER",
    "IDENTIFIER_TYPES",
    "MECHANISM_TYPES",
    "PARTY",
    "SIRET_TYPE",
    "Party",
    "PartyConnector",
    "PartyWrite",
    "stamp_key",
]
