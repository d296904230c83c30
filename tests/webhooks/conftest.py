"""Fixtures for the webhook tests: a migrated ledger of their own and a signed delivery."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from coulisse.ledger import Ledger
from coulisse.webhooks.store import ChangeStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SECRET = "whsec_" + "k" * 43


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield opened
    opened.close()


@pytest.fixture
def store(ledger: Ledger) -> ChangeStore:
    return ChangeStore(ledger.engine)


def account_event(account_id: str | None = None, event: str = "account.updated") -> bytes:
    """A body as BottleCRM serialises it (webhooks/tasks.py: compact JSON of the envelope)."""
    document: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "event": event,
        "created_at": "2025-03-01T10:00:00.000000+00:00",
        "org_id": str(uuid.uuid4()),
        "data": {
            "id": account_id or str(uuid.uuid4()),
            "name": "Boulangerie Éclair",
            "email": "contact@eclair.example",
            "updated_at": "2025-03-01T10:00:00.000000+00:00",
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()
