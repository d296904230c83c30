"""Did Tryton change since tap-tryton last read it? The tap's own cursors, checked against Tryton.

tap-tryton keeps one cursor per watched model and stream (see ``tap_tryton.client.ChangeCursor``):
the newest change it read and the rows it saw within the overlap window before it. The check
loads those cursors from Meltano's saved state and asks Tryton, per model, for the rows the
tap's next run would read (the overlap window and anything newer), at most one more than the
cursor saw: any row it did not see, or saw with another stamp, is a change. That is one small
call per model (0 rows when the ERP is idle) and it decides exactly as the tap would, late
commits inside the overlap window included, which a count of rows newer than the cursor misses.

Cursors come from Meltano's state rather than from the ledger's last-observed stamps: the
state is what the next run starts from (a change the ledger never saw, e.g. on an invoice or a
move line that changes a client's balance, is only there), and it stays right when the tap
runs outside Coulisse (`meltano run observe-erp`).

The clients stream also sweeps unpaid invoices that fell due since the day of its last run
(they change with no write at all): a new day in the company's time zone is a change too.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from coulisse.orchestration.meltano_state import singer_state
from coulisse.orchestration.tryton_reads import TrytonReads, tryton_reads
from coulisse.project import ConfigError
from coulisse.stack.layout import PROJECT_ROOT
from coulisse.sync import OBSERVE_SIDE, STREAMS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from tap_tryton.client import ChangeCursor

    from coulisse.model import Entity

    WatchedModels = Callable[[dt.timedelta], dict[str, ChangeCursor]]

#: Where the tap's overlap window is set when the environment does not set it.
DEFAULT_OVERLAP_SECONDS = 300


@dataclass
class ErpCheck:
    """Whether tap-tryton has anything to read, and why (for the run's log and summary)."""

    changed: bool = False
    reasons: list[str] = field(default_factory=list)
    #: Reads sent to Tryton.
    calls: int = 0

    def change(self, reason: str) -> ErpCheck:
        """Note a reason to read the ERP."""
        self.changed = True
        self.reasons.append(reason)
        return self


def watched_by_stream() -> dict[str, WatchedModels]:
    """Each tap-tryton stream's ``watched_models``, found beside the stream's class.

    Every incremental stream module of the tap defines ``watched_models(overlap)``, the cursors
    its stream keeps; new streams are found without a change here.
    """
    import tap_tryton
    from tap_tryton.client import TrytonStream

    found: dict[str, WatchedModels] = {}
    for info in pkgutil.iter_modules(tap_tryton.__path__):
        module = importlib.import_module(f"tap_tryton.{info.name}")
        watched = getattr(module, "watched_models", None)
        if not callable(watched):
            continue
        for value in vars(module).values():
            name = getattr(value, "name", None)
            if (
                isinstance(value, type)
                and issubclass(value, TrytonStream)
                and value.__module__ == module.__name__
                and isinstance(name, str)
            ):
                found[name] = watched
    return found


def overlap(env: Mapping[str, str], meltano_yml: Any = None) -> dt.timedelta:
    """The tap's overlap window, from where Meltano takes it: environment, then meltano.yml.

    The check must use the tap's own window: a wider one would see rows the tap never keeps
    as seen, and report a change on every run.
    """
    raw = env.get("TAP_TRYTON_OVERLAP_SECONDS", "").strip()
    if not raw:
        path = meltano_yml or PROJECT_ROOT / "meltano.yml"
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        extractors = (document.get("plugins") or {}).get("extractors") or []
        tap: dict[str, Any] = next((e for e in extractors if e.get("name") == "tap-tryton"), {})
        raw = str((tap.get("config") or {}).get("overlap_seconds") or "")
        if not raw:
            setting: dict[str, Any] = next(
                (s for s in tap.get("settings") or [] if s.get("name") == "overlap_seconds"), {}
            )
            raw = str(setting.get("value", DEFAULT_OVERLAP_SECONDS))
    try:
        return dt.timedelta(seconds=int(raw))
    except ValueError:
        raise ConfigError(
            f"TAP_TRYTON_OVERLAP_SECONDS={raw!r} is not a number of seconds: use e.g. 300."
        ) from None


def cursor_moved(tryton: TrytonReads, cursor: ChangeCursor) -> bool:
    """Whether the tap's next run would find a change in ``cursor``'s model.

    Reads the rows of the cursor's window (at most one more than it saw): more rows than it
    saw, or a row it saw with another stamp, is a change.
    """
    from tap_tryton.client import stamp

    rows = tryton.search_read(
        cursor.model, cursor.changes_domain(), ["create_date", "write_date"], len(cursor.seen) + 1
    )
    if len(rows) > len(cursor.seen):
        return True
    return any(cursor.seen.get(int(row["id"])) != stamp(row) for row in rows)


def check_erp(
    env: Mapping[str, str],
    entities: Sequence[Entity],
    *,
    tryton: TrytonReads | None = None,
) -> ErpCheck:
    """Whether tap-tryton would read anything for ``entities``; stops at the first change."""
    check = ErpCheck()
    state = singer_state(env, *OBSERVE_SIDE["erp"])
    if state is None:
        return check.change("no saved tap-tryton cursors (first run, or state kept elsewhere)")
    bookmarks: dict[str, Any] = state.get("bookmarks") or {}
    streams = watched_by_stream()
    window = overlap(env)
    reads = tryton or tryton_reads(env)
    try:
        for entity in entities:
            stream = STREAMS[entity]
            saved: dict[str, Any] = bookmarks.get(stream) or {}
            cursors_state: dict[str, Any] = saved.get("cursors") or {}
            if not cursors_state:
                return check.change(f"{stream}: never read incrementally")
            watched = streams.get(stream)
            cursors = (
                watched(window)
                if watched is not None
                else _unknown_cursors(cursors_state.keys(), window)
            )
            if not cursors.keys() <= cursors_state.keys():
                return check.change(f"{stream}: a model without a cursor (a full read is due)")
            for model, cursor in cursors.items():
                cursor.load(cursors_state[model])
                if cursor_moved(reads, cursor):
                    return check.change(f"{stream}: {model} changed")
            # The earliest company date: a day late in a company ahead of it, never a run
            # every cycle for a day that has not begun where the tap dates its sweep.
            if (
                "overdue_as_of" in saved
                and str(saved["overdue_as_of"]) < min(reads.company_dates()).isoformat()
            ):
                return check.change(f"{stream}: a new day, invoices may have fallen due")
    finally:
        check.calls = reads.calls
        if tryton is None:
            reads.close()
    return check


def _unknown_cursors(models: Any, window: dt.timedelta) -> dict[str, ChangeCursor]:
    """Cursors of a stream whose module does not say what it watches: every row counts.

    Wider than the stream's own (no domain), so the check may run the tap for nothing, never
    miss what it would read.
    """
    from tap_tryton.client import ChangeCursor

    return {model: ChangeCursor(model, window, party_field="id") for model in models}
