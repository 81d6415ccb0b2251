"""Kill-anywhere harness (`make chaos`): every stage (extract serial and on processes, descriptors,
evaluate, train, idt, sweep) is SIGKILLed at seeded random moments and rerun to completion; each
time no output may be partial, the output must equal an uninterrupted run's, nothing finished may
be recomputed, no temporary file may be left, and the results ledger must open, pass SQLite's
integrity check, hold one record per (configuration, split) and give the uninterrupted run's
paper table. Then a tamper pass (`--tamper`): for every kind of file each stage writes and reads
back, one file has rows overwritten, bytes flipped with its mtime restored, or is truncated, and
the stage is rerun: the damaged file must be named in its log, and the output must equal the
uninterrupted run's (0 silent uses). Exits 1 on any fault.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import tests.fakes as fakes  # noqa: E402 - registers fake_counting; arm_chaos
from pipeline.core.cache import TEMPORARY, h5_valid  # noqa: E402
from pipeline.datasets.synthetic import MOTIONS, render_video, write_video  # noqa: E402
from pipeline.results.ledger import Ledger  # noqa: E402
from pipeline.results.tables import paper_table  # noqa: E402
from stages import descriptors, evaluate, extract, idt, sweep, train  # noqa: E402

# JSON keys that differ between runs of identical output: when and with what it was written, the
# item files' mtimes, and the settings as given (backend, workers...; what changes output is keyed)
VOLATILE = {"written", "versions", "files", "config", "upstream_config"}
NESTED_VOLATILE = {"wall_time", "checksum"}  # dropped at any depth (train's result.json per split;
                                            # a JSON file's checksum covers its volatile keys)
# The file a stage writes last in a folder: once it exists the folder is complete and a rerun
# must leave every file under it untouched (a stage-2 folder builds its consolidated view before
# its manifest; a trained split is complete with its result.json)
MARKERS = ("manifest.json", "results.json", "result.json")
LEDGER = "ledger.sqlite"


@dataclasses.dataclass
class Stage:
    name: str
    main: Callable[[list[str]], int]
    args: list[str]
    owns: tuple[str, ...]                   # folders under cache_root this stage writes
    ledger: bool = False                    # it appends to <cache_root>/ledger.sqlite
    kills: int = 0
    timed: int = 0                          # of the kills, those made by a timer, not at a call
    completed: int = 0
    checked: int = 0
    partial: int = 0
    mismatches: int = 0
    recomputed: int = 0
    leftover: int = 0
    mid_run: int = 0                        # kills that left some items finished, not all
    swept: int = 0                          # temporary files kills left (the reruns remove them)
    ledger_faults: int = 0                  # ledger unopenable, failing integrity_check, or
                                            # its paper table differing from the reference's
    duplicates: int = 0                     # ledger records beyond one per (config_key, split)
    seconds: float = 0.0


def make_dataset(root: Path) -> None:
    """3 classes x 4 lossless 12-frame videos at 32 px, and one AVI cut short (its header claims
    more frames than it holds: done with a warning)."""
    rng = np.random.default_rng(0)
    for name in ("move_right", "move_up", "rotate_cw"):
        for k in range(4):
            (root / name).mkdir(parents=True, exist_ok=True)
            video = render_video(MOTIONS[name], rng, frames=12, size=32)
            write_video(root / name / f"{name}_{k}.avi", video, fps=25, codec="FFV1")
    whole = root.parent / "whole.avi"
    write_video(whole, render_video(MOTIONS["move_up"], rng, frames=40, size=32), fps=25, codec="FFV1")
    data = whole.read_bytes()
    (root / "move_up" / "move_up_cut.avi").write_bytes(data[: int(len(data) * 0.6)])


def run_child(main: Callable[[list[str]], int], args: list[str], kill_at: int, log: Path,
              kill_after: float = 0.0) -> tuple[int, int, float]:
    """Run `main(args)` in a forked child (its own process group, output to `log`), armed to
    SIGKILL its group at its kill_at-th call into the project's code (0: never), or, with
    kill_after > 0 seconds, SIGKILLed by this process after that long: a moment inside any code
    (torch.save, an SQLite commit, HDF5's C library), not only at a call. Returns (exit status,
    -9 when killed; the calls it made, when it finished; seconds it ran). Forking skips ~5 s of
    imports per run."""
    read, write = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            os.close(read)
            os.setpgid(0, 0)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.environ.pop("CHAOS_KILL_AT", None)
            if kill_at:
                os.environ["CHAOS_KILL_AT"] = str(kill_at)        # worker processes arm on import
            calls = fakes.arm_chaos(kill_at)
            code = main(args)
            os.write(write, str(calls[0]).encode())
        except BaseException:  # noqa: BLE001 - reported in the log, exit 70
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with contextlib.suppress(OSError):      # as the child does: no race with killpg below
        os.setpgid(pid, pid)
    status = None
    if kill_after > 0:
        deadline = started + kill_after
        while status is None and time.monotonic() < deadline:
            done, raw = os.waitpid(pid, os.WNOHANG)
            status = raw if done else None
            if status is None:
                time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
        if status is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    if status is None:
        _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - started
    with os.fdopen(read) as fh:
        calls = int(fh.read() or 0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)      # worker processes a finished run left idle
    return os.waitstatus_to_exitcode(status), calls, seconds


def files_of(cache: Path, stage: Stage) -> list[Path]:
    return sorted(p for own in stage.owns for p in (cache / own).rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def is_item(path: Path) -> bool:
    return "items" in path.parts or path.parent.name == "splits"


def finished_files(outputs: list[Path]) -> list[Path]:
    """What a kill left finished: item files, and every file under a folder that holds the
    file its stage writes last (MARKERS: a stage's manifest, an evaluation's or a sweep
    configuration's results.json, a trained split's result.json)."""
    complete = {p.parent for p in outputs if p.name in MARKERS}
    return [p for p in outputs if is_item(p) or any(q in complete for q in p.parents)]


def strip(data, top: bool = True):
    """JSON data without the keys that differ between identical runs."""
    if isinstance(data, dict):
        return {k: strip(v, False) for k, v in data.items()
                if k not in NESTED_VOLATILE and not (top and k in VOLATILE)}
    if isinstance(data, list):
        return [strip(v, False) for v in data]
    return data


def fingerprint(path: Path) -> str:
    """A hash of what a file holds: HDF5 datasets (values, shapes, attributes) and attributes;
    JSON without the keys that differ between identical runs; other files' bytes."""
    h = hashlib.sha256()
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            def add(name, obj):
                h.update(name.encode())
                if isinstance(obj, h5py.Dataset):
                    values = np.asarray(obj[()])
                    h.update(json.dumps(values.tolist(), default=str).encode() if values.dtype.kind in "OSUV"
                             else values.tobytes() + str(values.shape).encode())
                h.update(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(obj.attrs.items())},
                                    default=str).encode())
            add("/", f)
            f.visititems(add)
    elif path.suffix == ".json":
        h.update(json.dumps(strip(json.loads(path.read_text())), sort_keys=True).encode())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def snapshot(cache: Path, stage: Stage) -> dict[str, str]:
    def safe(p: Path) -> str:
        try:
            return fingerprint(p)
        except Exception as exc:  # noqa: BLE001 - a damaged file differs from any reference
            return f"unreadable: {exc}"
    return {str(p.relative_to(cache)): safe(p) for p in files_of(cache, stage)}


def readable(path: Path) -> bool:
    """An item file must be valid (complete, sealed data intact); any other output must open."""
    try:
        if path.suffix == ".h5":
            if is_item(path):
                return h5_valid(path)
            fingerprint(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix in (".pt", ".npz"):          # torch.save and np.savez write zip files
            with zipfile.ZipFile(path) as z:
                return z.testzip() is None          # every member's CRC checks
        return True
    except Exception:  # noqa: BLE001 - unreadable is the finding
        return False


def temporaries(cache: Path) -> list[Path]:
    return [p for p in cache.rglob(".*") if TEMPORARY.match(p.name)]


def reset(stage: Stage, cache: Path) -> None:
    """Remove what the stage writes: its folders, and the ledger (with its WAL files) if it
    appends to it."""
    for own in stage.owns:
        shutil.rmtree(cache / own, ignore_errors=True)
    if stage.ledger:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (cache / (LEDGER + suffix)).unlink(missing_ok=True)


def ledger_state(cache: Path) -> tuple[str | None, str, int]:
    """(a problem with the ledger or None, the paper table of all its records, how many records
    repeat an earlier one's (config_key, split)). A missing ledger is an empty one."""
    path = cache / LEDGER
    if not path.exists():
        return None, "", 0
    try:
        con = sqlite3.connect(path, timeout=60)
        try:
            check = [row[0] for row in con.execute("PRAGMA integrity_check")]
        finally:
            con.close()
        if check != ["ok"]:
            return f"integrity_check: {check[:3]}", "", 0
        records = Ledger(path).records()
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger is the finding
        return f"{type(exc).__name__}: {exc}", "", 0
    seen = Counter((r["config_key"], r["split"]) for r in records)
    return None, paper_table(records) if records else "", sum(n - 1 for n in seen.values())


@dataclasses.dataclass
class Reference:
    files: dict[str, str]                   # relative path -> fingerprint
    status: int                             # exit status
    calls: int                              # calls into the project's code
    seconds: float                          # wall time
    table: str = ""                         # paper table of the ledger


def trial(stage: Stage, cache: Path, reference: Reference, kill_at: int, log: Path,
          kill_after: float = 0.0) -> bool:
    """Reset the stage's output, kill a run at call `kill_at` (or after `kill_after` seconds),
    rerun to completion, check. False when the run finished before the kill (no kill landed)."""
    reset(stage, cache)
    killed, _, _ = run_child(stage.main, stage.args, 0 if kill_after else kill_at, log, kill_after)
    if killed != -9:
        return False
    stage.kills += 1
    stage.timed += kill_after > 0
    moment = f"{kill_after:.2f} s" if kill_after else f"call {kill_at}"
    outputs = files_of(cache, stage)
    bad = [p for p in outputs if not readable(p)]
    stage.partial += len(bad)
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished_files(outputs)
                if p not in bad}
    stage.mid_run += 0 < sum(map(is_item, finished)) < sum(1 for k in reference.files if is_item(Path(k)))
    stage.swept += len(temporaries(cache))
    problems = []
    if stage.ledger:
        problem, _, _ = ledger_state(cache)                 # as the kill left it
        problems += [f"after the kill: {problem}"] if problem else []
    done, _, _ = run_child(stage.main, stage.args, 0, log)
    stage.completed += done == reference.status
    now = snapshot(cache, stage)
    stage.checked += len(reference.files)
    differ = [k for k in reference.files.keys() | now.keys() if reference.files.get(k) != now.get(k)]
    stage.mismatches += len(differ)
    redone = [p for p, stamp in finished.items()
              if not p.exists() or (p.stat().st_ino, p.stat().st_mtime_ns) != stamp]
    stage.recomputed += len(redone)
    left = temporaries(cache)
    stage.leftover += len(left)
    repeated = 0
    if stage.ledger:
        problem, table, repeated = ledger_state(cache)
        problems += [f"after the rerun: {problem}"] if problem else []
        problems += ["its paper table differs from the uninterrupted run's"] if (
            not problem and table != reference.table) else []
        stage.duplicates += repeated
    stage.ledger_faults += len(problems)
    if bad or differ or redone or left or problems or repeated or done != reference.status:
        print(f"  {stage.name}, kill at {moment}: exit {done} (expected {reference.status}); "
              f"partial {[str(p) for p in bad]}, differing {sorted(differ)[:5]}, recomputed "
              f"{[str(p) for p in redone][:5]}, left {[str(p) for p in left]}, ledger {problems}, "
              f"{repeated} repeated ledger records; log: {log}", flush=True)
        shutil.copy(log, log.with_suffix(f".{stage.name.split()[0]}-{moment.replace(' ', '')}.log"))
    return True


GRID = {"base": {"sketch_dim": 8}, "rows": [{"order": 1}, {"order": 3, "epn": "asinhe"}]}
# Settings under which the 32 px sprites give trajectories and the training is quick (as in
# tests/test_idt_stage.py and tests/test_train.py)
IDT = ["idt_length=5", "idt_scales=1", "idt_t_cells=1", "idt_min_var=0.1", "idt_min_motion=0.0"]
TRAIN = ["attention=hot", "device=cpu", "max_epochs=3", "patience=2", "weight_decay=0"]
STAGES = ("extract", "extract (processes)", "descriptors", "evaluate", "train", "idt", "sweep")


def build_stages(videos: Path, cache: Path, grid: Path) -> list[Stage]:
    common = [f"root={str(videos)!r}", "dataset=folder", f"cache_root={str(cache)!r}",
              "dataset_options={'folds': 2}",
              "backbone=fake_counting", "layer=stats", "weights=none", "streams=('rgb','flow')",
              "flow_backbone=fake_counting_flow", "flow=farneback", "lengths=(4,8)", "strides=(2,4)",
              "steps=((1,2),(1,))", "size=32", "batch_size=4", "sketch_dim=8"]
    return [Stage("extract", extract.main, common, ("features", "flow")),
            Stage("extract (processes)", extract.main, common + ["backend=processes", "workers=2"],
                  ("features", "flow")),
            Stage("descriptors", descriptors.main, common, ("descriptors",)),
            Stage("evaluate", evaluate.main, common, ("evaluate",), ledger=True),
            Stage("train", train.main, common + TRAIN, ("sketched", "train"), ledger=True),
            Stage("idt", idt.main, common + IDT, ("idt",)),
            Stage("sweep", sweep.main, common + [f"grid={str(grid)}"], ("descriptors", "evaluate"),
                  ledger=True)]


# ---------------------------------------------------------------------------------------------
# tamper pass: damaged files must be found, named and repaired by the rerun of their stage
# ---------------------------------------------------------------------------------------------
TAMPERS = ("rows", "flip", "truncate")
NOT_READ = (".md", ".csv", ".png", ".html",   # written for people; no stage reads them back
            "flow_cache.json")                # (the flow cache's description of its format)
# Files a stage reads only while it computes another file: the tamper removes that one too (a
# flow item is read when its video's features are computed)
COMPANION = {"flow item": "features"}


@dataclasses.dataclass
class Tamper:
    stage: str
    kind: str
    mode: str
    file: str
    status: int = 0
    named: bool = False
    identical: bool = False
    inert: bool = False                     # no byte that HDF5 reads changed (unused space)
    replaced: bool = False                  # the rerun rewrote it (computed anew, not used)

    @property
    def silent(self) -> bool:
        """The rerun left results that differ, or went on with a damaged file unnamed (unless
        the damage is inert: every value the file holds reads back as written)."""
        return not self.identical or not (self.named or self.inert or self.replaced)


def kind_of(rel: str) -> str:
    """The kind of a cached file: its stage folder and its role (item, view, head file ...)."""
    p = Path(rel)
    top = p.parts[0]
    if "items" in p.parts:
        return f"{top} item"
    name = p.name
    if p.parent.name == "splits":
        name = "splits/<split>.json"
    elif "heads" in p.parts:
        name = "heads/" + ("<tag>.json" if p.parent.name == "heads" else f"<tag>/{name}")
    elif re.fullmatch(r"results(-.+)?\.json", name):
        name = "results.json"
    return f"{top} {name}"


def _restore_mtime(path: Path, st: os.stat_result) -> None:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _change_json(data):
    """JSON data with its first number changed (else its first string): still valid JSON."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k == "checksum":
                continue
            changed = _change_json(v)
            if changed is not None:
                return {**data, k: changed}
    elif isinstance(data, list):
        for i, v in enumerate(data):
            changed = _change_json(v)
            if changed is not None:
                return data[:i] + [changed] + data[i + 1:]
    elif isinstance(data, bool):
        return None
    elif isinstance(data, (int, float)):
        return data + 1
    elif isinstance(data, str):
        return data + "x"
    return None


def tamper(path: Path, mode: str) -> None:
    """Damage `path`: "rows" rewrites values in place (a valid file of the same format), "flip"
    XORs 8 bytes in its middle, "truncate" cuts it in half; the mtime is restored each time."""
    st = path.stat()
    if mode == "truncate":
        with open(path, "r+b") as fh:
            fh.truncate(st.st_size // 2)
    elif mode == "flip":
        with open(path, "r+b") as fh:
            fh.seek(st.st_size // 2)
            block = fh.read(8)
            fh.seek(st.st_size // 2)
            fh.write(bytes(b ^ 0xFF for b in block))
    elif path.suffix == ".h5":
        with h5py.File(path, "r+") as f:
            found = []
            f.visititems(lambda n, o: found.append(o) if isinstance(o, h5py.Dataset)
                         and o.dtype.kind in "fiu" and o.size and o.ndim else None)
            if found:
                ds = max(found, key=lambda d: d.size)
                row = np.asarray(ds[0])
                ds[0] = (row + 1) if ds.dtype.kind != "u" else (row ^ 1)
        if not found:                              # no numeric rows to overwrite (e.g. an
            _restore_mtime(path, st)               # item without trajectories): flip bytes
            return tamper(path, "flip")
    elif path.suffix == ".json":
        path.write_text(json.dumps(_change_json(json.loads(path.read_text())), indent=1))
    elif path.suffix == ".npz":
        with np.load(path) as z:
            arrays = {k: z[k].copy() for k in z.files}
        first = next(iter(arrays))
        arrays[first].flat[0] += 1
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    elif path.suffix == ".pt":
        state = torch.load(path, weights_only=True)
        first = next(iter(state))
        state[first] = state[first] + 1
        torch.save(state, path)
    else:
        return tamper(path, "flip")
    _restore_mtime(path, st)


def tamper_pass(stage: Stage, cache: Path, reference: Reference, log: Path, modes: tuple[str, ...],
                rng: np.random.Generator) -> list[Tamper]:
    """One file of every kind the stage writes, damaged in each mode, then a rerun of the stage."""
    by_kind: dict[str, list[str]] = {}
    for rel in sorted(reference.files):
        if not rel.endswith(NOT_READ):
            by_kind.setdefault(kind_of(rel), []).append(rel)
    found = []
    for kind, files in sorted(by_kind.items()):
        for mode in modes:
            rel = files[int(rng.integers(len(files)))]
            path = cache / rel
            if not path.is_file():
                continue
            tamper(path, mode)
            try:
                inert = fingerprint(path) == reference.files[rel]
            except Exception:  # noqa: BLE001 - unreadable: not inert
                inert = False
            stamp = (path.stat().st_ino, path.stat().st_mtime_ns) if path.exists() else None
            if kind in COMPANION:                   # its reader's output, same item name
                name = Path(rel).relative_to(Path(*Path(rel).parts[:4])).as_posix()
                for other in (cache / COMPANION[kind]).glob(f"*/*/items/{name}"):
                    other.unlink()
            status, _, _ = run_child(stage.main, stage.args, 0, log)
            text = log.read_text(errors="replace")
            replaced = path.exists() and (path.stat().st_ino, path.stat().st_mtime_ns) != stamp
            t = Tamper(stage.name, kind, mode, rel, status, inert=inert, replaced=replaced,
                       named=rel in text or path.name in text and str(path.parent) in text,
                       identical=status == reference.status and snapshot(cache, stage) == reference.files)
            found.append(t)
            if t.silent or status != reference.status:
                print(f"  {stage.name}: {mode} {rel}: exit {status}, named {t.named}, identical "
                      f"{t.identical}; log: {log}", flush=True)
                shutil.copy(log, log.with_suffix(f".tamper-{len(found)}.log"))
                reset(stage, cache)                 # back to the reference for the next trial
                run_child(stage.main, stage.args, 0, log)
    return found


def tamper_table(results: list[Tamper]) -> str:
    """The tamper table: per stage and kind of file, the modes tried, named and silent uses."""
    rows = {}
    for t in results:
        r = rows.setdefault((t.stage, t.kind), {"tried": 0, "named": 0, "repaired": 0, "silent": 0,
                                                "inert": 0, "replaced": 0})
        r["tried"] += 1
        r["inert"] += t.inert and not t.named
        r["replaced"] += t.replaced and not t.named and not t.inert
        r["named"] += t.named
        r["repaired"] += t.identical
        r["silent"] += t.silent
    lines = [f"{'stage':<22}{'file':<40}{'tampered':>9}{'named':>7}{'inert':>7}{'redone':>8}"
             f"{'identical':>11}{'silent':>8}"]
    for (stage, kind), r in rows.items():
        lines.append(f"{stage:<22}{kind:<40}{r['tried']:>9}{r['named']:>7}{r['inert']:>7}"
                     f"{r['replaced']:>8}{r['repaired']:>11}{r['silent']:>8}")
    total = {k: sum(r[k] for r in rows.values()) for k in ("tried", "named", "inert", "replaced",
                                                            "repaired", "silent")}
    lines.append(f"{'total':<62}{total['tried']:>9}{total['named']:>7}{total['inert']:>7}"
                 f"{total['replaced']:>8}{total['repaired']:>11}{total['silent']:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs per stage (default 20)")
    parser.add_argument("--timed", type=float, default=0.25,
                        help="the share of kills made by a timer at a random moment of the run "
                             "(inside any code) rather than at a random call into the project's "
                             "code (reproducible); default 0.25")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    parser.add_argument("--tamper", default=",".join(TAMPERS),
                        help=f"the tamper pass's modes, comma-separated ({','.join(TAMPERS)}), "
                             f"or none; default all")
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default a temporary folder")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated (those upstream of them run once, unkilled); "
                             f"default {','.join(STAGES)}")
    opts = parser.parse_args(argv)
    chosen = {s.strip() for s in opts.stages.split(",") if s.strip()}
    unknown = sorted(chosen - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    upstream = {"extract"} if chosen - {"idt"} else set()           # all but idt read stage 1
    upstream |= {"descriptors"} if "evaluate" in chosen else set()
    torch.set_num_threads(1)
    work = opts.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    cache, videos, log = work / "cache", work / "data" / "videos", work / "run.log"
    shutil.rmtree(cache, ignore_errors=True)
    if not videos.is_dir():
        make_dataset(videos)
    grid = work / "grid.json"
    grid.write_text(json.dumps(GRID))
    rng = np.random.default_rng(opts.seed)
    modes = tuple(m for m in opts.tamper.split(",") if m and m != "none")
    if set(modes) - set(TAMPERS):
        parser.error(f"unknown tamper modes {sorted(set(modes) - set(TAMPERS))}; choose from {TAMPERS}")
    tampered: list[Tamper] = []
    references: dict[str, Reference] = {}
    stages, ok, began = [], True, time.time()
    for stage in build_stages(videos, cache, grid):
        if stage.name not in chosen | upstream:
            continue
        started = time.time()
        reset(stage, cache)                         # the uninterrupted run: the reference output
        status, calls, seconds = run_child(stage.main, stage.args, 0, log)
        if stage.name == "extract (processes)":     # equal to the serial run's; its own timing
            serial = references["extract"]
            if status != serial.status or snapshot(cache, stage) != serial.files:
                print(f"{stage.name}: the uninterrupted run differs from the serial one; see {log}")
                ok = False
            references[stage.name] = dataclasses.replace(serial, calls=calls, seconds=seconds)
        else:
            if status not in (0, 1):
                print(f"{stage.name}: the uninterrupted run failed (exit {status}); see {log}")
                print(log.read_text()[-3000:])
                return 1
            problem, table, repeated = ledger_state(cache) if stage.ledger else (None, "", 0)
            if problem or repeated:
                print(f"{stage.name}: the uninterrupted run's ledger: {problem}, {repeated} repeated")
                return 1
            references[stage.name] = Reference(snapshot(cache, stage), status, calls, seconds, table)
        if stage.name not in chosen:                # only run as an upstream of a chosen stage
            continue
        stages.append(stage)
        reference, attempts = references[stage.name], 0
        if modes and stage.name != "extract (processes)":   # on the reference output, first
            tampered += tamper_pass(stage, cache, reference, log, modes, rng)
        while stage.kills < opts.kills and attempts < 3 * opts.kills:
            attempts += 1
            timed = rng.random() < opts.timed
            kill_at, kill_after = int(rng.integers(1, reference.calls + 1)), rng.uniform(0.05, 0.95)
            trial(stage, cache, reference, kill_at, log,
                  kill_after * reference.seconds if timed else 0.0)
        stage.seconds = time.time() - started
        print(f"  {stage.name}: {stage.kills} kills ({stage.timed} by timer) in {stage.seconds:.0f} "
              f"s ({reference.calls} calls, {reference.seconds:.1f} s per run); {stage.mid_run} "
              f"left some items finished and not all, the kills left {stage.swept} temporary files",
              flush=True)
    print(f"\n{'stage':<22}{'kills':>6}{'completed':>11}{'files checked':>15}{'partial':>9}"
          f"{'mismatches':>12}{'recomputed':>12}{'leftover tmp':>14}{'ledger faults':>15}"
          f"{'ledger dups':>13}{'seconds':>9}")
    for s in stages:
        ledger = (f"{s.ledger_faults:>15}{s.duplicates:>13}" if s.ledger else f"{'-':>15}{'-':>13}")
        print(f"{s.name:<22}{s.kills:>6}{s.completed:>11}{s.checked:>15}{s.partial:>9}"
              f"{s.mismatches:>12}{s.recomputed:>12}{s.leftover:>14}{ledger}{s.seconds:>9.0f}")
        ok &= (s.kills == opts.kills and s.completed == s.kills
               and not (s.partial or s.mismatches or s.recomputed or s.leftover
                        or s.ledger_faults or s.duplicates))
    if tampered:
        print("\ntamper pass (one file of each kind per mode; the rerun of its stage must name it "
              "and repair it; inert: the damage hit bytes HDF5 never reads, every value reads "
              "back as written, so nothing could use it; redone: not named but computed anew "
              "rather than used; identical: the output equals the clean run's after the rerun):\n" + tamper_table(tampered))
        ok &= not any(t.silent for t in tampered)
    print(f"total {time.time() - began:.0f} s")
    if opts.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("chaos: OK" if ok else "chaos: FAILED (every kill must land and complete; partial, "
          "mismatches, recomputed, leftover tmp, ledger faults and ledger dups must be 0; "
          "every tampered file named and repaired: silent 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
