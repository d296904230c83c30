"""`coulisse serve` as an operator starts it: settings, a real process, a real socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import requests
from typer.testing import CliRunner

from coulisse.cli import app
from coulisse.ledger import Ledger
from coulisse.webhooks.signature import sign
from coulisse.webhooks.store import ChangeStore
from tests.webhooks.conftest import SECRET, account_event

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_secret_is_a_clear_error_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    env_file = tmp_path / ".env"
    env_file.write_text(f"COULISSE_LEDGER_URL=sqlite:///{tmp_path / 'l.sqlite'}\n")
    monkeypatch.setenv("COULISSE_ENV_FILE", str(env_file))
    monkeypatch.delenv("COULISSE_WEBHOOK_SECRET", raising=False)
    result = CliRunner().invoke(app, ["serve", "--no-run"])
    assert result.exit_code == 1
    assert "COULISSE_WEBHOOK_SECRET is not set" in result.output
    assert "coulisse stack up" in result.output


def test_coulisse_serve_flags_a_signed_delivery_and_never_prints_the_secret(tmp_path: Path):
    port = _free_port()
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    env_file = tmp_path / ".env"
    env_file.write_text(f"COULISSE_WEBHOOK_SECRET={SECRET}\nCOULISSE_LEDGER_URL={ledger_url}\n")
    env = {**os.environ, "COULISSE_ENV_FILE": str(env_file), "COULISSE_WEBHOOK_PORT": str(port)}
    env.pop("COULISSE_WEBHOOK_SECRET", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "coulisse.cli", "serve", "--no-run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "coulisse serve never listened"
                time.sleep(0.1)
        account = str(uuid.uuid4())
        body = account_event(account)
        delivery = str(uuid.uuid4())
        headers = {
            "X-BottleCRM-Delivery": delivery,
            "X-BottleCRM-Event": "account.updated",
            "X-BottleCRM-Signature": sign(SECRET, int(time.time()), body),
        }
        url = f"http://127.0.0.1:{port}/bottlecrm"
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 202
        assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 409
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    ledger = Ledger.open(ledger_url)
    try:
        (flag,) = ChangeStore(ledger.engine).pending()
    finally:
        ledger.close()
    assert (flag.entity, flag.crm_id, flag.delivery_id) == ("client", account, delivery)
    assert f"delivery {delivery} account.updated: accepted 202" in output
    assert "refused (replayed) 409" in output
    assert SECRET not in output
    assert "flag only" in output
