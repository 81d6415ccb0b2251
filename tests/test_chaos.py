"""The kill-anywhere harness (tests/chaos.py, `make chaos`) in small: a few SIGKILLs per stage, and
every must-be-zero figure zero."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_stage_survives_sigkill_anywhere(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "chaos.py"), "--kills", "3",
                          "--seed", "1", "--workdir", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0 and "chaos: OK" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    rows = {line.split("  ")[0]: line.split()[-7:] for line in run.stdout.splitlines()
            if line.startswith(("extract", "descriptors", "evaluate")) and not line.startswith("  ")}
    assert set(rows) == {"extract", "extract (processes)", "descriptors", "evaluate"}, run.stdout
    for stage, (kills, completed, checked, *zeros) in rows.items():
        assert kills == completed == "3" and int(checked) > 0 and zeros == ["0"] * 4, (stage, rows)
