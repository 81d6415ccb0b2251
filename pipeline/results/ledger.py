"""Results ledger: one SQLite row per scored (configuration, split), safe under concurrent writers
from several processes and under SIGKILL (WAL journal, a busy timeout, one transaction per append).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pipeline.core.cache import canonical

log = logging.getLogger(__name__)

PROTOCOLS = ("splits", "yup", "mpii")     # see pipeline.results.tables.paper_table
METRICS = ("accuracy", "map")
# Scalar fields stored as SQL columns (name, SQL type, required); everything else goes to `body` JSON.
COLUMNS = (("time", "TEXT", False), ("dataset", "TEXT", True), ("protocol", "TEXT", True),
           ("split", "TEXT", True), ("method", "TEXT", True), ("metric", "TEXT", True),
           ("score", "REAL", True), ("config_key", "TEXT", True), ("n_train", "INTEGER", True),
           ("n_test", "INTEGER", True), ("n_missing_train", "INTEGER", False),
           ("n_missing_test", "INTEGER", False), ("wall_time", "REAL", False))
FILTERS = ("dataset", "protocol", "split", "method", "metric", "config_key")
BUSY_TIMEOUT_S = 60.0                     # a writer waits this long for another's transaction

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {", ".join(f"{name} {kind}" + (" NOT NULL" if required else "") for name, kind, required in COLUMNS)},
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_config_split ON records (config_key, split);
CREATE INDEX IF NOT EXISTS records_dataset ON records (dataset, protocol);
"""


def validate(record: dict) -> dict:
    """A copy of `record` checked and completed (time, missing counts); raises ValueError."""
    missing = [name for name, _, required in COLUMNS if required and record.get(name) is None]
    if missing:
        raise ValueError(f"ledger record lacks {missing}; required: "
                         f"{[name for name, _, required in COLUMNS if required]}")
    if record["protocol"] not in PROTOCOLS:
        raise ValueError(f"protocol {record['protocol']!r} is unknown; choose one of {PROTOCOLS}")
    if record["metric"] not in METRICS:
        raise ValueError(f"metric {record['metric']!r} is unknown; choose one of {METRICS}")
    score = float(record["score"])
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise ValueError(f"score={record['score']!r} must be a fraction in [0, 1]")
    out = dict(record, score=score)
    out.setdefault("n_missing_train", 0)
    out.setdefault("n_missing_test", 0)
    if out.get("time") is None:
        out["time"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return out


class Ledger:
    """An append-only table of results in one SQLite file (created on first use).

    Each call opens its own connection, so a Ledger is cheap, picklable and usable from any
    process. SQLite's WAL journal makes each append atomic: a writer killed at any moment leaves
    every committed record intact and no partial one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")      # persistent; readers never block writers
            con.execute("PRAGMA synchronous=FULL")      # a committed record survives power loss too
            con.executescript(SCHEMA)
            yield con
        finally:
            con.close()

    def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """`work(connection)`, retried while the database is locked. The busy timeout covers most
        waits, but SQLite answers "locked" at once in a few cases (opening a WAL file another
        process is checkpointing, switching the journal mode); an append that failed so committed
        nothing, so retrying it is safe."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                with self._connect() as con:
                    return work(con)
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                log.debug("ledger %s is locked (%s); retrying", self.path, err)
                time.sleep(random.uniform(0.005, 0.05))

    def append(self, record: dict) -> int:
        """Store one record (see `COLUMNS` for the scalar fields) in one transaction; returns its id."""
        record = validate(record)
        names = [name for name, _, _ in COLUMNS]
        body = {k: v for k, v in record.items() if k not in names and k != "id"}
        values = [canonical(record.get(name)) for name in names]
        text = json.dumps(canonical(body), allow_nan=False)
        sql = (f"INSERT INTO records ({', '.join(names)}, body) "
               f"VALUES ({', '.join('?' * (len(names) + 1))})")

        def insert(con: sqlite3.Connection) -> int:
            con.execute("BEGIN IMMEDIATE")
            try:
                row_id = con.execute(sql, [*values, text]).lastrowid
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return int(row_id)

        row_id = self._run(insert)
        log.debug("ledger %s: record %d (%s %s %s)", self.path, row_id, record["dataset"],
                  record["method"], record["split"])
        return row_id

    def records(self, **filters: Any) -> list[dict]:
        """Every record in append order, optionally filtered by equality on `FILTERS` fields
        (a list or tuple value matches any of its elements). Each record carries its `id`."""
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise ValueError(f"cannot filter ledger records on {unknown}; filters: {FILTERS}")
        where, args = [], []
        for name, value in filters.items():
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            where.append(f"{name} IN ({', '.join('?' * len(values))})")
            args += values
        sql = ("SELECT * FROM records" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id")

        def select(con: sqlite3.Connection) -> list[sqlite3.Row]:
            con.row_factory = sqlite3.Row
            return con.execute(sql, args).fetchall()

        return [_record(row) for row in self._run(select)]


def _record(row: sqlite3.Row) -> dict:
    out = {key: row[key] for key in row.keys() if key != "body"}
    out.update(json.loads(row["body"]))
    return out


def latest(records: Iterable[dict]) -> list[dict]:
    """The last record per (config_key, split), in order of first appearance. `Ledger.records`
    returns records in append (commit) order, so the most recently appended one wins."""
    best: dict[tuple[str, str], dict] = {}
    for record in records:
        best[(record["config_key"], record["split"])] = record   # keeps the key's first position
    return list(best.values())
