"""Find the Python interpreters the two systems' virtualenvs need.

BottleCRM (Django 6) needs Python 3.12 or newer; Tryton 8.2 runs on the 3.11 Coulisse itself
uses. Each search honours a setting first, then PATH (a pyenv shim that is not activated fails
its check and is skipped), pyenv's versions and the system's usual places.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from coulisse.stack.errors import StackError


def _works(candidate: str, minimum: tuple[int, int], maximum: tuple[int, int]) -> bool:
    check = f"import sys, venv; print({minimum} <= sys.version_info[:2] <= {maximum})"
    try:
        result = subprocess.run(
            [candidate, "-c", check],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def find_python(
    *,
    minimum: tuple[int, int],
    maximum: tuple[int, int],
    setting: str,
    purpose: str,
) -> str:
    """A working interpreter with venv between ``minimum`` and ``maximum`` (inclusive)."""
    wanted = f"Python {minimum[0]}.{minimum[1]}" + (
        "" if minimum == maximum else f" to {maximum[0]}.{maximum[1]}"
    )
    explicit = os.environ.get(setting)
    if explicit:
        if _works(explicit, minimum, maximum):
            return explicit
        raise StackError(
            f"{setting}={explicit} is not a working {wanted} with venv. Point it at one, or "
            "unset it to let Coulisse search."
        )
    versions = [f"3.{minor}" for minor in range(minimum[1], maximum[1] + 1)]
    candidates = [found for v in versions if (found := shutil.which(f"python{v}"))]
    if minimum <= sys.version_info[:2] <= maximum:
        candidates.append(sys.executable)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for version in versions:
        candidates += sorted(str(p) for p in pyenv_root.glob(f"versions/{version}*/bin/python3"))
        candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for candidate in candidates:
        if Path(candidate).exists() and _works(candidate, minimum, maximum):
            return candidate
    first = versions[0]
    raise StackError(
        f"{purpose}, and no {wanted} was found (looked at python{first} on PATH, pyenv "
        f"versions, /usr/bin). Install one (e.g. `apt-get install python{first}-venv` or "
        f"`pyenv install {first}`), or set {setting}=/path/to/python{first}."
    )


def find_python312() -> str:
    """The Python for BottleCRM's virtualenv (``COULISSE_PYTHON312`` first)."""
    return find_python(
        minimum=(3, 12),
        maximum=(3, 13),
        setting="COULISSE_PYTHON312",
        purpose="BottleCRM (django-crm 1.35, Django 6) needs Python 3.12 or newer",
    )


def find_python311() -> str:
    """The Python for Tryton's virtualenv (``COULISSE_PYTHON311`` first)."""
    return find_python(
        minimum=(3, 11),
        maximum=(3, 11),
        setting="COULISSE_PYTHON311",
        purpose="Tryton 8.2 runs in its own Python 3.11 virtualenv",
    )
