"""Find a working Python 3.12 for BottleCRM (Django 6 needs it; Coulisse itself runs on 3.11+)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from coulisse.stack.errors import StackError


def _works(candidate: str) -> bool:
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys, venv; print(sys.version_info[:2] >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def find_python312() -> str:
    """The path of a Python >= 3.12 interpreter with venv, or a StackError saying how to get one.

    Looks at ``COULISSE_PYTHON312`` first, then ``python3.12``/``python3.13`` on PATH (a pyenv
    shim that is not activated fails and is skipped), then pyenv's and the system's usual places.
    """
    explicit = os.environ.get("COULISSE_PYTHON312")
    if explicit:
        if _works(explicit):
            return explicit
        raise StackError(
            f"COULISSE_PYTHON312={explicit} is not a working Python >= 3.12 with venv. "
            "Point it at one, or unset it to let Coulisse search."
        )
    candidates: list[str] = [
        found for name in ("python3.12", "python3.13") if (found := shutil.which(name))
    ]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.1[2-9]*/bin/python3"))
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12", "/usr/bin/python3.13"]
    for candidate in candidates:
        if Path(candidate).exists() and _works(candidate):
            return candidate
    raise StackError(
        "BottleCRM (django-crm 1.35, Django 6) needs Python 3.12 or newer, and none was found "
        "(looked at python3.12 and python3.13 on PATH, pyenv versions, /usr/bin). Install one "
        "(e.g. `apt-get install python3.12-venv` or `pyenv install 3.12`), or set "
        "COULISSE_PYTHON312=/path/to/python3.12."
    )
