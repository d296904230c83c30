"""One targeted sync at a time for the records webhooks flagged, a moment after they arrive.

A CRM write often comes in bursts (an account and its contact, a deal and its line items), each
a delivery; waiting ``debounce`` seconds after the first one gathers a burst into one run. Only
this thread starts runs, and each run takes the ledger's run lock, so a webhook-triggered run
never overlaps another sync (CLI, Prefect): when the lock is busy the flags wait and the trigger
tries again. A flag is marked consumed only after a run that started after it was written
succeeded; flags written during a run wait for the next one.
"""

from __future__ import annotations

import enum
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from coulisse.webhooks.store import ChangeStore, CrmChange

logger = logging.getLogger("coulisse.webhooks")


class Outcome(enum.Enum):
    """How a run for some flags ended."""

    DONE = "done"  # observed (and synced): the flags are consumed
    BUSY = "busy"  # another run holds the lock: try again soon
    FAILED = "failed"  # the run failed: try again later, with a growing pause


class SyncTrigger:
    """A background thread: wait for flags, debounce, run, mark consumed; retry when needed."""

    def __init__(
        self,
        store: ChangeStore,
        #: Runs the sync for some flags; returns how it ended and the run's name for the ledger.
        runner: Callable[[Sequence[CrmChange]], tuple[Outcome, str]],
        *,
        debounce: float = 1.0,
        busy_retry: float = 3.0,
        failure_backoff: float = 30.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.store = store
        self.runner = runner
        self.debounce = debounce
        self.busy_retry = busy_retry
        self.failure_backoff = failure_backoff
        self.max_backoff = max_backoff
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="coulisse-sync-trigger")
        self.runs = 0

    def notify(self) -> None:
        """Something was flagged (called by the receiver; returns at once)."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread; flags left pending from before (a restart) are run at once."""
        self._wake.set()
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the run in progress, if any."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        retry_in: float | None = None
        failures = 0
        while not self._stop.is_set():
            woken = self._wake.wait(retry_in)
            if self._stop.is_set():
                return
            if woken and self._stop.wait(self.debounce):
                return
            self._wake.clear()
            try:
                outcome = self._run_pending()
            except Exception:  # the thread must outlive a broken run or ledger hiccup
                logger.exception("the webhook-triggered run failed")
                outcome = Outcome.FAILED
            if outcome is Outcome.FAILED:
                failures += 1
                retry_in = min(self.failure_backoff * 2 ** (failures - 1), self.max_backoff)
            elif outcome is Outcome.BUSY:
                retry_in = self.busy_retry
            else:
                failures, retry_in = 0, None

    def _run_pending(self) -> Outcome:
        changes = self.store.pending()
        if not changes:
            return Outcome.DONE
        outcome, consumed_by = self.runner(changes)
        self.runs += 1
        if outcome is Outcome.DONE:
            self.store.mark_consumed([c.id for c in changes], consumed_by=consumed_by)
        return outcome
