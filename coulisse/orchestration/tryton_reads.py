"""The few Tryton reads of the change check, over REST when an application key allows it.

A JSON-RPC login checks the password's hash: about 0.3 s, most of an idle cycle's Tryton cost.
Tryton's REST API (``/<db>/rest/model/<name>``) takes the integration user's application key
(``TRYTON_APPLICATION_KEY``, a ``res.user.application`` of that user, `coulisse stack up` makes
one) on every request, with no session: each read is one request of about 10 ms. Without a key
the check logs in over JSON-RPC like the tap.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from coulisse.project import ConfigError
from coulisse.tryton.rpc import TrytonClient, TrytonUnavailableError, dumps, loads

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_RPC_SETTINGS = ("TRYTON_URL", "TRYTON_DATABASE", "TRYTON_USERNAME", "TRYTON_PASSWORD")
#: Inactive records change too (an archived party is still a client to mirror).
WITH_INACTIVE = {"active_test": False}


class TrytonReads(Protocol):
    """What the change check asks Tryton."""

    calls: int

    def search_read(
        self, model: str, domain: Sequence[Any], fields: Sequence[str], limit: int | None
    ) -> list[dict[str, Any]]:
        """Rows of ``model`` matching ``domain`` (inactive ones included)."""

    def company_dates(self) -> list[dt.date]:
        """Today in the time zone of each company the user works in."""

    def close(self) -> None:
        """Release the connection (and the session, if any)."""


def _today(zone_name: str | None) -> dt.date:
    try:
        zone: dt.tzinfo = ZoneInfo(zone_name) if zone_name else dt.UTC
    except ZoneInfoNotFoundError:
        zone = dt.UTC
    return dt.datetime.now(tz=zone).date()


class RestReads:
    """Reads over Tryton's REST API with the user's application key."""

    def __init__(self, url: str, database: str, key: str, *, timeout: float = 15.0) -> None:
        self.base = f"{url.rstrip('/')}/{database}/rest/model"
        self._headers = {
            "Authorization": f"Bearer {key}",
            "X-Tryton-Context": base64.urlsafe_b64encode(
                json.dumps(WITH_INACTIVE).encode()
            ).decode(),
        }
        self.timeout = timeout
        self._http = requests.Session()
        self.calls = 0

    def search_read(
        self, model: str, domain: Sequence[Any], fields: Sequence[str], limit: int | None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {
            "d": base64.urlsafe_b64encode(dumps(list(domain)).encode()).decode(),
            "f": list(fields),
        }
        if limit is not None:
            params["s"] = limit
        self.calls += 1
        try:
            response = self._http.get(
                f"{self.base}/{model}", params=params, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise TrytonUnavailableError(
                f"cannot read {model} from Tryton at {self.base} ({exc.__class__.__name__}): "
                "check that the ERP runs and that TRYTON_URL is right."
            ) from exc
        if response.status_code in {401, 403}:
            raise ConfigError(
                f"Tryton refused TRYTON_APPLICATION_KEY (HTTP {response.status_code}): it must "
                "be a validated REST application key of the integration user (`coulisse stack "
                "up` makes one locally); unset it to use TRYTON_USERNAME and TRYTON_PASSWORD."
            )
        if response.status_code != 200:
            raise TrytonUnavailableError(
                f"Tryton answered HTTP {response.status_code} reading {model}: "
                f"{response.text[:300].strip()}"
            )
        return list(loads(response.content))

    def company_dates(self) -> list[dt.date]:
        rows = self.search_read("company.company", [], ["timezone"], None)
        return [_today(row.get("timezone")) for row in rows] or [_today(None)]

    def close(self) -> None:
        self._http.close()


class RpcReads:
    """Reads over JSON-RPC with the user's login and password (one login per check)."""

    def __init__(self, client: TrytonClient) -> None:
        self.client = client
        self.calls = 0

    def search_read(
        self, model: str, domain: Sequence[Any], fields: Sequence[str], limit: int | None
    ) -> list[dict[str, Any]]:
        self.calls += 1
        return self.client.search_read(model, domain, fields, limit, context=WITH_INACTIVE)

    def company_dates(self) -> list[dt.date]:
        company = self.client.context.get("company")
        if company is None:
            return [_today(None)]
        self.calls += 1
        (row,) = self.client.read("company.company", [int(company)], ["timezone"])
        return [_today(row.get("timezone"))]

    def close(self) -> None:
        self.client.close()


def tryton_reads(env: Mapping[str, str]) -> TrytonReads:
    """REST reads with ``TRYTON_APPLICATION_KEY`` when set, else a JSON-RPC session."""
    url, database = env.get("TRYTON_URL", ""), env.get("TRYTON_DATABASE", "")
    key = env.get("TRYTON_APPLICATION_KEY", "").strip()
    if url and database and key:
        return RestReads(url, database, key)
    missing = [name for name in _RPC_SETTINGS if not env.get(name)]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: the change check reads Tryton as tap-tryton does "
            "(`coulisse stack up` writes them to .env for the local stack)."
        )
    return RpcReads(
        TrytonClient(
            url,
            database,
            env["TRYTON_USERNAME"],
            env["TRYTON_PASSWORD"],
            timeout=15,
            max_retries=2,
        )
    )
