"""The planner: from what both systems hold to the writes that bring them in step.

A plan runs in one database transaction, in two passes over the records marked pending:

1. *check*: parse, normalise and validate every changed record; refusals go to quarantine
   (released once the record is fixed); match keys (VAT, SIREN, name and postcode, product code)
   are stored for the next pass.
2. *reconcile*, entity by entity in dependency order (clients and products, then orders, then
   invoices): link unlinked records (same external reference, VAT, SIREN or product code;
   same name and postcode is only a probable duplicate, parked for review), merge each link
   three-way (:mod:`coulisse.planner.merge`), and queue operations. A record whose client is
   not yet in the other system is deferred to a later plan.

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
    utcnow,
)
from coulisse.model.records import ENTITIES, MODELS, SIDES, Entity, Side, other_side
from coulisse.planner.merge import effective, merge
from coulisse.policy import FieldRule, SyncPolicy
from coulisse.validation.reasons import Reason
from coulisse.validation.records import ValidationSettings, check_record

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.engine import Connection

    from coulisse.ledger.store import Action

#: ERP states after which a document is the ERP's alone (the hand-off).
HANDED_OFF: dict[Entity, frozenset[str]] = {
    "order": frozenset({"confirmed", "processing", "done", "cancelled"}),
    "invoice": frozenset({"posted", "partially_paid", "paid", "cancelled"}),
}
_REFUSED = (Reason.REFUSED_BY_CRM.value, Reason.REFUSED_BY_ERP.value)
_MATCH_KEYS: dict[Entity, tuple[str, ...]] = {
    "client": ("vat_key", "siren_key"),
    "product": ("code_key",),
    "order": (),
    "invoice": (),
}


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
    raw_text: str
    content_hash: str
    normalised: dict[str, Any] | None
    valid: bool
    deleted: bool
    match: dict[str, str | None]
    _raw: dict[str, Any] | None = None

    @property
    def raw(self) -> dict[str, Any]:
        if self._raw is None:
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
    t.observed.c.side,
    t.observed.c.source_key,
    t.observed.c.data,
    t.observed.c.content_hash,
    t.observed.c.normalised,
    t.observed.c.valid,
    t.observed.c.deleted_at,
    t.observed.c.vat_key,
    t.observed.c.siren_key,
    t.observed.c.name_key,
    t.observed.c.code_key,
)


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
    )


@dataclass(slots=True)
class _Chunk:
    """What one chunk of the reconcile pass will write."""

    operations: list[NewOperation] = field(default_factory=list)
    events: list[EventItem] = field(default_factory=list)
    agreed: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    closed_conflicts: list[int] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    superseded_links: list[int] = field(default_factory=list)
    done: dict[tuple[Side, str], bool] = field(default_factory=dict)


class Planner:
    """Plans the writes that bring the CRM and the ERP in step; see the module docstring."""

    def __init__(
        self,
        ledger: Ledger,
        policy: SyncPolicy | None = None,
        *,
        chunk_size: int = 2000,
        item_limit: int = 50,
    ) -> None:
        """Plan on ``ledger`` under ``policy`` (the defaults when None)."""
        self.ledger = ledger
        self.policy = policy or SyncPolicy.default()
        self.settings = ValidationSettings(default_phone_region=self.policy.default_phone_region)
        self.chunk_size = chunk_size
        self.item_limit = item_limit
        self._entity_rules = {entity: self.policy.rules(entity) for entity in ENTITIES}
        self._handed_off_rules = {
            entity: {name: FieldRule(owner="erp") for name in rules}
            for entity, rules in self._entity_rules.items()
        }

    # -- entry point ------------------------------------------------------------------------

    def plan(self, *, dry_run: bool = False) -> PlanSummary:
        """Check, match and merge every pending record; queue operations unless ``dry_run``."""
        with self.ledger.engine.connect() as conn:
            transaction = conn.begin()
            try:
                run_id = conn.execute(
                    sa.insert(t.runs)
                    .values(kind="plan", started_at=utcnow(), status="running")
                    .returning(t.runs.c.id)
                ).scalar_one()
                summary = PlanSummary(
                    run_id=None if dry_run else run_id, dry_run=dry_run, item_limit=self.item_limit
                )
                for entity in ENTITIES:
                    for side in SIDES:
                        self._check(conn, run_id, entity, side, summary)
                for entity in ENTITIES:
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

    # -- pass 1: check --------------------------------------------------------------------------

    def _check(
        self, conn: Connection, run_id: int, entity: Entity, side: Side, summary: PlanSummary
    ) -> None:
        observed = t.observed.c
        update = (
            sa.update(t.observed)
            .where(
                observed.side == side,
                observed.entity == entity,
                observed.source_key == sa.bindparam("k"),
            )
            .values(
                normalised=sa.bindparam("normalised"),
                checked_hash=sa.bindparam("checked_hash"),
                valid=sa.bindparam("valid"),
                vat_key=sa.bindparam("vat"),
                siren_key=sa.bindparam("siren"),
                name_key=sa.bindparam("name"),
                code_key=sa.bindparam("code"),
            )
        )
        last = ""
        while True:
            rows = conn.execute(
                sa.select(observed.source_key, observed.data, observed.content_hash)
                .where(
                    observed.side == side,
                    observed.entity == entity,
                    observed.pending.is_(True),
                    observed.deleted_at.is_(None),
                    sa.or_(
                        observed.checked_hash.is_(None),
                        observed.checked_hash != observed.content_hash,
                    ),
                    observed.source_key > last,
                )
                .order_by(observed.source_key)
                .limit(self.chunk_size)
            ).all()
            if not rows:
                return
            last = rows[-1].source_key
            updates: list[dict[str, Any]] = []
            refusals: list[QuarantineItem] = []
            keep: dict[str, set[str]] = {}
            events: list[EventItem] = []
            for row in rows:
                checked = check_record(entity, loads(row.data), side, self.settings)
                keys = checked.match_keys
                updates.append(
                    {
                        "k": row.source_key,
                        "normalised": dumps(checked.record.plain()) if checked.record else None,
                        "checked_hash": row.content_hash,
                        "valid": checked.ok,
                        "vat": keys.get("vat"),
                        "siren": keys.get("siren"),
                        "name": keys.get("name"),
                        "code": keys.get("code"),
                    }
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
            conn.execute(update, updates)
            # A changed record is checked afresh: reasons that no longer hold are released,
            # including a system's refusal of the content it had before.
            self.ledger.release(conn, side, entity, [row.source_key for row in rows], keep=keep)
            self.ledger.quarantine(run_id, refusals, conn)
            self.ledger.record_events(run_id, events, conn)

    # -- pass 2: reconcile -----------------------------------------------------------------------

    def _reconcile(
        self, conn: Connection, run_id: int, entity: Entity, summary: PlanSummary
    ) -> None:
        observed = t.observed.c
        for side in SIDES:
            last = ""
            while True:
                rows = [
                    _row(row)
                    for row in conn.execute(
                        sa.select(*_ROW_COLUMNS)
                        .where(
                            observed.side == side,
                            observed.entity == entity,
                            sa.or_(observed.pending.is_(True), observed.deferred.is_(True)),
                            observed.source_key > last,
                        )
                        .order_by(observed.source_key)
                        .limit(self.chunk_size)
                    )
                ]
                if not rows:
                    break
                last = rows[-1].key
                self._reconcile_chunk(conn, run_id, entity, side, rows, summary)

    def _reconcile_chunk(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        run_id: int,
        entity: Entity,
        side: Side,
        rows: list[_Row],
        summary: PlanSummary,
    ) -> None:
        chunk = _Chunk()
        twin_side = other_side(side)
        links = self._links(conn, entity, side, [row.key for row in rows])
        unlinked = [row for row in rows if row.key not in links and row.valid and not row.deleted]
        refused = self._refused(conn, entity, side, rows)
        for row in rows:
            if row.key not in links and (not row.valid or row.deleted):
                # Unlinked and invalid (already reported) or deleted: nothing to carry over.
                chunk.done[side, row.key] = False
        if unlinked:
            links.update(self._match(conn, run_id, entity, side, unlinked, chunk, summary))
        twin_keys = [key for link in links.values() if (key := link.key(twin_side)) is not None]
        twins = self._rows(conn, entity, twin_side, twin_keys)
        twin_refused = self._refused(conn, entity, twin_side, list(twins.values()))
        link_ids = list({link.id for link in links.values()})
        in_flight = self.ledger.in_flight_links(conn, link_ids)
        decisions = self._decisions(conn, link_ids)
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
                conn, entity, link, pair, decisions.get(link.id, {}), chunk, summary
            )
        self._write_chunk(conn, run_id, entity, chunk)

    def _links(
        self, conn: Connection, entity: Entity, side: Side, keys: list[str]
    ) -> dict[str, Link]:
        found = self.ledger._links_by_keys(
            conn, entity, keys if side == "crm" else [], keys if side == "erp" else []
        )
        return {key: link for (found_side, key), link in found.items() if found_side == side}

    def _rows(
        self, conn: Connection, entity: Entity, side: Side, keys: Sequence[str]
    ) -> dict[str, _Row]:
        observed = t.observed.c
        result: dict[str, _Row] = {}
        for start in range(0, len(keys), 500):
            for db_row in conn.execute(
                sa.select(*_ROW_COLUMNS).where(
                    observed.side == side,
                    observed.entity == entity,
                    observed.source_key.in_(keys[start : start + 500]),
                )
            ):
                row = _row(db_row)
                result[row.key] = row
        return result

    def _refused(
        self, conn: Connection, entity: Entity, side: Side, rows: Sequence[_Row]
    ) -> set[str]:
        """Records a system refused whose content has not changed since."""
        q = t.quarantine.c
        hashes = {row.key: row.content_hash for row in rows}
        refused: set[str] = set()
        keys = list(hashes)
        for start in range(0, len(keys), 500):
            for found in conn.execute(
                sa.select(q.source_key, q.content_hash).where(
                    q.side == side,
                    q.entity == entity,
                    q.source_key.in_(keys[start : start + 500]),
                    q.reason.in_(_REFUSED),
                    q.released_at.is_(None),
                )
            ):
                if found.content_hash == hashes[found.source_key]:
                    refused.add(found.source_key)
        return refused

    def _decisions(self, conn: Connection, link_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Conflicts a person resolved, by link: ``{link_id: {field: (conflict_id, value)}}``."""
        c = t.conflicts.c
        result: dict[int, dict[str, Any]] = defaultdict(dict)
        for start in range(0, len(link_ids), 500):
            for row in conn.execute(
                sa.select(c.id, c.link_id, c.field, c.resolved_value).where(
                    c.link_id.in_(link_ids[start : start + 500]), c.status == "resolved"
                )
            ):
                result[row.link_id][row.field] = (row.id, loads(row.resolved_value))
        return result

    # -- matching --------------------------------------------------------------------------------

    def _match(  # noqa: PLR0912, PLR0915, PLR0917 - the matching rules in their order
        self,
        conn: Connection,
        run_id: int,
        entity: Entity,
        side: Side,
        rows: list[_Row],
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> dict[str, Link]:
        """Link ``rows`` (unlinked, valid) to their twin, park probable duplicates, or register
        them alone so that their twin gets created."""
        twin_side = other_side(side)
        observed = t.observed.c
        pairs: dict[str, tuple[str | None, str]] = {}
        taken: set[str] = set()

        def candidates(column: str, values: list[str]) -> dict[str, list[str]]:
            found: dict[str, list[str]] = defaultdict(list)
            col = observed[column]
            for start in range(0, len(values), 500):
                twin_links = t.links.c.crm_key if twin_side == "crm" else t.links.c.erp_key
                query = (
                    sa.select(observed.source_key, col)
                    .where(
                        observed.side == twin_side,
                        observed.entity == entity,
                        observed.deleted_at.is_(None),
                        observed.valid.is_(True),
                        col.in_(values[start : start + 500]),
                        ~sa.exists().where(
                            t.links.c.entity == entity, twin_links == observed.source_key
                        ),
                    )
                    .order_by(observed.source_key)
                )
                for found_row in conn.execute(query):
                    found[found_row[1]].append(found_row.source_key)
            return found

        # 1. The record carries its twin's id (an external reference kept in the system).
        for row in rows:
            ref = (row.normalised or {}).get(f"{twin_side}_id")
            if ref:
                pairs[row.key] = (ref, "ref")
                taken.add(ref)
        # 2. Same identifier (VAT, SIREN; product code).
        for column in _MATCH_KEYS[entity]:
            waiting = [row for row in rows if row.key not in pairs and row.match[column]]
            if not waiting:
                continue
            found = candidates(column, sorted({str(row.match[column]) for row in waiting}))
            for row in waiting:
                for twin_key in found.get(str(row.match[column]), []):
                    if twin_key not in taken:
                        pairs[row.key] = (twin_key, column.removesuffix("_key"))
                        taken.add(twin_key)
                        break
        # 3. Same name and postcode: probably the same client, but a person decides.
        held: set[str] = set()
        if entity == "client":
            waiting = [row for row in rows if row.key not in pairs and row.match["name_key"]]
            if waiting:
                found = candidates(
                    "name_key", sorted({str(row.match["name_key"]) for row in waiting})
                )
                decided = self._review_states(conn, entity, side, [row.key for row in waiting])
                for row in waiting:
                    for twin_key in found.get(str(row.match["name_key"]), []):
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
                        held.add(row.key)
                        break
        for row in rows:
            if row.key in held:
                self._defer(chunk, summary, entity, row, "probable duplicate waiting for review")
        requested = [
            (row.key, pairs.get(row.key, (None, side))) for row in rows if row.key not in held
        ]
        link_pairs = [
            (key, twin, origin) if side == "crm" else (twin, key, origin)
            for key, (twin, origin) in requested
        ]
        results = self.ledger.link_many(entity, link_pairs, conn)
        linked: dict[str, Link] = {}
        for (key, (twin, _origin)), result in zip(requested, results, strict=True):
            if isinstance(result, str):
                row = next(row for row in rows if row.key == key)
                self._defer(chunk, summary, entity, row, result)
                continue
            linked[key] = result
            if twin is not None:
                summary.linked += 1
                chunk.events.append(EventItem(side, entity, key, "linked", {"twin": twin}))
                chunk.superseded_links.append(result.id)
        return linked

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

    # -- one link ----------------------------------------------------------------------------------

    def _rules(self, entity: Entity, erp: dict[str, Any] | None) -> dict[str, FieldRule]:
        states = HANDED_OFF.get(entity)
        if states and erp is not None and erp.get("state") in states:
            return self._handed_off_rules[entity]
        return self._entity_rules[entity]

    def _reconcile_link(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        entity: Entity,
        link: Link,
        pair: dict[Side, _Row | None],
        decisions: dict[str, Any],
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        present = [row for row in pair.values() if row is not None]
        for row in present:
            chunk.done[row.side, row.key] = False
        live = {side: row for side, row in pair.items() if row is not None and not row.deleted}
        if len(live) == 2:
            self._merge(conn, entity, link, live["crm"], live["erp"], decisions, chunk, summary)
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
        self._create(conn, entity, link, source, chunk, summary)

    def _create(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        entity: Entity,
        link: Link,
        source: _Row,
        chunk: _Chunk,
        summary: PlanSummary,
    ) -> None:
        assert source.normalised is not None
        target_side = other_side(source.side)
        record = source.normalised
        if record.get("active") is False or record.get("state") == "cancelled":
            # Nothing to carry over: an inactive client or a cancelled order stays where it is.
            chunk.events.append(EventItem(source.side, entity, source.key, "unchanged"))
            return
        rules = self._rules(entity, record if source.side == "erp" else None)
        # A new record carries every value its source has: the other system holds nothing yet
        # (an ERP-only client still needs its name in the CRM). Ownership decides later changes.
        fields = [
            name
            for name, rule in rules.items()
            if rule.shared or rule.owner == source.side or record.get(name) is not None
        ]
        payload = {name: record.get(name) for name in fields}
        refs = self._references(conn, entity, record, target_side)
        if isinstance(refs, str):
            self._defer(chunk, summary, entity, source, refs)
            return
        payload.update(refs)
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
            source.label(),
        )
        chunk.events.append(EventItem(source.side, entity, source.key, "created"))

    def _merge(  # noqa: PLR0917 - private step of one plan, called once
        self,
        conn: Connection,
        entity: Entity,
        link: Link,
        crm: _Row,
        erp: _Row,
        decisions: dict[str, Any],
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
            refs = self._references(conn, entity, rows[source_side].normalised or {}, side)
            if isinstance(refs, str):
                self._defer(chunk, summary, entity, rows[source_side], refs)
                continue
            payload = {name: target_record.get(name) for name in rules}
            payload.update(writes)
            payload.update(refs)
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
                rows[source_side].label(),
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
            survivor.label(),
        )

    def _references(
        self, conn: Connection, entity: Entity, record: dict[str, Any], target_side: Side
    ) -> dict[str, Any] | str:
        """The ids a document needs in ``target_side``: its client's, its order's.

        Returns a sentence instead when one is not there yet (the record is then deferred).
        """
        if entity not in HANDED_OFF:
            return {}
        refs: dict[str, Any] = {}
        wanted: list[tuple[Entity, str, bool]] = [("client", "client", True)]
        if entity == "invoice":
            wanted.append(("order", "order", False))
        source_side = other_side(target_side)
        for ref_entity, prefix, required in wanted:
            source_key = record.get(f"{prefix}_{source_side}_id")
            target_key = record.get(f"{prefix}_{target_side}_id")
            if source_key is not None:
                link = self._links(conn, ref_entity, source_side, [source_key]).get(source_key)
                target_key = link.key(target_side) if link is not None else None
            if target_key is None and required:
                return (
                    f"waiting for {ref_entity} {source_side.upper()} {source_key} to exist "
                    f"in the {target_side.upper()}"
                )
            refs[f"{prefix}_{source_side}_id"] = source_key
            refs[f"{prefix}_{target_side}_id"] = target_key
        return refs

    # -- bookkeeping ------------------------------------------------------------------------------

    def _queue(
        self, chunk: _Chunk, summary: PlanSummary, operation: NewOperation, label: str
    ) -> None:
        chunk.operations.append(operation)
        summary.sides[operation.side].count(operation.action)
        fields = ", ".join(operation.changed_fields) if operation.action == "update" else ""
        summary.note(
            PlanItem(
                operation.side,
                operation.action,
                operation.entity,
                operation.source_key,
                f"{operation.action} {operation.entity} {label}"
                + (f" ({fields})" if fields else ""),
            )
        )

    def _defer(
        self, chunk: _Chunk, summary: PlanSummary, entity: Entity, row: _Row, why: str
    ) -> None:
        chunk.done[row.side, row.key] = True
        chunk.events.append(EventItem(row.side, entity, row.key, "deferred", {"why": why}))
        summary.deferred += 1
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
        self.ledger.record_events(run_id, chunk.events, conn)
        _write_flags(conn, entity, chunk.done.items())


def _write_flags(
    conn: Connection, entity: Entity, flags: Iterable[tuple[tuple[Side, str], bool]]
) -> None:
    """Mark records as planned (no longer pending), and deferred ones to be retried."""
    observed = t.observed.c
    rows = [{"s": side, "k": key, "d": deferred} for (side, key), deferred in flags]
    if rows:
        conn.execute(
            sa.update(t.observed)
            .where(
                observed.side == sa.bindparam("s"),
                observed.entity == entity,
                observed.source_key == sa.bindparam("k"),
            )
            .values(pending=False, deferred=sa.bindparam("d")),
            rows,
        )


__all__ = ["HANDED_OFF", "MODELS", "PlanItem", "PlanSummary", "Planner", "SidePlan"]
