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

#: Settings the demo's .env holds. Nothing in a test session may take them from the project's
#: .env (singer-sdk's parse_env_config loads it into os.environ): the live tests would then
#: talk to the demo's CRM, ERP and ledger instead of their own.
DEMO_SETTINGS = (
    "BOTTLECRM_API_URL",
    "BOTTLECRM_API_TOKEN",
    "TRYTON_URL",
    "TRYTON_DATABASE",
    "TRYTON_USERNAME",
    "TRYTON_PASSWORD",
    "TRYTON_APPLICATION_KEY",
    "TRYTON_ADMIN_PASSWORD",
    "COULISSE_LEDGER_URL",
    "MELTANO_DATABASE_URI",
)
for _key in DEMO_SETTINGS:
    os.environ.pop(_key, None)


@pytest.fixture(autouse=True)
def _no_demo_settings_leak() -> Iterator[None]:
    """Fail the test that loads the project's .env into the environment."""
    yield
    leaked = [key for key in DEMO_SETTINGS if key in os.environ]
    for key in leaked:
        os.environ.pop(key, None)
    assert not leaked, f"a test loaded {leaked} into os.environ (parse_env_config=True?)"


SEED_CLIENTS = 40


#: Tests that check the seeded data as the seed made it: they run before any test that adds,
#: pays or posts records in the live systems.
SEED_READERS = (
    "tests/stack/test_live_stack.py",
    "tests/taps/test_tap_bottlecrm.py",
    "tests/taps/test_tap_tryton.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Seed readers first; end-to-end syncs, which change both systems, last."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("e2e") is not None,
            not item.nodeid.startswith(SEED_READERS),
        )
    )


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
