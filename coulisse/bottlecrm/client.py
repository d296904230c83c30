"""An HTTP client for BottleCRM's REST API: auth, retries with backoff, errors people can act on."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from decimal import Decimal
from typing import Any

import requests

log = logging.getLogger(__name__)

RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class CrmApiError(RuntimeError):
    """BottleCRM refused a request; ``status`` and ``detail`` say why."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        hint = {
            401: " Check BOTTLECRM_API_TOKEN (`coulisse stack up` mints a fresh one locally).",
            403: (
                " Either BOTTLECRM_API_TOKEN is not a live token of an active org-admin profile"
                " (BottleCRM then says an organisation context is required), or it lacks the"
                " scope named above."
            ),
        }.get(status, "")
        super().__init__(
            f"BottleCRM {method} {path} answered {status}: {detail.rstrip('.')}.{hint}"
        )


class CrmUnavailableError(RuntimeError):
    """BottleCRM could not be reached or kept failing after every retry."""


class BottleCrmClient:
    """Calls ``<base_url>/api/...`` with a personal access token.

    Retries 429 (honouring ``Retry-After``), 5xx, timeouts and dropped connections with
    exponential backoff; parses JSON numbers as ``Decimal`` so amounts never pass through float.

    >>> client = BottleCrmClient("http://127.0.0.1:8600", "bcrm_pat_...")
    >>> client.url("accounts/")
    'http://127.0.0.1:8600/api/accounts/'
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/api"):
            self.base_url = self.base_url[: -len("/api")]
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = "application/json"
        self.calls: dict[str, int] = {"read": 0, "write": 0}

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One API call; returns the decoded JSON body (or None when empty)."""
        data = None if body is None else json.dumps(body, default=_json_default)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        kind = "read" if method.upper() in {"GET", "HEAD", "OPTIONS"} else "write"
        for attempt in range(1, self.max_attempts + 1):
            self.calls[kind] += 1
            try:
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.max_attempts:
                    raise CrmUnavailableError(
                        f"BottleCRM at {self.base_url} did not answer {method} {path} after "
                        f"{attempt} attempts ({exc.__class__.__name__}). Is it running? "
                        "`coulisse stack status` tells."
                    ) from exc
                self._sleep(attempt, None)
                continue
            if response.status_code in RETRIABLE_STATUS and attempt < self.max_attempts:
                log.warning(
                    "BottleCRM %s %s answered %s; retrying (attempt %s of %s)",
                    method,
                    path,
                    response.status_code,
                    attempt,
                    self.max_attempts,
                )
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            return self._decode(method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, float(retry_after))
        time.sleep(min(delay, 60.0))

    @staticmethod
    def _decode(method: str, path: str, response: requests.Response) -> Any:
        text = response.text
        if response.status_code >= 400:
            detail = text[:500]
            try:
                payload = json.loads(text)
                if isinstance(payload, dict):
                    detail = str(payload.get("detail") or payload.get("errors") or payload)
            except ValueError:
                pass
            raise CrmApiError(method, path, response.status_code, detail)
        if not text.strip():
            return None
        try:
            return json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            raise CrmApiError(
                method, path, response.status_code, f"body is not JSON: {text[:200]!r}"
            ) from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
