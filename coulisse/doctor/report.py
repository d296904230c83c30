"""What `coulisse doctor` found: one line per check, ok / warning / failed, and what to do.

A check says what it found in words an integration engineer can act on and, when it did not
pass, the fix: the setting to change or the screen of the system where to change it. The exit
code is 1 as soon as one check failed; a warning (something the sync copes with, or that only
some flows need) leaves it at 0.

>>> report = DoctorReport([Check("crm", "API", "ok", "answers at http://crm")])
>>> report.exit_code, report.counts()
(0, {'ok': 1, 'warning': 0, 'failed': 0})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warning", "failed"]
AREAS = ("crm", "erp", "mapping", "ledger", "meltano")
_MARK = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "failed": "[bold red]failed[/]"}


@dataclass(frozen=True)
class Check:
    """One probe's verdict: where (``area``), what (``name``), its status, the finding, the fix."""

    area: str
    name: str
    status: Status
    found: str
    fix: str | None = None

    def line(self) -> str:
        """The check as one plain line (no markup): ``crm  token  failed  ...  -> fix``."""
        text = f"{self.status:<7} {self.area}: {self.name}: {self.found}"
        return f"{text}\n        -> {self.fix}" if self.fix else text


@dataclass
class DoctorReport:
    """Every check of one doctor run, in the order they ran, and what ``--fix`` changed."""

    checks: list[Check] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when nothing failed (warnings allowed), 1 otherwise."""
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "warning": 0, "failed": 0}
        for check in self.checks:
            counts[check.status] += 1
        return counts

    def find(self, area: str, name: str) -> Check:
        """The check named ``name`` in ``area`` (raises ``KeyError`` when it did not run)."""
        for check in self.checks:
            if check.area == area and check.name == name:
                return check
        raise KeyError(f"{area}: {name}")

    def to_dict(self) -> dict[str, Any]:
        """The report for scripts (``--json``): checks, counts, what was fixed, ``ok``."""
        return {
            "ok": not self.failed,
            "counts": self.counts(),
            "fixed": list(self.fixed),
            "checks": [asdict(check) for check in self.checks],
        }

    def rich_lines(self) -> list[str]:
        """The report as rich-markup lines, grouped by area, then a one-line summary."""
        lines: list[str] = []
        area = None
        for check in self.checks:
            if check.area != area:
                area = check.area
                lines.append(f"[bold]{area.upper()}[/]")
            lines.append(f"  {_MARK[check.status]:<24} {check.name}: {_escape(check.found)}")
            if check.fix:
                lines.append(f"      [dim]->[/] {_escape(check.fix)}")
        for change in self.fixed:
            lines.append(f"[cyan]fixed:[/] {_escape(change)}")
        counts = self.counts()
        verdict = "[bold red]not ready[/]" if self.failed else "[bold green]ready[/]"
        lines.append(
            f"{verdict}: {counts['ok']} ok, {counts['warning']} warning(s), "
            f"{counts['failed']} failed"
        )
        return lines


def _escape(text: str) -> str:
    """Keep rich from reading ``[...]`` in a finding (a scope list, a code) as markup."""
    return text.replace("[", r"\[")


__all__ = ["AREAS", "Check", "DoctorReport", "Status"]
