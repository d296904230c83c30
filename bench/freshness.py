"""Benchmark: how soon each system shows a change made in the other, under the default schedule.

Runs the product as it runs in production, on a stack of its own (databases
``coulisse_freshness_*`` on the local PostgreSQL, ports 8720/8730, Prefect on 8723, `coulisse
serve` on 8725, folder ``.stack/coulisse_freshness``), so it never touches the demo's or the
tests' stacks: `stack up` from the prepared databases, `stack seed`, `flows up` (the served
``sync`` deployment every ``COULISSE_SYNC_INTERVAL`` s, default 15, with its change check) and
`coulisse serve` (the CRM's webhooks). Once the first sync has settled (a scheduled run finds
nothing to do), it measures:

- ERP -> CRM: N part payments recorded in Tryton, each timed until the CRM's invoice mirror
  shows the new amount due (aim: p95 under 30 s);
- CRM -> ERP: N billing-street edits through the CRM's API, each timed until the twin party in
  Tryton has it (aim: p95 under 10 s);
- the idle cycle: the wall time of the scheduled runs that found nothing to do, by Prefect's
  clock, and of the change check alone (aim: under 3 s).

Changes are independent: each waits for the previous one to land and for the system to be
quiet again (a scheduled run that found nothing, no webhook flag pending), then for a random
part of the interval, so that changes fall at every point of the schedule. A change not seen
within ``--timeout`` s counts as a timeout. Everything started is stopped at the end, Ctrl-C
included (``--keep`` leaves it running; ``--stop`` stops it later).

    .venv/bin/python bench/freshness.py                  # 20 changes each way
    .venv/bin/python bench/freshness.py --changes 3 --keep
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.freshness_stack import BenchPlace, BenchStack, configure, python_ok
from bench.freshness_stats import Report

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.freshness_changes import Sample

#: The aims of issue 6, in seconds.
AIM_ERP_TO_CRM = 30.0
AIM_CRM_TO_ERP = 10.0
AIM_IDLE = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Not part of `make test`. Prints p50, p95 and max against the aims.",
    )
    parser.add_argument("--changes", type=int, default=20, help="changes each way (20)")
    parser.add_argument("--name", default="coulisse_freshness", help="stack name (databases)")
    parser.add_argument("--crm-port", type=int, default=8720)
    parser.add_argument("--erp-port", type=int, default=8730)
    parser.add_argument(
        "--prefect-port", type=int, help="the Prefect server's port (default: CRM port + 3)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "COULISSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"
        ),
        help="the PostgreSQL server of the stack's databases",
    )
    parser.add_argument("--clients", type=int, default=40, help="seeded clients (40)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per change (120)")
    parser.add_argument(
        "--poll", type=float, default=0.5, help="pause between two polls, in seconds (0.5)"
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=240.0,
        help="seconds to wait for a quiet system between changes (240)",
    )
    parser.add_argument(
        "--idle-cycles", type=int, default=8, help="idle runs to watch at the end (8)"
    )
    parser.add_argument("--seed", type=int, default=6, help="random seed of the spacing")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the stack's databases and Prefect runs (after --keep): no new seed",
    )
    parser.add_argument("--keep", action="store_true", help="leave everything running")
    parser.add_argument(
        "--stop", action="store_true", help="only stop what an earlier --keep left running"
    )
    args = parser.parse_args(argv)
    if args.changes < 1:
        parser.error("--changes must be at least 1")
    return args


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that the clean-up runs either way."""

    def interrupted(_signum: int, _frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


class Bench:
    """The measuring loop around a running :class:`BenchStack`."""

    def __init__(self, bench: BenchStack, args: argparse.Namespace) -> None:
        from bench.freshness_runs import PrefectRuns

        self.bench = bench
        self.args = args
        self.runs = PrefectRuns(bench.prefect_api)
        self.random = random.Random(args.seed)
        self.report = Report(interval=bench.interval)

    def say(self, message: str) -> None:
        print(f"[{dt.datetime.now().astimezone():%H:%M:%S}] {message}", flush=True)

    def _no_flags_pending(self) -> bool:
        from coulisse.webhooks.store import ChangeStore

        ledger = self.bench.ledger()
        try:
            return ChangeStore(ledger.engine).count_pending() == 0
        finally:
            ledger.close()

    def quiet(self, since: dt.datetime, timeout: float) -> bool:
        """Wait for a scheduled run after ``since`` that found nothing, with no flag pending."""
        found = self.runs.wait_for_idle_run(since, timeout, also=self._no_flags_pending)
        if found is None:
            self.say(f"  (no idle scheduled run within {timeout:.0f} s: going on anyway)")
        return found is not None

    def settle(self) -> dt.datetime:
        """Wait for the first sync (run by the schedule itself) to settle; when it did."""
        from bench.freshness_changes import utc_now

        started = utc_now()
        self.say("waiting for the scheduled runs to do the first sync and settle...")
        if not self.quiet(started, timeout=1800):
            raise RuntimeError("the first sync never settled within 30 min: see the logs")
        busy = [
            f"{r.state_name} {r.seconds:.0f} s"
            for r in self.runs.flow_runs(started)
            if not r.idle and r.seconds is not None
        ]
        self.say(
            f"settled after {(utc_now() - started).total_seconds():.0f} s "
            f"(runs with work: {', '.join(busy) or 'none'})"
        )
        return utc_now()

    def space(self) -> None:
        """A random part of the interval: changes fall at every phase of the schedule."""
        time.sleep(self.random.uniform(0, self.bench.interval))

    def series(
        self,
        label: str,
        change: Callable[[int], Sample],
        after: Callable[[Sample], None],
    ) -> list[Sample]:
        """Make the changes one by one, each once the system is quiet after the previous one."""
        samples: list[Sample] = []
        for index in range(self.args.changes):
            self.space()
            sample = change(index)
            after(sample)
            shown = "TIMEOUT" if sample.seconds is None else f"{sample.seconds:5.1f} s"
            self.say(
                f"{label} {index + 1:2}/{self.args.changes}: {shown}  load {sample.load:.1f}  "
                f"{sample.what}" + (f"  [{sample.via}]" if sample.via else "")
            )
            samples.append(sample)
            self.quiet(sample.landed_at or sample.committed_at, self.args.quiet_timeout)
        return samples

    def erp_to_crm(self) -> list[Sample]:
        """Part payments in the ERP, each until the CRM's mirror shows it."""
        from bench.freshness_changes import ErpPayments, utc_now
        from bench.freshness_runs import targeted_syncs

        began = utc_now()
        payments = ErpPayments(self.bench.erp(), self.bench.crm(), self.args.changes)
        self.say(
            f"ERP -> CRM: {self.args.changes} part payments over {len(payments.invoices)} "
            "mirrored invoices"
        )
        delivering: list[str] = []

        def attribute(sample: Sample) -> None:
            if sample.landed_at is None:
                return
            run = self.runs.covering(sample.landed_at, sample.committed_at - dt.timedelta(hours=1))
            if run is None or run.start is None:
                sample.via = "no scheduled run under way"
                return
            waited = max(0.0, (run.start - sample.committed_at).total_seconds())
            sample.via = f"run {run.name}, started {waited:.1f} s after the payment"
            self.report.waits.append(waited)
            delivering.append(run.id)

        samples = self.series(
            "ERP -> CRM",
            lambda i: payments.pay(i, self.args.timeout, self.args.poll),
            attribute,
        )
        self.report.erp_steps = self.runs.steps(delivering)
        # The bench changed nothing in the CRM meanwhile: every targeted sync was an echo.
        self.report.echo_syncs = targeted_syncs(self.bench.receiver.log_file, began)
        return samples

    def crm_to_erp(self) -> list[Sample]:
        """Billing-street edits in the CRM, each until the ERP's party has it."""
        from bench.freshness_changes import CrmAccountEdits

        ledger = self.bench.ledger()
        try:
            edits = CrmAccountEdits(
                self.bench.erp(), self.bench.crm(), ledger, tag=uuid.uuid4().hex[:4]
            )
            self.say(
                f"CRM -> ERP: {self.args.changes} billing-street edits over "
                f"{len(edits.accounts)} linked accounts"
            )

            def attribute(sample: Sample) -> None:
                consumed_by = edits.delivered_by(
                    sample.record, sample.committed_at - dt.timedelta(seconds=1), 120
                )
                if consumed_by.startswith("coulisse serve"):
                    path = "coulisse serve"
                elif consumed_by.startswith("prefect"):
                    path = "a scheduled run"
                else:
                    path = consumed_by
                sample.via = f"flag consumed by {path}"
                self.report.paths.append(path)

            samples = self.series(
                "CRM -> ERP",
                lambda i: edits.edit(i, self.args.timeout, self.args.poll),
                attribute,
            )
        finally:
            ledger.close()
        self._match_targeted_syncs(samples)
        return samples

    def _match_targeted_syncs(self, samples: list[Sample]) -> None:
        """Each edit's targeted sync, from `coulisse serve`'s log (when serve delivered it)."""
        from bench.freshness_runs import targeted_syncs

        if not samples:
            return
        syncs = [
            s
            for s in targeted_syncs(self.bench.receiver.log_file, samples[0].committed_at)
            if "clients" in s.streams
        ]
        for sample in samples:
            if sample.landed_at is None or not sample.via.endswith("coulisse serve"):
                continue
            # The log line comes at the sync's end, stamped to the second.
            landed = sample.landed_at - dt.timedelta(seconds=1)
            sync = next((s for s in syncs if s.ended >= landed), None)
            if sync is None:
                continue
            self.report.crm_syncs.append(sync)
            started = sync.ended - dt.timedelta(seconds=sync.seconds)
            self.report.sync_starts.append((started - sample.committed_at).total_seconds())

    def idle_phase(self, since: dt.datetime) -> None:
        """Watch the schedule with nothing changing; time the change check called directly."""
        from bench.freshness_changes import utc_now

        start = utc_now()
        wanted = self.args.idle_cycles
        self.say(f"idle: watching {wanted} scheduled runs with nothing to do...")
        deadline = time.monotonic() + wanted * self.bench.interval * 4 + 60
        while time.monotonic() < deadline:
            if sum(1 for r in self.runs.flow_runs(start) if r.idle) >= wanted:
                break
            time.sleep(2)
        self.report.direct_checks = direct_change_checks(10)
        runs = self.runs.flow_runs(since)
        self.report.runs = runs
        idle = [r.id for r in runs if r.idle]
        self.report.check_tasks = self.runs.change_checks(idle)
        self.report.lock_waiters = self.runs.waited_for_lock(idle)
        self.report.backlog = self.runs.backlog()


def direct_change_checks(times: int) -> list[float]:
    """The change check alone, called here as the flow calls it (no full CRM read due)."""
    from coulisse.ledger import Ledger
    from coulisse.orchestration.changes import check_changes
    from coulisse.project import ledger_url, project_env
    from coulisse.sync import parse_only

    env = project_env()
    entities = parse_only(None)
    ledger = Ledger.open(ledger_url(env))
    seconds = []
    try:
        for _ in range(times):
            now = dt.datetime.now(dt.UTC)
            started = time.perf_counter()
            check_changes(
                ledger,
                env,
                entities,
                last_crm_reads=dict.fromkeys(entities, now),
                crm_read_every=dt.timedelta(minutes=10),
            )
            seconds.append(time.perf_counter() - started)
    finally:
        ledger.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    python_ok()
    place = BenchPlace(
        name=args.name,
        crm_port=args.crm_port,
        erp_port=args.erp_port,
        prefect_port=args.prefect_port or args.crm_port + 3,
    )
    configure(place, args.database_url)
    _stop_on_sigterm()
    bench = BenchStack(place, say=lambda m: print(f"  {m}", flush=True))
    if args.stop:
        bench.stop(everything=True)
        print(f"stopped what ran for stack {place.name}")
        return 0
    print(
        f"freshness bench: stack {place.name} in {place.home} (CRM :{place.crm_port}, ERP "
        f":{place.erp_port}, Prefect :{place.prefect_port}, webhooks :{place.receiver_port})"
    )
    try:
        bench.systems_up(fresh=not args.reuse)
        if not args.reuse:
            started = time.monotonic()
            seeded = bench.seed(args.clients)
            print(f"  seeded {seeded} in {time.monotonic() - started:.0f} s")
        bench.orchestration_up(fresh=not args.reuse)
        runner = Bench(bench, args)
        runner.say(
            f"served every {bench.interval:g} s (COULISSE_SYNC_INTERVAL default); "
            f"`coulisse serve` on :{place.receiver_port}"
        )
        since = runner.settle()
        runner.report.erp_to_crm = runner.erp_to_crm()
        runner.report.crm_to_erp = runner.crm_to_erp()
        runner.idle_phase(since)
        runner.report.print(
            changes=args.changes,
            timeout=args.timeout,
            aims=(AIM_ERP_TO_CRM, AIM_CRM_TO_ERP, AIM_IDLE),
        )
        print("logs: " + ", ".join(str(p) for p in bench.logs))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the bench started", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print("left running (--keep); stop it with the same options and --stop")
        else:
            bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
