"""The kill-anywhere harness (tests/chaos.py, `make chaos`) in small: a few SIGKILLs per stage
(extract serial and on processes, descriptors, evaluate, train, idt, sweep), some at a call into
the project's code and some by a timer, and every must-be-zero figure zero."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("extract (processes)", "extract", "descriptors", "evaluate", "train", "idt", "sweep")
LEDGER = {"evaluate", "train", "sweep"}                    # stages that append to the ledger


def table(stdout: str) -> dict[str, list[str]]:
    """The summary rows: stage -> [kills, completed, files checked, partial, mismatches,
    recomputed, leftover tmp, ledger faults, ledger dups, seconds]."""
    rows = {}
    for line in stdout.splitlines():
        name = next((s for s in STAGES if line.startswith(s + " ")), None)
        if name is not None:
            rows[name] = line[len(name):].split()
    return rows


@pytest.mark.slow
def test_every_stage_survives_sigkill_anywhere(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "chaos.py"), "--kills", "3",
                          "--timed", "0.34", "--seed", "1", "--workdir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0 and "chaos: OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    rows = table(run.stdout)
    assert set(rows) == set(STAGES), run.stdout
    for stage, (kills, completed, checked, *zeros, faults, dups, _seconds) in rows.items():
        assert kills == completed == "3" and int(checked) > 0 and zeros == ["0"] * 4, (stage, rows)
        assert [faults, dups] == (["0", "0"] if stage in LEDGER else ["-", "-"]), (stage, rows)
    assert "by timer" in run.stdout
