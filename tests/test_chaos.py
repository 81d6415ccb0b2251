"""The kill-anywhere harness (tests/chaos.py, `make chaos`) in small: a few SIGKILLs per stage
(extract serial and on processes, descriptors, evaluate, train, idt, sweep), at a call into the
project's code or by a timer, and every must-be-zero figure zero; and its tamper pass (a file of
every kind each stage writes damaged three ways: named, repaired, 0 silent uses)."""
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
    run = run_chaos(tmp_path, "--kills", "3", "--timed", "0", "--seed", "1", "--tamper", "none")
    check(run, set(STAGES), "3")


@pytest.mark.slow
def test_stages_survive_sigkill_by_a_timer(tmp_path):
    """Kills at random moments of the run, inside any code (HDF5, torch, OpenCV)."""
    run = run_chaos(tmp_path, "--kills", "2", "--timed", "1", "--seed", "2", "--tamper", "none",
                    "--stages", "extract,descriptors,idt")
    check(run, {"extract", "descriptors", "idt"}, "2")
    assert "(2 by timer)" in run.stdout


def tamper_rows(stdout: str) -> dict[str, list[int]]:
    """The tamper table: "<stage> <kind>" -> [tampered, named, inert, redone, identical, silent]."""
    rows, inside = {}, False
    for line in stdout.splitlines():
        if line.startswith("stage") and "tampered" in line:
            inside = True
        elif inside and line.strip() and not line.startswith("total"):
            *name, a, b, c, d, e, f = line.split()
            rows[" ".join(name)] = [int(x) for x in (a, b, c, d, e, f)]
        elif inside:
            break
    return rows


@pytest.mark.slow
def test_every_kind_of_damaged_file_is_named_and_repaired(tmp_path):
    """Rows overwritten, 8 bytes flipped with the mtime restored, truncated: for each kind of
    file that descriptors, evaluate and train write, the rerun names it (or computes it anew,
    or the damage hit bytes nothing reads) and ends with the clean run's output."""
    run = run_chaos(tmp_path, "--kills", "0", "--stages", "descriptors,evaluate,train")
    assert run.returncode == 0 and "chaos: OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    rows = tamper_rows(run.stdout)
    kinds = {k.split(" ", 1)[1] for k in rows}
    assert {"descriptors descriptors.h5", "descriptors item", "descriptors manifest.json",
            "evaluate splits/<split>.json", "evaluate results.json", "train state.pt",
            "train heads/<tag>/arrays.npz", "train params.json", "train config.json",
            "sketched item"} <= kinds, kinds
    for name, (tried, named, inert, redone, identical, silent) in rows.items():
        assert tried == 3 and identical == 3 and silent == 0, (name, rows)
        assert named + inert + redone == 3, (name, rows)
