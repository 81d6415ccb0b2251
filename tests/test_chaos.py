"""The kill-anywhere harness (tests/chaos.py, `make chaos`) in small: a few SIGKILLs per stage
(extract serial and on processes, descriptors, evaluate, train, idt, sweep), at a call into the
project's code or by a timer, and every must-be-zero figure zero."""
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


def run_chaos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "chaos.py"), "--workdir",
                           str(tmp_path), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)


def check(run: subprocess.CompletedProcess, stages: set[str], kills: str) -> None:
    assert run.returncode == 0 and "chaos: OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    rows = table(run.stdout)
    assert set(rows) == stages, run.stdout
    for stage, (got, completed, checked, *zeros, faults, dups, _seconds) in rows.items():
        assert got == completed == kills and int(checked) > 0 and zeros == ["0"] * 4, (stage, rows)
        assert [faults, dups] == (["0", "0"] if stage in LEDGER else ["-", "-"]), (stage, rows)


@pytest.mark.slow
def test_every_stage_survives_sigkill_at_any_call(tmp_path):
    """Kills at seeded calls into the project's code: reproducible moments. (Timer kills of the
    ledger stages are left to `make chaos` until evaluate and train record a split once across
    a crash: see the xfail tests in test_reliability.py.)"""
    run = run_chaos(tmp_path, "--kills", "3", "--timed", "0", "--seed", "1")
    check(run, set(STAGES), "3")


@pytest.mark.slow
def test_stages_survive_sigkill_by_a_timer(tmp_path):
    """Kills at random moments of the run, inside any code (HDF5, torch, OpenCV)."""
    run = run_chaos(tmp_path, "--kills", "2", "--timed", "1", "--seed", "2",
                    "--stages", "extract,descriptors,idt")
    check(run, {"extract", "descriptors", "idt"}, "2")
    assert "(2 by timer)" in run.stdout
