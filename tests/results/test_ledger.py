"""Ledger: round trip and filters, validation, no lost records under two concurrent writer
processes, and a readable ledger after a writer is SIGKILLed mid-run."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.results.ledger import Ledger, latest

ROOT = Path(__file__).resolve().parents[2]


def make_record(**over) -> dict:
    record = dict(dataset="hmdb51", protocol="splits", split="sp1", method="SO+MaxExp",
                  metric="accuracy", score=0.5, n_train=70, n_test=30, n_missing_train=0,
                  n_missing_test=0, config={"descriptors": {"sketch_dim": 128, "epn": "maxexp"}},
                  config_key="k1", cache={"descriptors": "/c/d"}, per_class={"a": 0.4, "b": 0.6},
                  confusion=[[2, 3], [2, 3]], classes=["a", "b"],
                  predictions=[{"id": "v1", "true": 0, "pred": 1, "scores": [0.1, 0.9]}],
                  wall_time=1.5, versions={"python": "3.11"}, time="2025-01-01T00:00:00+00:00")
    record.update(over)
    return record


def test_round_trip_and_filters(tmp_path):
    ledger = Ledger(tmp_path / "sub" / "ledger.sqlite")
    first = ledger.append(make_record())
    second = ledger.append(make_record(split="sp2", score=0.75, config_key="k2", method="TO+MaxExp"))
    assert second > first
    records = ledger.records()
    assert [r["id"] for r in records] == [first, second]
    expected = make_record()
    assert {k: records[0][k] for k in expected} == expected
    assert [r["split"] for r in ledger.records(split="sp2")] == ["sp2"]
    assert [r["config_key"] for r in ledger.records(method="TO+MaxExp", dataset="hmdb51")] == ["k2"]
    assert len(ledger.records(config_key=["k1", "k2"])) == 2
    assert ledger.records(dataset="ucf101") == []
    with pytest.raises(ValueError, match="cannot filter"):
        ledger.records(colour="red")


def test_append_validates_and_fills_time(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    with pytest.raises(ValueError, match="score"):
        ledger.append(make_record(score=1.5))
    with pytest.raises(ValueError, match="protocol"):
        ledger.append(make_record(protocol="folds"))
    with pytest.raises(ValueError, match="lacks"):
        ledger.append({k: v for k, v in make_record().items() if k != "config_key"})
    record = make_record()
    del record["time"], record["n_missing_train"]
    ledger.append(record)
    (stored,) = ledger.records()
    assert stored["time"].startswith("20") and stored["n_missing_train"] == 0


def test_latest_keeps_the_last_record_per_config_and_split():
    a1, b1, a2 = make_record(score=0.1), make_record(split="sp2"), make_record(score=0.9)
    assert latest([a1, b1, a2]) == [a2, b1]


def _append_many(path: str, tag: str, n: int, start, spans) -> None:
    ledger = Ledger(path)
    start.wait(60)
    t0 = time.time()
    for i in range(n):
        ledger.append(make_record(method=tag, split=f"sp{i}", score=i / n))
    spans.put((t0, time.time()))


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    ctx = multiprocessing.get_context("spawn")
    start, spans = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_append_many, args=(path, tag, 200, start, spans))
               for tag in ("A", "B")]
    for w in workers:
        w.start()
    time.sleep(1.0)                                        # both have imported and wait
    start.set()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    (a0, a1), (b0, b1) = spans.get(timeout=5), spans.get(timeout=5)
    assert a0 < b1 and b0 < a1, "the writers did not run at the same time, so the test proved nothing"
    records = Ledger(path).records()
    assert len(records) == 400 and len({r["id"] for r in records}) == 400
    for tag in ("A", "B"):
        splits = sorted(r["split"] for r in records if r["method"] == tag)
        assert splits == sorted(f"sp{i}" for i in range(200))


WRITER = """
import sys
from pipeline.results.ledger import Ledger
ledger, i = Ledger(sys.argv[1]), 0
while True:
    ledger.append(dict(dataset="d", protocol="splits", split=f"sp{i}", method="m", metric="accuracy",
                       score=0.5, n_train=1, n_test=1, config_key="k", config={"x": list(range(500))}))
    i += 1
"""


def test_sigkilled_writer_leaves_a_readable_ledger(tmp_path):
    path = tmp_path / "ledger.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    ledger = Ledger(path)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and len(ledger.records()) >= 20:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the writer exited early"
        proc.send_signal(signal.SIGKILL)                   # mid-run: it appends in a tight loop
    finally:
        proc.kill()
        proc.wait()
    records = ledger.records()
    assert len(records) >= 20
    assert [r["split"] for r in records] == [f"sp{i}" for i in range(len(records))]
    assert all(r["config"] == {"x": list(range(500))} for r in records)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    new = ledger.append(make_record())
    assert ledger.records()[-1]["id"] == new
