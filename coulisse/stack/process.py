"""Start, watch and stop the stack's server processes by PID, and explain failures."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from coulisse.stack.errors import StackError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or a note that it is empty."""
    if not path.exists():
        return f"(no log at {path})"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or f"(log {path} is empty)"


@dataclass(frozen=True)
class ManagedProcess:
    """A server process that ``stack up`` starts and ``stack down`` stops, known by its PID file.

    Only a PID this stack wrote is ever signalled, and only while that process still runs the
    command line we started (a PID reused by another program is left alone).
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str  # a string the process's command line contains, checked before any signal

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        """The PID of our running process, or None."""
        pid = self._pid_from_file()
        if pid is None:
            return None
        try:
            cmdline = (
                open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()  # noqa: PTH123, SIM115
            )
        except OSError:
            return None
        return pid if self.marker in cmdline else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
        """Start the process detached from our terminal, logging to ``log_file``."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop our process (SIGTERM, then SIGKILL); False when it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            _reap(pid)
            time.sleep(0.1)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def wait_until_ready(
        self,
        probe: Callable[[], bool],
        timeout: float,
        what: str,
    ) -> None:
        """Poll ``probe`` until it answers True; fail with the log's tail if it never does."""
        deadline = time.monotonic() + timeout
        started = self._pid_from_file()
        while time.monotonic() < deadline:
            # Liveness by PID, not by command line: right after fork, before exec, the child
            # still shows our own command line.
            if started is None or _exited(started):
                raise StackError(
                    f"{what} exited while starting. Last lines of {self.log_file}:\n"
                    f"{tail(self.log_file)}"
                )
            if probe():
                return
            time.sleep(0.3)
        raise StackError(
            f"{what} did not answer within {timeout:.0f} s. Last lines of {self.log_file}:\n"
            f"{tail(self.log_file)}"
        )


def _exited(pid: int) -> bool:
    """True when ``pid`` has ended (reaping it if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")  # noqa: PTH110
    return done == pid


def _reap(pid: int) -> None:
    """Collect a child that exited, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers with any HTTP status below 500."""
    try:
        return requests.get(url, timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def run_checked(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, what: str, log_file: Path
) -> str:
    """Run a set-up command to completion; on failure raise with the tail of its output."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True, check=False
    )
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise StackError(
            f"{what} failed (exit {result.returncode}). Last lines (full log: {log_file}):\n"
            + "\n".join(output[-25:])
        )
    return result.stdout
