"""BottleCRM's webhook signature, checked exactly as the CRM makes it.

The CRM (``webhooks/tasks.py``: ``sign`` and ``build_request``) sends, with every delivery,
``X-BottleCRM-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`` where the HMAC's key is the
endpoint's secret (``whsec_...``) and its message is ``b"<unix seconds>." + body``: the exact
bytes of the body, so they are checked before any JSON parsing. The timestamp is signed too,
which is what makes a captured delivery useless after the tolerance: the CRM signs again, with
the current time, at every attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: Deliveries signed longer ago than this are refused (and as far in the future: clock skew).
DEFAULT_TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "X-BottleCRM-Signature"
DELIVERY_HEADER = "X-BottleCRM-Delivery"
EVENT_HEADER = "X-BottleCRM-Event"


class SignatureError(Exception):
    """A delivery whose signature does not prove it comes from our CRM, now.

    ``reason`` is a stable code for logs and answers (unsigned, malformed, mismatch, expired);
    the message never contains the secret or the expected digest.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value the CRM sends: ``t=<timestamp>,v1=<hex digest>`` (for tests and tools)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def parse_header(header: str) -> tuple[int, list[str]]:
    """The signed timestamp and the ``v1`` digests of a signature header, or SignatureError."""
    timestamp: int | None = None
    digests: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(
                    "malformed", "the signature's timestamp is not a number"
                ) from None
        elif key == "v1":
            digests.append(value.strip().lower())
    if timestamp is None or not digests:
        raise SignatureError("malformed", f"{SIGNATURE_HEADER} needs t=<unix time>,v1=<hex digest>")
    return timestamp, digests


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check a delivery's signature; return the signed timestamp, or raise SignatureError.

    The digest is compared in constant time. Freshness is checked after the digest, so an
    expired answer is only ever given to someone who holds the secret's signature.
    """
    if not header:
        raise SignatureError("unsigned", f"the delivery has no {SIGNATURE_HEADER} header")
    timestamp, digests = parse_header(header)
    expected = _digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in digests):
        raise SignatureError(
            "mismatch", "the signature does not match the body (tampered, or another secret)"
        )
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance:
        raise SignatureError(
            "expired", f"the delivery was signed {int(age)} s ago (more than {tolerance} s)"
        )
    if age < -tolerance:
        raise SignatureError(
            "expired", f"the delivery is signed {int(-age)} s in the future (clock skew?)"
        )
    return timestamp
