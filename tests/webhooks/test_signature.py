"""The signature check against real HMAC-SHA256, made the way BottleCRM makes it."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from coulisse.webhooks.signature import SignatureError, parse_header, sign, verify
from tests.webhooks.conftest import SECRET, account_event


def crm_sign(secret: str, timestamp: int, body: bytes) -> str:
    """BottleCRM's own code (webhooks/tasks.py: sign), copied as it is."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def test_a_delivery_signed_as_the_crm_signs_is_accepted() -> None:
    body = account_event()
    now = int(time.time())
    assert sign(SECRET, now, body) == crm_sign(SECRET, now, body)
    assert verify(SECRET, crm_sign(SECRET, now, body), body) == now


def test_a_tampered_body_is_refused() -> None:
    body = account_event()
    header = crm_sign(SECRET, int(time.time()), body)
    tampered = body.replace(b"Boulangerie", b"Boucherie")
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, header, tampered)
    assert refused.value.reason == "mismatch"


def test_a_tampered_timestamp_is_refused() -> None:
    body = account_event()
    now = int(time.time())
    digest = crm_sign(SECRET, now - 1000, body).split("v1=")[1]
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, f"t={now},v1={digest}", body)
    assert refused.value.reason == "mismatch"


def test_another_secret_is_refused_and_never_shown() -> None:
    body = account_event()
    header = crm_sign("whsec_someone-else", int(time.time()), body)
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, header, body)
    assert refused.value.reason == "mismatch"
    assert SECRET not in str(refused.value)
    assert hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest() not in str(refused.value)


@pytest.mark.parametrize("header", [None, ""])
def test_an_unsigned_delivery_is_refused(header: str | None) -> None:
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, header, account_event())
    assert refused.value.reason == "unsigned"


@pytest.mark.parametrize("header", ["v1=abc", "t=12", "t=soon,v1=abc", "sha256=abc"])
def test_a_malformed_signature_is_refused(header: str) -> None:
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, header, account_event())
    assert refused.value.reason == "malformed"


def test_a_delivery_older_than_five_minutes_is_refused_younger_is_not() -> None:
    body = account_event()
    now = time.time()
    fresh = crm_sign(SECRET, int(now) - 290, body)
    assert verify(SECRET, fresh, body, now=now) == int(now) - 290
    stale = crm_sign(SECRET, int(now) - 301, body)
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, stale, body, now=now)
    assert refused.value.reason == "expired"


def test_a_delivery_signed_far_in_the_future_is_refused() -> None:
    body = account_event()
    now = time.time()
    with pytest.raises(SignatureError) as refused:
        verify(SECRET, crm_sign(SECRET, int(now) + 600, body), body, now=now)
    assert refused.value.reason == "expired"


def test_any_of_several_digests_may_match_during_a_secret_rotation() -> None:
    body = account_event()
    now = int(time.time())
    old = crm_sign("whsec_old", now, body).split("v1=")[1]
    header = f"{crm_sign(SECRET, now, body)},v1={old}"
    assert parse_header(header) == (now, [header.split(",")[1][3:], old])
    assert verify(SECRET, header, body) == now
