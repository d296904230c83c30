"""The HTTP receiver of BottleCRM's webhooks: check, remember, flag, answer at once.

BottleCRM sends a delivery from inside the request that changed the record (Celery runs eager in
the sandbox) and waits up to 10 s for the answer, so the receiver does only what must happen
before answering: check the signature on the raw body, refuse a replay by its delivery id, and
write the delivery and its flags to the ledger (a few milliseconds). The sync itself runs later,
in :mod:`coulisse.webhooks.trigger`. Answers, and what BottleCRM does with them:

- 202: accepted (also for events Coulisse does not sync, such as ``ping``);
- 401: unsigned, tampered, signed with another secret, or expired (older than 5 minutes);
- 409: replayed: this delivery, signature included, was accepted before. The same delivery
  id signed anew (BottleCRM retrying a delivery whose answer it missed; only the secret's
  holder can sign) gets 200 and flags nothing again;
- 400/411/413: not a delivery;
- 503: the ledger could not store it. BottleCRM retries any non-2xx answer later, with a fresh
  signature, when its sweeper runs (never 410, which would switch the endpoint off).

Standard library only (``http.server``): one small POST per CRM write needs no framework.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from coulisse.webhooks.events import PayloadError, parse_delivery
from coulisse.webhooks.settings import RECEIVER_PATH
from coulisse.webhooks.signature import (
    DEFAULT_TOLERANCE_SECONDS,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from coulisse.webhooks.store import ChangeStore

logger = logging.getLogger("coulisse.webhooks")

#: A BottleCRM event is a few kilobytes; anything much bigger is not one.
MAX_BODY_BYTES = 1_000_000
_DELIVERY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class WebhookReceiver:
    """What the HTTP handler calls: the checks and the ledger write, without the socket."""

    def __init__(
        self,
        secret: str,
        store: ChangeStore,
        *,
        on_flagged: Callable[[], None] | None = None,
        tolerance: int = DEFAULT_TOLERANCE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self.store = store
        self.on_flagged = on_flagged or (lambda: None)
        self.tolerance = tolerance
        self.clock = clock

    def handle(
        self, signature: str | None, delivery_id: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        """Decide on one delivery: the HTTP status and a small JSON answer (never a secret)."""
        try:
            signed = verify(
                self._secret, signature, body, now=self.clock(), tolerance=self.tolerance
            )
        except SignatureError as exc:
            return HTTPStatus.UNAUTHORIZED, {"accepted": False, "reason": exc.reason}
        if not delivery_id or not _DELIVERY_ID.fullmatch(delivery_id):
            return HTTPStatus.BAD_REQUEST, {"accepted": False, "reason": "no_delivery_id"}
        try:
            delivery = parse_delivery(delivery_id, json.loads(body))
        except (ValueError, PayloadError):
            return HTTPStatus.BAD_REQUEST, {"accepted": False, "reason": "not_an_event"}
        signed_at = dt.datetime.fromtimestamp(signed, dt.UTC)
        try:
            fresh = self.store.record_delivery(delivery, signed_at=signed_at)
        except sa.exc.SQLAlchemyError:
            logger.exception("could not store delivery %s in the ledger", delivery_id)
            return HTTPStatus.SERVICE_UNAVAILABLE, {"accepted": False, "reason": "ledger"}
        if not fresh:
            return self._seen_before(delivery_id, signed_at)
        if delivery.records:
            self.on_flagged()
        return HTTPStatus.ACCEPTED, {"accepted": True, "flagged": len(delivery.records)}

    def _seen_before(self, delivery_id: str, signed_at: dt.datetime) -> tuple[int, dict[str, Any]]:
        """A delivery id accepted before: a replay, or BottleCRM retrying. Never flagged twice."""
        if self.store.first_signed_at(delivery_id) == signed_at:
            # The very request again, as anyone who captured it could send it: refused.
            return HTTPStatus.CONFLICT, {"accepted": False, "reason": "replayed"}
        # Signed anew with our secret: BottleCRM re-sending a delivery whose answer it missed.
        # A 2xx stops its retries.
        return HTTPStatus.OK, {"accepted": True, "duplicate": True, "flagged": 0}


class _Handler(BaseHTTPRequestHandler):
    receiver: ClassVar[WebhookReceiver]
    server_version = "coulisse-serve"
    sys_version = ""

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != RECEIVER_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"post deliveries to {RECEIVER_PATH}"})
            return
        raw_length = self.headers.get("Content-Length")
        if raw_length is None or not raw_length.isdigit():
            self._answer(HTTPStatus.LENGTH_REQUIRED, {"accepted": False, "reason": "length"})
            return
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"accepted": False})
            return
        body = self.rfile.read(length)
        delivery_id = self.headers.get(DELIVERY_HEADER)
        status, answer = self.receiver.handle(self.headers.get(SIGNATURE_HEADER), delivery_id, body)
        event = self.headers.get("X-BottleCRM-Event", "?")
        verdict = "accepted" if answer.get("accepted") else f"refused ({answer.get('reason')})"
        logger.info("delivery %s %s: %s %d", delivery_id or "-", event[:64], verdict, status)
        self._answer(status, answer)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(HTTPStatus.OK, {"ok": True})
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each delivery gets one line from do_POST, headers are never logged."""


def make_server(receiver: WebhookReceiver, host: str, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``receiver`` bound to ``host:port`` (0: any free port)."""
    handler = type("WebhookHandler", (_Handler,), {"receiver": receiver})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
