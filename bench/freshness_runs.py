"""The runs that deliver changes: the served ``sync`` deployment's flow runs as the Prefect
server recorded them, and the targeted syncs `coulisse serve` logged.

Flow runs are read through the server's REST API (``/api/flow_runs/filter`` and friends) with
plain requests, so the benchmark's own process neither imports Prefect nor shares its settings.
A run is *idle* when it published the flow's "An idle cycle" artifact (its change check found
nothing, no Meltano job started); *Skipped* when it waited for the run lock in vain.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

#: The description the flow gives the artifact of a run that found nothing to do.
IDLE_ARTIFACT = "An idle cycle"
#: What the flow logs when another sync holds the ledger's run lock (it then waits).
LOCK_WAIT_LOG = "holds the run lock"
#: The flow's steps, by the start of their task run names ("plan-3dc", "apply-crm").
STEPS = ("change-check", "observe-erp", "observe", "plan", "apply-erp", "apply-crm")
PAGE = 200


@dataclass(frozen=True)
class FlowRun:
    """One run of the deployment: when it was due, when it ran, how it ended."""

    id: str
    name: str
    state_type: str
    state_name: str
    expected_start: dt.datetime | None
    start: dt.datetime | None
    end: dt.datetime | None
    idle: bool = False

    @property
    def finished(self) -> bool:
        return self.state_type in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    @property
    def running(self) -> bool:
        return self.state_type in {"RUNNING", "PENDING", "CANCELLING"}

    @property
    def seconds(self) -> float | None:
        """Prefect's own wall time of the run: from its Running state to its end."""
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()

    @property
    def late(self) -> float | None:
        """How long after the time the schedule set for it the run started."""
        if self.expected_start is None or self.start is None:
            return None
        return max(0.0, (self.start - self.expected_start).total_seconds())


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _seconds(row: dict[str, Any]) -> float | None:
    start, end = _time(row.get("start_time")), _time(row.get("end_time"))
    return None if start is None or end is None else (end - start).total_seconds()


class PrefectRuns:
    """Queries on one Prefect server's API about the ``sync`` flow's runs."""

    def __init__(self, api_url: str) -> None:
        self.api = api_url.rstrip("/")
        self.http = requests.Session()

    def _post(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.http.post(f"{self.api}/{path}", json=body, timeout=30)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    def _paged(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            rows = self._post(path, {**body, "limit": PAGE, "offset": len(found)})
            found.extend(rows)
            if len(rows) < PAGE:
                return found

    def flow_runs(self, since: dt.datetime) -> list[FlowRun]:
        """The flow runs that started at or after ``since``, in start order, classified.

        By start, not by schedule: once a run overruns, the served deployment works through
        a backlog of *Late* runs oldest first, so a run may start minutes after its time.
        """
        rows = self._paged(
            "flow_runs/filter",
            {
                "flow_runs": {"start_time": {"after_": since.isoformat()}},
                "sort": "START_TIME_ASC",
            },
        )
        idle = self._idle_ids([str(r["id"]) for r in rows if r.get("state_type") == "COMPLETED"])
        return [
            FlowRun(
                id=str(r["id"]),
                name=str(r["name"]),
                state_type=str(r.get("state_type") or ""),
                state_name=str(r.get("state_name") or ""),
                expected_start=_time(r.get("expected_start_time")),
                start=_time(r.get("start_time")),
                end=_time(r.get("end_time")),
                idle=str(r["id"]) in idle,
            )
            for r in rows
        ]

    def _idle_ids(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        artifacts = self._paged(
            "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": list(run_ids)}}}
        )
        return {str(a["flow_run_id"]) for a in artifacts if a.get("description") == IDLE_ARTIFACT}

    def _task_runs(self, run_ids: Iterable[str], name: str | None = None) -> list[dict[str, Any]]:
        ids = list(run_ids)
        if not ids:
            return []
        body: dict[str, Any] = {"flow_runs": {"id": {"any_": ids}}}
        if name is not None:
            body["task_runs"] = {"name": {"like_": name}}
        return self._paged("task_runs/filter", body)

    def change_checks(self, run_ids: Iterable[str]) -> list[float]:
        """Seconds each of these runs spent in its ``change-check`` task, by Prefect's clock."""
        return [
            seconds
            for row in self._task_runs(run_ids, "change-check")
            if (seconds := _seconds(row)) is not None
        ]

    def steps(self, run_ids: Iterable[str]) -> dict[str, list[float]]:
        """Per step of the flow, the seconds its task runs took in these runs."""
        found: dict[str, list[float]] = {}
        for row in self._task_runs(run_ids):
            name = str(row.get("name") or "")
            step = next((s for s in STEPS if name.startswith(s)), None)
            seconds = _seconds(row)
            if step is not None and seconds is not None:
                found.setdefault(step, []).append(seconds)
        return found

    def waited_for_lock(self, run_ids: Iterable[str]) -> set[str]:
        """Those of these runs that found the run lock taken and waited for it."""
        ids = list(run_ids)
        if not ids:
            return set()
        rows = self._paged(
            "logs/filter",
            {"logs": {"flow_run_id": {"any_": ids}, "text": {"query": f'"{LOCK_WAIT_LOG}"'}}},
        )
        return {str(r["flow_run_id"]) for r in rows if LOCK_WAIT_LOG in str(r.get("message"))}

    def backlog(self) -> int:
        """Runs the schedule created that are due and not started (Prefect's *Late* runs)."""
        response = self.http.post(
            f"{self.api}/flow_runs/count",
            json={"flow_runs": {"state": {"name": {"any_": ["Late"]}}}},
            timeout=30,
        )
        response.raise_for_status()
        return int(response.json())

    def covering(self, at: dt.datetime, since: dt.datetime) -> FlowRun | None:
        """The run under way at ``at`` (what a change seen then was delivered by), if any."""
        for run in self.flow_runs(since):
            if run.start is not None and run.start <= at and (run.end is None or run.end >= at):
                return run
        return None

    def wait_for_idle_run(
        self,
        after: dt.datetime,
        timeout: float,
        also: Callable[[], bool] = lambda: True,
    ) -> FlowRun | None:
        """Wait for a run that started after ``after`` and ended idle (and ``also()`` holds).

        That is a quiet system: every change so far was delivered and its echo read back.
        None when none came within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in reversed(self.flow_runs(after)):
                if run.idle and run.start is not None and run.start >= after and also():
                    return run
            time.sleep(1.0)
        return None


#: `coulisse serve`'s line for a finished targeted sync (coulisse/webhooks/runner.py).
TARGETED = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ targeted sync of \d+ flag\(s\) "
    r"\((?P<streams>[a-z,]+)\) done in (?P<total>[\d.]+) s: (?P<steps>[^;]*);"
)
STEP = re.compile(r"(?P<step>[a-z-]+) (?P<seconds>[\d.]+) s")


@dataclass(frozen=True)
class TargetedSync:
    """One `coulisse sync` that `coulisse serve` ran for webhook flags, from its log."""

    ended: dt.datetime
    streams: tuple[str, ...]
    seconds: float
    steps: dict[str, float]


def targeted_syncs(log: Path, since: dt.datetime) -> list[TargetedSync]:
    """The targeted syncs `coulisse serve` logged as finished since ``since``, in order.

    Its log stamps lines in the machine's local time, to the second.
    """
    if not log.exists():
        return []
    found = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = TARGETED.match(line)
        if match is None:
            continue
        ended = dt.datetime.fromisoformat(match["at"]).astimezone(dt.UTC)
        if ended < since:
            continue
        steps: dict[str, float] = {}
        for part in STEP.finditer(match["steps"]):
            steps[part["step"]] = steps.get(part["step"], 0.0) + float(part["seconds"])
        found.append(
            TargetedSync(
                ended=ended,
                streams=tuple(match["streams"].split(",")),
                seconds=float(match["total"]),
                steps=steps,
            )
        )
    return found
