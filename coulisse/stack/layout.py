"""Where the local stack keeps its virtualenvs, databases, logs, PID files and settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StackLayout:
    """Paths of one stack instance.

    Virtualenvs and prepared-database caches are shared by every instance under the project
    (they are slow to build and never change once built); data, logs and PID files belong to
    one instance, so the test suite's stack (``.stack/test``) never touches the demo's.

    >>> layout = StackLayout.from_env({"COULISSE_STACK_HOME": "/tmp/s"})
    >>> str(layout.data_dir)
    '/tmp/s/data'
    """

    root: Path
    home: Path
    env_file: Path

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StackLayout:
        """Build the layout from ``COULISSE_STACK_HOME`` and ``COULISSE_ENV_FILE``."""
        env = dict(os.environ if environ is None else environ)
        root = PROJECT_ROOT
        home = Path(env.get("COULISSE_STACK_HOME") or root / ".stack" / "demo")
        env_file = Path(env.get("COULISSE_ENV_FILE") or root / ".env")
        return cls(root=root, home=home.resolve(), env_file=env_file.resolve())

    @property
    def shared_dir(self) -> Path:
        """Virtualenvs and prepared databases, shared by all stack instances."""
        return self.root / ".stack"

    @property
    def venvs_dir(self) -> Path:
        return self.shared_dir / "venvs"

    @property
    def cache_dir(self) -> Path:
        """Prepared databases (SQLite files) and their version stamps."""
        return self.shared_dir / "cache"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        """PID files of the processes this instance started."""
        return self.home / "run"

    def ensure_dirs(self) -> None:
        for path in (self.venvs_dir, self.cache_dir, self.data_dir, self.log_dir, self.run_dir):
            path.mkdir(parents=True, exist_ok=True)
