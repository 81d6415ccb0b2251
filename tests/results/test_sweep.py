"""Sweeps over one feature cache: every configuration runs once, a rerun computes nothing, a
killed sweep resumes where it stopped, and the table has one row per configuration."""
from __future__ import annotations

import json
import shutil

import pytest

import tests.fakes  # noqa: F401 - registers fake_counting
from pipeline.learn import evaluate as evaluate_module
from pipeline.extract.settings import ExtractConfig
from pipeline.core.settings import parse_overrides
from pipeline.extract.features import extract_features
from pipeline.results.ledger import Ledger
from pipeline.results.sweep import read_grid, run_sweep
from tests.fakes import CountingBackbone

ARGS = ["dataset=folder", "backbone=fake_counting", "layer=stats", "weights=none", "size=32",
        "lengths=(4,)", "strides=(4,)", "steps=(1,)", "dataset_options={'folds': 3}"]


@pytest.fixture
def setting(tiny_root, tmp_path):
    root = tmp_path / "clips"
    shutil.copytree(tiny_root, root)
    args = ARGS + [f"root={str(root)!r}", f"cache_root={str(tmp_path / 'cache')!r}"]
    extract_features(parse_overrides(args, ExtractConfig)[0])
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps({"base": {"sketch_dim": 8},
                                "rows": [{"order": 1}, {"order": 2, "epn": "none"}],
                                "grid": {"C": [0.5, 2.0]}}))
    return args, grid, tmp_path / "cache" / "ledger.sqlite"


def test_grid_file_rows_cross_grid(setting):
    _, grid, _ = setting
    base, rows = read_grid(grid)
    assert base == {"sketch_dim": 8} and len(rows) == 4
    assert rows[1] == {"order": 1, "C": 2.0}


def test_sweep_runs_each_configuration_once_and_resumes(setting, monkeypatch):
    args, grid, ledger = setting
    real, calls = evaluate_module.score_split, []

    def failing_third(*a, **k):
        calls.append(1)
        if len(calls) == 7:                   # the third configuration's first split
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(evaluate_module, "score_split", failing_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, args)
    assert len(Ledger(ledger).records()) == 6
    monkeypatch.setattr(evaluate_module, "score_split", real)
    CountingBackbone.calls = 0
    table, summaries = run_sweep(grid, args)
    assert CountingBackbone.calls == 0 and len(summaries) == 4
    assert len(Ledger(ledger).records()) == 12             # configurations 1-2 were not redone
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 4 and all(" f1 " in lines[0] for _ in (0,))
    run_sweep(grid, args)
    assert len(Ledger(ledger).records()) == 12             # a rerun computes nothing


def test_a_configuration_that_cannot_run_is_reported_and_the_rest_go_on(setting, tmp_path):
    args, _, _ = setting
    grid = tmp_path / "idt.json"
    grid.write_text(json.dumps({"base": {"sketch_dim": 8}, "rows": [{"idt": "on"}, {"order": 1}]}))
    table, summaries = run_sweep(grid, args)
    assert [s["name"] for s in summaries] == ["first-order (mean)", None]
    assert "idt" in summaries[1]["reason"].lower() and "first-order (mean)" in table


def test_a_row_with_attention_runs_the_learned_stage(setting, tmp_path):
    args, _, ledger = setting
    grid = tmp_path / "learned.json"
    grid.write_text(json.dumps({"base": {"sketch_dim": 8, "max_epochs": 2, "weight_decay": 0},
                                "rows": [{"order": 2}, {"attention": "none", "head": "linear"},
                                         {"attention": "ap_windows", "head": "svm"}]}))
    table, summaries = run_sweep(grid, args)
    assert [s["name"] for s in summaries] == ["SO+MaxExp", "SO+MaxExp (uniform) [linear]",
                                              "AP over windows (rank-1)"]
    assert all("/train/" in s["folder"] for s in summaries[1:])
    assert "AP over windows (rank-1)" in table and len(Ledger(ledger).records()) == 9
