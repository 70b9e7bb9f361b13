"""`dynworkers demo`: three tenants answer, cold and warm, and the command exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_its_three_tenants_and_exits_0(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "dynworkers.runtime.cli", "demo", "--warm-calls", "5"]
    ran = subprocess.run(
        [*command, "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    rows = {line.split()[0]: line for line in ran.stdout.splitlines() if line.strip()}
    assert '"hits": ' in rows["counter"]
    assert "hello from greeter" in rows["greeter"]
    assert '"primes_below_200": 46' in rows["primes"]
