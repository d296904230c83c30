"""meltano.yml as an integration engineer uses it: `meltano run observe-crm` on the live CRM."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from coulisse.stack.envfile import read_env_file
from tests.conftest import ROOT, LiveStack


def meltano(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(ROOT) / ".venv" / "bin"
    return subprocess.run(
        [str(bin_dir / "meltano"), *args],
        cwd=ROOT,
        env={**env, "PATH": f"{bin_dir}:{env.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.live
def test_observe_crm_job_fills_the_ledger_and_a_rerun_changes_nothing(live: LiveStack, tmp_path):
    stack_env = read_env_file(live.stack.layout.env_file)
    ledger = tmp_path / "ledger.sqlite"
    env = {
        **os.environ,
        "BOTTLECRM_API_URL": stack_env["BOTTLECRM_API_URL"],
        "BOTTLECRM_API_TOKEN": stack_env["BOTTLECRM_API_TOKEN"],
        "COULISSE_LEDGER_URL": f"sqlite:///{ledger}",
        "MELTANO_SYS_DIR_ROOT": str(tmp_path / ".meltano"),
    }
    first = meltano("run", "observe-crm", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    engine = sa.create_engine(f"sqlite:///{ledger}")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT COUNT(*) FROM observed WHERE entity = 'client'")
        ).scalar_one()
    accounts = live.stack.crm.status()["counts"]["accounts"]
    assert rows == accounts
    assert f"clients from the CRM: {accounts} new, 0 changed, 0 unchanged" in first.stderr
    assert stack_env["BOTTLECRM_API_TOKEN"] not in first.stdout + first.stderr

    second = meltano("run", "observe-crm", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"clients from the CRM: 0 new, 0 changed, {accounts} unchanged" in second.stderr
    assert "0 records no longer in the CRM" in second.stderr


@pytest.mark.live
def test_a_refused_token_fails_the_job_naming_the_setting(live: LiveStack, tmp_path):
    stack_env = read_env_file(live.stack.layout.env_file)
    env = {
        **os.environ,
        "BOTTLECRM_API_URL": stack_env["BOTTLECRM_API_URL"],
        "BOTTLECRM_API_TOKEN": "bcrm_pat_revoked-or-mistyped",
        "COULISSE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        "MELTANO_SYS_DIR_ROOT": str(tmp_path / ".meltano"),
    }
    result = meltano("run", "observe-crm", env=env)
    assert result.returncode != 0
    assert "Check api_token" in result.stderr
