"""The Tryton JSON-RPC client: value round-trips, re-login, retries and Tryton's error arrays."""

from __future__ import annotations

import base64
import datetime
import json
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses

from coulisse.tryton.rpc import (
    TrytonAuthError,
    TrytonClient,
    TrytonConcurrencyError,
    TrytonServerError,
    TrytonUnavailableError,
    TrytonUserError,
    TrytonUserWarning,
    dumps,
    loads,
)

URL = "http://tryton.test"
RPC = f"{URL}/db/rpc/"


def body(call: Any) -> dict[str, Any]:
    return loads(call.request.body)  # type: ignore[no-any-return]


def ok(result: Any) -> dict[str, Any]:
    return {"json": {"id": 1, "result": json.loads(dumps(result))}}


def make_client(sleeps: list[float] | None = None) -> TrytonClient:
    return TrytonClient(
        URL,
        "db",
        "coulisse",
        "secret",
        timeout=5,
        max_retries=3,
        backoff=0.5,
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )


def add_login(rsps: responses.RequestsMock, session: str = "s1") -> None:
    rsps.add(
        responses.POST,
        RPC,
        match=[
            responses.matchers.json_params_matcher(
                {"method": "common.db.login"}, strict_match=False
            )
        ],
        json={"id": 1, "result": [7, session, None]},
    )


def add_preferences(rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.POST,
        RPC,
        match=[
            responses.matchers.json_params_matcher(
                {"method": "model.res.user.get_preferences"}, strict_match=False
            )
        ],
        json={"id": 1, "result": {"company": 1, "language": "fr"}},
    )


# -- values ------------------------------------------------------------------------------------


def test_tagged_values_round_trip_exactly() -> None:
    values = {
        "amount": Decimal("1234.56"),
        "rate": Decimal("0.055"),
        "day": datetime.date(2026, 2, 28),
        "at": datetime.datetime(2026, 2, 28, 13, 45, 7, 120),
        "time": datetime.time(9, 30),
        "delay": datetime.timedelta(days=30),
        "blob": b"\x00PDF",
        "text": "Société Générale — é",
    }
    assert loads(dumps(values)) == values


def test_tryton_tags_decode_to_python_values() -> None:
    answer = (
        '{"id": 3, "result": [{"total_amount": {"__class__": "Decimal", "decimal": "1200.10"},'
        ' "invoice_date": {"__class__": "date", "year": 2026, "month": 11, "day": 7},'
        ' "write_date": {"__class__": "datetime", "year": 2026, "month": 11, "day": 7,'
        ' "hour": 8, "minute": 5, "second": 1, "microsecond": 0}, "quantity": 2.5}]}'
    )
    (row,) = loads(answer)["result"]
    assert row["total_amount"] == Decimal("1200.10")
    assert isinstance(row["total_amount"], Decimal)
    assert row["invoice_date"] == datetime.date(2026, 11, 7)
    assert row["write_date"] == datetime.datetime(2026, 11, 7, 8, 5, 1)
    # JSON numbers are never floats: a quantity keeps its exact decimal value
    assert row["quantity"] == Decimal("2.5")


def test_datetime_is_not_sent_as_a_date() -> None:
    sent = json.loads(dumps([datetime.datetime(2026, 1, 2, 3, 4, 5)]))
    assert sent[0]["__class__"] == "datetime"
    assert sent[0]["hour"] == 3


def test_unknown_types_are_refused_before_sending() -> None:
    with pytest.raises(TypeError, match="cannot send"):
        dumps({"x": object()})


@responses.activate
def test_calls_send_tagged_decimals_and_the_session_header() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, **ok([42]))
    client = make_client()

    ids = client.create("party.party", [{"name": "Dupont", "credit_limit": Decimal("1500.00")}])

    assert ids == [42]
    create = responses.calls[-1]
    assert create.request.body is not None
    sent = json.loads(create.request.body)
    assert sent["method"] == "model.party.party.create"
    assert sent["params"][0] == [
        {"name": "Dupont", "credit_limit": {"__class__": "Decimal", "decimal": "1500.00"}}
    ]
    assert sent["params"][-1] == {"company": 1, "language": "fr"}  # the user's context
    scheme, token = create.request.headers["Authorization"].split(" ")
    assert scheme == "Session"
    assert base64.b64decode(token).decode() == "coulisse:7:s1"


@responses.activate
def test_login_posts_the_password_and_keeps_the_session() -> None:
    add_login(responses.mock, "abc")
    client = make_client()
    assert client.login() == 7
    sent = body(responses.calls[0])
    assert sent["params"] == ["coulisse", {"password": "secret"}]
    assert "Authorization" not in responses.calls[0].request.headers


# -- sessions ----------------------------------------------------------------------------------


@responses.activate
@pytest.mark.parametrize("status", [401, 403])
def test_expired_session_logs_in_again_once_and_repeats_the_call(status: int) -> None:
    add_login(responses.mock, "old")
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, status=status)  # the session expired
    add_login(responses.mock, "new")
    responses.add(responses.POST, RPC, **ok(3))
    client = make_client()

    assert client.search_count("account.invoice", []) == 3

    methods = [body(c)["method"] for c in responses.calls]
    assert methods == [
        "common.db.login",
        "model.res.user.get_preferences",
        "model.account.invoice.search_count",
        "common.db.login",
        "model.account.invoice.search_count",
    ]
    token = responses.calls[-1].request.headers["Authorization"].split(" ")[1]
    assert base64.b64decode(token).decode() == "coulisse:7:new"


@responses.activate
def test_refused_again_after_a_fresh_login_is_an_auth_error() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, status=403)
    add_login(responses.mock)
    responses.add(responses.POST, RPC, status=403)
    with pytest.raises(TrytonAuthError, match="even after a fresh login"):
        make_client().search_count("res.group", [])


@responses.activate
def test_wrong_password_says_which_settings_to_check() -> None:
    responses.add(responses.POST, RPC, status=401)
    with pytest.raises(TrytonAuthError, match="TRYTON_PASSWORD"):
        make_client().login()


# -- retries -----------------------------------------------------------------------------------


@responses.activate
def test_429_honours_retry_after_then_succeeds() -> None:
    add_login(responses.mock)
    responses.add(responses.POST, RPC, status=429, headers={"Retry-After": "7"})
    responses.add(responses.POST, RPC, status=503)
    responses.add(responses.POST, RPC, **ok({"company": 1}))
    sleeps: list[float] = []
    client = make_client(sleeps)
    client.login()
    assert client.context == {"company": 1}
    assert sleeps == [7.0, 1.0]  # Retry-After, then the backoff of the second attempt


@responses.activate
def test_connection_errors_are_retried_then_reported() -> None:
    responses.add(responses.POST, RPC, body=requests.ConnectionError("refused"))
    sleeps: list[float] = []
    with pytest.raises(TrytonUnavailableError, match="4 times"):
        make_client(sleeps).login()
    assert sleeps == [0.5, 1.0, 2.0]


@responses.activate
def test_a_write_that_timed_out_is_not_sent_twice() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, body=requests.ReadTimeout("slow"))
    client = make_client()
    with pytest.raises(TrytonUnavailableError, match="may or may not have been applied"):
        client.write("party.party", [1], {"name": "X"})
    assert len(responses.calls) == 3


@responses.activate
def test_a_read_that_timed_out_is_retried() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, body=requests.ReadTimeout("slow"))
    responses.add(responses.POST, RPC, **ok([{"id": 1, "name": "X"}]))
    rows = make_client().search_read("party.party", [], ["name"], limit=1)
    assert rows == [{"id": 1, "name": "X"}]


# -- Tryton's errors ---------------------------------------------------------------------------


def error(payload: Any) -> dict[str, Any]:
    return {"json": {"id": 1, "error": payload}}


@responses.activate
def test_user_error_keeps_message_and_description() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(
        responses.POST,
        RPC,
        **error(["UserError", ["Le numéro de TVA « FR123 » n'est pas valide.", "Corrigez-le."]]),
    )
    with pytest.raises(TrytonUserError) as caught:
        make_client().create("party.party", [{"name": "X"}])
    assert caught.value.message == "Le numéro de TVA « FR123 » n'est pas valide."
    assert caught.value.description == "Corrigez-le."
    assert str(caught.value) == "Le numéro de TVA « FR123 » n'est pas valide. - Corrigez-le."


@responses.activate
def test_user_warning_carries_its_key() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(
        responses.POST,
        RPC,
        **error(["UserWarning", ["abc.invoice_payment_term", "Due date in the past.", ""]]),
    )
    with pytest.raises(TrytonUserWarning) as caught:
        make_client().execute("account.invoice", "post", [1])
    assert caught.value.name == "abc.invoice_payment_term"
    assert isinstance(caught.value, TrytonUserError)


@responses.activate
def test_concurrency_and_server_errors_are_told_apart() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, **error(["ConcurrencyException", "Records were modified"]))
    responses.add(responses.POST, RPC, **error(["'res.user'", "Traceback..."]))
    client = make_client()
    with pytest.raises(TrytonConcurrencyError, match="read it again"):
        client.write(
            "party.party", [1], {"name": "X"}, context={"_timestamp": {"party.party,1": "t"}}
        )
    with pytest.raises(TrytonServerError) as caught:
        client.search_count("party.party", [])
    assert caught.value.traceback == "Traceback..."


@responses.activate
def test_wizard_calls_pass_session_data_state_and_context() -> None:
    add_login(responses.mock)
    add_preferences(responses.mock)
    responses.add(responses.POST, RPC, **ok([12, "start", "end"]))
    responses.add(responses.POST, RPC, **ok({}))
    client = make_client()
    context = {"active_model": "account.invoice", "active_id": 5, "active_ids": [5]}

    session, start, end = client.wizard_create("account.invoice.pay", context=context)
    client.wizard_execute(
        "account.invoice.pay", session, {"start": {"amount": Decimal("10.00")}}, "choice", context
    )

    assert (session, start, end) == (12, "start", "end")
    sent = body(responses.calls[-1])
    assert sent["method"] == "wizard.account.invoice.pay.execute"
    assert sent["params"][:3] == [12, {"start": {"amount": Decimal("10.00")}}, "choice"]
    assert sent["params"][3]["active_id"] == 5
    assert sent["params"][3]["company"] == 1
