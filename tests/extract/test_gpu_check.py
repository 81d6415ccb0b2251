"""tests/bench/gpu_check.py runs where no GPU is: with --device cpu it says so and compares the CPU
run with itself (the script a GPU user runs once; the project never depends on a GPU)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.shared_data
@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_says_so(shared_data):
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "gpu_check.py"), "--device", "cpu",
                          "--clips", "1", "--windows", "quality", "--weights", "none", "--size", "112"],
                         capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "device=cpu: a plumbing run on the CPU" in out.stdout
    lines = [line for line in out.stdout.splitlines() if "vs cpu fp32" in line]
    assert len(lines) == 4 and sum("PASS" in line for line in lines) == 2, out.stdout
    assert out.stdout.count("windows/s") == 4
