"""The ledger: what both systems said, how their records are linked, and what is left to write.

One :class:`Ledger` per process, on a SQLite file (the default) or PostgreSQL (several workers).
Every write method takes a batch and runs in one transaction; the guarantees that matter with
several workers come from the database itself: unique constraints (one link per record, one
open operation per link and system) and conditional updates (an operation is applied once).

Example:
    >>> ledger = Ledger.open("sqlite://")
    >>> run_id = ledger.start_run("observe", "crm")
    >>> ledger.observe(run_id, "crm", "client", [ObservedRecord("a1", {"source": "crm"})]).created
    1
"""

from __future__ import annotations

import datetime as dt
import os
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from coulisse.ledger import tables as t
from coulisse.ledger.codec import content_hash, dumps, loads
from coulisse.validation.reasons import Reason

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from sqlalchemy.engine import Connection, Engine

    from coulisse.model.records import Entity, Side

DEFAULT_URL = "sqlite:///coulisse-ledger.db"
#: The orchestrator's run (a Prefect flow run id) that the Singer plugins of a sync belong to:
#: set by the sync in their environment, written on every ledger run they start.
FLOW_RUN_ENV = "COULISSE_FLOW_RUN_ID"
RunKind = Literal["observe", "plan", "apply", "check"]
Action = Literal["create", "update", "deactivate", "cancel"]
_CHUNK = 500
_T = TypeVar("_T")


class LedgerError(Exception):
    """Something the ledger cannot do, said so that the operator knows what to look at."""


class LockBusyError(LedgerError):
    """Another run holds the lock."""


class SweepRefusedError(LedgerError):
    """A full scan would mark too many records deleted: more likely a broken scan than deletes."""


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def marks(count: int) -> str:
    """``?, ?, ?`` for an IN list of ``count`` values in plain SQL."""
    return ", ".join("?" * count)


def _chunks(items: Iterable[_T], size: int = _CHUNK) -> Iterator[list[_T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@dataclass(frozen=True, slots=True)
class ObservedRecord:
    """A record as a system returned it, keyed by its id in that system."""

    source_key: str
    data: Mapping[str, Any]
    source_updated_at: dt.datetime | None = None


@dataclass(slots=True)
class ObserveStats:
    """What a batch of observations changed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: ObserveStats) -> None:
        """Add another batch's counts to these."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged


@dataclass(frozen=True, slots=True)
class Link:
    """Two records, one per system, that are the same client (product, order, invoice)."""

    id: int
    entity: str
    crm_key: str | None
    erp_key: str | None
    origin: str
    agreed: dict[str, Any] | None
    crm_echo: dict[str, Any]
    erp_echo: dict[str, Any]

    def key(self, side: Side) -> str | None:
        """The linked record's id in ``side``."""
        return self.crm_key if side == "crm" else self.erp_key

    def echo(self, side: Side) -> dict[str, Any]:
        """What ``side`` stored after our last write to it."""
        return self.crm_echo if side == "crm" else self.erp_echo


@dataclass(frozen=True, slots=True)
class NewOperation:
    """A write the planner wants done in one system."""

    link_id: int
    entity: Entity
    side: Side
    action: Action
    payload: Mapping[str, Any]
    changed_fields: Sequence[str]
    source_side: Side
    source_key: str
    source_hash: str | None = None
    expected: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """A planned write, as the apply step reads it."""

    id: int
    link_id: int
    entity: Entity
    side: Side
    action: Action
    payload: dict[str, Any]
    changed_fields: list[str]
    expected: dict[str, Any] | None
    status: str
    source_side: Side
    source_key: str


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A record held back, and why."""

    side: Side
    entity: Entity
    source_key: str
    reason: str
    field: str | None
    message: str
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Conflict:
    """A shared field both systems changed differently."""

    id: int
    link_id: int
    entity: Entity
    field: str
    base_value: Any
    crm_value: Any
    erp_value: Any
    status: str
    resolution: str | None
    resolved_value: Any


@dataclass(frozen=True, slots=True)
class Review:
    """A probable duplicate (same name and postcode) waiting for a person to decide."""

    id: int
    entity: Entity
    crm_key: str
    erp_key: str
    reason: str
    status: str


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Two records of one system that share a VAT or SIREN, waiting for a person to decide.

    Neither is linked nor created in the other system meanwhile (a record already linked
    carries on). ``same``: one client entered twice, to be fixed in that system; ``distinct``:
    two clients (two establishments of one company, say), both synchronised as usual.
    """

    id: int
    entity: Entity
    side: Side
    first_key: str
    second_key: str
    reason: str
    status: str


@dataclass(frozen=True, slots=True)
class QuarantineItem:
    """A refusal to record: which record, which reason."""

    side: Side
    entity: Entity
    source_key: str
    reason: str
    field: str | None
    message: str
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class EventItem:
    """What happened to one record in a run (created, updated, quarantined, deferred...)."""

    side: Side
    entity: Entity
    source_key: str
    kind: str
    detail: Mapping[str, Any] | None = None


def _json_or_none(text: str | None) -> Any:
    return None if text is None else loads(text)


class Ledger:
    """Access to the ledger database; see the module docstring."""

    def __init__(self, engine: Engine) -> None:
        """Use ``engine`` as it is (see :meth:`open` to create one with the right settings)."""
        self.engine = engine

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Ledger:
        """Open the ledger at ``url`` (default ``$COULISSE_LEDGER_URL`` or a local SQLite file).

        ``migrate`` brings the schema up to date with the package's alembic migrations.
        """
        url = url or os.environ.get("COULISSE_LEDGER_URL") or DEFAULT_URL
        ledger = cls(create_engine(url))
        if migrate:
            from coulisse.ledger.migrate import upgrade

            upgrade(ledger.engine)
        return ledger

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_*`` on this database."""
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- runs and the run lock ----------------------------------------------------------------

    def start_run(
        self, kind: RunKind, side: Side | None = None, *, flow_run_id: str | None = None
    ) -> int:
        """Record the start of a run and return its id.

        ``flow_run_id`` names the orchestrator's run behind it; by default
        ``$COULISSE_FLOW_RUN_ID``, which a sync sets for the Singer plugins it starts.
        """
        flow_run_id = flow_run_id or os.environ.get(FLOW_RUN_ENV) or None
        with self.engine.begin() as conn:
            run_id = conn.execute(
                sa.insert(t.runs)
                .values(
                    kind=kind,
                    side=side,
                    started_at=utcnow(),
                    status="running",
                    flow_run_id=flow_run_id,
                )
                .returning(t.runs.c.id)
            ).scalar_one()
        return int(run_id)

    def finish_run(
        self,
        run_id: int,
        *,
        status: Literal["succeeded", "failed"] = "succeeded",
        stats: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the end of a run and what it did."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t.runs)
                .where(t.runs.c.id == run_id)
                .values(
                    finished_at=utcnow(),
                    status=status,
                    stats=dumps(dict(stats)) if stats is not None else None,
                )
            )

    def acquire_lock(
        self, holder: str, *, name: str = "sync", ttl: dt.timedelta = dt.timedelta(hours=1)
    ) -> bool:
        """Take the run lock ``name`` unless someone else holds it; an expired lock is taken over.

        The CLI, Meltano jobs and Prefect flows share the lock named ``sync``.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(self.insert(t.run_lock).values(name=name).on_conflict_do_nothing())
            taken = conn.execute(
                sa.update(t.run_lock)
                .where(
                    t.run_lock.c.name == name,
                    sa.or_(
                        t.run_lock.c.holder.is_(None),
                        t.run_lock.c.holder == holder,
                        t.run_lock.c.expires_at < now,
                    ),
                )
                .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            ).rowcount
        return bool(taken == 1)

    def release_lock(self, holder: str, *, name: str = "sync") -> None:
        """Give the lock back (only its holder can)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(t.run_lock)
                .where(t.run_lock.c.name == name, t.run_lock.c.holder == holder)
                .values(holder=None, acquired_at=None, expires_at=None)
            )

    def lock_holder(self, *, name: str = "sync") -> str | None:
        """Who holds the lock now, if anyone."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(t.run_lock.c.holder, t.run_lock.c.expires_at).where(
                    t.run_lock.c.name == name
                )
            ).first()
        if row is None or row.holder is None or row.expires_at < utcnow():
            return None
        return str(row.holder)

    @contextmanager
    def lock(
        self, holder: str, *, name: str = "sync", ttl: dt.timedelta = dt.timedelta(hours=1)
    ) -> Iterator[None]:
        """Hold the run lock for the ``with`` block, or raise :class:`LockBusyError` at once."""
        if not self.acquire_lock(holder, name=name, ttl=ttl):
            msg = f"the {name!r} lock is held by {self.lock_holder(name=name)}; try again later"
            raise LockBusyError(msg)
        try:
            yield
        finally:
            self.release_lock(holder, name=name)

    # -- observe --------------------------------------------------------------------------------

    def observe(
        self,
        run_id: int,
        side: Side,
        entity: Entity,
        records: Sequence[ObservedRecord],
        *,
        version: int | None = None,
    ) -> ObserveStats:
        """Store a batch of records read from ``side``; mark new and changed ones for planning.

        A record whose content (everything but ``source_updated_at``) did not change is only
        marked as seen. ``version`` is the full scan the batch belongs to, if any (see
        :meth:`sweep_unseen`).
        """
        latest: dict[str, ObservedRecord] = {}
        for record in records:
            latest[record.source_key] = record
        now = self._timestamp(utcnow())
        stats = ObserveStats()
        # The hottest path of the observe step: plain SQL and tuples, no per-row ORM work.
        upsert = (
            "INSERT INTO observed (side, entity, source_key, data, content_hash, "
            "source_updated_at, first_seen_at, last_seen_at, seen_version, pending, deferred)",
            "ON CONFLICT (side, entity, source_key) DO UPDATE SET data = excluded.data, "
            "content_hash = excluded.content_hash, "
            "source_updated_at = excluded.source_updated_at, "
            "last_seen_at = excluded.last_seen_at, seen_version = excluded.seen_version, "
            "deleted_at = NULL, pending = excluded.pending",
        )
        event_insert = (
            "INSERT INTO events (run_id, side, entity, source_key, kind, at)",
            "ON CONFLICT (run_id, side, entity, source_key) DO UPDATE SET kind = excluded.kind "
            "WHERE excluded.kind <> 'unchanged'",
        )
        with self.engine.begin() as conn:
            for keys in _chunks(latest):
                marks = ", ".join("?" * len(keys))
                existing = {
                    row[0]: (row[1], bool(row[2]))
                    for row in conn.exec_driver_sql(
                        self._sql(
                            # Only "?" placeholders are formatted in: values stay parameters.
                            "SELECT source_key, content_hash, deleted_at IS NOT NULL "  # noqa: S608
                            "FROM observed WHERE side = ? AND entity = ? "
                            f"AND source_key IN ({marks})"
                        ),
                        (side, entity, *keys),
                    )
                }
                changed: list[tuple[Any, ...]] = []
                unchanged: list[str] = []
                events: list[tuple[Any, ...]] = []
                for key in keys:
                    record = latest[key]
                    digest = content_hash(record.data)
                    before = existing.get(key)
                    if before is None:
                        kind = "created"
                        stats.created += 1
                    elif before[0] != digest or before[1]:
                        kind = "updated"
                        stats.updated += 1
                    else:
                        kind = "unchanged"
                        stats.unchanged += 1
                        unchanged.append(key)
                    if kind != "unchanged":
                        changed.append(
                            (
                                side,
                                entity,
                                key,
                                dumps(record.data),
                                digest,
                                self._timestamp(record.source_updated_at),
                                now,
                                now,
                                version,
                                True,
                                False,
                            )
                        )
                    events.append((run_id, side, entity, key, kind, now))
                if changed:
                    self._insert_many(conn, *upsert, changed)
                if unchanged:
                    marks = ", ".join("?" * len(unchanged))
                    conn.exec_driver_sql(
                        self._sql(
                            "UPDATE observed SET last_seen_at = ?, "  # noqa: S608
                            "seen_version = COALESCE(?, seen_version) "
                            f"WHERE side = ? AND entity = ? AND source_key IN ({marks})"
                        ),
                        (now, version, side, entity, *unchanged),
                    )
                self._insert_many(conn, *event_insert, events)
        if stats.created >= 1000:
            self.analyze("observed")
        return stats

    def analyze(self, *tables: str, conn: Connection | None = None) -> None:
        """Refresh PostgreSQL's statistics after a bulk load.

        Without them, it keeps the plans of an empty table and scans every record of a side
        to find 500 of them. Given ``conn``, the statistics are taken inside its transaction,
        which sees what the transaction wrote (the planner's match keys, before it matches).
        """
        if self.dialect != "postgresql":
            return
        if conn is not None:
            for table in tables:
                conn.exec_driver_sql(f"ANALYZE {t.metadata.tables[table].name}")
            return
        with self.engine.connect() as own:
            own.execution_options(isolation_level="AUTOCOMMIT")
            for table in tables:
                own.exec_driver_sql(f"ANALYZE {t.metadata.tables[table].name}")

    def _insert_many(
        self, conn: Connection, head: str, tail: str, rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """``head VALUES (...), (...) tail`` for many rows in few round trips."""
        if not rows:
            return
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_values

            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            execute_values(cursor, f"{head} VALUES %s {tail}", rows, page_size=1000)
            return
        marks = ", ".join("?" * len(rows[0]))
        conn.exec_driver_sql(f"{head} VALUES ({marks}) {tail}", list(rows))

    def _insert_returning(
        self, conn: Connection, head: str, tail: str, rows: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """:meth:`_insert_many` in one statement whose ``tail`` ends in ``RETURNING ...``."""
        if not rows:
            return []
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_values

            with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
                found = execute_values(
                    cursor, f"{head} VALUES %s {tail}", rows, page_size=len(rows), fetch=True
                )
            return [tuple(row) for row in found]
        values = ", ".join([f"({marks(len(rows[0]))})"] * len(rows))
        return [
            tuple(row)
            for row in conn.exec_driver_sql(
                f"{head} VALUES {values} {tail}", tuple(value for row in rows for value in row)
            )
        ]

    def _update_many(
        self,
        conn: Connection,
        table: sa.Table,
        keys: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[tuple[Any, ...]],
    ) -> None:
        """``UPDATE table SET columns WHERE keys`` for many rows in few round trips.

        Each row holds the new values of ``columns``, then the values of ``keys``; values are
        passed as plain SQL takes them (see :meth:`_timestamp`).
        """
        if not rows:
            return
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_values

            names = [*columns, *keys]
            # VALUES rows carry no types: a column of NULLs would be text without the casts.
            casts = [table.c[name].type.compile(self.engine.dialect) for name in names]
            template = "(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"
            sql = (
                f"UPDATE {table.name} AS t SET "  # noqa: S608 - names come from the table
                + ", ".join(f"{name} = v.{name}" for name in columns)
                + f" FROM (VALUES %s) AS v({', '.join(names)}) WHERE "
                + " AND ".join(f"t.{name} = v.{name}" for name in keys)
            )
            with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
                execute_values(cursor, sql, rows, template=template, page_size=1000)
            return
        conn.exec_driver_sql(
            f"UPDATE {table.name} SET "  # noqa: S608 - names come from the table
            + ", ".join(f"{name} = ?" for name in columns)
            + " WHERE "
            + " AND ".join(f"{name} = ?" for name in keys),
            list(rows),
        )

    def _select(self, conn: Connection, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of plain SQL written with ``?`` placeholders."""
        return list(conn.exec_driver_sql(self._sql(sql), tuple(params)).all())

    def index_hint(self, index: str) -> str:
        """`` INDEXED BY index`` on SQLite, nothing elsewhere.

        Without statistics SQLite may walk a whole system's records by primary key rather
        than look a few match keys up in their index; PostgreSQL has its statistics.
        """
        return f" INDEXED BY {index}" if self.dialect == "sqlite" else ""

    def _sql(self, text: str) -> str:
        """Plain SQL written with ``?`` placeholders, in this driver's parameter style."""
        return text.replace("?", "%s") if self.dialect == "postgresql" else text

    def _timestamp(self, value: dt.datetime | None) -> Any:
        """A timestamp as plain SQL must pass it (SQLite stores UTC text, like UtcDateTime)."""
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"naive datetime {value.isoformat()} given to the ledger: add a time zone"
            raise ValueError(msg)
        value = value.astimezone(dt.UTC)
        if self.dialect == "sqlite":
            return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def sweep_unseen(
        self,
        run_id: int,
        side: Side,
        entity: Entity,
        version: int,
        *,
        max_deleted_ratio: float = 0.5,
    ) -> int:
        """After a complete full scan ``version``, mark every record it did not see as deleted.

        Refuses (:class:`SweepRefusedError`) when more than ``max_deleted_ratio`` of the live
        records would go: a scan that stopped half-way must not delete half the clients.
        """
        observed = t.observed.c
        unseen = sa.and_(
            observed.side == side,
            observed.entity == entity,
            observed.deleted_at.is_(None),
            sa.or_(observed.seen_version.is_(None), observed.seen_version < version),
        )
        now = utcnow()
        with self.engine.begin() as conn:
            live = conn.execute(
                sa.select(sa.func.count()).where(
                    observed.side == side, observed.entity == entity, observed.deleted_at.is_(None)
                )
            ).scalar_one()
            keys = list(conn.scalars(sa.select(observed.source_key).where(unseen)))
            if keys and len(keys) > max_deleted_ratio * live:
                msg = (
                    f"the full scan of {side.upper()} {entity}s missed {len(keys)} of {live} "
                    f"records; not marking them deleted (more than {max_deleted_ratio:.0%})"
                )
                raise SweepRefusedError(msg)
            for chunk in _chunks(keys):
                conn.execute(
                    sa.update(t.observed)
                    .where(
                        observed.side == side,
                        observed.entity == entity,
                        observed.source_key.in_(chunk),
                    )
                    .values(deleted_at=now, pending=True)
                )
            at = self._timestamp(now)
            self._write_events(
                conn, [(run_id, side, entity, key, "deleted", None, at) for key in keys]
            )
        return len(keys)

    def _write_events(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Upsert ``(run_id, side, entity, source_key, kind, detail, at)`` rows.

        One event per record per run: a later, more telling event replaces "unchanged" (and
        its detail), a later "unchanged" changes nothing. Rows for the same record are folded
        here by the same rule, since PostgreSQL cannot update one row twice in a statement.
        """
        folded: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            key = row[:4]
            if key not in folded or row[4] != "unchanged":
                folded[key] = row
        for chunk in _chunks(folded.values(), 5000):
            self._insert_many(
                conn,
                "INSERT INTO events (run_id, side, entity, source_key, kind, detail, at)",
                "ON CONFLICT (run_id, side, entity, source_key) DO UPDATE SET "
                "kind = excluded.kind, detail = excluded.detail "
                "WHERE excluded.kind <> 'unchanged'",
                chunk,
            )

    def record_events(
        self, run_id: int, items: Sequence[EventItem], conn: Connection | None = None
    ) -> None:
        """Record what happened to each record in a run."""
        if conn is None:
            with self.engine.begin() as own:
                self.record_events(run_id, items, own)
            return
        at = self._timestamp(utcnow())
        self._write_events(
            conn,
            [
                (
                    run_id,
                    item.side,
                    item.entity,
                    item.source_key,
                    item.kind,
                    dumps(dict(item.detail)) if item.detail else None,
                    at,
                )
                for item in items
            ],
        )

    def events(self, run_id: int) -> dict[tuple[str, str, str], str]:
        """The events of a run: ``{(side, entity, source_key): kind}``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    t.events.c.side, t.events.c.entity, t.events.c.source_key, t.events.c.kind
                ).where(t.events.c.run_id == run_id)
            )
            return {(row.side, row.entity, row.source_key): row.kind for row in rows}

    def observed_record(self, side: Side, entity: Entity, source_key: str) -> dict[str, Any] | None:
        """The latest version of a record as ``side`` returned it, or None if never seen."""
        with self.engine.connect() as conn:
            text = conn.scalar(
                sa.select(t.observed.c.data).where(
                    t.observed.c.side == side,
                    t.observed.c.entity == entity,
                    t.observed.c.source_key == source_key,
                )
            )
        return None if text is None else dict(loads(text))

    def is_deleted(self, side: Side, entity: Entity, source_key: str) -> bool:
        """True when a full scan no longer found the record."""
        with self.engine.connect() as conn:
            deleted_at = conn.scalar(
                sa.select(t.observed.c.deleted_at).where(
                    t.observed.c.side == side,
                    t.observed.c.entity == entity,
                    t.observed.c.source_key == source_key,
                )
            )
        return deleted_at is not None

    # -- links ------------------------------------------------------------------------------------

    def link(
        self, entity: Entity, crm_key: str | None, erp_key: str | None, *, origin: str
    ) -> Link:
        """Link two records (or register one whose twin is still to be created); idempotent.

        With several workers racing to link the same record, exactly one link is created and
        every worker gets it back. Raises :class:`LedgerError` when either record is already
        linked to a different one.
        """
        (result,) = self.link_many(entity, [(crm_key, erp_key, origin)])
        if isinstance(result, str):
            raise LedgerError(result)
        return result

    def link_many(
        self,
        entity: Entity,
        pairs: Sequence[tuple[str | None, str | None, str]],
        conn: Connection | None = None,
    ) -> list[Link | str]:
        """:meth:`link` for a batch; a pair that cannot be linked gets a sentence saying why."""
        if conn is None:
            with self.engine.begin() as own:
                return self.link_many(entity, pairs, own)
        now = utcnow()
        at = self._timestamp(now)
        rows = [(entity, crm_key, erp_key, origin, at, at) for crm_key, erp_key, origin in pairs]
        results: list[Link | str] = []
        for chunk_pairs, chunk_rows in zip(_chunks(pairs), _chunks(rows), strict=True):
            # The links this statement created come straight back; the others (already
            # there, or raced by another worker) are read and settled one by one.
            created = {
                (row[1], row[2]): Link(row[0], entity, row[1], row[2], row[3], None, {}, {})
                for row in self._insert_returning(
                    conn,
                    "INSERT INTO links (entity, crm_key, erp_key, origin, created_at, updated_at)",
                    "ON CONFLICT DO NOTHING RETURNING id, crm_key, erp_key, origin",
                    chunk_rows,
                )
            }
            unsettled = [pair for pair in chunk_pairs if (pair[0], pair[1]) not in created]
            found = self._links_by_keys(
                conn,
                entity,
                [pair[0] for pair in unsettled if pair[0] is not None],
                [pair[1] for pair in unsettled if pair[1] is not None],
            )
            for crm_key, erp_key, _origin in chunk_pairs:
                link = created.get((crm_key, erp_key))
                results.append(
                    link
                    if link is not None
                    else self._settle_link(
                        conn, entity, crm_key=crm_key, erp_key=erp_key, found=found, now=now
                    )
                )
        return results

    def _settle_link(  # noqa: PLR0911 - one return per way a link request can end
        self,
        conn: Connection,
        entity: Entity,
        *,
        crm_key: str | None,
        erp_key: str | None,
        found: dict[tuple[str, str], Link],
        now: dt.datetime,
    ) -> Link | str:
        by_crm = found.get(("crm", crm_key)) if crm_key is not None else None
        by_erp = found.get(("erp", erp_key)) if erp_key is not None else None
        if by_crm is not None and by_erp is not None:
            if by_crm.id == by_erp.id:
                return by_crm
            return f"CRM {entity} {crm_key} and ERP {entity} {erp_key} are linked to others"
        existing = by_crm or by_erp
        if existing is None:
            return f"{entity} link for CRM {crm_key} / ERP {erp_key} was not stored"
        # One half is linked and the other half still missing: complete it, if still empty.
        missing: Side | None = None
        if crm_key is not None and existing.crm_key is None:
            missing = "crm"
        elif erp_key is not None and existing.erp_key is None:
            missing = "erp"
        if missing is None:
            if (crm_key is None or existing.crm_key == crm_key) and (
                erp_key is None or existing.erp_key == erp_key
            ):
                return existing
            return (
                f"{entity} CRM {existing.crm_key} is linked to ERP {existing.erp_key}, "
                f"not to CRM {crm_key} / ERP {erp_key}"
            )
        column = t.links.c.crm_key if missing == "crm" else t.links.c.erp_key
        key = crm_key if missing == "crm" else erp_key
        done = conn.execute(
            sa.update(t.links)
            .where(t.links.c.id == existing.id, column.is_(None))
            .values({column.name: key, "updated_at": now})
        ).rowcount
        refreshed = self._link_by_id(conn, existing.id)
        if done != 1 and refreshed.key(missing) != key:
            return f"{entity} link {existing.id} was completed by another worker"
        return refreshed

    def _links_by_keys(
        self, conn: Connection, entity: Entity, crm_keys: Sequence[str], erp_keys: Sequence[str]
    ) -> dict[tuple[str, str], Link]:
        found: dict[tuple[str, str], Link] = {}
        conditions = []
        if crm_keys:
            conditions.append(f"crm_key IN ({marks(len(crm_keys))})")
        if erp_keys:
            conditions.append(f"erp_key IN ({marks(len(erp_keys))})")
        if not conditions:
            return found
        for row in self._select(
            conn,
            "SELECT id, entity, crm_key, erp_key, origin, agreed, crm_echo, erp_echo "  # noqa: S608
            f"FROM links WHERE entity = ? AND ({' OR '.join(conditions)})",
            (entity, *crm_keys, *erp_keys),
        ):
            link = _link_from_row(row)
            if link.crm_key is not None:
                found["crm", link.crm_key] = link
            if link.erp_key is not None:
                found["erp", link.erp_key] = link
        return found

    def _link_by_id(self, conn: Connection, link_id: int) -> Link:
        return _link_from_row(conn.execute(sa.select(t.links).where(t.links.c.id == link_id)).one())

    def links_for(self, entity: Entity, side: Side, keys: Sequence[str]) -> dict[str, Link]:
        """The links of records ``keys`` of ``side``, by key (unlinked keys are left out)."""
        result: dict[str, Link] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
                found = self._links_by_keys(
                    conn, entity, chunk if side == "crm" else [], chunk if side == "erp" else []
                )
                result.update({key: link for (s, key), link in found.items() if s == side})
        return result

    def get_link(self, link_id: int) -> Link:
        """A link by id."""
        with self.engine.connect() as conn:
            return self._link_by_id(conn, link_id)

    def count_links(self, entity: Entity | None = None) -> int:
        """How many links exist (of one entity)."""
        query = sa.select(sa.func.count()).select_from(t.links)
        if entity is not None:
            query = query.where(t.links.c.entity == entity)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def save_agreed(self, conn: Connection, updates: Sequence[Mapping[str, Any]]) -> None:
        """Store new agreed snapshots and echoes (``{"id", "agreed", "crm_echo", "erp_echo"}``)."""
        if not updates:
            return
        at = self._timestamp(utcnow())
        self._update_many(
            conn,
            t.links,
            ("id",),
            ("agreed", "crm_echo", "erp_echo", "updated_at"),
            [
                (
                    dumps(update["agreed"]) if update["agreed"] is not None else None,
                    dumps(update["crm_echo"]) if update["crm_echo"] else None,
                    dumps(update["erp_echo"]) if update["erp_echo"] else None,
                    at,
                    update["id"],
                )
                for update in updates
            ],
        )

    # -- operations ---------------------------------------------------------------------------

    def add_operations(
        self, run_id: int, operations: Sequence[NewOperation], conn: Connection | None = None
    ) -> None:
        """Queue writes; a pending write for the same link and system is superseded."""
        if not operations:
            return
        if conn is None:
            with self.engine.begin() as own:
                self.add_operations(run_id, operations, own)
            return
        at = self._timestamp(utcnow())
        by_side: dict[str, list[int]] = {"crm": [], "erp": []}
        for operation in operations:
            by_side[operation.side].append(operation.link_id)
        for side, link_ids in by_side.items():
            for chunk in _chunks(link_ids):
                # Found through the partial index of open operations (the status IN (...) term
                # lets SQLite use it), then updated by id: most links have none.
                superseded = [
                    row.id
                    for row in self._select(
                        conn,
                        "SELECT id, side, status FROM operations "  # noqa: S608
                        f"WHERE link_id IN ({marks(len(chunk))}) "
                        "AND status IN ('pending', 'in_flight')",
                        chunk,
                    )
                    if row.side == side and row.status == "pending"
                ]
                if superseded:
                    conn.exec_driver_sql(
                        self._sql(
                            "UPDATE operations SET status = 'superseded', "  # noqa: S608
                            f"finished_at = ? WHERE id IN ({marks(len(superseded))})"
                        ),
                        (at, *superseded),
                    )
        rows = [
            (
                run_id,
                op.link_id,
                op.entity,
                op.side,
                op.action,
                dumps(dict(op.payload)),
                dumps(list(op.changed_fields)),
                dumps(dict(op.expected)) if op.expected is not None else None,
                op.source_side,
                op.source_key,
                op.source_hash,
                "pending",
                0,
                at,
            )
            for op in operations
        ]
        for chunk_rows in _chunks(rows, 5000):
            self._insert_many(
                conn,
                "INSERT INTO operations (run_id, link_id, entity, side, action, payload, "
                "changed_fields, expected, source_side, source_key, source_hash, status, "
                "attempts, created_at)",
                "",
                chunk_rows,
            )

    def in_flight_links(self, conn: Connection, link_ids: Sequence[int]) -> set[int]:
        """Those of ``link_ids`` with a write being applied right now."""
        found: set[int] = set()
        for chunk in _chunks(link_ids):
            found.update(
                row[0]
                for row in self._select(
                    conn,
                    # The status IN (...) term lets SQLite use the partial index of open ones.
                    f"SELECT link_id FROM operations WHERE link_id IN ({marks(len(chunk))}) "  # noqa: S608
                    "AND status IN ('pending', 'in_flight') AND status = 'in_flight'",
                    chunk,
                )
            )
        return found

    def pending_operations(
        self,
        side: Side,
        *,
        entity: Entity | None = None,
        after_id: int = 0,
        limit: int = 1000,
    ) -> list[Operation]:
        """Writes waiting for ``side``, oldest first, from ``after_id`` on (page with it)."""
        ops = t.operations.c
        query = (
            sa.select(t.operations)
            .where(ops.side == side, ops.status == "pending", ops.id > after_id)
            .order_by(ops.id)
            .limit(limit)
        )
        if entity is not None:
            query = query.where(ops.entity == entity)
        with self.engine.connect() as conn:
            return [_operation_from_row(row) for row in conn.execute(query)]

    def claim_operations(
        self,
        side: Side,
        worker: str,
        *,
        entity: Entity | None = None,
        limit: int = 100,
        lease: dt.timedelta = dt.timedelta(minutes=15),
    ) -> list[Operation]:
        """Take up to ``limit`` writes for ``worker``; no two workers get the same one.

        A write claimed by a worker that vanished is handed out again once its lease expires.
        """
        now = utcnow()
        ops = t.operations.c
        claimable = sa.or_(
            ops.status == "pending",
            sa.and_(ops.status == "in_flight", ops.claimed_at < now - lease),
        )
        candidates = (
            sa.select(ops.id).where(ops.side == side, claimable).order_by(ops.id).limit(limit)
        )
        if entity is not None:
            candidates = candidates.where(ops.entity == entity)
        if self.dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        # A CTE is evaluated once: PostgreSQL may re-run a LIMIT subquery inside IN (...).
        picked = candidates.cte("picked")
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.update(t.operations)
                .where(ops.id.in_(sa.select(picked.c.id)), claimable)
                .values(
                    status="in_flight",
                    claimed_by=worker,
                    claimed_at=now,
                    attempts=ops.attempts + 1,
                )
                .returning(*t.operations.c)
            ).all()
        return sorted((_operation_from_row(row) for row in rows), key=lambda op: op.id)

    def record_applied(
        self,
        operation_id: int,
        *,
        system_id: str | None = None,
        stored: Mapping[str, Any] | None = None,
    ) -> bool:
        """The system accepted the write: remember its id for the record and what it stored.

        ``stored`` holds the values as the system returned them (it may have rewritten a phone
        number or upper-cased a city): reading them back later is our own echo, not a change.
        Returns False, changing nothing, when the operation was already applied, refused or
        superseded: a write is never recorded twice.
        """
        now = utcnow()
        ops = t.operations.c
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(t.operations)
                .where(ops.id == operation_id, ops.status.in_(("pending", "in_flight")))
                .values(
                    status="applied",
                    finished_at=now,
                    result=dumps({"system_id": system_id, "stored": dict(stored or {})}),
                )
            ).rowcount
            if done != 1:
                return False
            operation = _operation_from_row(
                conn.execute(sa.select(t.operations).where(ops.id == operation_id)).one()
            )
            link = self._link_by_id(conn, operation.link_id)
            values: dict[str, Any] = {"updated_at": now}
            side = operation.side
            if system_id is not None and link.key(side) is None:
                values[f"{side}_key"] = system_id
            elif system_id is not None and link.key(side) != system_id:
                msg = (
                    f"{operation.entity} link {link.id} already points at {side.upper()} "
                    f"{link.key(side)}, not {system_id}"
                )
                raise LedgerError(msg)
            written = {name: operation.payload.get(name) for name in operation.changed_fields}
            agreed = dict(link.agreed or {})
            agreed.update(written)
            echo = dict(link.echo(side))
            echo.update({name: (stored or written).get(name, written[name]) for name in written})
            values["agreed"] = dumps(agreed)
            values[f"{side}_echo"] = dumps(echo)
            try:
                conn.execute(sa.update(t.links).where(t.links.c.id == link.id).values(values))
            except sa.exc.IntegrityError as exc:
                msg = (
                    f"{side.upper()} {operation.entity} {system_id} is already linked to "
                    f"another record"
                )
                raise LedgerError(msg) from exc
            self._release(
                conn,
                operation.source_side,
                operation.entity,
                [operation.source_key],
                reasons=[Reason.REFUSED_BY_CRM, Reason.REFUSED_BY_ERP],
            )
        return True

    def record_refused(self, operation_id: int, *, message: str, field: str | None = None) -> bool:
        """The system refused the write (bad data): quarantine the source record until it changes.

        ``message`` is what a clerk reads ("VAT FR12...: rejected by the ERP: ..."). Returns
        False when the operation was no longer open.
        """
        now = utcnow()
        ops = t.operations.c
        with self.engine.begin() as conn:
            operation = conn.execute(
                sa.select(t.operations).where(ops.id == operation_id)
            ).one_or_none()
            if operation is None:
                return False
            reason = Reason.REFUSED_BY_CRM if operation.side == "crm" else Reason.REFUSED_BY_ERP
            done = conn.execute(
                sa.update(t.operations)
                .where(ops.id == operation_id, ops.status.in_(("pending", "in_flight")))
                .values(
                    status="refused",
                    finished_at=now,
                    error_code=reason.value,
                    error_message=message,
                )
            ).rowcount
            if done != 1:
                return False
            self._quarantine(
                conn,
                None,
                [
                    QuarantineItem(
                        side=operation.source_side,
                        entity=operation.entity,
                        source_key=operation.source_key,
                        reason=reason.value,
                        field=field,
                        message=message,
                        content_hash=operation.source_hash,
                    )
                ],
                now,
            )
        return True

    def record_failed(self, operation_id: int, *, message: str, max_attempts: int = 5) -> bool:
        """The write failed for a passing reason (timeout, 503): retry later, up to a limit."""
        now = utcnow()
        ops = t.operations.c
        with self.engine.begin() as conn:
            done = conn.execute(
                sa.update(t.operations)
                .where(ops.id == operation_id, ops.status.in_(("pending", "in_flight")))
                .values(
                    status=sa.case((ops.attempts >= max_attempts, "failed"), else_="pending"),
                    claimed_by=None,
                    claimed_at=None,
                    error_message=message,
                    finished_at=sa.case((ops.attempts >= max_attempts, now), else_=None),
                )
            ).rowcount
        return bool(done == 1)

    def operation(self, operation_id: int) -> Operation:
        """One operation by id."""
        with self.engine.connect() as conn:
            return _operation_from_row(
                conn.execute(sa.select(t.operations).where(t.operations.c.id == operation_id)).one()
            )

    def count_operations(self, *, side: Side | None = None, status: str | None = None) -> int:
        """How many operations there are (for one system, in one status)."""
        query = sa.select(sa.func.count()).select_from(t.operations)
        if side is not None:
            query = query.where(t.operations.c.side == side)
        if status is not None:
            query = query.where(t.operations.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- quarantine -----------------------------------------------------------------------------

    def _quarantine(
        self,
        conn: Connection,
        run_id: int | None,
        items: Sequence[QuarantineItem],
        now: dt.datetime,
    ) -> None:
        if not items:
            return
        stmt = self.insert(t.quarantine)
        excluded = stmt.excluded
        rows = [
            {
                "side": item.side,
                "entity": item.entity,
                "source_key": item.source_key,
                "reason": item.reason,
                "field": item.field,
                "message": item.message,
                "content_hash": item.content_hash,
                "first_seen_at": now,
                "last_seen_at": now,
                "released_at": None,
                "run_id": run_id,
            }
            for item in items
        ]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["side", "entity", "source_key", "reason"],
                set_={
                    "field": excluded.field,
                    "message": excluded.message,
                    "content_hash": excluded.content_hash,
                    "last_seen_at": excluded.last_seen_at,
                    "run_id": excluded.run_id,
                    # Back in quarantine after a release: it is a new episode.
                    "first_seen_at": sa.case(
                        (t.quarantine.c.released_at.is_(None), t.quarantine.c.first_seen_at),
                        else_=excluded.first_seen_at,
                    ),
                    "released_at": None,
                },
            ),
            rows,
        )

    def quarantine(
        self,
        run_id: int | None,
        items: Sequence[QuarantineItem],
        conn: Connection | None = None,
    ) -> None:
        """Hold records back with their reasons (first and last seen kept per reason)."""
        if conn is None:
            with self.engine.begin() as own:
                self.quarantine(run_id, items, own)
            return
        now = utcnow()
        for chunk in _chunks(items, 5000):
            self._quarantine(conn, run_id, chunk, now)

    def release(
        self,
        conn: Connection,
        side: Side,
        entity: Entity,
        keys: Sequence[str],
        *,
        keep: Mapping[str, set[str]] | None = None,
    ) -> None:
        """Release the quarantine of records ``keys``, except reasons in ``keep[key]``."""
        self._release(conn, side, entity, keys, keep=keep)

    def _release(
        self,
        conn: Connection,
        side: Side,
        entity: Entity,
        keys: Sequence[str],
        *,
        reasons: Sequence[str] | None = None,
        keep: Mapping[str, set[str]] | None = None,
    ) -> None:
        """Release quarantine entries of ``keys``, except the reasons in ``keep[key]``."""
        now = utcnow()
        q = t.quarantine.c
        for chunk in _chunks(keys):
            sql = (
                "SELECT source_key, reason FROM quarantine WHERE side = ? AND entity = ? "  # noqa: S608
                f"AND source_key IN ({marks(len(chunk))}) AND released_at IS NULL"
            )
            params: list[Any] = [side, entity, *chunk]
            if reasons is not None:
                sql += f" AND reason IN ({marks(len(reasons))})"
                params.extend(str(reason) for reason in reasons)
            to_release = [
                {"k": row.source_key, "r": row.reason}
                for row in self._select(conn, sql, params)
                if keep is None or row.reason not in keep.get(row.source_key, set())
            ]
            if to_release:
                conn.execute(
                    sa.update(t.quarantine)
                    .where(
                        q.side == side,
                        q.entity == entity,
                        q.source_key == sa.bindparam("k"),
                        q.reason == sa.bindparam("r"),
                    )
                    .values(released_at=now),
                    to_release,
                )

    def quarantined(
        self, *, entity: Entity | None = None, side: Side | None = None
    ) -> list[QuarantineEntry]:
        """Records held back now, with every reason."""
        q = t.quarantine.c
        query = sa.select(t.quarantine).where(q.released_at.is_(None))
        if entity is not None:
            query = query.where(q.entity == entity)
        if side is not None:
            query = query.where(q.side == side)
        with self.engine.connect() as conn:
            return [
                QuarantineEntry(
                    side=row.side,
                    entity=row.entity,
                    source_key=row.source_key,
                    reason=row.reason,
                    field=row.field,
                    message=row.message,
                    first_seen_at=row.first_seen_at,
                    last_seen_at=row.last_seen_at,
                )
                for row in conn.execute(query.order_by(q.entity, q.side, q.source_key, q.reason))
            ]

    # -- conflicts and reviews -------------------------------------------------------------------

    def conflicts(self, *, status: str | None = "open") -> list[Conflict]:
        """Conflicts (open ones by default), oldest first."""
        query = sa.select(t.conflicts).order_by(t.conflicts.c.id)
        if status is not None:
            query = query.where(t.conflicts.c.status == status)
        with self.engine.connect() as conn:
            return [_conflict_from_row(row) for row in conn.execute(query)]

    def resolve_conflict(
        self, conflict_id: int, *, choice: Literal["crm", "erp", "value"], value: Any = None
    ) -> None:
        """Decide a parked conflict: keep the CRM's value, the ERP's, or a new ``value``.

        The next plan writes the decision to the system that does not have it yet.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(t.conflicts).where(t.conflicts.c.id == conflict_id)
            ).one_or_none()
            if row is None or row.status != "open":
                msg = f"conflict {conflict_id} is not open"
                raise LedgerError(msg)
            chosen = {"crm": row.crm_value, "erp": row.erp_value}.get(choice)
            link = self._link_by_id(conn, row.link_id)
            # Plan both records again so that the decision gets written.
            for side in ("crm", "erp"):
                key = link.key(side)
                if key is not None:
                    conn.execute(
                        sa.update(t.observed)
                        .where(
                            t.observed.c.side == side,
                            t.observed.c.entity == row.entity,
                            t.observed.c.source_key == key,
                        )
                        .values(pending=True)
                    )
            conn.execute(
                sa.update(t.conflicts)
                .where(t.conflicts.c.id == conflict_id)
                .values(
                    status="resolved",
                    resolution=choice,
                    resolved_value=chosen if choice != "value" else dumps(value),
                    updated_at=utcnow(),
                )
            )

    def reviews(self, *, status: str | None = "open") -> list[Review]:
        """Probable duplicates waiting for a decision (or all, with ``status=None``)."""
        query = sa.select(t.reviews).order_by(t.reviews.c.id)
        if status is not None:
            query = query.where(t.reviews.c.status == status)
        with self.engine.connect() as conn:
            return [
                Review(
                    id=row.id,
                    entity=row.entity,
                    crm_key=row.crm_key,
                    erp_key=row.erp_key,
                    reason=row.reason,
                    status=row.status,
                )
                for row in conn.execute(query)
            ]

    def decide_review(self, review_id: int, *, same: bool) -> None:
        """Say whether a probable duplicate is the same client (link them) or two (create)."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(t.reviews).where(t.reviews.c.id == review_id)
            ).one_or_none()
            if row is None or row.status != "open":
                msg = f"review {review_id} is not open"
                raise LedgerError(msg)
            conn.execute(
                sa.update(t.reviews)
                .where(t.reviews.c.id == review_id)
                .values(status="linked" if same else "distinct", decided_at=utcnow())
            )
            _plan_pair_again(conn, row.entity, row.crm_key, row.erp_key)
        if same:
            self.link(row.entity, row.crm_key, row.erp_key, origin="review")

    def duplicates(self, *, status: str | None = "open") -> list[Duplicate]:
        """Records of one system sharing a VAT or SIREN (open ones by default), oldest first."""
        query = sa.select(t.duplicates).order_by(t.duplicates.c.id)
        if status is not None:
            query = query.where(t.duplicates.c.status == status)
        with self.engine.connect() as conn:
            return [_duplicate_from_row(row) for row in conn.execute(query)]

    def decide_duplicate(self, duplicate_id: int, *, same: bool) -> None:
        """Say whether two records of one system are one client twice or two clients.

        Two clients (``same=False``): both are synchronised from the next plan on. One client
        twice: both stay held until the duplicate is removed or corrected in its system.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(t.duplicates).where(t.duplicates.c.id == duplicate_id)
            ).one_or_none()
            if row is None or row.status != "open":
                msg = f"duplicate {duplicate_id} is not open"
                raise LedgerError(msg)
            conn.execute(
                sa.update(t.duplicates)
                .where(t.duplicates.c.id == duplicate_id)
                .values(status="same" if same else "distinct", decided_at=utcnow())
            )
            conn.execute(
                sa.update(t.observed)
                .where(
                    t.observed.c.side == row.side,
                    t.observed.c.entity == row.entity,
                    t.observed.c.source_key.in_((row.first_key, row.second_key)),
                )
                .values(pending=True)
            )

    def dissolve_link(self, link_id: int, *, reason: str = "unlinked by hand") -> Link:
        """Undo a wrong link: the two records are different ones, never to be linked again.

        The link keeps its id (operations and conflicts refer to it) but loses both records;
        its open operations are superseded and its open conflicts closed. The pair is recorded
        as distinct (a ``reviews`` row), so no matching rule links them again, and both
        records are planned again at the next run: each is matched anew or gets its own twin.
        The references each system keeps of the other are the caller's to remove first
        (:mod:`coulisse.unlink`). Returns the link as it was.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            link = self._link_by_id(conn, link_id)
            if link.crm_key is None or link.erp_key is None:
                msg = (
                    f"{link.entity} link {link_id} joins no two records "
                    f"(CRM {link.crm_key or '-'}, ERP {link.erp_key or '-'})"
                )
                raise LedgerError(msg)
            ops = t.operations.c
            conn.execute(
                sa.update(t.operations)
                .where(ops.link_id == link_id, ops.status.in_(("pending", "in_flight")))
                .values(status="superseded", finished_at=now, error_message=reason)
            )
            conflicts = t.conflicts.c
            conn.execute(
                sa.update(t.conflicts)
                .where(conflicts.link_id == link_id, conflicts.status.in_(("open", "resolved")))
                .values(status="closed", resolution="unlinked", updated_at=now)
            )
            reviews = t.reviews.c
            pair = (
                reviews.entity == link.entity,
                reviews.crm_key == link.crm_key,
                reviews.erp_key == link.erp_key,
            )
            decided = {"status": "distinct", "reason": reason[:64], "decided_at": now}
            if not conn.execute(sa.update(t.reviews).where(*pair).values(decided)).rowcount:
                conn.execute(
                    sa.insert(t.reviews).values(
                        entity=link.entity,
                        crm_key=link.crm_key,
                        erp_key=link.erp_key,
                        created_at=now,
                        **decided,
                    )
                )
            conn.execute(
                sa.update(t.links)
                .where(t.links.c.id == link_id)
                .values(
                    crm_key=None,
                    erp_key=None,
                    origin="unlinked",
                    agreed=None,
                    crm_echo=None,
                    erp_echo=None,
                    updated_at=now,
                )
            )
            _plan_pair_again(conn, link.entity, link.crm_key, link.erp_key)
        return link


def _plan_pair_again(conn: Connection, entity: str, crm_key: str, erp_key: str) -> None:
    """Have the next plan look at both records of a pair again (after a person's decision)."""
    for side, key in (("crm", crm_key), ("erp", erp_key)):
        conn.execute(
            sa.update(t.observed)
            .where(
                t.observed.c.side == side,
                t.observed.c.entity == entity,
                t.observed.c.source_key == key,
            )
            .values(pending=True)
        )


def _duplicate_from_row(row: Any) -> Duplicate:
    return Duplicate(
        id=row.id,
        entity=row.entity,
        side=row.side,
        first_key=row.first_key,
        second_key=row.second_key,
        reason=row.reason,
        status=row.status,
    )


def _link_from_row(row: Any) -> Link:
    return Link(
        id=row.id,
        entity=row.entity,
        crm_key=row.crm_key,
        erp_key=row.erp_key,
        origin=row.origin,
        agreed=_json_or_none(row.agreed),
        crm_echo=_json_or_none(row.crm_echo) or {},
        erp_echo=_json_or_none(row.erp_echo) or {},
    )


def _operation_from_row(row: Any) -> Operation:
    return Operation(
        id=row.id,
        link_id=row.link_id,
        entity=row.entity,
        side=row.side,
        action=row.action,
        payload=loads(row.payload),
        changed_fields=loads(row.changed_fields),
        expected=_json_or_none(row.expected),
        status=row.status,
        source_side=row.source_side,
        source_key=row.source_key,
    )


def _conflict_from_row(row: Any) -> Conflict:
    return Conflict(
        id=row.id,
        link_id=row.link_id,
        entity=row.entity,
        field=row.field,
        base_value=_json_or_none(row.base_value),
        crm_value=_json_or_none(row.crm_value),
        erp_value=_json_or_none(row.erp_value),
        status=row.status,
        resolution=row.resolution,
        resolved_value=_json_or_none(row.resolved_value),
    )


def create_engine(url: str) -> Engine:
    """An engine tuned for the ledger: fast batches on PostgreSQL, safe writers on SQLite."""
    if url.startswith("postgresql"):
        return sa.create_engine(url, executemany_mode="values_plus_batch", pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below decide transactions, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not url.endswith(":memory:") and url not in {"sqlite://", "sqlite:///"}:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock up front: two writers never deadlock upgrading a read lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


__all__ = [
    "DEFAULT_URL",
    "Conflict",
    "Duplicate",
    "EventItem",
    "Ledger",
    "LedgerError",
    "Link",
    "LockBusyError",
    "NewOperation",
    "ObserveStats",
    "ObservedRecord",
    "Operation",
    "QuarantineEntry",
    "QuarantineItem",
    "Review",
    "SweepRefusedError",
    "utcnow",
]
