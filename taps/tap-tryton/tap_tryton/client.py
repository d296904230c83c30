"""The base stream for Tryton: one JSON-RPC session per run, keyset pages and change cursors."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests
from singer_sdk.exceptions import FatalAPIError

from coulisse.singer import ClosesFullScans
from coulisse.tryton.rpc import (
    TrytonAuthError,
    TrytonClient,
    TrytonError,
    TrytonUnavailableError,
    TrytonUserError,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

Row = dict[str, Any]
Domain = list[Any]

#: Read inactive records too: a deactivated party, address or identifier is a change to report.
WITH_INACTIVE = {"active_test": False}


class CountingSession(requests.Session):
    """A requests session that counts what it sends: the run reports its Tryton calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls += 1
        return super().request(*args, **kwargs)


@contextlib.contextmanager
def explained(config: Mapping[str, Any]) -> Iterator[None]:
    """Turn Tryton connection failures into a message naming the tap setting to fix.

    Tryton's own refusals (access rights, a field this Tryton lacks) keep their message.
    """
    url, database, username = config.get("url"), config.get("database"), config.get("username")
    try:
        yield
    except TrytonAuthError as exc:
        raise FatalAPIError(
            f"Tryton at {url} refused the login {username!r} on database {database!r}: check "
            "the tap's `username` and `password` settings (TRYTON_USERNAME, TRYTON_PASSWORD)."
        ) from exc
    except TrytonUnavailableError as exc:
        raise FatalAPIError(
            f"Cannot reach Tryton at {url} ({exc}). Check the tap's `url` setting (TRYTON_URL) "
            "and that the ERP is running."
        ) from exc
    except TrytonUserError as exc:
        raise FatalAPIError(f"Tryton refused a read by {username!r}: {exc}") from exc
    except TrytonError as exc:
        if "no database" in str(exc):
            raise FatalAPIError(
                f"Tryton at {url} has no database {database!r}: check the tap's `database` "
                "setting (TRYTON_DATABASE)."
            ) from exc
        raise FatalAPIError(f"Tryton failed: {exc}") from exc


def read_pages(
    tryton: TrytonClient,
    model: str,
    domain: Sequence[Any],
    fields: Sequence[str],
    *,
    page_size: int,
    context: Mapping[str, Any] | None = None,
) -> Iterator[list[Row]]:
    """``search_read`` page by page, keyed on the id so that inserts never shift a page.

    The domain is nested as one clause, so a top-level ``["OR", ...]`` stays an OR.
    """
    last_id = 0
    while True:
        clauses: Domain = [list(domain)] if domain else []
        rows = tryton.search_read(
            model,
            [*clauses, ("id", ">", last_id)],
            fields,
            limit=page_size,
            order=[("id", "ASC")],
            context=context,
        )
        if rows:
            yield rows
        if len(rows) < page_size:
            return
        last_id = int(rows[-1]["id"])


def utc(value: dt.datetime) -> dt.datetime:
    """Tryton's datetimes are naive UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def stamp(row: Mapping[str, Any]) -> dt.datetime:
    """When a row last changed: its write time, or its creation time if never written."""
    created, written = row.get("create_date"), row.get("write_date")
    times = [utc(t) for t in (created, written) if isinstance(t, dt.datetime)]
    if not times:
        raise FatalAPIError(f"Tryton sent a row without create_date: {dict(row)!r}")
    return max(times)


@dataclass
class ChangeCursor:
    """How far one model was read: its newest change time, and what was seen just before it.

    Tryton stamps a row with its transaction's start time, so a long transaction can commit
    a change stamped *before* the newest one already read. Each run therefore reads again
    the ``overlap`` before the cursor, and a row counts as changed only if it was not seen
    there with the same stamp:

    >>> noon = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    >>> cursor = ChangeCursor("party.address", overlap=dt.timedelta(minutes=5))
    >>> cursor.observe([{"id": 3, "party": 7, "create_date": noon}])
    {7}
    >>> cursor.observe([{"id": 3, "party": 7, "create_date": noon}])
    set()
    >>> late = {"id": 4, "party": 8, "create_date": noon - dt.timedelta(minutes=1)}
    >>> cursor.observe([{"id": 3, "party": 7, "create_date": noon}, late])
    {8}
    """

    model: str
    overlap: dt.timedelta
    party_field: str = "party"
    domain: tuple[Any, ...] = ()
    #: The newest change read so far (None: nothing read yet, every row is new).
    latest: dt.datetime | None = None
    #: Rows stamped within ``overlap`` of ``latest``, with their stamp.
    seen: dict[int, dt.datetime] = field(default_factory=dict)

    @property
    def since(self) -> dt.datetime | None:
        return None if self.latest is None else self.latest - self.overlap

    def changes_domain(self) -> Domain:
        """Rows of the model created or written since the cursor, overlap included."""
        domain: Domain = list(self.domain)
        if self.since is not None:
            since = self.since.astimezone(dt.UTC).replace(tzinfo=None)
            domain.append(["OR", ("create_date", ">=", since), ("write_date", ">=", since)])
        return domain

    @property
    def fields(self) -> list[str]:
        return ["create_date", "write_date", *([] if self.party_field == "id" else ["party"])]

    def party_of(self, row: Mapping[str, Any]) -> int | None:
        value = row.get(self.party_field)
        return int(value) if value is not None else None

    def observe(self, rows: Iterable[Mapping[str, Any]]) -> set[int]:
        """Move the cursor over ``rows`` (every row since the cursor); the parties they changed.

        ``rows`` must be the complete answer to :meth:`changes_domain` (or every row of the
        model), so that what it leaves out of the overlap window no longer exists.
        """
        stamped = [(int(row["id"]), stamp(row), self.party_of(row)) for row in rows]
        changed = {
            party
            for row_id, when, party in stamped
            if party is not None and self.seen.get(row_id) != when
        }
        newest = max((when for _, when, _ in stamped), default=None)
        if newest is not None and (self.latest is None or newest > self.latest):
            self.latest = newest
        if self.latest is not None:
            floor = self.latest - self.overlap
            self.seen = {row_id: when for row_id, when, _ in stamped if when >= floor}
        return changed

    def fetch(self, tryton: TrytonClient, page_size: int) -> set[int]:
        """Read what changed since the cursor, move it, and return the parties concerned."""
        rows = [
            row
            for page in read_pages(
                tryton,
                self.model,
                self.changes_domain(),
                self.fields,
                page_size=page_size,
                context=WITH_INACTIVE,
            )
            for row in page
        ]
        return self.observe(rows)

    def start(self, tryton: TrytonClient, page_size: int) -> None:
        """Place a cursor that never ran at the model's newest change, reading nothing older.

        Two calls whatever the model's size: its most recently written row gives an anchor,
        then the overlap before it is read as already seen. A row never written (stamped by
        its creation) after the anchor falls in that window too.
        """
        newest = self._tryton_newest(tryton)
        if newest is None:
            return
        self.latest = newest
        self.fetch(tryton, page_size)

    def _tryton_newest(self, tryton: TrytonClient) -> dt.datetime | None:
        rows = tryton.search_read(
            self.model,
            list(self.domain),
            ["create_date", "write_date"],
            limit=1,
            order=[("write_date", "DESC NULLS LAST"), ("create_date", "DESC")],
            context=WITH_INACTIVE,
        )
        return stamp(rows[0]) if rows else None

    def to_state(self) -> dict[str, Any]:
        """JSON for the Singer STATE (a list, not a map: state merges never resurrect rows)."""
        return {
            "latest": None if self.latest is None else self.latest.isoformat(),
            "seen": [[row_id, when.isoformat()] for row_id, when in sorted(self.seen.items())],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`to_state`'s JSON."""
        latest = state.get("latest")
        self.latest = utc(dt.datetime.fromisoformat(latest)) if latest else None
        self.seen = {
            int(row_id): utc(dt.datetime.fromisoformat(when))
            for row_id, when in state.get("seen") or []
        }


@dataclass(frozen=True)
class Company:
    """The Tryton company the integration user works in: its currency, its calendar."""

    id: int
    party: int | None
    currency: str | None
    timezone: str | None

    def today(self) -> dt.date:
        """Today in the company's time zone, as Tryton's due dates are."""
        try:
            zone = ZoneInfo(self.timezone) if self.timezone else dt.UTC
        except ZoneInfoNotFoundError:
            zone = dt.UTC
        return dt.datetime.now(tz=zone).date()


class TrytonStream(ClosesFullScans):
    """Shared by every Tryton stream: one logged-in session per run, the company read once."""

    _tryton: TrytonClient | None = None
    _http: CountingSession | None = None
    _company: Company | None = None

    @property
    def tryton(self) -> TrytonClient:
        """The integration user's session, opened on first use."""
        if self._tryton is None:
            self._http = CountingSession()
            client = TrytonClient(
                str(self.config["url"]),
                str(self.config["database"]),
                str(self.config["username"]),
                str(self.config["password"]),
                http=self._http,
            )
            with explained(self.config):
                client.login()
            self._tryton = client
        return self._tryton

    @property
    def rpc_calls(self) -> int:
        """HTTP requests sent to Tryton by this stream so far (retries included)."""
        return self._http.calls if self._http is not None else 0

    @property
    def page_size(self) -> int:
        return int(self.config.get("page_size", 500))

    @property
    def overlap(self) -> dt.timedelta:
        return dt.timedelta(seconds=int(self.config.get("overlap_seconds", 300)))

    @property
    def company(self) -> Company:
        """The user's current company (Tryton keeps it in the user's preferences)."""
        if self._company is None:
            company_id = self.tryton.context.get("company")
            if company_id is None:
                raise FatalAPIError(
                    f"The Tryton user {self.config['username']!r} has no current company: "
                    "set one in its preferences (balances and due dates are per company)."
                )
            (row,) = self.tryton.read(
                "company.company", [int(company_id)], ["party", "timezone", "currency.code"]
            )
            currency = row.get("currency.") or {}
            self._company = Company(
                id=int(company_id),
                party=row.get("party"),
                currency=currency.get("code"),
                timezone=row.get("timezone"),
            )
        return self._company
