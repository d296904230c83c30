"""Read and update the git-ignored ``.env`` file that holds connection settings and secrets."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from coulisse.stack.locks import file_lock

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY=value`` lines; blank lines and ``#`` comments are ignored."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def update_env_file(path: Path, updates: Mapping[str, str]) -> None:
    """Set ``updates`` in the file, keeping every other line as it was; the file stays private.

    The file is written to a temporary name and renamed, so a crash never leaves half a file,
    and the read-modify-write holds a lock: the CRM and the ERP are prepared in parallel and
    both store their secrets here.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f"{path.name}.lock")):
        _update(path, updates)


def _update(path: Path, updates: Mapping[str, str]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(updates)
    out: list[str] = []
    for raw in lines:
        key = (
            raw.split("=", 1)[0].strip() if "=" in raw and not raw.lstrip().startswith("#") else ""
        )
        if key in pending:
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(raw)
    if pending and not lines:
        out.append("# Written by `coulisse stack up`: connection settings of the local stack.")
        out.append("# Secrets live here only; this file is git-ignored. Never commit it.")
    out.extend(f"{key}={value}" for key, value in pending.items())
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(out) + "\n")
    tmp.replace(path)
