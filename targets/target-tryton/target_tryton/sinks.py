"""The clients sink: each batch of planned client writes applied to Tryton, each outcome recorded.

For a batch of operations from tap-ledger (side ``erp``):

- **creates**: one search for parties already carrying the CRM reference (created by an earlier
  run whose answer was lost: recorded as applied, never created twice), then one ``create``
  call for the rest. Tryton refuses a whole call for one bad party: the batch is then created
  one party at a time, and each refused party is quarantined with Tryton's message.
- **updates and deactivations**: one read of the parties with every row's ``_timestamp``; a
  party whose changed fields no longer hold what the planner saw is not written (re-planned);
  the others are written in one call, each row compare-and-set on its timestamp.
- then one read of what Tryton stored (phones rewritten, SIREN spaced), recorded in the ledger
  as each client's echo, so that the next observation is not taken for a change.

Every outcome is committed to the ledger before the batch returns: the target's STATE message,
emitted after the batch, never runs ahead of what is durably written.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from coulisse.tryton.references import crm_reference
from coulisse.tryton.rpc import TrytonConcurrencyError, TrytonUserError
from target_tryton.bookkeeping import Bookkeeping, Tally
from target_tryton.connector import (
    ADDRESS,
    ADDRESS_FIELDS,
    CONTACT_MECHANISM,
    IDENTIFIER,
    IDENTIFIER_TYPES,
    MECHANISM_TYPES,
    PARTY,
    PartyWrite,
    stamp_key,
)
from target_tryton.operations import PlannedWrite, TrytonApplyError, describe

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from coulisse.ledger import Ledger
    from target_tryton.connector import Party, PartyConnector

#: Canonical client fields target-tryton does not write: Tryton here has no bank module for an
#: IBAN, and a SIRET belongs to an establishment's address, which the canonical client lacks.
UNSTORED_FIELDS = frozenset({"siret", "iban"})
_SEPARATORS = re.compile(r"[\s.\-/()]")
_COMPACT_FIELDS = frozenset({"vat", "siren", "siret", "iban", "phone"})


def comparable(name: str, value: Any) -> Any:
    """A value in the form two readings of one field compare in.

    Blank is no value, identifiers and phones ignore their spacing, an email its case:

    >>> comparable("phone", "+33 2 17 82 87 36") == comparable("phone", "+33217828736")
    True
    >>> comparable("siren", "719 000 093")
    '719000093'
    >>> comparable("city", "  ")
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if name in _COMPACT_FIELDS:
        return _SEPARATORS.sub("", text).upper()
    if name in {"email", "billing_country"}:
        return text.upper()
    return text


def same(name: str, left: Any, right: Any) -> bool:
    """True when ``left`` and ``right`` are the same value of field ``name``."""
    return bool(comparable(name, left) == comparable(name, right))


class ClientOperation(PlannedWrite):
    """One planned client write: the client as it should be, and what to check."""

    __slots__ = ()
    noun = "client"
    crm_noun = "CRM"
    erp_noun = "party"

    @property
    def client(self) -> dict[str, Any]:
        """The client as the plan wants it in Tryton."""
        return self.values

    @property
    def party_id(self) -> int | None:
        """The client's party id in Tryton (None for a create)."""
        return self.erp_id

    def wanted(self, name: str) -> Any:
        """The value ``name`` must have in Tryton after this write."""
        if self.action == "deactivate" and name == "active":
            return False
        return self.client.get(name)


def group_writes(writes: Iterable[PartyWrite]) -> list[PartyWrite]:
    """Merge writes of identical values into one ``(ids, values)`` pair (deactivations...)."""
    grouped: dict[str, PartyWrite] = {}
    for write in writes:
        key = json.dumps(write.values, sort_keys=True, default=str)
        if key in grouped:
            grouped[key].party_ids.extend(write.party_ids)
            grouped[key].timestamps.update(write.timestamps)
        else:
            grouped[key] = PartyWrite(
                list(write.party_ids), dict(write.values), dict(write.timestamps)
            )
    return list(grouped.values())


#: How a batch's log line orders what it did.
OUTCOMES = ("created", "found", "updated", "unchanged", "refused", "replan")


class ClientsSink(BatchSink):
    """Applies planned client writes (create, update, deactivate) to Tryton parties."""

    MAX_SIZE_DEFAULT = 100

    @property
    def max_size(self) -> int:
        """Clients per batch (``batch_size``): each batch costs a handful of Tryton calls."""
        size = self.config.get("batch_size") or self.batch_size_rows or self.MAX_SIZE_DEFAULT
        return max(1, int(size))

    @property
    def connector(self) -> PartyConnector:
        """The target's Tryton connection, shared by every batch."""
        connector: PartyConnector = self._target.connector
        return connector

    @property
    def ledger(self) -> Ledger:
        """The target's ledger, where each outcome is recorded."""
        ledger: Ledger = self._target.ledger
        return ledger

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the Tryton session and the ledger."""
        self._target = target
        super().__init__(target, stream_name, schema, key_properties)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Apply the batch; record every outcome in the ledger before returning."""
        records: list[dict[str, Any]] = context.get("records", [])
        operations = [ClientOperation.from_record(record) for record in records]
        if not operations:
            return
        books = Bookkeeping(self.ledger, self.logger, Tally(OUTCOMES), "clients")
        creates = [op for op in operations if op.action == "create"]
        writes = [op for op in operations if op.action in {"update", "deactivate"}]
        for operation in operations:
            if operation.action not in {"create", "update", "deactivate"}:
                books.failed(
                    operation,
                    f"{operation.label}: a client takes no {operation.action!r} write in "
                    "Tryton; left for the planner to correct",
                )
        self._apply_creates(creates, books)
        self._apply_writes(writes, books)
        self.logger.info("clients applied to Tryton at %s: %s", self.connector.url, books.tally)

    # -- creates -------------------------------------------------------------------------------

    def _apply_creates(self, operations: list[ClientOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        for operation in operations:
            if operation.crm_id is None:
                msg = (
                    f"{operation.label} has no crm_id: without it target-tryton cannot mark "
                    "the party against duplicates; fix the operation's source"
                )
                raise TrytonApplyError(msg)
        with books.calling("looking up", operations):
            found = self.connector.find_by_reference(op.crm_id for op in operations if op.crm_id)
        done: list[tuple[ClientOperation, int]] = []
        missing: list[ClientOperation] = []
        for operation in operations:
            party_id = found.get(operation.crm_id or "")
            if party_id is None:
                missing.append(operation)
                continue
            # Created by an earlier run whose answer (or ledger commit) was lost.
            self.logger.info(
                "%s already exists as party %s (an earlier run created it): not created again",
                operation.label,
                party_id,
            )
            books.tally.counts["found"] += 1
            done.append((operation, party_id))
        with books.calling("looking up the countries of", missing):
            countries = self.connector.country_ids(
                str(op.client["billing_country"])
                for op in missing
                if op.client.get("billing_country")
            )
        ready: list[tuple[ClientOperation, dict[str, Any]]] = []
        for operation in missing:
            values = self._party_values(operation, countries)
            if isinstance(values, str):
                books.refused(operation, values, field="billing_country")
            else:
                ready.append((operation, values))
        created = self._create(ready, books)
        books.tally.counts["created"] += len(created)
        self._record_applied(done + created, books)

    def _party_values(
        self, operation: ClientOperation, countries: Mapping[str, int]
    ) -> dict[str, Any] | str:
        """``party.party.create`` values for a new client, or why Tryton cannot hold it."""
        client = operation.client
        self._warn_unstored(operation, operation.changed_fields)
        address: dict[str, Any] = {"invoice": True}
        for name, column in ADDRESS_FIELDS.items():
            value = client.get(name)
            if column == "country" and value:
                country = countries.get(str(value).upper())
                if country is None:
                    return self._unknown_country(operation, str(value))
                value = country
            address[column] = value
        identifiers: list[dict[str, Any]] = [{"code": crm_reference(operation.crm_id or "")}]
        identifiers.extend(
            {"type": kinds[0], "code": client[name]}
            for name, kinds in IDENTIFIER_TYPES.items()
            if client.get(name)
        )
        mechanisms = [
            {"type": kinds[0], "value": client[name]}
            for name, kinds in MECHANISM_TYPES.items()
            if client.get(name)
        ]
        values: dict[str, Any] = {
            "name": client.get("name"),
            "identifiers": [("create", identifiers)],
            "addresses": [("create", [address])],
        }
        if mechanisms:
            values["contact_mechanisms"] = [("create", mechanisms)]
        if client.get("active") is False:
            values["active"] = False
        return values

    def _create(
        self, ready: list[tuple[ClientOperation, dict[str, Any]]], books: Bookkeeping
    ) -> list[tuple[ClientOperation, int]]:
        """Create in one call; if Tryton refuses it, one by one to find the refused parties."""
        if not ready:
            return []
        operations = [operation for operation, _values in ready]
        try:
            with books.calling("creating", operations, passing=(TrytonUserError,)):
                ids = self.connector.create([values for _operation, values in ready])
            return list(zip(operations, ids, strict=True))
        except TrytonUserError as exc:
            if len(ready) == 1:
                books.refused(ready[0][0], f"Tryton refused {ready[0][0].label}: {exc}")
                return []
            self.logger.info(
                "Tryton refused a batch of %d new clients (%s): creating them one by one",
                len(ready),
                exc,
            )
        created: list[tuple[ClientOperation, int]] = []
        for operation, values in ready:
            try:
                with books.calling("creating", [operation], passing=(TrytonUserError,)):
                    (party_id,) = self.connector.create([values])
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton refused {operation.label}: {exc}")
                continue
            created.append((operation, party_id))
        return created

    # -- updates and deactivations -----------------------------------------------------------

    def _apply_writes(self, operations: list[ClientOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        known = [op for op in operations if op.party_id is not None]
        for operation in operations:
            if operation.party_id is None:
                books.failed(
                    operation,
                    f"{operation.label}: no Tryton party id to write to; the planner will "
                    "plan it again once the party is linked",
                )
        with books.calling("reading", known):
            parties = self.connector.read(op.party_id for op in known if op.party_id)
            countries = self.connector.country_ids(
                str(op.wanted("billing_country"))
                for op in known
                if "billing_country" in op.changed_fields and op.wanted("billing_country")
            )
        planned: list[tuple[ClientOperation, PartyWrite]] = []
        unchanged: list[tuple[ClientOperation, int]] = []
        for operation in known:
            party = parties.get(operation.party_id or 0)
            if party is None:
                books.failed(
                    operation,
                    f"{operation.label}: party {operation.party_id} is no longer in Tryton at "
                    f"{self.connector.url}; not written, planned again once the ERP is "
                    "observed",
                )
                continue
            stale = self._stale_fields(operation, party)
            if stale:
                books.failed(operation, stale)
                continue
            write = self._party_write(operation, party, countries)
            if isinstance(write, str):
                books.refused(operation, write, field="billing_country")
            elif write is None:
                unchanged.append((operation, party.id))
            else:
                planned.append((operation, write))
        written = self._write(planned, books)
        books.tally.counts["updated"] += len(written)
        books.tally.counts["unchanged"] += len(unchanged)
        self._record_applied(
            [(operation, write.party_ids[0]) for operation, write in written] + unchanged,
            books,
        )

    def _stale_fields(self, operation: ClientOperation, party: Party) -> str | None:
        """Why the write must wait, when Tryton changed a field since the plan was made.

        A field still as the planner saw it, or already as the plan wants it, is fine.
        """
        if operation.expected is None:
            return None
        current = party.as_client()
        changed = {
            name: (operation.expected[name], current.get(name))
            for name in operation.changed_fields
            if name in operation.expected
            and not same(name, operation.expected[name], current.get(name))
            and not same(name, operation.wanted(name), current.get(name))
        }
        if not changed:
            return None
        details = "; ".join(
            f"{name} was {before!r}, is now {now!r}" for name, (before, now) in changed.items()
        )
        return (
            f"{operation.label}: changed in Tryton since it was planned ({details}); not "
            "written, it will be planned again from both systems' current values"
        )

    def _party_write(
        self, operation: ClientOperation, party: Party, countries: Mapping[str, int]
    ) -> PartyWrite | str | None:
        """The values (child rows nested) and row timestamps of one update; None if nothing."""
        current = party.as_client()
        fields = [
            name
            for name in operation.changed_fields
            if not same(name, operation.wanted(name), current.get(name))
        ]
        self._warn_unstored(operation, fields)
        values: dict[str, Any] = {}
        stamps = {stamp_key(PARTY, party.id): party.timestamp}
        for name in ("name", "active"):
            if name in fields:
                wanted = operation.wanted(name)
                values[name] = bool(wanted) if name == "active" else wanted
        addresses = self._address_actions(operation, party, fields, countries, stamps)
        if isinstance(addresses, str):
            return addresses
        if addresses:
            values["addresses"] = addresses
        mechanisms = self._child_actions(
            CONTACT_MECHANISM,
            [
                (party.mechanism(name), operation.wanted(name), {"type": kinds[0]}, "value")
                for name, kinds in MECHANISM_TYPES.items()
                if name in fields
            ],
            stamps,
        )
        identifiers = self._child_actions(
            IDENTIFIER,
            [
                (party.identifier(name), operation.wanted(name), {"type": kinds[0]}, "code")
                for name, kinds in IDENTIFIER_TYPES.items()
                if name in fields
            ],
            stamps,
        )
        if party.crm_id is None and operation.crm_id is not None:
            # A party linked by VAT or SIREN gets the CRM reference too: links can be rebuilt
            # from Tryton, and a lost answer never becomes a second party.
            identifiers.append(("create", [{"code": crm_reference(operation.crm_id)}]))
        if mechanisms:
            values["contact_mechanisms"] = mechanisms
        if identifiers:
            values["identifiers"] = identifiers
        if not values:
            return None
        return PartyWrite([party.id], values, stamps)

    def _address_actions(
        self,
        operation: ClientOperation,
        party: Party,
        fields: Sequence[str],
        countries: Mapping[str, int],
        stamps: dict[str, str],
    ) -> list[tuple[Any, ...]] | str:
        """Nested actions on the billing address (written, or added if the party has none)."""
        values: dict[str, Any] = {}
        for name, column in ADDRESS_FIELDS.items():
            if name not in fields:
                continue
            wanted = operation.wanted(name)
            if column == "country" and wanted:
                country = countries.get(str(wanted).upper())
                if country is None:
                    return self._unknown_country(operation, str(wanted))
                wanted = country
            values[column] = wanted or None
        if not values:
            return []
        address = party.billing_address()
        if address is None:
            return [("create", [{**values, "invoice": True}])]
        stamps[stamp_key(ADDRESS, address["id"])] = str(address["_timestamp"])
        return [("write", [address["id"]], values)]

    @staticmethod
    def _child_actions(
        model: str,
        changes: list[tuple[dict[str, Any] | None, Any, dict[str, Any], str]],
        stamps: dict[str, str],
    ) -> list[tuple[Any, ...]]:
        """Nested One2Many actions: write a row's new value, delete it when blank, or add one."""
        actions: list[tuple[Any, ...]] = []
        for row, wanted, kind, column in changes:
            if row is not None:
                stamps[stamp_key(model, row["id"])] = str(row["_timestamp"])
                if wanted:
                    actions.append(("write", [row["id"]], {column: wanted}))
                else:
                    actions.append(("delete", [row["id"]]))
            elif wanted:
                actions.append(("create", [{**kind, column: wanted}]))
        return actions

    def _write(
        self, planned: list[tuple[ClientOperation, PartyWrite]], books: Bookkeeping
    ) -> list[tuple[ClientOperation, PartyWrite]]:
        """Write in one call; if Tryton objects, one client at a time to find which one."""
        if not planned:
            return []
        operations = [operation for operation, _write in planned]
        passing = (TrytonUserError, TrytonConcurrencyError)
        try:
            with books.calling("writing", operations, passing=passing):
                self.connector.write(group_writes(write for _operation, write in planned))
            return planned
        except (TrytonUserError, TrytonConcurrencyError) as exc:
            self.logger.info(
                "Tryton turned down a batch of %d client writes (%s): writing them one by one",
                len(planned),
                exc,
            )
        written: list[tuple[ClientOperation, PartyWrite]] = []
        for operation, write in planned:
            try:
                with books.calling("writing", [operation], passing=passing):
                    self.connector.write([write])
            except TrytonConcurrencyError:
                books.failed(
                    operation,
                    f"{operation.label}: changed in Tryton while it was being written "
                    "(timestamp check); not written, it will be planned again",
                )
                continue
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton refused {operation.label}: {exc}")
                continue
            written.append((operation, write))
        return written

    # -- outcomes ------------------------------------------------------------------------------

    def _record_applied(self, done: list[tuple[ClientOperation, int]], books: Bookkeeping) -> None:
        """Read back what Tryton stored (one call) and record it as each client's echo."""
        if not done:
            return
        with books.calling("reading back", [operation for operation, _id in done]):
            parties = self.connector.read(party_id for _operation, party_id in done)
        for operation, party_id in done:
            party = parties.get(party_id)
            stored = party.as_client() if party is not None else {}
            fields = operation.changed_fields or tuple(stored)
            books.applied(
                operation,
                party_id,
                {name: stored.get(name) for name in fields},
                row="party",
                compare=f"Two parties may stand for this client: compare party {party_id}",
            )

    def _unknown_country(self, operation: ClientOperation, code: str) -> str:
        return (
            f"Tryton refused {operation.label}: Tryton at {self.connector.url} has no country "
            f"with code {code!r}; add it to Tryton's countries or correct the client's country"
        )

    def _warn_unstored(self, operation: ClientOperation, fields: Iterable[str]) -> None:
        for name in fields:
            if name in UNSTORED_FIELDS and operation.wanted(name):
                self.logger.warning(
                    "%s: Tryton has no place for %s here; that value is not written",
                    operation.label,
                    name,
                )


__all__ = [
    "ClientOperation",
    "ClientsSink",
    "TrytonApplyError",
    "comparable",
    "describe",
    "group_writes",
    "same",
]
