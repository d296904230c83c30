"""The base stream for BottleCRM: URL, token, retries and the offset paginator its lists need."""

from __future__ import annotations

import contextlib
import decimal
import itertools
from typing import TYPE_CHECKING, Any

from singer_sdk.authenticators import BearerTokenAuthenticator
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError
from singer_sdk.pagination import OffsetPaginator
from singer_sdk.streams import RESTStream

from coulisse.singer import ClosesFullScans

if TYPE_CHECKING:
    from collections.abc import Generator

    import requests


class BottleCrmPaginator(OffsetPaginator):
    """Offset pages; done when every list the page carries came back shorter than a page.

    BottleCRM's accounts endpoint answers open and closed accounts side by side, each list
    paginated by the same ``limit``/``offset``.
    """

    def __init__(self, page_size: int, list_paths: tuple[tuple[str, ...], ...]) -> None:
        super().__init__(start_value=0, page_size=page_size)
        self.list_paths = list_paths

    def has_more(self, response: requests.Response) -> bool:
        payload = response.json(parse_float=decimal.Decimal)
        return any(len(_dig(payload, path)) >= self._page_size for path in self.list_paths)


def _dig(payload: Any, path: tuple[str, ...]) -> list[Any]:
    node = payload
    for key in path:
        node = node.get(key, []) if isinstance(node, dict) else []
    return node if isinstance(node, list) else []


class BottleCrmStream(ClosesFullScans, RESTStream[int]):
    """Shared by every BottleCRM stream."""

    @property
    def url_base(self) -> str:
        base = str(self.config["api_url"]).rstrip("/")
        return base if base.endswith("/api") else f"{base}/api"

    @property
    def authenticator(self) -> BearerTokenAuthenticator:
        return BearerTokenAuthenticator(token=self.config["api_token"])

    @property
    def page_size(self) -> int:
        return int(self.config.get("page_size", 5000))

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code == 429 or response.status_code >= 500:
            raise RetriableAPIError(
                f"BottleCRM answered {response.status_code} on {response.request.path_url}; "
                "retrying",
                response,
            )
        if response.status_code in {401, 403}:
            raise FatalAPIError(
                f"BottleCRM refused {response.request.path_url} ({response.status_code}: "
                f"{response.text[:200]}). Check api_token: an org-admin token with the "
                "accounts:read and contacts:read scopes."
            )
        if response.status_code >= 400:
            raise FatalAPIError(
                f"BottleCRM answered {response.status_code} on {response.request.path_url}: "
                f"{response.text[:300]}"
            )

    def backoff_max_tries(self) -> int:
        return 6

    def backoff_wait_generator(self) -> Generator[float, None, None]:
        """Exponential waits (1, 2, 4... s), or exactly what a 429's ``Retry-After`` asks for."""
        attempts = itertools.count()

        def wait(exc: Exception) -> float:
            delay = float(2 ** next(attempts))
            response = getattr(exc, "response", None)
            header = response.headers.get("Retry-After") if response is not None else None
            if header:
                with contextlib.suppress(ValueError):
                    delay = float(header)
            return min(delay, 60.0)

        return self.backoff_runtime(value=wait)
