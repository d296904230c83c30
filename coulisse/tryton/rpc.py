"""A JSON-RPC client for Tryton 8.2: session login and re-login, retries, typed user errors.

Tryton answers JSON-RPC at ``POST <url>/<database>/rpc/`` with ``{"id", "method", "params"}``.
``common.db.login`` returns ``[user_id, session, bus_url]``; later calls carry
``Authorization: Session base64(login:user_id:session)``. Model methods take the user's context
as their last argument. Values that JSON cannot carry travel as tagged objects, decoded here::

    >>> loads('{"result": {"__class__": "Decimal", "decimal": "12.50"}}')
    {'result': Decimal('12.50')}
    >>> dumps({"d": datetime.date(2025, 3, 31)})
    '{"d": {"__class__": "date", "year": 2025, "month": 3, "day": 31}}'

Errors come back with HTTP 200 as an ``error`` array: ``["UserError", [message, description,
domain]]``, ``["UserWarning", [name, message, description]]``, ``["ConcurrencyException",
message]`` or, for a server bug, ``[text, traceback]``; they become the exceptions below, which
keep Tryton's message for the person who has to act on it.

Every JSON number is parsed as ``Decimal`` (never a float), so Tryton's ``Float`` fields (a
quantity, for instance) arrive as ``Decimal`` too; send them back as ``float`` or ``int``.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import itertools
import json
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

logger = logging.getLogger(__name__)

# Methods that change nothing: a call that timed out may be sent again safely. Any other call
# that timed out may have been applied, so it is reported instead of silently repeated.
READ_ONLY_METHODS = frozenset(
    {
        "search",
        "search_read",
        "search_count",
        "read",
        "fields_get",
        "default_get",
        "get_preferences",
        "common.server.version",
        "common.db.login",
    }
)
MAX_RETRY_DELAY = 60.0


class TrytonError(Exception):
    """Any failure talking to Tryton; the message says what happened and what to do."""


class TrytonUnavailableError(TrytonError):
    """Tryton could not be reached, or kept answering 429/5xx, after every retry."""


class TrytonAuthError(TrytonError):
    """Tryton refused the login, or the session again right after a fresh login."""


class TrytonServerError(TrytonError):
    """Tryton failed with an unexpected exception (a server-side bug or misconfiguration)."""

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class TrytonConcurrencyError(TrytonError):
    """The record changed since it was read (the ``_timestamp`` check failed): read it again."""


class TrytonUserError(TrytonError):
    """Tryton refused the request with a message meant for a person (validation, access rights).

    >>> str(TrytonUserError("Invalid VAT number.", "The VAT of party X is not valid."))
    'Invalid VAT number. - The VAT of party X is not valid.'
    """

    def __init__(self, message: str, description: str = "", domain: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.description = description
        self.domain = domain

    def __str__(self) -> str:
        return f"{self.message} - {self.description}" if self.description else self.message


class TrytonUserWarning(TrytonUserError):  # noqa: N818 - named after Tryton's UserWarning
    """A warning the user may accept: ``name`` is the key to record in ``res.user.warning``."""

    def __init__(self, name: str, message: str, description: str = "") -> None:
        super().__init__(message, description)
        self.name = name


def _encode(value: Any) -> Any:  # noqa: PLR0911 - one branch per tagged type
    """``json.dumps`` fallback: Tryton's tagged objects for the types JSON lacks."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date too
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, datetime.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, datetime.time):
        return {
            "__class__": "time",
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, datetime.timedelta):
        return {"__class__": "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot send {type(value).__name__} to Tryton: {value!r}")


def _decode(obj: dict[str, Any]) -> Any:  # noqa: PLR0911 - one branch per tagged type
    """``json.loads`` object hook: turn Tryton's tagged objects back into Python values."""
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return datetime.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return datetime.datetime(  # noqa: DTZ001 - Tryton datetimes are naive UTC
            obj["year"],
            obj["month"],
            obj["day"],
            obj.get("hour", 0),
            obj.get("minute", 0),
            obj.get("second", 0),
            obj.get("microsecond", 0),
        )
    if kind == "time":
        return datetime.time(
            obj.get("hour", 0),
            obj.get("minute", 0),
            obj.get("second", 0),
            obj.get("microsecond", 0),
        )
    if kind == "timedelta":
        # a duration, not money: JSON numbers arrive as Decimal here, timedelta wants a float
        return datetime.timedelta(seconds=float(obj["seconds"]))
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def dumps(payload: Any) -> str:
    """Serialise a request body the way Tryton reads it."""
    return json.dumps(payload, default=_encode, ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """Parse a Tryton answer: tagged objects decoded, JSON floats kept exact as ``Decimal``."""
    return json.loads(text, object_hook=_decode, parse_float=Decimal)


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(tz=datetime.UTC)).total_seconds())


def _raise_for_error(error: Any) -> None:
    """Raise the exception matching a JSON-RPC ``error`` array."""
    if not isinstance(error, list | tuple) or not error:
        raise TrytonServerError(f"Tryton answered with an unreadable error: {error!r}")
    kind = error[0]
    args = error[1] if len(error) > 1 else None
    if kind == "UserError":
        message, description, domain = [*list(args or []), "", "", None][:3]
        raise TrytonUserError(str(message), str(description or ""), domain)
    if kind == "UserWarning":
        name, message, description = [*list(args or []), "", "", ""][:3]
        raise TrytonUserWarning(str(name), str(message), str(description or ""))
    if kind == "ConcurrencyException":
        raise TrytonConcurrencyError(
            f"{args}: the record was changed by someone else since it was read; read it again "
            "and re-apply the change."
        )
    if kind == "LoginException":
        raise TrytonAuthError(f"Tryton asks for more login parameters: {args!r}")
    raise TrytonServerError(
        f"Tryton failed with an unexpected error: {kind} (see the ERP server log)",
        str(args or ""),
    )


class TrytonClient:
    """One Tryton user talking JSON-RPC, logging in on first use and again when the session ends.

    >>> client = TrytonClient("http://127.0.0.1:8610", "coulisse_demo_erp", "coulisse", "secret")
    >>> client.search_read("party.party", [("name", "ilike", "%dupont%")], ["name"], limit=5)
    ... # doctest: +SKIP
    [{'id': 7, 'name': 'Dupont SARL'}]

    Connection errors, HTTP 5xx and 429 are retried with exponential backoff (``Retry-After``
    honoured); a call that timed out is retried only when it cannot have changed anything.
    """

    def __init__(
        self,
        url: str,
        database: str,
        username: str,
        password: str,
        timeout: float = 30.0,
        *,
        max_retries: int = 4,
        backoff: float = 0.5,
        http: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.username = username
        self._password = password
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._http = http or requests.Session()
        self._sleep = sleep
        self._ids = itertools.count(1)
        self._user_id: int | None = None
        self._session: str | None = None
        self._context: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"TrytonClient({self.rpc_url!r}, user={self.username!r})"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{self.database}/rpc/"

    @property
    def user_id(self) -> int:
        """The logged-in user's id (logs in if needed)."""
        if self._user_id is None:
            self.login()
        assert self._user_id is not None
        return self._user_id

    # -- sessions ----------------------------------------------------------------------------

    def login(self) -> int:
        """Open a session with the password; return the user id."""
        response = self._post("common.db.login", [self.username, {"password": self._password}])
        if response.status_code in {401, 403}:
            raise TrytonAuthError(
                f"Tryton at {self.url} refused the login {self.username!r} on database "
                f"{self.database!r}: check TRYTON_USERNAME and TRYTON_PASSWORD (locally, "
                "`coulisse stack up` writes them to .env)."
            )
        if response.status_code == 404:
            raise TrytonError(
                f"Tryton at {self.url} has no database {self.database!r}: check TRYTON_DATABASE "
                "(locally, `coulisse stack up` creates it)."
            )
        result = self._result(response, "common.db.login")
        self._user_id, self._session = int(result[0]), str(result[1])
        self._context = None
        return self._user_id

    def logout(self) -> None:
        """Close the session on the server (best effort)."""
        if self._session is None:
            return
        try:
            self._post("common.db.logout", [], authenticated=True)
        except TrytonError:
            logger.debug("logout failed", exc_info=True)
        self._session = None
        self._user_id = None
        self._context = None

    def close(self) -> None:
        self.logout()
        self._http.close()

    def __enter__(self) -> TrytonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def context(self) -> dict[str, Any]:
        """The user's context (language, company, timezone...), read once per session."""
        if self._context is None:
            preferences = self.call("model.res.user.get_preferences", True, {})
            self._context = dict(preferences)
        return dict(self._context)

    # -- raw calls ---------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with ``params`` exactly as given; log in again once if needed.

        Model and wizard methods expect the context as their last parameter: prefer
        :meth:`model_call` and the helpers, which add it.
        """
        if self._session is None:
            self.login()
        response = self._post(method, list(params), authenticated=True)
        if response.status_code in (401, 403):
            # The session expired (or is too old for a "fresh session" method such as posting
            # an invoice): log in again once and repeat the call.
            logger.info("Tryton answered %s to %s: logging in again", response.status_code, method)
            self.login()
            response = self._post(method, list(params), authenticated=True)
            if response.status_code in (401, 403):
                raise TrytonAuthError(
                    f"Tryton refused {method} to {self.username!r} even after a fresh login "
                    f"(HTTP {response.status_code}): the method is not callable over RPC, or "
                    "the user lacks the access group for it."
                )
        return self._result(response, method)

    def model_call(
        self, model: str, method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        """Call ``model.<model>.<method>(*args, context)`` with the user's context merged in."""
        return self.call(f"model.{model}.{method}", *args, self._with_context(context))

    # -- model helpers -----------------------------------------------------------------------

    def search(
        self,
        model: str,
        domain: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
        order: Sequence[tuple[str, str]] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        ids = self.model_call(
            model, "search", list(domain), offset, limit, _order(order), context=context
        )
        return [int(i) for i in ids]

    def search_read(
        self,
        model: str,
        domain: Sequence[Any],
        fields: Iterable[str],
        limit: int | None = None,
        *,
        order: Sequence[tuple[str, str]] | None = None,
        offset: int = 0,
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Records matching ``domain``, with ``fields`` (``"party.name"`` follows relations)."""
        result = self.model_call(
            model,
            "search_read",
            list(domain),
            offset,
            limit,
            _order(order),
            list(fields),
            context=context,
        )
        return list(result)

    def search_count(
        self, model: str, domain: Sequence[Any], context: Mapping[str, Any] | None = None
    ) -> int:
        return int(self.model_call(model, "search_count", list(domain), context=context))

    def read(
        self,
        model: str,
        ids: Sequence[int],
        fields: Iterable[str],
        context: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        return list(self.model_call(model, "read", list(ids), list(fields), context=context))

    def create(
        self,
        model: str,
        values_list: Sequence[Mapping[str, Any]],
        context: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Create many records in one call (one transaction); return their ids in order."""
        ids = self.model_call(model, "create", [dict(v) for v in values_list], context=context)
        return [int(i) for i in ids]

    def write(
        self,
        model: str,
        ids: Sequence[int],
        values: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Write ``values`` on ``ids``; pass ``{"_timestamp": {...}}`` in ``context`` for CAS."""
        if ids:
            self.model_call(model, "write", list(ids), dict(values), context=context)

    def delete(
        self, model: str, ids: Sequence[int], context: Mapping[str, Any] | None = None
    ) -> None:
        if ids:
            self.model_call(model, "delete", list(ids), context=context)

    def execute(
        self,
        model: str,
        button_or_method: str,
        ids: Sequence[int],
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Click a workflow button (``post``, ``quote``, ``confirm``...) on ``ids``."""
        return self.model_call(model, button_or_method, list(ids), context=context)

    # -- wizards -----------------------------------------------------------------------------

    def wizard_create(
        self, wizard: str, context: Mapping[str, Any] | None = None
    ) -> tuple[int, str, str]:
        """Start ``wizard``; return its session id, start state and end state."""
        session_id, start, end = self.call(f"wizard.{wizard}.create", self._with_context(context))
        return int(session_id), str(start), str(end)

    def wizard_execute(
        self,
        wizard: str,
        session_id: int,
        data: Mapping[str, Mapping[str, Any]],
        state: str,
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``state`` with the forms' values in ``data`` (``{view_state: {field: value}}``).

        The answer holds ``view`` (with ``defaults`` and ``state``) when the wizard shows a
        form next, nothing when it reached its end.
        """
        result = self.call(
            f"wizard.{wizard}.execute",
            session_id,
            {k: dict(v) for k, v in data.items()},
            state,
            self._with_context(context),
        )
        return dict(result or {})

    def wizard_delete(
        self, wizard: str, session_id: int, context: Mapping[str, Any] | None = None
    ) -> None:
        self.call(f"wizard.{wizard}.delete", session_id, self._with_context(context))

    # -- plumbing ----------------------------------------------------------------------------

    def _with_context(self, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**self.context, **(extra or {})}

    def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if authenticated and self._session is not None:
            token = f"{self.username}:{self._user_id}:{self._session}".encode()
            headers["Authorization"] = "Session " + base64.b64encode(token).decode("ascii")
        return headers

    def _post(
        self, method: str, params: list[Any], *, authenticated: bool = False
    ) -> requests.Response:
        """POST one JSON-RPC request, retrying connection errors, 429 and 5xx with backoff."""
        body = dumps({"id": next(self._ids), "method": method, "params": params}).encode()
        read_only = method in READ_ONLY_METHODS or method.rsplit(".", 1)[-1] in READ_ONLY_METHODS
        for attempt in itertools.count():
            delay: float | None = None
            try:
                response = self._http.post(
                    self.rpc_url,
                    data=body,
                    headers=self._headers(authenticated),
                    timeout=self.timeout,
                )
            except requests.ConnectionError as exc:
                problem = f"cannot connect to Tryton at {self.url} ({exc.__class__.__name__})"
            except requests.Timeout as exc:
                if not read_only:
                    raise TrytonUnavailableError(
                        f"Tryton at {self.url} did not answer {method} within {self.timeout} s; "
                        "the change may or may not have been applied: read the record back "
                        "before trying again."
                    ) from exc
                problem = f"Tryton at {self.url} did not answer within {self.timeout} s"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                problem = f"Tryton at {self.url} answered HTTP {response.status_code} to {method}"
                delay = _retry_after(response)
            if attempt >= self.max_retries:
                raise TrytonUnavailableError(
                    f"{problem}, {attempt + 1} times. Check that the ERP runs "
                    "(`coulisse stack status`) and that TRYTON_URL is right, then retry."
                )
            if delay is None:
                delay = self.backoff * (2**attempt)
            delay = min(delay, MAX_RETRY_DELAY)
            logger.warning("%s; retrying in %.1f s", problem, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _result(self, response: requests.Response, method: str) -> Any:
        if response.status_code != 200:
            raise TrytonError(
                f"Tryton answered HTTP {response.status_code} to {method}: "
                f"{response.text[:300].strip()}"
            )
        try:
            payload = loads(response.content)
        except ValueError as exc:
            raise TrytonServerError(
                f"Tryton answered {method} with a body that is not JSON: {response.text[:200]!r}"
            ) from exc
        if not isinstance(payload, dict):
            raise TrytonServerError(f"Tryton answered {method} with {payload!r}")
        if payload.get("error") is not None:
            _raise_for_error(payload["error"])
        return payload.get("result")


def _order(order: Sequence[tuple[str, str]] | None) -> list[list[str]] | None:
    return None if order is None else [[field, direction] for field, direction in order]
