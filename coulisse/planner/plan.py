"""The planner: from what both systems hold to the writes that bring them in step.

A plan runs in one database transaction, in two passes over the records marked pending:

1. *check*: parse, normalise and validate every changed record; refusals go to quarantine
   (released once the record is fixed); match keys (VAT, SIREN, name and postcode, product code)
   are stored for the next pass.
2. *reconcile*, entity by entity in dependency order (clients and products, then orders, then
   invoices): link unlinked records (same external reference, VAT, SIREN or product code;
   same name and postcode is only a probable duplicate, parked for review), merge each link
   three-way (:mod:`coulisse.planner.merge`), and queue operations. A record whose client is
   not yet in the other system (an order: or a product its lines name) is deferred to a later
   plan.
   Two records of one system sharing a VAT or SIREN are a review item too: neither is linked
   or created in the other system until a person says whether they are one client or two.

The hot paths (100,000 new records in a plan) use plain SQL and few statements per chunk of
records: one read, one update of the checked records, one insert per table written, and index
lookups, never a scan per chunk.

``dry_run`` rolls the transaction back: the summary says what would happen, nothing is kept.

Example:
    >>> from coulisse.ledger import Ledger
    >>> summary = Planner(Ledger.open("sqlite://")).plan(dry_run=True)
    >>> summary.is_empty
    True
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.ledger.codec import dumps, loads
from coulisse.ledger.store import (
    EventItem,
    Ledger,
    Link,
    NewOperation,
    QuarantineItem,
    marks,
    utcnow,
)
from coulisse.model.records import ENTITIES, MODELS, SIDES, Entity, Side, other_side
from coulisse.planner.merge import effective, merge
from coulisse.policy import FieldRule, SyncPolicy
from coulisse.validation.reasons import Reason
from coulisse.validation.records import ValidationSettings, check_plain

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy.engine import Connection

    from coulisse.ledger.store import Action

#: ERP states after which a document is the ERP's alone (the hand-off).
HANDED_OFF: dict[Entity, frozenset[str]] = {
    "order": frozenset({"confirmed", "processing", "done", "cancelled"}),
    "invoice": frozenset({"posted", "partially_paid", "paid", "cancelled"}),
}
_REFUSED = (Reason.REFUSED_BY_CRM.value, Reason.REFUSED_BY_ERP.value)
#: Which systems a record created in the other one may be created in. The catalogue is the
#: ERP's; a won deal becomes a sale, never a sale a deal; an ERP invoice reaches the CRM once
#: posted (see ``_may_create``). A CRM draft invoice reaching the ERP is the planner's option
#: ``crm_invoices_to_erp`` (the sync passes the policy's setting of that name, on by default).
_CREATED_IN: dict[Entity, frozenset[Side]] = {
    "client": frozenset({"crm", "erp"}),
    "product": frozenset({"crm"}),
    "order": frozenset({"erp"}),
    "invoice": frozenset({"crm"}),
}
#: ERP invoice states the CRM mirrors: posted ones (a draft may still change or vanish).
_MIRRORED_INVOICE_STATES = frozenset({"posted", "partially_paid", "paid"})
#: Reasons the reconcile pass (not validation) holds a record back for; released once they no
#: longer hold.
_HELD_REASONS = (
    Reason.PRODUCT_UNKNOWN.value,
    Reason.INVOICE_OF_SALE.value,
    Reason.LINK_TAKEN.value,
)
#: From this many records checked (then reconciled) in a plan, PostgreSQL's statistics are
#: refreshed: a first plan fills tables whose statistics say they are empty.
_ANALYZE_AFTER = 1000
_MATCH_KEYS: dict[Entity, tuple[str, ...]] = {
    "client": ("vat_key", "siren_key"),
    "product": ("code_key",),
    "order": (),
    "invoice": (),
}
#: How a person reads each match key.
_KEY_NAMES = {"vat_key": "VAT", "siren_key": "SIREN", "code_key": "code"}
#: Identifiers that two records of one system should never share (see ``_same_side``).
_IDENTIFIERS: tuple[tuple[str, str], ...] = (("vat_key", "same_vat"), ("siren_key", "same_siren"))


@dataclass(slots=True)
class PlanItem:
    """One line of a plan, for people: "ERP: create client acc-7 Dupont SARL"."""

    side: Side | None
    kind: str
    entity: Entity
    key: str
    text: str


@dataclass(slots=True)
class SidePlan:
    """What a plan writes to one system."""

    creates: int = 0
    updates: int = 0
    deactivations: int = 0
    cancellations: int = 0

    def count(self, action: Action) -> None:
        """Count one operation."""
        if action == "create":
            self.creates += 1
        elif action == "update":
            self.updates += 1
        elif action == "deactivate":
            self.deactivations += 1
        else:
            self.cancellations += 1

    @property
    def total(self) -> int:
        """Every write to this system."""
        return self.creates + self.updates + self.deactivations + self.cancellations


@dataclass(slots=True)
class PlanSummary:
    """What a plan did (or, dry, would do); ``items`` keeps the first lines of each kind."""

    run_id: int | None
    dry_run: bool
    sides: dict[Side, SidePlan] = field(
        default_factory=lambda: {"crm": SidePlan(), "erp": SidePlan()}
    )
    checked: int = 0
    linked: int = 0
    conflicts: int = 0
    quarantined: int = 0
    deferred: int = 0
    reviews: int = 0
    items: list[PlanItem] = field(default_factory=list)
    item_limit: int = 50
    _shown: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def note(self, item: PlanItem) -> None:
        """Keep ``item`` for display, up to ``item_limit`` per kind (memory stays flat)."""
        if self._shown[item.kind] < self.item_limit:
            self._shown[item.kind] += 1
            self.items.append(item)

    def wants(self, kind: str) -> bool:
        """Whether :meth:`note` would still keep an item of ``kind`` (spares writing its text)."""
        return self._shown[kind] < self.item_limit

    @property
    def is_empty(self) -> bool:
        """No write, no new conflict, no review: both systems are in step."""
        return (
            self.sides["crm"].total == 0
            and self.sides["erp"].total == 0
            and self.conflicts == 0
            and self.reviews == 0
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain data (for ``--json`` and run statistics)."""
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "systems": {
                side: {
                    "creates": plan.creates,
                    "updates": plan.updates,
                    "deactivations": plan.deactivations,
                    "cancellations": plan.cancellations,
                }
                for side, plan in self.sides.items()
            },
            "checked": self.checked,
            "linked": self.linked,
            "conflicts": self.conflicts,
            "quarantined": self.quarantined,
            "deferred": self.deferred,
            "reviews": self.reviews,
            "items": [
                {
                    "system": item.side,
                    "kind": item.kind,
                    "entity": item.entity,
                    "key": item.key,
                    "text": item.text,
                }
                for item in self.items
            ],
        }


@dataclass(slots=True)
class _Row:
    """One observed record as the reconcile pass needs it."""

    side: Side
    key: str
    #: The record as observed; read only for records that may be merged (see ``_raw_texts``).
    raw_text: str | None
    content_hash: str
    normalised: dict[str, Any] | None
    valid: bool
    deleted: bool
    match: dict[str, str | None]
    #: The flags as stored when read (the final write is skipped when they already hold).
    pending: bool = False
    deferred: bool = False
    checked_run: int | None = None
    _raw: dict[str, Any] | None = None

    @property
    def raw(self) -> dict[str, Any]:
        if self._raw is None:
            assert self.raw_text is not None, f"{self.side} {self.key} was read without its data"
            self._raw = dict(loads(self.raw_text))
        return self._raw

    @property
    def updated_at(self) -> dt.datetime | None:
        text = (self.normalised or {}).get("source_updated_at")
        return dt.datetime.fromisoformat(text) if text else None

    def label(self) -> str:
        data = self.normalised or {}
        name = data.get("name") or data.get("number") or data.get("code") or ""
        return f"{self.key} {name}".strip()


_ROW_COLUMNS = (
    "side, source_key, content_hash, normalised, valid, deleted_at, vat_key, siren_key, "
    "name_key, code_key, pending, deferred, checked_run"
)
_ROW_SELECT = f"SELECT data, {_ROW_COLUMNS} FROM observed"  # noqa: S608 - constant text
#: A chunk's own records are read without their data: only the linked ones need it.
_ROW_SELECT_LEAN = f"SELECT NULL AS data, {_ROW_COLUMNS} FROM observed"  # noqa: S608


def _row(db_row: Any) -> _Row:
    return _Row(
        side=db_row.side,
        key=db_row.source_key,
        raw_text=db_row.data,
        content_hash=db_row.content_hash,
        normalised=loads(db_row.normalised) if db_row.normalised else None,
        valid=bool(db_row.valid),
        deleted=db_row.deleted_at is not None,
        match={
            "vat_key": db_row.vat_key,
            "siren_key": db_row.siren_key,
            "name_key": db_row.name_key,
            "code_key": db_row.code_key,
        },
        pending=bool(db_row.pending),
        deferred=bool(db_row.deferred),
        checked_run=db_row.checked_run,
    )


@dataclass(frozen=True, slots=True)
class _Held:
    """Why a document cannot be written yet; with a reason, a person must act (quarantine)."""

    why: str
    reason: Reason | None = None
    field: str | None = None


def _may_create(
    entity: Entity,
    record: dict[str, Any],
    target_side: Side,
    created_in: Mapping[Entity, frozenset[Side]] = _CREATED_IN,
) -> bool:
    """Whether a record of the other system is created in ``target_side`` at all.

    An ERP invoice reaches the CRM once posted; a CRM invoice reaches the ERP only as a draft
    for a clerk to check (an invoice the advisor already sent from the CRM is not re-issued).
    """
    if target_side not in created_in[entity]:
        return False
    if entity == "invoice":
        state = record.get("state")
        return state in _MIRRORED_INVOICE_STATES if target_side == "crm" else state == "draft"
    return True


@dataclass(slots=True)
class _Chunk:
    """What one chunk of the reconcile pass will write."""

    #: The system whose records the chunk reconciles, and the plan's run.
    side: Side
    run_id: int
    #: Every record read for the chunk (its own and their twins), by system and key.
    rows: dict[tuple[Side, str], _Row] = field(default_factory=dict)
    operations: list[NewOperation] = field(default_factory=list)
    events: list[EventItem] = field(default_factory=list)
    agreed: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    closed_conflicts: list[int] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[tuple[Side, str, str, str]] = field(default_factory=list)
    superseded_links: list[int] = field(default_factory=list)
    done: dict[tuple[Side, str], bool] = field(default_factory=dict)
    #: Records held back by the reconcile pass (an unknown product...), and those it releases.
    held: list[QuarantineItem] = field(default_factory=list)
    unheld: list[tuple[Side, str]] = field(default_factory=list)


@dataclass(slots=True)
class _References:
    """What the documents of one chunk point at, read in a few queries instead of one each.

    ``links[entity, side][key]`` is the link of a client (or order) known by ``key`` in
    ``side`` (absent: not linked); ``products[side]`` holds the product codes that exist in
    ``side`` (observed there, or created there by an applied write).
    """

    links: dict[tuple[Entity, Side], dict[str, Link]] = field(default_factory=dict)
    products: dict[Side, set[str]] = field(default_factory=dict)


class Planner:
    """Plans the writes that bring the CRM and the ERP in step; see the module docstring."""

    def __init__(
        self,
        ledger: Ledger,
        policy: SyncPolicy | None = None,
        *,
        chunk_size: int = 2000,
        item_limit: int = 50,
        flow_run_id: str | None = None,
        crm_invoices_to_erp: bool = False,
    ) -> None:
        """Plan on ``ledger`` under ``policy`` (the defaults when None).

        ``flow_run_id``: the orchestrator's run (a Prefect flow run id) the plan belongs to.
        ``crm_invoices_to_erp``: CRM draft invoices become ERP drafts (target-tryton writes
        them); off unless given: `coulisse sync` gives the policy's ``crm_invoices_to_erp``.
        """
        self.ledger = ledger
        self.flow_run_id = flow_run_id
        self._created_in = dict(_CREATED_IN)
        if crm_invoices_to_erp:
            self._created_in["invoice"] = frozenset({"crm", "erp"})
        self.policy = policy or SyncPolicy.default()
        self.settings = ValidationSettings(default_phone_region=self.policy.default_phone_region)
        self.chunk_size = chunk_size
        self.item_limit = item_limit
        self._entity_rules = {entity: self.policy.rules(entity) for entity in ENTITIES}
        self._handed_off_rules = {
            entity: {name: FieldRule(owner="erp") for name in rules}
            for entity, rules in self._entity_rules.items()
        }
        #: Per plan: whether a system holds any valid record of an entity to match against.
        self._matchable: dict[tuple[Entity, Side], bool] = {}
        #: Per plan: whether an entity has pairs decided distinct (see ``_apart``).
        self._distinct: dict[Entity, bool] = {}
        #: The fields of a create, by rule set and source system (see ``_create_fields``).
        self._fields: dict[tuple[int, Side], list[str]] = {}
        #: Per plan: records reconciled so far, and whether statistics were refreshed since.
        self._reconciled = 0
        self._analyzed = False

    # -- entry point ------------------------------------------------------------------------

    def plan(self, *, dry_run: bool = False) -> PlanSummary:
        """Check, match and merge every pending record; queue operations unless ``dry_run``."""
        self._matchable = {}
        self._distinct = {}
        self._reconciled = 0
        self._analyzed = False
        with self.ledger.engine.connect() as conn:
            transaction = conn.begin()
            try:
                run_id = conn.execute(
                    sa.insert(t.runs)
                    .values(
                        kind="plan",
                        started_at=utcnow(),
                        status="running",
                        flow_run_id=self.flow_run_id,
                    )
                    .returning(t.runs.c.id)
                ).scalar_one()
                summary = PlanSummary(
                    run_id=None if dry_run else run_id, dry_run=dry_run, item_limit=self.item_limit
                )
                # An idle plan costs two index lookups per entity.
                busy = [entity for entity in ENTITIES if self._has_work(conn, entity)]
                for entity in busy:
                    for side in SIDES:
                        self._check(conn, run_id, entity, side, summary)
                if summary.checked >= _ANALYZE_AFTER:
                    # Fresh match keys: PostgreSQL would still plan for the keys it last saw.
                    self.ledger.analyze("observed", conn=conn)
                for entity in busy:
                    self._reconcile(conn, run_id, entity, summary)
                conn.execute(
                    sa.update(t.runs)
                    .where(t.runs.c.id == run_id)
                    .values(
                        finished_at=utcnow(),
                        status="succeeded",
                        stats=dumps({k: v for k, v in summary.to_dict().items() if k != "items"}),
                    )
                )
            except BaseException:
                transaction.rollback()
                raise
            if dry_run:
                transaction.rollback()
            else:
                transaction.commit()
        return summary

    def _has_work(self, conn: Connection, entity: Entity) -> bool:
        """Whether any record of ``entity`` is pending or deferred (partial indexes answer)."""
        return any(
            self.ledger._select(
                conn,
                f"SELECT 1 FROM observed WHERE entity = ? AND {flag} LIMIT 1",  # noqa: S608
                (entity,),
            )
            for flag in ("pending", "deferred")
        )

    # -- pass 1: check --------------------------------------------------------------------------

    def _check(
        self, conn: Connection, run_id: int, entity: Entity, side: Side, summary: PlanSummary
    ) -> None:
        last = ""
        while True:
            rows = self.ledger._select(
                conn,
                "SELECT source_key, data, content_hash FROM observed "
                "WHERE side = ? AND entity = ? AND pending AND deleted_at IS NULL "
                "AND (checked_hash IS NULL OR checked_hash <> content_hash) "
                "AND source_key > ? ORDER BY source_key LIMIT ?",
                (side, entity, last, self.chunk_size),
            )
            if not rows:
                return
            last = rows[-1].source_key
            updates: list[tuple[Any, ...]] = []
            refusals: list[QuarantineItem] = []
            keep: dict[str, set[str]] = {}
            events: list[EventItem] = []
            for row in rows:
                checked = check_plain(entity, loads(row.data), side, self.settings)
                keys = checked.match_keys
                updates.append(
                    (
                        dumps(checked.plain) if checked.plain is not None else None,
                        row.content_hash,
                        checked.ok,
                        keys.get("vat"),
                        keys.get("siren"),
                        keys.get("name"),
                        keys.get("code"),
                        False,
                        run_id,
                        side,
                        entity,
                        row.source_key,
                    )
                )
                keep[row.source_key] = {refusal.code.value for refusal in checked.refusals}
                if checked.refusals:
                    summary.quarantined += 1
                    first = checked.refusals[0]
                    summary.note(
                        PlanItem(side, "quarantine", entity, row.source_key, first.message)
                    )
                    events.append(
                        EventItem(
                            side,
                            entity,
                            row.source_key,
                            "quarantined",
                            {"reasons": [refusal.code.value for refusal in checked.refusals]},
                        )
                    )
                for refusal in checked.refusals:
                    refusals.append(
                        QuarantineItem(
                            side=side,
                            entity=entity,
                            source_key=row.source_key,
                            reason=refusal.code.value,
                            field=refusal.field,
                            message=refusal.message,
                            content_hash=row.content_hash,
                        )
                    )
            summary.checked += len(rows)
            self.ledger._update_many(
                conn,
                t.observed,
                ("side", "entity", "source_key"),
                (
                    "normalised",
                    "checked_hash",
                    "valid",
                    "vat_key",
                    "siren_key",
                    "name_key",
                    "code_key",
                    # No longer pending: the reconcile pass of this run finds it by run.
                    "pending",
                    "checked_run",
                ),
                updates,
            )
            # A changed record is checked afresh: reasons that no longer hold are released,
            # including a system's refusal of the content it had before.
            self.ledger.release(conn, side, entity, [row.source_key for row in rows], keep=keep)
            self.ledger.quarantine(run_id, refusals, conn)
            self.ledger.record_events(run_id, events, conn)

    # -- pass 2: reconcile -----------------------------------------------------------------------

    def _reconcile(
        self, conn: Connection, run_id: int, entity: Entity, summary: PlanSummary
    ) -> None:
        for side in SIDES:
            last = ""
            while True:
                rows = [
                    _row(row)
                    for row in self.ledger._select(
                        conn,
                        f"{_ROW_SELECT_LEAN} WHERE side = ? AND entity = ? "
                        "AND (pending OR deferred OR checked_run = ?) AND source_key > ? "
                        "ORDER BY source_key LIMIT ?",
                        (side, entity, run_id, last, self.chunk_size),
                    )
                ]
                if not rows:
                    break
                last = rows[-1].key
                self._reconcile_chunk(conn, run_id, entity, side, rows, summary)
                self._reconciled += len(rows)
                if not self._analyzed and self._reconciled >= _ANALYZE_AFTER:
                    # A first plan fills empty tables: without statistics PostgreSQL would
                    # walk every link to find a chunk's, a cost growing with the table.
                    self.ledger.analyze("links", "operations", conn=conn)
                    self._analyzed = True

    def _reconcile_chunk(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        run_id: int,
        entity: Entity,
        side: Side,
        rows: list[_Row],
        summary: PlanSummary,
    ) -> None:
        chunk = _Chunk(side=side, run_id=run_id)
        chunk.rows.update({(row.side, row.key): row for row in rows})
        twin_side = other_side(side)
        links = self._links(conn, entity, side, [row.key for row in rows])
        held = self._same_side(conn, entity, side, rows, links, chunk, summary)
        unlinked = [
            row
            for row in rows
            if row.key not in links and row.valid and not row.deleted and row.key not in held
        ]
        refused = self._refused(conn, entity, side, rows)
        for row in rows:
            if row.key not in links and (not row.valid or row.deleted):
                # Unlinked and invalid (already reported) or deleted: nothing to carry over.
                chunk.done[side, row.key] = False
        if unlinked:
            links.update(self._match(conn, entity, side, unlinked, chunk, summary))
        # Only a record with a twin is merged (or mirrors its twin's deletion) and needs its data.
        merged = [
            row
            for row in rows
            if (link := links.get(row.key)) is not None and link.key(twin_side) is not None
        ]
        self._raw_texts(conn, entity, side, merged)
        twin_keys = [key for link in links.values() if (key := link.key(twin_side)) is not None]
        twins = self._rows(conn, entity, twin_side, twin_keys)
        chunk.rows.update({(twin.side, twin.key): twin for twin in twins.values()})
        twin_refused = self._refused(conn, entity, twin_side, list(twins.values()))
        link_ids = list({link.id for link in links.values()})
        in_flight = self.ledger.in_flight_links(conn, link_ids)
        decisions = self._decisions(conn, link_ids)
        refs = self._prefetch(conn, entity, [*rows, *twins.values()])
        for row in rows:
            link = links.get(row.key)
            if link is None:
                chunk.done.setdefault((side, row.key), False)
                continue
            twin_key = link.key(twin_side)
            twin = twins.get(twin_key) if twin_key is not None else None
            pair: dict[Side, _Row | None] = {side: row, twin_side: twin}
            if link.id in in_flight:
                self._defer(chunk, summary, entity, row, "a write to this record is in progress")
                continue
            blocked = [
                item
                for item in (row, twin)
                if item is not None
                and not item.deleted
                and (not item.valid or item.key in (refused if item is row else twin_refused))
            ]
            if blocked:
                for item in blocked:
                    chunk.events.append(EventItem(item.side, entity, item.key, "quarantined"))
                    chunk.done[item.side, item.key] = False
                if row not in blocked:
                    chunk.events.append(EventItem(side, entity, row.key, "deferred"))
                    chunk.done[side, row.key] = False
                continue
            self._reconcile_link(
                entity, link, pair, decisions.get(link.id, {}), refs, chunk, summary
            )
        self._write_chunk(conn, run_id, entity, chunk)

    def _links(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[str, Link]:
        result: dict[str, Link] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            found = self.ledger._links_by_keys(
                conn, entity, part if side == "crm" else [], part if side == "erp" else []
            )
            result.update(
                {key: link for (found_side, key), link in found.items() if found_side == side}
            )
        return result

    def _rows(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[str, _Row]:
        result: dict[str, _Row] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for db_row in self.ledger._select(
                conn,
                f"{_ROW_SELECT} WHERE side = ? AND entity = ? "
                f"AND source_key IN ({marks(len(part))})",
                (side, entity, *part),
            ):
                row = _row(db_row)
                result[row.key] = row
        return result

    def _raw_texts(
        self, conn: Connection, entity: Entity, side: Side, rows: Sequence[_Row]
    ) -> None:
        """Read the observed data of ``rows`` (of ``side``), which were read without it."""
        by_key = {row.key: row for row in rows if row.raw_text is None}
        keys = list(by_key)
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for found in self.ledger._select(
                conn,
                "SELECT source_key, data FROM observed WHERE side = ? AND entity = ? "  # noqa: S608
                f"AND source_key IN ({marks(len(part))})",
                (side, entity, *part),
            ):
                by_key[found.source_key].raw_text = found.data

    def _refused(
        self, conn: Connection, entity: Entity, side: Side, rows: Sequence[_Row]
    ) -> set[str]:
        """Records a system refused whose content has not changed since."""
        hashes = {row.key: row.content_hash for row in rows}
        refused: set[str] = set()
        keys = list(hashes)
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            for found in self.ledger._select(
                conn,
                "SELECT source_key, content_hash FROM quarantine "  # noqa: S608
                f"WHERE side = ? AND entity = ? AND source_key IN ({marks(len(part))}) "
                "AND reason IN (?, ?) AND released_at IS NULL",
                (side, entity, *part, *_REFUSED),
            ):
                if found.content_hash == hashes[found.source_key]:
                    refused.add(found.source_key)
        return refused

    def _decisions(self, conn: Connection, link_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Conflicts a person resolved, by link: ``{link_id: {field: (conflict_id, value)}}``."""
        result: dict[int, dict[str, Any]] = defaultdict(dict)
        for start in range(0, len(link_ids), 500):
            part = link_ids[start : start + 500]
            for row in self.ledger._select(
                conn,
                # The status IN (...) term lets SQLite use the partial index of open conflicts.
                "SELECT id, link_id, field, resolved_value FROM conflicts "  # noqa: S608
                f"WHERE link_id IN ({marks(len(part))}) "
                "AND status IN ('open', 'resolved') AND status = 'resolved'",
                part,
            ):
                result[row.link_id][row.field] = (row.id, loads(row.resolved_value))
        return result

    # -- matching --------------------------------------------------------------------------------

    def _matchable_in(self, conn: Connection, entity: Entity, side: Side) -> bool:
        """Whether ``side`` holds any valid record of ``entity`` (else matching can be skipped).

        Asked once per plan: the check pass is over, so no record becomes valid later on.
        """
        known = self._matchable.get((entity, side))
        if known is None:
            known = bool(
                self.ledger._select(
                    conn,
                    "SELECT 1 FROM observed WHERE side = ? AND entity = ? AND valid "
                    "AND deleted_at IS NULL LIMIT 1",
                    (side, entity),
                )
            )
            self._matchable[entity, side] = known
        return known

    def _candidates(
        self, conn: Connection, entity: Entity, side: Side, column: str, values: Sequence[str]
    ) -> dict[str, list[str]]:
        """Valid, live, unlinked records of ``side`` by their value of ``column``, keys sorted."""
        found: dict[str, list[str]] = defaultdict(list)
        for start in range(0, len(values), 500):
            part = values[start : start + 500]
            # No ORDER BY: with one, SQLite walks the whole side instead of the key's index.
            for found_row in self.ledger._select(
                conn,
                f"SELECT source_key, {column} FROM observed"  # noqa: S608
                f"{self.ledger.index_hint(f'ix_observed_{column}')} "
                f"WHERE entity = ? AND {column} IN ({marks(len(part))}) AND side = ? "
                "AND valid AND deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM links "
                f"WHERE links.entity = ? AND links.{side}_key = observed.source_key)",
                (entity, *part, side, entity),
            ):
                found[found_row[1]].append(found_row[0])
        for keys in found.values():
            keys.sort()
        return found

    def _match(  # noqa: PLR0912, PLR0915, PLR0917 - the matching rules in their order
        self,
        conn: Connection,
        entity: Entity,
        side: Side,
        rows: list[_Row],
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> dict[str, Link]:
        """Link ``rows`` (unlinked, valid) to their twin, park probable duplicates, or register
        them alone so that their twin gets created."""
        twin_side = other_side(side)
        pairs: dict[str, tuple[str | None, str]] = {}
        taken: set[str] = set()
        held: dict[str, str] = {}
        # Pairs a person said are two records (`coulisse links unlink`): never linked again.
        apart = self._apart(conn, entity, side, [row.key for row in rows])
        # 1. The record carries its twin's id (an external reference kept in the system).
        for row in rows:
            ref = (row.normalised or {}).get(f"{twin_side}_id")
            if ref and (row.key, ref) not in apart:
                pairs[row.key] = (ref, "ref")
                taken.add(ref)
        matchable = self._matchable_in(conn, entity, twin_side)
        # 2. Same identifier (VAT, SIREN; product code). Two twins with the same identifier
        # (duplicates in that system): which one is ours is for a person to say.
        for column in _MATCH_KEYS[entity] if matchable else ():
            waiting = [
                row
                for row in rows
                if row.key not in pairs and row.key not in held and row.match[column]
            ]
            if not waiting:
                continue
            found = self._candidates(
                conn, entity, twin_side, column, sorted({str(row.match[column]) for row in waiting})
            )
            doubtful = self._doubtful_twins(
                conn, entity, twin_side, sorted({key for keys in found.values() for key in keys})
            )
            for row in waiting:
                value = str(row.match[column])
                options = [
                    key
                    for key in found.get(value, [])
                    if key not in taken and (row.key, key) not in apart
                ]
                if len(options) > 1:
                    held[row.key] = (
                        f"{twin_side.upper()} {entity}s {', '.join(options)} share its "
                        f"{_KEY_NAMES[column]} {value}: waiting for review"
                    )
                elif options and options[0] in doubtful:
                    held[row.key] = f"{twin_side.upper()} {options[0]} {doubtful[options[0]]}"
                elif options:
                    pairs[row.key] = (options[0], column.removesuffix("_key"))
                    taken.add(options[0])
        # 3. Same name and postcode: probably the same client, but a person decides.
        if entity == "client" and matchable:
            waiting = [
                row
                for row in rows
                if row.key not in pairs and row.key not in held and row.match["name_key"]
            ]
            # A record already waiting for review keeps waiting, even when its twin has been
            # linked to another record since (it is then no longer a candidate below): creating
            # it in the other system meanwhile would make the duplicate a person must rule on.
            reviewed = self._review_states(conn, entity, side, [row.key for row in waiting])
            open_reviews = {own for (own, _twin), state in reviewed.items() if state == "open"}
            for row in waiting:
                if row.key in open_reviews:
                    held[row.key] = "probable duplicate waiting for review"
            waiting = [row for row in waiting if row.key not in held]
            if waiting:
                found = self._candidates(
                    conn,
                    entity,
                    twin_side,
                    "name_key",
                    sorted({str(row.match["name_key"]) for row in waiting}),
                )
                named = [row for row in waiting if found.get(str(row.match["name_key"]))]
                decided = self._review_states(conn, entity, side, [row.key for row in named])
                for row in named:
                    for twin_key in found[str(row.match["name_key"])]:
                        state = decided.get((row.key, twin_key))
                        if state == "distinct":
                            continue
                        crm_key, erp_key = (
                            (row.key, twin_key) if side == "crm" else (twin_key, row.key)
                        )
                        if state is None:
                            chunk.reviews.append(
                                {"entity": entity, "crm_key": crm_key, "erp_key": erp_key}
                            )
                            summary.reviews += 1
                            summary.note(
                                PlanItem(
                                    None,
                                    "review",
                                    entity,
                                    row.key,
                                    f"{side.upper()} {row.label()} looks like "
                                    f"{twin_side.upper()} {twin_key}: same name and postcode",
                                )
                            )
                        held[row.key] = "probable duplicate waiting for review"
                        break
        for row in rows:
            if row.key in held:
                self._defer(chunk, summary, entity, row, held[row.key])
        requested = [
            (row.key, pairs.get(row.key, (None, side))) for row in rows if row.key not in held
        ]
        link_pairs = [
            (key, twin, origin) if side == "crm" else (twin, key, origin)
            for key, (twin, origin) in requested
        ]
        results = self.ledger.link_many(entity, link_pairs, conn)
        linked: dict[str, Link] = {}
        by_key = {row.key: row for row in rows}
        for (key, (twin, origin)), result in zip(requested, results, strict=True):
            if isinstance(result, str):
                # The twin its reference names is linked to another record: two records of one
                # system claim the same record of the other. A person decides which is right.
                reason = Reason.LINK_TAKEN if origin == "ref" else None
                self._hold(chunk, summary, entity, by_key[key], _Held(result, reason, "erp_id"))
                continue
            self._unhold(chunk, by_key[key])
            linked[key] = result
            if twin is not None:
                summary.linked += 1
                chunk.events.append(EventItem(side, entity, key, "linked", {"twin": twin}))
                chunk.superseded_links.append(result.id)
        return linked

    def _apart(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> set[tuple[str, str]]:
        """(own key, twin key) pairs among ``keys`` decided distinct; one query per plan when
        there are none (the usual case)."""
        if entity not in self._distinct:
            self._distinct[entity] = bool(
                conn.execute(
                    sa.select(t.reviews.c.id)
                    .where(t.reviews.c.entity == entity, t.reviews.c.status == "distinct")
                    .limit(1)
                ).first()
            )
        if not self._distinct[entity]:
            return set()
        states = self._review_states(conn, entity, side, keys)
        return {pair for pair, state in states.items() if state == "distinct"}

    def _review_states(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[tuple[str, str], str]:
        r = t.reviews.c
        column = r.crm_key if side == "crm" else r.erp_key
        states: dict[tuple[str, str], str] = {}
        for start in range(0, len(keys), 500):
            for row in conn.execute(
                sa.select(r.crm_key, r.erp_key, r.status).where(
                    r.entity == entity, column.in_(keys[start : start + 500])
                )
            ):
                pair = (row.crm_key, row.erp_key) if side == "crm" else (row.erp_key, row.crm_key)
                states[pair] = row.status
        return states

    def _same_side(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        entity: Entity,
        side: Side,
        rows: Sequence[_Row],
        links: dict[str, Link],
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> set[str]:
        """Flag records of ``side`` that share a VAT or SIREN with another record of ``side``.

        Each such pair is a review item (:meth:`Ledger.duplicates`), never a merge. Until a
        person says they are two clients, an unlinked record of the pair is held back: linking
        it to a twin, or creating it in the other system, would pick one client of two or make
        a duplicate there. A record already linked carries on. Returns the keys held back.
        """
        if entity != "client":
            return set()
        live = [row for row in rows if row.valid and not row.deleted]
        shared = self._sharing(conn, entity, side, live)
        if not shared:
            return set()
        states = self._duplicate_states(conn, entity, side, sorted(shared))
        by_key = {row.key: row for row in rows}
        held: set[str] = set()
        for key, others in shared.items():
            for other, (reason, value) in sorted(others.items()):
                pair = (key, other) if key < other else (other, key)
                state = states.get(pair)
                what = f"{'VAT' if reason == 'same_vat' else 'SIREN'} {value}"
                if state is None:
                    states[pair] = state = "open"
                    chunk.duplicates.append((side, *pair, reason))
                    summary.reviews += 1
                    summary.note(
                        PlanItem(
                            side,
                            "review",
                            entity,
                            key,
                            f"{by_key[key].label()} shares its {what} with {side.upper()} "
                            f"{other}: one client entered twice, or two clients?",
                        )
                    )
                if state != "distinct" and key not in links and key not in held:
                    held.add(key)
                    self._defer(
                        chunk,
                        summary,
                        entity,
                        by_key[key],
                        f"shares its {what} with {side.upper()} {other}: waiting for review",
                    )
        return held

    def _doubtful_twins(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[str, str]:
        """Those of ``keys`` that share a VAT or SIREN with another record of ``side`` (and
        are not known to be distinct clients), with why: not to be linked meanwhile."""
        if entity != "client" or not keys:
            return {}
        rows = list(self._rows(conn, entity, side, keys).values())
        shared = self._sharing(conn, entity, side, rows)
        states = self._duplicate_states(conn, entity, side, sorted(shared))
        doubtful: dict[str, str] = {}
        for key, others in shared.items():
            for other, (reason, value) in sorted(others.items()):
                if states.get((key, other) if key < other else (other, key)) != "distinct":
                    what = "VAT" if reason == "same_vat" else "SIREN"
                    doubtful[key] = (
                        f"shares its {what} {value} with {side.upper()} {other}: waiting for review"
                    )
                    break
        return doubtful

    def _sharing(
        self, conn: Connection, entity: Entity, side: Side, live: Sequence[_Row]
    ) -> dict[str, dict[str, tuple[str, str]]]:
        """For each of ``live`` sharing an identifier with other records of ``side``: those
        records, with what is shared (``{key: {other: (reason, value)}}``)."""
        shared: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        for column, reason in _IDENTIFIERS:
            hint = self.ledger.index_hint(f"ix_observed_{column}")
            values = sorted({value for row in live if (value := row.match[column])})
            # First the values held twice or more, whatever the system, from the index alone;
            # usually none, and a record's twin in the other system is not a duplicate.
            repeated: list[str] = []
            for start in range(0, len(values), 500):
                part = values[start : start + 500]
                repeated.extend(
                    found[0]
                    for found in self.ledger._select(
                        conn,
                        f"SELECT {column} FROM observed{hint} WHERE entity = ? "  # noqa: S608
                        f"AND {column} IN ({marks(len(part))}) "
                        f"GROUP BY {column} HAVING count(*) > 1",
                        (entity, *part),
                    )
                )
            holders: dict[str, list[str]] = defaultdict(list)
            for start in range(0, len(repeated), 500):
                part = repeated[start : start + 500]
                for found in self.ledger._select(
                    conn,
                    f"SELECT source_key, {column} FROM observed{hint} "  # noqa: S608
                    f"WHERE entity = ? AND {column} IN ({marks(len(part))}) AND side = ? "
                    "AND valid AND deleted_at IS NULL",
                    (entity, *part, side),
                ):
                    holders[found[1]].append(found[0])
            for row in live:
                value = row.match[column]
                others = holders.get(value, []) if value else []
                if value and len(others) > 1:
                    for other in others:
                        if other != row.key:
                            shared[row.key].setdefault(other, (reason, value))
        return shared

    def _duplicate_states(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[tuple[str, str], str]:
        states: dict[tuple[str, str], str] = {}
        for start in range(0, len(keys), 250):
            part = keys[start : start + 250]
            for row in self.ledger._select(
                conn,
                "SELECT first_key, second_key, status FROM duplicates "  # noqa: S608
                f"WHERE entity = ? AND side = ? AND (first_key IN ({marks(len(part))}) "
                f"OR second_key IN ({marks(len(part))}))",
                (entity, side, *part, *part),
            ):
                states[row.first_key, row.second_key] = row.status
        return states

    # -- one link ----------------------------------------------------------------------------------

    def _rules(self, entity: Entity, erp: dict[str, Any] | None) -> dict[str, FieldRule]:
        states = HANDED_OFF.get(entity)
        if states and erp is not None and erp.get("state") in states:
            return self._handed_off_rules[entity]
        return self._entity_rules[entity]

    def _create_fields(
        self, entity: Entity, erp: dict[str, Any] | None, source_side: Side
    ) -> list[str]:
        """The fields a create carries: shared ones and those ``source_side`` owns."""
        rules = self._rules(entity, erp)
        key = (id(rules), source_side)
        fields = self._fields.get(key)
        if fields is None:
            fields = [
                name for name, rule in rules.items() if rule.shared or rule.owner == source_side
            ]
            self._fields[key] = fields
        return list(fields)

    def _reconcile_link(  # noqa: PLR0917 - private step of one plan, called once
        self,
        entity: Entity,
        link: Link,
        pair: dict[Side, _Row | None],
        decisions: dict[str, Any],
        refs: _References,
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        present = [row for row in pair.values() if row is not None]
        for row in present:
            chunk.done[row.side, row.key] = False
        live = {side: row for side, row in pair.items() if row is not None and not row.deleted}
        if len(live) == 2:
            self._merge(entity, link, live["crm"], live["erp"], decisions, refs, chunk, summary)
            return
        if not live:
            return
        ((source_side, source),) = live.items()
        target_side = other_side(source_side)
        target = pair[target_side]
        if target is not None and target.deleted:
            self._mirror_delete(entity, link, target, source, chunk, summary)
            return
        if link.key(target_side) is not None:
            # Created by an earlier plan and applied; the twin is not observed yet.
            chunk.events.append(EventItem(source_side, entity, source.key, "unchanged"))
            return
        self._create(entity, link, source, refs, chunk, summary)

    def _create(  # noqa: PLR0917 - private step of one plan, called once
        self,
        entity: Entity,
        link: Link,
        source: _Row,
        refs: _References,
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        assert source.normalised is not None
        target_side = other_side(source.side)
        record = source.normalised
        if (
            record.get("active") is False
            or record.get("state") == "cancelled"
            or not _may_create(entity, record, target_side, self._created_in)
        ):
            # Nothing to carry over: an inactive client or a cancelled order stays where it is,
            # and so does what only flows the other way (a CRM product, an ERP draft invoice).
            chunk.events.append(EventItem(source.side, entity, source.key, "unchanged"))
            return
        erp_record = record if source.side == "erp" else None
        fields = self._create_fields(entity, erp_record, source.side)
        payload = {name: record.get(name) for name in fields}
        # A new record carries every value its source has: the other system holds nothing yet
        # (an ERP-only client still needs its name in the CRM). Ownership decides later changes.
        for name in self._rules(entity, erp_record):
            if name not in payload and record.get(name) is not None:
                payload[name] = record[name]
        references = self._references(refs, entity, record, target_side)
        if isinstance(references, _Held):
            self._hold(chunk, summary, entity, source, references)
            return
        self._unhold(chunk, source)
        payload.update(references)
        payload.update(
            {
                f"{source.side}_id": source.key,
                f"{target_side}_id": None,
                "source": source.side,
                "source_updated_at": record.get("source_updated_at"),
            }
        )
        self._queue(
            chunk,
            summary,
            NewOperation(
                link_id=link.id,
                entity=entity,
                side=target_side,
                action="create",
                payload=payload,
                changed_fields=fields,
                source_side=source.side,
                source_key=source.key,
                source_hash=source.content_hash,
            ),
            source,
        )
        chunk.events.append(EventItem(source.side, entity, source.key, "created"))

    def _merge(  # noqa: PLR0917 - private step of one plan, called once
        self,
        entity: Entity,
        link: Link,
        crm: _Row,
        erp: _Row,
        decisions: dict[str, Any],
        refs: _References,
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        assert crm.normalised is not None
        assert erp.normalised is not None
        rows: dict[Side, _Row] = {"crm": crm, "erp": erp}
        rules = self._rules(entity, erp.normalised)
        base = link.agreed
        values = {
            side: effective(row.normalised or {}, row.raw, link.echo(side), base)
            for side, row in rows.items()
        }
        result = merge(
            rules,
            base,
            values["crm"],
            values["erp"],
            crm_updated_at=crm.updated_at,
            erp_updated_at=erp.updated_at,
            decisions={name: value for name, (_id, value) in decisions.items()},
        )
        chunk.closed_conflicts.extend(conflict_id for conflict_id, _value in decisions.values())
        kind = "unchanged"
        for conflict in result.conflicts:
            chunk.conflicts.append(
                {
                    "link_id": link.id,
                    "entity": entity,
                    "field": conflict.field,
                    "base_value": dumps(conflict.base),
                    "crm_value": dumps(conflict.crm),
                    "erp_value": dumps(conflict.erp),
                    "status": "open" if conflict.resolution is None else "closed",
                    "resolution": conflict.resolution,
                    "resolved_value": (
                        dumps(conflict.value) if conflict.resolution is not None else None
                    ),
                }
            )
            if conflict.resolution is None:
                kind = "conflict"
                summary.conflicts += 1
                summary.note(
                    PlanItem(
                        None,
                        "conflict",
                        entity,
                        crm.key,
                        f"{entity} CRM {crm.key} / ERP {erp.key} {conflict.field}: "
                        f"CRM {conflict.crm!r}, ERP {conflict.erp!r} (was {conflict.base!r})",
                    )
                )
        for side, row in rows.items():
            writes = result.writes[side]
            if not writes:
                continue
            target_record = row.normalised or {}
            source_side = other_side(side)
            references = self._references(refs, entity, rows[source_side].normalised or {}, side)
            if isinstance(references, _Held):
                self._hold(chunk, summary, entity, rows[source_side], references)
                continue
            self._unhold(chunk, rows[source_side])
            payload = {name: target_record.get(name) for name in rules}
            payload.update(writes)
            payload.update(references)
            payload.update(
                {
                    "crm_id": crm.key,
                    "erp_id": erp.key,
                    "source": source_side,
                    "source_updated_at": (rows[source_side].normalised or {}).get(
                        "source_updated_at"
                    ),
                }
            )
            action: Action = "update"
            if writes == {"active": False}:
                action = "deactivate"
            elif writes.get("state") == "cancelled" and entity in HANDED_OFF:
                action = "cancel"
            self._queue(
                chunk,
                summary,
                NewOperation(
                    link_id=link.id,
                    entity=entity,
                    side=side,
                    action=action,
                    payload=payload,
                    changed_fields=sorted(writes),
                    source_side=source_side,
                    source_key=rows[source_side].key,
                    source_hash=rows[source_side].content_hash,
                    expected={name: row.raw.get(name) for name in writes},
                ),
                rows[source_side],
            )
            kind = "updated" if kind == "unchanged" else kind
        echoes = {
            side: {
                name: value
                for name, value in link.echo(side).items()
                if (rows[side].normalised or {}).get(name) == value
                or rows[side].raw.get(name) == value
            }
            for side in SIDES
        }
        if (
            result.agreed != (base or {})
            or echoes["crm"] != link.crm_echo
            or (echoes["erp"] != link.erp_echo)
        ):
            chunk.agreed.append(
                {
                    "id": link.id,
                    "agreed": result.agreed,
                    "crm_echo": echoes["crm"],
                    "erp_echo": echoes["erp"],
                }
            )
        for row in rows.values():
            chunk.events.append(EventItem(row.side, entity, row.key, kind))

    def _mirror_delete(  # noqa: PLR0917 - private step of one plan, called once
        self,
        entity: Entity,
        link: Link,
        deleted: _Row,
        survivor: _Row,
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        """A record deleted on one side: deactivate (clients, products) or cancel (documents).

        Finance-safe: an invoice posted in the ERP is never touched, a confirmed sale neither.
        """
        record = survivor.normalised or {}
        chunk.events.append(EventItem(deleted.side, entity, deleted.key, "deleted"))
        if survivor.side not in self._created_in[entity]:
            # What only flows the other way is not the deleting system's to remove: a product
            # deleted in the CRM stays in the ERP's catalogue, an ERP sale's deal is the CRM's.
            chunk.events.append(EventItem(survivor.side, entity, survivor.key, "unchanged"))
            return
        action: Action
        writes: dict[str, Any]
        if entity in HANDED_OFF:
            erp_state = record.get("state") if survivor.side == "erp" else None
            if erp_state in HANDED_OFF[entity] or record.get("state") == "cancelled":
                chunk.events.append(EventItem(survivor.side, entity, survivor.key, "unchanged"))
                return
            action, writes = "cancel", {"state": "cancelled"}
        else:
            if record.get("active") is False:
                return
            action, writes = "deactivate", {"active": False}
        payload = {**record, **writes, "source": deleted.side}
        payload.update({f"{survivor.side}_id": survivor.key, f"{deleted.side}_id": deleted.key})
        self._queue(
            chunk,
            summary,
            NewOperation(
                link_id=link.id,
                entity=entity,
                side=survivor.side,
                action=action,
                payload=payload,
                changed_fields=sorted(writes),
                source_side=deleted.side,
                source_key=deleted.key,
                source_hash=deleted.content_hash,
                expected={name: survivor.raw.get(name) for name in writes},
            ),
            survivor,
        )

    # -- references of documents -------------------------------------------------------------------

    def _prefetch(self, conn: Connection, entity: Entity, rows: Sequence[_Row]) -> _References:
        """The links and products the documents of ``rows`` may point at, in a few queries."""
        refs = _References()
        if entity not in HANDED_OFF:
            return refs
        wanted: dict[tuple[Entity, Side], set[str]] = defaultdict(set)
        codes: set[str] = set()
        for row in rows:
            record = row.normalised or {}
            references: tuple[tuple[Entity, str], ...] = (("client", "client"), ("order", "order"))
            for ref_entity, prefix in references:
                for side in SIDES:
                    key = record.get(f"{prefix}_{side}_id")
                    if key is not None:
                        wanted[ref_entity, side].add(str(key))
            if entity == "order":
                codes.update(_product_codes(record))
        for (ref_entity, side), keys in wanted.items():
            refs.links[ref_entity, side] = self._links(conn, ref_entity, side, sorted(keys))
        if codes:
            for side in SIDES:
                refs.products[side] = self._products_in(conn, side, sorted(codes))
        return refs

    def _products_in(self, conn: Connection, side: Side, codes: Sequence[str]) -> set[str]:
        """Which of ``codes`` exist in ``side``: observed there, or written there by us.

        A product of the other system counts once its link holds its id in ``side`` (the
        create was applied), even before ``side`` is observed again.
        """
        other = other_side(side)
        hint = self.ledger.index_hint("ix_observed_code_key")
        found: set[str] = set()
        for start in range(0, len(codes), 500):
            part = codes[start : start + 500]
            found.update(
                row[0]
                for row in self.ledger._select(
                    conn,
                    f"SELECT code_key FROM observed{hint} WHERE entity = ? "  # noqa: S608
                    f"AND code_key IN ({marks(len(part))}) AND side = ? AND deleted_at IS NULL",
                    ("product", *part, side),
                )
            )
            found.update(
                row[0]
                for row in self.ledger._select(
                    conn,
                    f"SELECT o.code_key FROM observed o{hint} JOIN links l "  # noqa: S608
                    f"ON l.entity = o.entity AND l.{other}_key = o.source_key "
                    f"WHERE o.entity = ? AND o.code_key IN ({marks(len(part))}) "
                    f"AND o.side = ? AND l.{side}_key IS NOT NULL",
                    ("product", *part, other),
                )
            )
        return found

    def _references(
        self, refs: _References, entity: Entity, record: dict[str, Any], target_side: Side
    ) -> dict[str, Any] | _Held:
        """The ids a document needs in ``target_side``: its client's, its order's.

        Returns why not instead (the record is then deferred): its client is not there yet;
        for an order, a product its lines name is not in the ERP's catalogue (a person must
        act: quarantined too); for a CRM draft invoice, its deal already has an ERP sale,
        whose own invoice would bill the client twice (quarantined).
        """
        if entity not in HANDED_OFF:
            return {}
        result: dict[str, Any] = {}
        wanted: list[tuple[Entity, str, bool]] = [("client", "client", True)]
        if entity == "invoice":
            wanted.append(("order", "order", False))
        source_side = other_side(target_side)
        for ref_entity, prefix, required in wanted:
            source_key = record.get(f"{prefix}_{source_side}_id")
            target_key = record.get(f"{prefix}_{target_side}_id")
            if source_key is not None:
                link = refs.links.get((ref_entity, source_side), {}).get(str(source_key))
                target_key = link.key(target_side) if link is not None else None
            if target_key is None and required:
                return _Held(
                    f"waiting for {ref_entity} {source_side.upper()} {source_key} to exist "
                    f"in the {target_side.upper()}"
                )
            result[f"{prefix}_{source_side}_id"] = source_key
            result[f"{prefix}_{target_side}_id"] = target_key
        if entity == "order":
            existing = refs.products.get(target_side, set())
            for code in _product_codes(record):
                if code in existing:
                    continue
                if target_side == "erp":
                    return _Held(
                        f"product {code} is not in the ERP catalogue: add it in the ERP or "
                        "change the deal's line; the order is sent once it is there",
                        Reason.PRODUCT_UNKNOWN,
                        "lines",
                    )
                return _Held(f"waiting for product {code} to exist in the {target_side.upper()}")
        if (
            entity == "invoice"
            and target_side == "erp"
            and record.get("state") == "draft"
            and record.get("erp_id") is None
            and result.get("order_erp_id") is not None
        ):
            return _Held(
                f"its deal already has ERP sale {result['order_erp_id']}, whose own invoice "
                "bills the client: delete this CRM draft (the ERP invoice will appear in the "
                "CRM once posted)",
                Reason.INVOICE_OF_SALE,
                "order",
            )
        return result

    # -- bookkeeping ------------------------------------------------------------------------------

    def _queue(
        self, chunk: _Chunk, summary: PlanSummary, operation: NewOperation, source: _Row
    ) -> None:
        chunk.operations.append(operation)
        summary.sides[operation.side].count(operation.action)
        if not summary.wants(operation.action):
            return
        fields = ", ".join(operation.changed_fields) if operation.action == "update" else ""
        summary.note(
            PlanItem(
                operation.side,
                operation.action,
                operation.entity,
                operation.source_key,
                f"{operation.action} {operation.entity} {source.label()}"
                + (f" ({fields})" if fields else ""),
            )
        )

    def _hold(
        self, chunk: _Chunk, summary: PlanSummary, entity: Entity, row: _Row, held: _Held
    ) -> None:
        """Defer ``row`` (it is planned again every run) and quarantine it if a person must act."""
        self._defer(chunk, summary, entity, row, held.why)
        if held.reason is not None:
            summary.quarantined += 1
            chunk.held.append(
                QuarantineItem(
                    side=row.side,
                    entity=entity,
                    source_key=row.key,
                    reason=held.reason.value,
                    field=held.field,
                    message=f"{entity.capitalize()} {row.label()}: {held.why}",
                    content_hash=row.content_hash,
                )
            )

    @staticmethod
    def _unhold(chunk: _Chunk, row: _Row) -> None:
        """``row`` goes ahead: what held it back last time no longer does."""
        if row.deferred:
            chunk.unheld.append((row.side, row.key))

    def _defer(
        self, chunk: _Chunk, summary: PlanSummary, entity: Entity, row: _Row, why: str
    ) -> None:
        chunk.done[row.side, row.key] = True
        chunk.events.append(EventItem(row.side, entity, row.key, "deferred", {"why": why}))
        summary.deferred += 1
        if summary.wants("deferral"):
            summary.note(PlanItem(row.side, "deferral", entity, row.key, f"{row.label()}: {why}"))

    def _write_chunk(self, conn: Connection, run_id: int, entity: Entity, chunk: _Chunk) -> None:
        now = utcnow()
        ops = t.operations.c
        if chunk.superseded_links:
            # A twin found by reference: a create still queued for it would make a duplicate.
            for start in range(0, len(chunk.superseded_links), 500):
                conn.execute(
                    sa.update(t.operations)
                    .where(
                        ops.link_id.in_(chunk.superseded_links[start : start + 500]),
                        ops.status.in_(("pending", "in_flight")),
                        ops.action == "create",
                        ops.status == "pending",
                    )
                    .values(status="superseded", finished_at=now)
                )
        self.ledger.add_operations(run_id, chunk.operations, conn)
        self.ledger.save_agreed(conn, chunk.agreed)
        if chunk.closed_conflicts:
            conn.execute(
                sa.update(t.conflicts)
                .where(t.conflicts.c.id.in_(chunk.closed_conflicts))
                .values(status="closed", updated_at=now, run_id=run_id)
            )
        if chunk.conflicts:
            for conflict in chunk.conflicts:
                conflict.update(created_at=now, updated_at=now, run_id=run_id)
            open_rows = [row for row in chunk.conflicts if row["status"] == "open"]
            closed_rows = [row for row in chunk.conflicts if row["status"] != "open"]
            if open_rows:
                stmt = self.ledger.insert(t.conflicts)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["link_id", "field"],
                        index_where=t.conflicts.c.status.in_(("open", "resolved")),
                        set_={
                            "base_value": stmt.excluded.base_value,
                            "crm_value": stmt.excluded.crm_value,
                            "erp_value": stmt.excluded.erp_value,
                            "updated_at": stmt.excluded.updated_at,
                            "run_id": stmt.excluded.run_id,
                        },
                    ),
                    open_rows,
                )
            if closed_rows:
                conn.execute(sa.insert(t.conflicts), closed_rows)
        if chunk.reviews:
            for review in chunk.reviews:
                review.update(reason="same_name_postcode", status="open", created_at=now)
            conn.execute(self.ledger.insert(t.reviews).on_conflict_do_nothing(), chunk.reviews)
        if chunk.duplicates:
            conn.execute(
                self.ledger.insert(t.duplicates).on_conflict_do_nothing(),
                [
                    {
                        "entity": entity,
                        "side": side,
                        "first_key": first,
                        "second_key": second,
                        "reason": reason,
                        "status": "open",
                        "created_at": now,
                        "run_id": run_id,
                    }
                    for side, first, second, reason in chunk.duplicates
                ],
            )
        self.ledger.record_events(run_id, chunk.events, conn)
        self.ledger.quarantine(run_id, chunk.held, conn)
        for side in SIDES:
            keys = [key for key_side, key in chunk.unheld if key_side == side]
            if keys:
                self.ledger._release(conn, side, entity, keys, reasons=_HELD_REASONS)
        self.ledger._update_many(
            conn,
            t.observed,
            ("side", "entity", "source_key"),
            ("pending", "deferred", "checked_run"),
            [
                (False, deferred, None, side, entity, key)
                for (side, key), deferred in chunk.done.items()
                if _unsettled(chunk, chunk.rows[side, key], deferred=deferred)
            ],
        )


def _unsettled(chunk: _Chunk, row: _Row, *, deferred: bool) -> bool:
    """Whether ``row`` needs a write to be marked planned (deferred or not).

    A record this plan checked is no longer pending already; it needs no second write unless
    its deferral changes, or it is the other system's, whose pass would otherwise take it again.
    """
    return (
        row.pending
        or row.deferred != deferred
        or (row.checked_run == chunk.run_id and row.side != chunk.side)
    )


def _product_codes(record: dict[str, Any]) -> list[str]:
    """The product codes an order's lines name, as products are matched (upper case)."""
    codes: list[str] = []
    for line in record.get("lines") or ():
        code = line.get("product_code") if isinstance(line, dict) else None
        if code and code.upper() not in codes:
            codes.append(code.upper())
    return codes


__all__ = ["HANDED_OFF", "MODELS", "PlanItem", "PlanSummary", "Planner", "SidePlan"]
