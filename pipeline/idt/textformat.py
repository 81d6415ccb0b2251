"""DenseTrackStab's text output: one trajectory per line, whitespace-separated, 10 header values
then Trajectory (30), HOG (96), HOF (108), MBHx (96), MBHy (96): 436 values. Read (also from
.gz) into the arrays of pipeline.idt.extract_idt, and written, for round trips.
"""
from __future__ import annotations

import gzip
import io
import math
import warnings
from pathlib import Path
from typing import IO, Mapping

import numpy as np

from pipeline.idt.descriptors import OUTPUT_KEYS
from pipeline.idt.settings import IDTConfig


def _open(path: Path, mode: str) -> IO[str]:
    newline = "" if mode == "w" else None       # write "\n" as is; read any line ending
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="ascii", newline=newline)
    return open(path, mode, encoding="ascii", newline=newline)


def _layout(config: IDTConfig | None) -> dict[str, int]:
    return (config or IDTConfig()).dims()


def _split(table: np.ndarray, dims: Mapping[str, int]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for key in OUTPUT_KEYS:
        out[key] = np.ascontiguousarray(table[:, start:start + dims[key]], dtype=np.float32)
        start += dims[key]
    return out


def _check_line(path: Path, number: int, line: str, dims: Mapping[str, int]) -> np.ndarray:
    """One line -> (width,) float64, or ValueError naming file, line and the fault."""
    parts = line.split()
    width = sum(dims.values())
    if len(parts) != width:
        detail = ", ".join(f"{dims[k]} {k}" for k in OUTPUT_KEYS)
        raise ValueError(f"{path}, line {number}: {len(parts)} values, expected {width} "
                         f"({detail})")
    values = np.empty(width)
    for i, token in enumerate(parts):
        try:
            values[i] = float(token)
        except ValueError:
            raise ValueError(f"{path}, line {number}: value {i + 1} {token!r} is not a "
                             f"number") from None
        if not math.isfinite(values[i]):
            raise ValueError(f"{path}, line {number}: value {i + 1} is {token!r}, not finite")
    if values[0] < 0 or values[0] != int(values[0]):
        raise ValueError(f"{path}, line {number}: frame number {parts[0]!r} is not an "
                         f"integer >= 0")
    return values


def read_idt_text(path: str | Path, config: IDTConfig | None = None) -> dict[str, np.ndarray]:
    """Read a DenseTrackStab output file (plain or .gz) -> float32 {"header": (n, 10),
    "traj": (n, 30), "hog": (n, 96), "hof": (n, 108), "mbhx": (n, 96), "mbhy": (n, 96)}.

    Blank lines are skipped. `config` gives other layouts (idt_length, cells). A malformed line
    (wrong count, a token that is not a finite number, a frame number that is not an integer
    >= 0) raises ValueError naming the file, the 1-based line number and the fault.
    """
    path = Path(path)
    dims = _layout(config)
    width = sum(dims.values())
    with _open(path, "r") as f:
        text = f.read()
    try:    # fast path (numpy's C parser); any doubt falls back to the line-by-line check
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)     # "input contained no data"
            table = np.loadtxt(io.StringIO(text), dtype=np.float64, comments=None, ndmin=2)
        fast = (table.shape[1] == width or table.size == 0) and bool(np.isfinite(table).all())
        fast = fast and bool(np.all((table[:, 0] >= 0) & (table[:, 0] == np.round(table[:, 0]))))
    except ValueError:
        fast = False
    if not fast:
        rows = [_check_line(path, number, line, dims)
                for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        table = np.array(rows).reshape(len(rows), width)
    return _split(table.reshape(-1, width), dims)


def write_idt_text(path: str | Path, features: Mapping[str, np.ndarray]) -> None:
    """Write `features` (the dict of extract_idt / read_idt_text) in DenseTrackStab's format:
    per line the frame number as an integer, then every value as %.9g (float32 round-trips
    exactly), each followed by a tab, as the original prints them. A .gz path is compressed."""
    path = Path(path)
    n = len(features["header"])
    for key in OUTPUT_KEYS:
        if features[key].ndim != 2 or len(features[key]) != n:
            raise ValueError(f"features[{key!r}] has shape {features[key].shape}; expected "
                             f"(n={n}, d) like the header")
    table = np.concatenate([np.asarray(features[k], dtype=np.float32) for k in OUTPUT_KEYS],
                           axis=1)
    with _open(path, "w") as f:
        for row in table:
            f.write(f"{int(row[0])}\t" + "".join(f"{v:.9g}\t" for v in row[1:].tolist()) + "\n")
