"""Per-split bookkeeping shared by every evaluation (`make evaluate`, `make train`): a split's ledger
record, added once, and the run's summary (scores with their mean, results.md and results.json)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.cache import atomic_path, library_versions, read_json, write_json
from pipeline.results.ledger import Ledger
from pipeline.results.tables import paper_table

log = logging.getLogger(__name__)

PROTOCOLS = {"yup": "yup", "mpii_cooking": "mpii"}     # dataset name -> ledger protocol


@dataclasses.dataclass
class SplitRecorder:
    """Records the splits of one evaluation, in the order the caller scores them.

    The caller writes a split's result file first and then calls `record`, which adds the
    split's one ledger record only when the ledger lacks it: a kill between the two adds it on
    the rerun, never twice. `finish` writes <stem>.md (the paper-style table of the records) and
    <stem>.json (scores per split and their mean, plus `extra`), the file that marks the run done.
    dataset: the Dataset (identity, name, metric, classes); config: the settings of every stage
    involved; cache: the folders read and written, by stage.
    """

    ledger: Ledger
    dataset: Any
    method: str
    config_key: str
    config: dict
    cache: dict
    per_split: dict = dataclasses.field(default_factory=dict)

    def record(self, split: str, result: dict, where: str = "") -> None:
        """Add the split's ledger record unless present; keep `result` for the summary."""
        if not self.ledger.records(config_key=self.config_key, split=split):
            self.ledger.append({
                "dataset": self.dataset.identity,
                "protocol": PROTOCOLS.get(self.dataset.name, "splits"), "split": split,
                "method": self.method, "metric": self.dataset.metric, "score": result["score"],
                "config_key": self.config_key, "n_train": result["n_train"],
                "n_test": result["n_test"], "n_missing_train": result["missing_train"],
                "n_missing_test": result["missing_test"], "config": self.config,
                "cache": self.cache, "per_class": result["per_class"],
                "confusion": result["confusion"], "classes": list(self.dataset.classes),
                "predictions": result["predictions"], "chosen": result["chosen"],
                "wall_time": result.get("wall_time"), "versions": library_versions()})
        self.per_split[split] = result
        log.info("%s: %s = %.4f%s", split, self.dataset.metric, result["score"], where)

    def finish(self, folder: Path, stem: str, **extra: Any) -> dict:
        """Write <stem>.md and then <stem>.json under folder; return what the json holds."""
        scores = {name: r["score"] for name, r in self.per_split.items()}
        scores["mean"] = float(np.mean(list(scores.values())))
        records = self.ledger.records(config_key=self.config_key)
        with atomic_path(folder / f"{stem}.md") as tmp:
            tmp.write_text(paper_table(records) if records else "")
        results = {"dataset": self.dataset.identity, "metric": self.dataset.metric,
                   "method": self.method, "scores": scores,
                   "splits": {n: {k: v for k, v in r.items() if k != "predictions"}
                              for n, r in self.per_split.items()},
                   "config": self.config, "config_key": self.config_key, **extra}
        write_json(folder / f"{stem}.json", results)
        return read_json(folder / f"{stem}.json")
