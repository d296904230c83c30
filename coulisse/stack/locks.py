"""A file lock so two `coulisse stack` commands never build the same prepared database at once."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

from coulisse.stack import postgres

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from coulisse.stack.layout import StackLayout
    from coulisse.stack.settings import StackSettings


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block's duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def prepare_lock(layout: StackLayout, settings: StackSettings, system: str) -> Iterator[None]:
    """Serialise the building of ``system``'s prepared database, across checkouts too."""
    shared = (
        postgres.advisory_lock(settings, f"coulisse-prepare-{system}")
        if settings.uses_postgres
        else nullcontext()
    )
    with file_lock(layout.cache_dir / f"{system}-prepare.lock"), shared:
        yield
