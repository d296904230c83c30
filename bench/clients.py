"""Benchmark: clients both ways through the real local BottleCRM and Tryton, then a no-change run.

Runs its own stack (databases ``coulisse_bench_*`` on the local PostgreSQL, ports 8680/8681,
folder ``.stack/coulisse_bench``), so it never touches the demo's or the tests'. It seeds N
clients (no deals, no invoices: this measures clients), runs ``coulisse sync`` once (the first
day: link, create both ways, mirror the ERP status), then once more with nothing changed, and
prints for each run: wall time and per step, records per second per direction, API calls per
record (reads and writes apart, counted from the servers' own request logs), and peak memory.

    .venv/bin/python bench/clients.py                 # 10,000 clients
    .venv/bin/python bench/clients.py --clients 2000 --keep
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "coulisse_bench"
os.environ.update(
    {
        "COULISSE_STACK_HOME": str(ROOT / ".stack" / NAME),
        "COULISSE_ENV_FILE": str(ROOT / ".stack" / NAME / ".env"),
        "COULISSE_STACK_NAME": NAME,
        "COULISSE_CRM_PORT": "8680",
        "COULISSE_ERP_PORT": "8681",
        "COULISSE_STACK_DATABASE_URL": os.environ.get(
            "COULISSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432"
        ),
    }
)
for key in ("COULISSE_LEDGER_URL", "MELTANO_DATABASE_URI", "BOTTLECRM_API_URL", "TRYTON_URL"):
    os.environ.pop(key, None)

from coulisse.stack.crm_seed import seed_crm  # noqa: E402
from coulisse.stack.erp_seed import seed_erp  # noqa: E402
from coulisse.stack.layout import StackLayout  # noqa: E402
from coulisse.stack.local import LocalStack  # noqa: E402
from coulisse.stack.seed_data import build_seed_data  # noqa: E402
from coulisse.stack.seeding import erp_catalogue  # noqa: E402
from coulisse.stack.settings import StackSettings  # noqa: E402
from coulisse.sync import sync  # noqa: E402

CRM_REQUEST = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) /api/')
ERP_CALL = re.compile(r"trytond\.protocols\.dispatcher ([a-z_.]+)\.([a-z_]+)\(")
ERP_READS = {"search", "search_read", "search_count", "read", "fields_get", "default_get"}


@dataclass
class Calls:
    """API calls counted from a server's request log between two offsets."""

    reads: int = 0
    writes: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


def _offset(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _new_lines(path: Path, since: int) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(since)
        return handle.read().decode("utf-8", errors="replace").splitlines()


def crm_calls(log: Path, since: int) -> Calls:
    calls = Calls()
    for line in _new_lines(log, since):
        if match := CRM_REQUEST.search(line):
            method = match.group(1)
            calls.by_method[method] = calls.by_method.get(method, 0) + 1
            if method == "GET":
                calls.reads += 1
            else:
                calls.writes += 1
    return calls


def erp_calls(log: Path, since: int) -> Calls:
    calls = Calls()
    for line in _new_lines(log, since):
        if match := ERP_CALL.search(line):
            method = match.group(2)
            key = f"{match.group(1)}.{method}"
            calls.by_method[key] = calls.by_method.get(key, 0) + 1
            if method in ERP_READS or method.startswith(("get_", "search")):
                calls.reads += 1
            else:
                calls.writes += 1
    return calls


def peak_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child process, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def measure(stack: LocalStack, label: str, clients: int) -> dict[str, object]:
    crm_log, erp_log = stack.crm.process.log_file, stack.erp.process.log_file
    crm_from, erp_from = _offset(crm_log), _offset(erp_log)
    started = time.monotonic()
    result = sync(("client",))
    wall = time.monotonic() - started
    crm, erp = crm_calls(crm_log, crm_from), erp_calls(erp_log, erp_from)
    applied = result.applied
    steps = ", ".join(f"{s['step']} {s['seconds']:.1f} s" for s in result.steps)
    to_erp, to_crm = applied.get("erp", 0), applied.get("crm", 0)
    apply_erp = sum(float(s["seconds"]) for s in result.steps if s["step"] == "apply-erp")
    apply_crm = sum(float(s["seconds"]) for s in result.steps if s["step"] == "apply-crm")
    own, children = peak_mb()
    print(f"\n== {label}: {clients} clients, wall {wall:.1f} s ({steps})")
    if result.plan is not None:
        plan = result.plan.to_dict()
        print(
            f"   plan: linked {plan['linked']}, quarantined {plan['quarantined']}, "
            f"reviews {plan['reviews']}, conflicts {plan['conflicts']}, systems {plan['systems']}"
        )
    print(
        f"   CRM -> ERP: {to_erp} writes applied"
        + (f", {to_erp / apply_erp:.0f} records/s in apply-erp" if to_erp and apply_erp else "")
    )
    print(
        f"   ERP -> CRM: {to_crm} writes applied"
        + (f", {to_crm / apply_crm:.0f} records/s in apply-crm" if to_crm and apply_crm else "")
    )
    print(f"   end to end: {clients / wall:.0f} clients/s")
    per = max(clients, 1)
    print(
        f"   CRM API: {crm.reads} reads ({crm.reads / per:.3f}/client), {crm.writes} writes "
        f"({crm.writes / per:.3f}/client) {crm.by_method}"
    )
    print(
        f"   ERP API: {erp.reads} reads ({erp.reads / per:.3f}/client), {erp.writes} writes "
        f"({erp.writes / per:.4f}/client)"
    )
    top = sorted(erp.by_method.items(), key=lambda kv: -kv[1])[:8]
    print(f"   ERP calls by method: {dict(top)}")
    print(f"   peak memory: coulisse {own:.0f} MB, largest tap/target/meltano {children:.0f} MB")
    return {"wall": wall, "crm_writes": crm.writes, "erp_writes": erp.writes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="leave the bench stack running")
    args = parser.parse_args()

    layout = StackLayout.from_env()
    stack = LocalStack(layout, StackSettings.load(layout), say=lambda m: print(f"  {m}"))
    print(f"bench stack: {layout.home} (fresh databases)")
    stack.forget_databases()
    stack.up()
    try:
        catalogue = erp_catalogue(stack)
        data = build_seed_data(catalogue, clients=args.clients, today=datetime.now(UTC).date())
        data = replace(data, deals=(), invoices=())
        started = time.monotonic()
        seed_erp(stack.erp.client(timeout=300), stack.erp.admin_client(), data)
        erp_seconds = time.monotonic() - started
        started = time.monotonic()
        report = seed_crm(
            stack.crm.client(),
            data,
            advisor_profile_ids=stack.advisor_profile_ids(),
            won_stage=stack.won_stage(),
        )
        crm_seconds = time.monotonic() - started
        print(
            f"seeded (set-up, not measured): {len(data.erp_clients)} ERP parties in "
            f"{erp_seconds:.0f} s, {report.accounts_created} CRM accounts with contacts in "
            f"{crm_seconds:.0f} s"
        )
        first = measure(stack, "initial sync", args.clients)
        second = measure(stack, "no-change sync", args.clients)
        share = float(second["wall"]) / float(first["wall"]) * 100  # type: ignore[arg-type]
        print(
            f"\nno-change run: {second['wall']:.1f} s = {share:.1f} % of the initial sync; "
            f"writes: CRM {second['crm_writes']}, ERP {second['erp_writes']}"
        )
    finally:
        if not args.keep:
            stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
