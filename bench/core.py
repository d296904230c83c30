"""Benchmark of the sync core: N client records through target-ledger, the planner and tap-ledger.

Runs each step in its own process (as Meltano would) on SQLite and on PostgreSQL, plus a no-op
singer-sdk target reading the same input with the SDK's defaults, and prints records per second,
the ratio of target-ledger to the no-op target, and each step's peak memory (at a tenth of the
records too, to show that memory does not grow with the number of records).

    PYTHONPATH=. .venv/bin/python bench/core.py            # 100,000 records
    PYTHONPATH=. .venv/bin/python bench/core.py --records 20000 --no-postgres
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"

NOOP_TARGET = '''
"""A target that reads, validates and drops every record: the SDK's own cost."""
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink


class NoopSink(BatchSink):
    def process_batch(self, context):
        pass


class NoopTarget(Target):
    name = "target-noop"
    config_jsonschema = th.PropertiesList().to_dict()
    default_sink_class = NoopSink


NoopTarget.cli()
'''


def _luhn_siren(number: int) -> str:
    """A valid SIREN built from an 8-digit number (python-stdnum computes the Luhn key)."""
    from stdnum import luhn

    base = f"{number:08d}"
    return base + luhn.calc_check_digit(base)


def write_clients(path: Path, count: int) -> None:
    """``count`` BottleCRM-shaped clients, with valid VAT numbers, as a .singer file."""
    sys.path.insert(0, str(ROOT))
    from coulisse.model import Client, stream_schema

    with path.open("w") as out:
        schema = {
            "type": "SCHEMA",
            "stream": "clients",
            "schema": stream_schema(Client),
            "key_properties": ["crm_id"],
        }
        out.write(json.dumps(schema) + "\n")
        for number in range(count):
            siren = _luhn_siren(number)
            key = (12 + 3 * (int(siren) % 97)) % 97
            record = {
                "crm_id": f"9b1c{number:08d}-acct",
                "source": "crm",
                "source_updated_at": "2026-05-04T09:30:00+00:00",
                "name": f"Boulangerie {number} SARL",
                "vat": f"FR{key:02d}{siren}",
                "siren": siren,
                "email": f"contact{number}@boulangerie{number}.fr",
                "phone": f"01 {number % 100:02d} {number // 100 % 100:02d} "
                f"{number // 10000 % 100:02d} 45",
                "website": f"https://boulangerie{number}.fr",
                "billing_street": f"{number} rue de la Paix",
                "billing_postal_code": "75002",
                "billing_city": "Paris",
                "billing_country": "France",
                "active": True,
            }
            out.write(json.dumps({"type": "RECORD", "stream": "clients", "record": record}))
            out.write("\n")


@dataclass
class Step:
    """One measured step."""

    seconds: float
    peak_mb: float


def run(
    command: list[str], *, stdin: Path | None = None, env: dict[str, str] | None = None
) -> Step:
    """Run a step in its own process; its wall time and its own peak memory (not ours)."""
    started = time.perf_counter()
    with (
        stdin.open("rb") if stdin else open(os.devnull, "rb") as source,  # noqa: PTH123
        open(os.devnull, "wb") as sink,  # noqa: PTH123
        tempfile.TemporaryFile() as errors,
    ):
        process = subprocess.Popen(
            command, stdin=source, stdout=sink, stderr=errors, env={**os.environ, **(env or {})}
        )
        _, status, usage = os.wait4(process.pid, 0)
        if status != 0:
            errors.seek(0)
            sys.stderr.write(errors.read().decode()[-4000:])
            raise SystemExit(f"{command[0]} failed")
    return Step(time.perf_counter() - started, usage.ru_maxrss / 1024)


def pipeline(url: str, singer_file: Path, workdir: Path) -> dict[str, Step]:
    """target-ledger, then the planner, then tap-ledger for the ERP, on the ledger at ``url``."""
    env = {"PYTHONPATH": str(ROOT)}
    target_config = workdir / "target.json"
    target_config.write_text(json.dumps({"side": "crm", "ledger_url": url}))
    tap_config = workdir / "tap.json"
    tap_config.write_text(json.dumps({"side": "erp", "ledger_url": url}))
    return {
        "target-ledger": run(
            [str(VENV_BIN / "target-ledger"), "--config", str(target_config)],
            stdin=singer_file,
            env=env,
        ),
        "planner": run(
            [
                str(VENV_BIN / "python"),
                "-m",
                "coulisse.planner.cli",
                "--ledger-url",
                url,
                "--json",
            ],
            env=env,
        ),
        "tap-ledger": run([str(VENV_BIN / "tap-ledger"), "--config", str(tap_config)], env=env),
    }


def postgres_database(name: str, *, drop_only: bool = False) -> str:
    """(Re)create database ``name`` on the local server; return its URL."""
    import psycopg2

    connection = psycopg2.connect(f"{PG_SERVER}/postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop_only:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return f"{PG_SERVER}/{name}"


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    count: int = args.records
    with tempfile.TemporaryDirectory(prefix="coulisse-bench-") as tmp:
        workdir = Path(tmp)
        small = max(count // 10, 1)
        files = {n: workdir / f"clients-{n}.singer" for n in (count, small)}
        for n, path in files.items():
            write_clients(path, n)
        noop = workdir / "noop_target.py"
        noop.write_text(NOOP_TARGET)
        noop_step = run([str(VENV_BIN / "python"), str(noop)], stdin=files[count])
        results: dict[str, dict[str, Step]] = {}
        results["sqlite"] = pipeline(f"sqlite:///{workdir / 'ledger.db'}", files[count], workdir)
        small_run = pipeline(f"sqlite:///{workdir / 'small.db'}", files[small], workdir)
        if not args.no_postgres:
            url = postgres_database("coulisse_perf_bench")
            try:
                results["postgresql"] = pipeline(url, files[count], workdir)
            finally:
                postgres_database("coulisse_perf_bench", drop_only=True)

    print(f"\n{count:,} client records (peak memory at {small:,} records in brackets)\n")
    print(f"{'step':<28}{'records/s':>12}{'seconds':>10}{'peak MB':>10}{'at 1/10':>10}")
    print(
        f"{'no-op target (SDK defaults)':<28}{count / noop_step.seconds:>12,.0f}"
        f"{noop_step.seconds:>10.1f}{noop_step.peak_mb:>10.0f}"
    )
    for backend, steps in results.items():
        for name, step in steps.items():
            small_peak = f"{small_run[name].peak_mb:.0f}" if backend == "sqlite" else ""
            print(
                f"{name + ' (' + backend + ')':<28}{count / step.seconds:>12,.0f}"
                f"{step.seconds:>10.1f}{step.peak_mb:>10.0f}{small_peak:>10}"
            )
    print()
    for backend, steps in results.items():
        ratio = noop_step.seconds / steps["target-ledger"].seconds
        print(f"target-ledger / no-op target throughput ({backend}): {ratio:.2f}")


if __name__ == "__main__":
    main()
