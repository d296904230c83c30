"""Test-session set-up: the suite's own local stack (ports, databases, folder), prepared once.

The suite never touches the demo's stack: it runs its own BottleCRM and Tryton on ports 8620 and
8630, with databases prefixed ``coulisse_test`` on the local PostgreSQL (the production-like
configuration; ``COULISSE_TEST_DATABASE_URL`` points elsewhere), under ``.stack/test``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from coulisse.stack.local import LocalStack

ROOT = Path(__file__).resolve().parents[1]
# Several suites may run side by side (two developers' branches, a helper): each names its own
# stack with COULISSE_TEST_STACK (databases, folder) and COULISSE_TEST_PORTS ("crm,erp").
_NAME = os.environ.get("COULISSE_TEST_STACK", "coulisse_test")
_CRM_PORT, _ERP_PORT = os.environ.get("COULISSE_TEST_PORTS", "8620,8630").split(",")
TEST_STACK_ENV = {
    "COULISSE_STACK_HOME": str(ROOT / ".stack" / _NAME),
    "COULISSE_ENV_FILE": str(ROOT / ".stack" / _NAME / ".env"),
    "COULISSE_STACK_NAME": _NAME,
    "COULISSE_CRM_PORT": _CRM_PORT,
    "COULISSE_ERP_PORT": _ERP_PORT,
    "COULISSE_STACK_DATABASE_URL": os.environ.get(
        "COULISSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"
    ),
}
os.environ.update(TEST_STACK_ENV)

SEED_CLIENTS = 40


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end syncs change both systems: they run after every test that reads the seed."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


@dataclass
class LiveStack:
    stack: LocalStack
    seed_report: dict[str, Any]


@pytest.fixture(scope="session")
def live() -> Iterator[LiveStack]:
    """Both systems up from their prepared databases and seeded, once per test session."""
    from coulisse.stack.layout import StackLayout
    from coulisse.stack.local import LocalStack
    from coulisse.stack.seeding import seed_stack
    from coulisse.stack.settings import StackSettings

    layout = StackLayout.from_env()
    stack = LocalStack(layout, StackSettings.load(layout), say=print)
    stack.forget_databases()
    try:
        stack.up()
        report = seed_stack(stack, clients=SEED_CLIENTS)
        yield LiveStack(stack=stack, seed_report=report)
    finally:
        stack.down()
